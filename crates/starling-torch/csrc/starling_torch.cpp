// starling's C++ layer over ATen: what the tch crate has no binding for. Tensors arrive as tch's
// own handles (an `at::Tensor*` each), so autograd, devices and dtypes come along; lists arrive as
// arrays of such handles. Every entry point catches C++ exceptions and returns their text.
//
// - fused AdamW (`at::_fused_adamw_`, CPU and CUDA kernels), with `found_inf` so a bad step
//   changes nothing;
// - foreach helpers: the global L2 norm of a tensor list as a device tensor, in-place scaling by a
//   device scalar, zeroing;
// - a host-synchronisation counter: a global RecordFunction observer that counts the calls that
//   make the host wait for a device (`aten::item` / `aten::_local_scalar_dense` called from user
//   code, copies from a device to the CPU), plus the deliberate reads made through this layer;
// - the training process's heap: glibc told to keep freed memory for reuse.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include "guard.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

namespace {

using starling::guarded;
using starling::set_error;

std::vector<at::Tensor> list(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (ts[i] == nullptr) throw std::invalid_argument("null tensor in a list");
    out.push_back(*ts[i]);
  }
  return out;
}

// ---- host-synchronisation counter -------------------------------------------------------------

std::atomic<uint64_t> g_syncs{0};
thread_local uint64_t t_syncs = 0;

void count_sync() {
  g_syncs.fetch_add(1);
  ++t_syncs;
}
std::atomic<int> g_installed{0};
at::CallbackHandle g_handle = 0;
thread_local int t_depth = 0;

bool is_device(const c10::IValue& v) {
  return v.isTensor() && v.toTensor().defined() && !v.toTensor().device().is_cpu();
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const int depth = t_depth++;
  const char* name = fn.name();
  if (name == nullptr) return nullptr;
  const bool scalar_read =
      std::strcmp(name, "aten::item") == 0 || std::strcmp(name, "aten::_local_scalar_dense") == 0;
  if (scalar_read) {
    // Called from user code it is a read of a value the device computed; called inside another
    // op (the CPU AdamW kernel reads its step counter) it is one only when the tensor is on a device.
    auto in = fn.inputs();
    if (depth == 0 || (!in.empty() && is_device(in[0]))) count_sync();
    return nullptr;
  }
  if (std::strcmp(name, "aten::copy_") == 0) {
    // copy_(self, src): a device-to-host copy when self is on the CPU and src is not.
    auto in = fn.inputs();
    if (in.size() >= 2 && in[0].isTensor() && in[0].toTensor().device().is_cpu() && is_device(in[1]))
      count_sync();
  }
  return nullptr;
}

void on_exit(const at::RecordFunction&, at::ObserverContext*) { --t_depth; }

}  // namespace

extern "C" {

/// Installs the host-sync observer (idempotent); returns 0, or 1 with the error's text.
int starling_torch_sync_counter_install(char* err, size_t len) {
  return guarded(err, len, [&] {
    int expected = 0;
    if (!g_installed.compare_exchange_strong(expected, 1)) return;
    g_handle = at::addGlobalCallback(at::RecordFunctionCallback(&on_enter, &on_exit)
                                         .needsInputs(true)
                                         .scopes({at::RecordScope::FUNCTION}));
  });
}

/// Removes the observer (its overhead goes with it); the count is kept.
void starling_torch_sync_counter_remove() {
  int expected = 1;
  if (g_installed.compare_exchange_strong(expected, 0)) at::removeCallback(g_handle);
}

/// Makes glibc's malloc keep freed memory for reuse: every block from the heap (no mmap, which
/// large blocks get by default and give back to the system when freed), the heap never trimmed,
/// grown 64 MiB at a time. A training step frees and allocates the same large activations every
/// step; with the defaults each of them is mapped afresh and every page of it faulted in and
/// zeroed by the kernel again (a quarter of `small`'s CPU step on a 2-core VM). 1 when applied
/// (glibc), 0 elsewhere.
int starling_torch_retain_freed_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1 &&
         mallopt(M_TOP_PAD, 64 << 20) == 1;
#else
  return 0;
#endif
}

/// 1 while the observer is installed.
int starling_torch_sync_counter_installed() { return g_installed.load(); }

/// Host synchronisations counted so far, in every thread.
uint64_t starling_torch_sync_count() { return g_syncs.load(); }

/// Host synchronisations counted so far that the calling thread made.
uint64_t starling_torch_sync_count_thread() { return t_syncs; }

