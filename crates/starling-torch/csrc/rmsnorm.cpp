// RMSNorm on the CPU as one autograd function: y = x · rsqrt(mean(x²) + eps) · w over the last
// dimension, keeping one reciprocal RMS per row for backward.
//
// ATen's `rms_norm` is a composition (pow, mean, add, rsqrt, two products) that autograd
// differentiates op by op: about ten passes over the activations and as many temporaries in
// backward. Here the forward is one pass per row and the backward one pass per row that writes
// x's gradient and adds the row's share of w's gradient to its block's partial sum (summed at the
// end, so no two threads write the same memory).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "blocks.h"
#include "guard.h"

namespace {

using starling::guarded;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// Rows per task.
constexpr int64_t kRows = 64;

template <typename T>
void forward_rows(const T* x, const T* w, T* y, T* inv, int64_t n, int64_t d, double eps) {
  starling::parallel_for(0, n, kRows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      T* yr = y + r * d;
      T ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
      const T s = T(1) / std::sqrt(ss / T(d) + T(eps));
      inv[r] = s;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * s * w[j];
    }
  });
}

/// x's gradient into `dx`; w's gradient as the sum of per-block partial sums.
template <typename T>
at::Tensor backward_rows(const T* x, const T* w, const T* inv, const T* g, T* dx, int64_t n,
                         int64_t d, const at::TensorOptions& opts) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  auto partial = at::zeros({blocks, d}, opts);
  T* pw = partial.data_ptr<T>();
  starling::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* acc = pw + b * d;
      for (int64_t r = b * kRows; r < std::min(n, (b + 1) * kRows); ++r) {
        const T *xr = x + r * d, *gr = g + r * d;
        T* dr = dx + r * d;
        const T s = inv[r];
        // dx = s · (g·w − x · s² · mean(g·w·x)); dw += g · x · s.
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < d; ++j) dot += gr[j] * w[j] * xr[j];
        const T c = s * s * s * dot / T(d);
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          dr[j] = s * gr[j] * w[j] - c * xr[j];
          acc[j] += gr[j] * xr[j] * s;
        }
      }
    }
  });
  return partial.sum(0);
}

struct RmsNorm : public torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            double eps) {
    const int64_t d = x.size(-1), n = x.numel() / std::max<int64_t>(d, 1);
    auto xc = x.contiguous();
    auto wc = w.contiguous();
    auto y = at::empty_like(xc);
    auto inv = at::empty({n}, xc.options());
    if (x.scalar_type() == at::kDouble) {
      forward_rows<double>(xc.data_ptr<double>(), wc.data_ptr<double>(), y.data_ptr<double>(),
                           inv.data_ptr<double>(), n, d, eps);
    } else {
      forward_rows<float>(xc.data_ptr<float>(), wc.data_ptr<float>(), y.data_ptr<float>(),
                          inv.data_ptr<float>(), n, d, eps);
    }
    ctx->save_for_backward({xc, wc, inv});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &inv = saved[2];
    const int64_t d = x.size(-1), n = x.numel() / std::max<int64_t>(d, 1);
    auto g = grads[0].contiguous();
    auto dx = at::empty_like(x);
    at::Tensor dw;
    if (x.scalar_type() == at::kDouble) {
      dw = backward_rows<double>(x.data_ptr<double>(), w.data_ptr<double>(),
                                 inv.data_ptr<double>(), g.data_ptr<double>(),
                                 dx.data_ptr<double>(), n, d, x.options());
    } else {
      dw = backward_rows<float>(x.data_ptr<float>(), w.data_ptr<float>(), inv.data_ptr<float>(),
                                g.data_ptr<float>(), dx.data_ptr<float>(), n, d, x.options());
    }
    return {dx, dw, at::Tensor()};
  }
};

}  // namespace

extern "C" {

/// RMSNorm of `x` over its last dimension with weight `w` ([d]) and `eps` (CPU, fp32 or fp64),
/// differentiable in x and w: a new tensor shaped like x in `*out`.
int starling_torch_rms_norm(at::Tensor* x, at::Tensor* w, double eps, at::Tensor** out, char* err,
                            size_t len) {
  return guarded(err, len, [&] {
    const auto kind = x->scalar_type();
    if (!x->is_cpu() || !w->is_cpu()) {
      throw std::invalid_argument("rms_norm: CPU tensors only (use ATen's rms_norm elsewhere)");
    }
    if ((kind != at::kFloat && kind != at::kDouble) || w->scalar_type() != kind) {
      throw std::invalid_argument("rms_norm: x and w must both be fp32 or both fp64");
    }
    if (x->dim() < 1 || w->dim() != 1 || w->size(0) != x->size(-1) || x->size(-1) == 0) {
      throw std::invalid_argument("rms_norm: w must be [d] for x [..., d], d > 0");
    }
    *out = new at::Tensor(RmsNorm::apply(*x, *w, eps));
  });
}

}  // extern "C"
