// CUDA graphs and side streams for the trainer (issue 16, item 4): what `torch.cuda.graph` and
// `torch.cuda.stream` do in Python, as a handle Rust holds. A graph records every kernel the
// current stream launches between capture_begin and capture_end (forward, backward and the fused
// optimizer of one step) and launches them all again with one call; the tensors the step reads
// and writes must stay where they were at capture (static buffers), and nothing inside may read a
// value on the host. Without the CUDA part every entry point fails with a clear message.

#include <c10/core/Event.h>
#include <torch/torch.h>

#include <memory>
#include <optional>

#include "guard.h"

#ifdef STARLING_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

using starling::guarded;

namespace {

const char* const NO_CUDA = "this starling was built without CUDA (a CPU-only torch wheel)";

#ifdef STARLING_CUDA
/// A side stream made current, and the stream it replaced.
struct SideStream {
  c10::cuda::CUDAStream prev;
  c10::cuda::CUDAStream side;
};

/// Makes a fresh pool stream current on `device` after it has waited for the current one.
SideStream enter_side_stream(int device) {
  auto prev = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
  auto side = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device));
  // c10's device-generic event: through the CUDA guard in libc10_cuda, no CUDA runtime link.
  c10::Event ready(c10::DeviceType::CUDA);
  ready.record(prev);
  ready.block(side);
  c10::cuda::setCurrentCUDAStream(side);
  return SideStream{prev, side};
}

/// Makes the replaced stream current again, waiting (on the device) for the side stream's work.
void leave_side_stream(const SideStream& s) {
  c10::Event done(c10::DeviceType::CUDA);
  done.record(s.side);
  done.block(s.prev);
  c10::cuda::setCurrentCUDAStream(s.prev);
}

/// A captured graph and, while capturing, the stream it captures on.
struct Graph {
  int device;
  at::cuda::CUDAGraph graph;
  std::optional<SideStream> capturing;
};
#endif

}  // namespace

extern "C" {

/// A side stream on `device` made current (after it waited for the current stream): warm-up
/// before a capture runs there, as PyTorch recommends. Ended by starling_torch_side_stream_end.
void* starling_torch_side_stream_begin(int device, char* err, size_t len) {
  void* out = nullptr;
  guarded(err, len, [&] {
#ifdef STARLING_CUDA
    out = new SideStream(enter_side_stream(device));
#else
    (void)device;
    throw std::runtime_error(NO_CUDA);
#endif
  });
  return out;
}

/// Restores the stream a side stream replaced (which waits for its work) and frees the handle.
int starling_torch_side_stream_end(void* s, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    std::unique_ptr<SideStream> side(static_cast<SideStream*>(s));
    leave_side_stream(*side);
#else
    (void)s;
    throw std::runtime_error(NO_CUDA);
#endif
  });
}

/// A new, empty CUDA graph for `device`.
void* starling_torch_graph_new(int device, char* err, size_t len) {
  void* out = nullptr;
  guarded(err, len, [&] {
#ifdef STARLING_CUDA
    out = new Graph{device, at::cuda::CUDAGraph(), std::nullopt};
#else
    (void)device;
    throw std::runtime_error(NO_CUDA);
#endif
  });
  return out;
}

/// Starts recording: waits for the device, makes a side stream current and begins the capture
/// on it (a private memory pool keeps the graph's tensors where they were).
int starling_torch_graph_capture_begin(void* g, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    auto* graph = static_cast<Graph*>(g);
    if (graph->capturing) throw std::runtime_error("CUDA graph: already capturing");
    c10::cuda::device_synchronize();
    graph->capturing = enter_side_stream(graph->device);
    try {
      graph->graph.capture_begin();
    } catch (...) {
      leave_side_stream(*graph->capturing);
      graph->capturing.reset();
      throw;
    }
#else
    (void)g;
    throw std::runtime_error(NO_CUDA);
#endif
  });
}

/// Ends recording and instantiates the graph; the stream current before the capture is current
/// again whether or not the capture succeeded.
int starling_torch_graph_capture_end(void* g, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    auto* graph = static_cast<Graph*>(g);
    if (!graph->capturing) throw std::runtime_error("CUDA graph: not capturing");
    SideStream s = *graph->capturing;
    graph->capturing.reset();
    try {
      graph->graph.capture_end();
    } catch (...) {
      leave_side_stream(s);
      throw;
    }
    leave_side_stream(s);
#else
    (void)g;
    throw std::runtime_error(NO_CUDA);
#endif
  });
}

/// Launches the captured graph on the current stream (no host wait).
int starling_torch_graph_replay(void* g, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    static_cast<Graph*>(g)->graph.replay();
#else
    (void)g;
    throw std::runtime_error(NO_CUDA);
#endif
  });
}

/// Frees a graph (and its memory pool, once nothing of it is in use).
void starling_torch_graph_free(void* g) {
#ifdef STARLING_CUDA
  delete static_cast<Graph*>(g);
#else
  (void)g;
#endif
}

}  // extern "C"