/// Copies a tensor's values to the host as doubles (the one deliberate read; counted).
int starling_torch_read_f64(at::Tensor* t, double* out, size_t n, char* err, size_t len) {
  return guarded(err, len, [&] {
    at::Tensor host;
    {
      // The read itself is counted once here, not again by the observer.
      at::RecordFunctionGuard off(false);
      host = t->detach().to(at::kCPU, at::kDouble).contiguous();
    }
    if (static_cast<size_t>(host.numel()) != n)
      throw std::invalid_argument("read of " + std::to_string(host.numel()) +
                                  " values into a buffer of " + std::to_string(n));
    std::memcpy(out, host.data_ptr<double>(), n * sizeof(double));
    count_sync();
  });
}

// ---- foreach --------------------------------------------------------------------------------

/// The L2 norm over every element of the list, as a new 0-d float tensor on the list's device.
int starling_torch_global_norm(at::Tensor** ts, size_t n, at::Tensor** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto l = list(ts, n);
    if (l.empty()) throw std::invalid_argument("global norm of an empty list");
    auto norms = at::_foreach_norm(l, 2, at::kFloat);
    *out = new at::Tensor(at::linalg_vector_norm(at::stack(norms), 2));
  });
}

/// Multiplies every tensor of the list in place by the 0-d tensor `scale` (no host read).
int starling_torch_foreach_mul_(at::Tensor** ts, size_t n, at::Tensor* scale, char* err,
                                size_t len) {
  return guarded(err, len, [&] { at::_foreach_mul_(list(ts, n), *scale); });
}

/// Zeroes every tensor of the list in place.
int starling_torch_foreach_zero_(at::Tensor** ts, size_t n, char* err, size_t len) {
  return guarded(err, len, [&] { at::_foreach_zero_(list(ts, n)); });
}

/// Drops the gradient of every tensor of the list (PyTorch's `zero_grad(set_to_none=True)`).
int starling_torch_clear_grads(at::Tensor** ts, size_t n, char* err, size_t len) {
  return guarded(err, len, [&] {
    for (size_t i = 0; i < n; ++i) ts[i]->mutable_grad().reset();
  });
}

// ---- optimizer ------------------------------------------------------------------------------

/// One AdamW step over n parameters (ATen's fused kernel): decoupled weight decay `wd`, bias
/// corrections from `step` (a float tensor on the parameters' device, shared by all of them),
/// learning rate `lr` or, when `lr_tensor` is given, that device tensor. `found_inf` (optional,
/// a float 0-d tensor): when it holds 1 the step changes nothing.
int starling_torch_fused_adamw_(at::Tensor** params, at::Tensor** grads, at::Tensor** m,
                                at::Tensor** v, size_t n, at::Tensor* step, double lr,
                                at::Tensor* lr_tensor, double beta1, double beta2, double wd,
                                double eps, at::Tensor* found_inf, char* err, size_t len) {
  return guarded(err, len, [&] {
    if (n == 0) return;
    auto p = list(params, n), g = list(grads, n), a = list(m, n), b = list(v, n);
    std::vector<at::Tensor> steps(n, *step);
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    c10::NoGradGuard no_grad;
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, a, b, {}, steps, *lr_tensor, beta1, beta2, wd, eps, false, false,
                        std::nullopt, inf);
    } else {
      at::_fused_adamw_(p, g, a, b, {}, steps, lr, beta1, beta2, wd, eps, false, false,
                        std::nullopt, inf);
    }
  });
}

}  // extern "C"

// ---- CUDA (compiled when the torch wheel has CUDA and its headers are beside it) -------------

#ifdef STARLING_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

extern "C" {

/// 1 when this library was built with its CUDA part.
int starling_torch_has_cuda() {
#ifdef STARLING_CUDA
  return 1;
#else
  return 0;
#endif
}

/// Peak bytes allocated by the CUDA caching allocator on `device` since the last reset
/// (torch.cuda.max_memory_allocated); -1 without the CUDA part.
int starling_torch_cuda_max_memory_allocated(int device, int64_t* out, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    *out = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
               .peak;
#else
    *out = -1;
#endif
  });
}

/// Resets the peak of starling_torch_cuda_max_memory_allocated.
int starling_torch_cuda_reset_peak(int device, char* err, size_t len) {
  return guarded(err, len, [&] {
#ifdef STARLING_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(device);
#endif
  });
}

/// The name the CUDA driver gives `device` (empty without the CUDA part).
int starling_torch_cuda_device_name(int device, char* out, size_t out_len, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::string name;
#ifdef STARLING_CUDA
    name = at::cuda::getDeviceProperties(device)->name;
#endif
    set_error(out, out_len, name);
  });
}

}  // extern "C"
