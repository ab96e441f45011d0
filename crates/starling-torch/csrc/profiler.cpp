// PyTorch's profiler (Kineto) for starling's own steps: what torch.profiler gives a Python user,
// reached from Rust. It records every ATen op the calling thread runs (and those autograd runs
// for it), and with CUDA every kernel, copy and fill the GPU ran (through CUPTI), each with its
// start and duration. The Rust side (src/profile.rs) turns the flat list into op tables, kernel
// counts and the GPU's idle share.
#include <ATen/ATen.h>
#include <kineto/ActivityType.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "guard.h"

namespace {

using starling::guarded;

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

/// One recorded event: an op on the host (kind 0), a kernel on a device (1), a copy or fill on a
/// device (2), a host-side runtime call such as cudaLaunchKernel or cudaStreamSynchronize (3).
struct Event {
  std::string name;
  uint8_t kind;
  uint64_t start_ns;
  uint64_t dur_ns;
  uint64_t thread;
};

/// What one profiling window recorded.
struct Recording {
  std::vector<Event> events;
};

uint8_t kind_of(const prof::KinetoEvent& e) {
  using libkineto::ActivityType;
  switch (static_cast<ActivityType>(e.activityType())) {
    case ActivityType::CONCURRENT_KERNEL:
      return 1;
    case ActivityType::GPU_MEMCPY:
    case ActivityType::GPU_MEMSET:
      return 2;
    case ActivityType::CUDA_RUNTIME:
    case ActivityType::CUDA_DRIVER:
    case ActivityType::CUDA_SYNC:
      return 3;
    default:
      return 0;
  }
}

}  // namespace

extern "C" {

/// Starts recording on the calling thread (host ops; with `cuda`, the GPU's activity too).
int starling_torch_profiler_start(int cuda, char* err, size_t len) {
  return guarded(err, len, [&] {
    if (impl::profilerEnabled()) throw std::runtime_error("a profiler is already recording");
    impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
    if (cuda != 0) activities.insert(impl::ActivityType::CUDA);
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
  });
}

/// Stops recording; `*out` is a new recording the caller frees with starling_torch_profile_free.
int starling_torch_profiler_stop(void** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto result = prof::disableProfiler();
    auto rec = std::make_unique<Recording>();
    if (result) {
      const auto& events = result->events();
      rec->events.reserve(events.size());
      for (const auto& e : events) {
        if (e.isHiddenEvent()) continue;
        rec->events.push_back(Event{e.name(), kind_of(e), e.startNs(), e.durationNs(),
                                    e.startThreadId()});
      }
    }
    *out = rec.release();
  });
}

/// Number of events in a recording.
size_t starling_torch_profile_len(const void* rec) {
  return static_cast<const Recording*>(rec)->events.size();
}

/// Event `i` of a recording: its name (borrowed from the recording), kind, start, duration and
/// thread; 1 when `i` is out of range.
int starling_torch_profile_event(const void* rec, size_t i, const char** name, size_t* name_len,
                                 uint8_t* kind, uint64_t* start_ns, uint64_t* dur_ns,
                                 uint64_t* thread) {
  const auto& events = static_cast<const Recording*>(rec)->events;
  if (i >= events.size()) return 1;
  const Event& e = events[i];
  *name = e.name.data();
  *name_len = e.name.size();
  *kind = e.kind;
  *start_ns = e.start_ns;
  *dur_ns = e.dur_ns;
  *thread = e.thread;
  return 0;
}

/// Frees a recording.
void starling_torch_profile_free(void* rec) { delete static_cast<Recording*>(rec); }

}  // extern "C"
