// SwiGLU over one fused gate|up product: silu(y[..., :ff]) * y[..., ff:] as one autograd
// function, so the MLP's two projections can be one matrix product without splitting it.
//
// Written with autograd's own pieces, a split, a silu and a product, the backward concatenates
// the two halves' gradients into a new tensor and runs silu on a strided half. Here the backward
// writes both halves of the one gradient tensor in place. On the CPU, fp32 and fp64 rows go
// through one loop each way (`simd.h`: AVX2 for fp32), the rows in parallel; other kinds go in
// blocks of ATen ops small enough to stay in cache, so each block's passes read its inputs from
// memory once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>

#include "blocks.h"
#include "guard.h"
#include "simd.h"

namespace {

using starling::block_rows;
using starling::by_blocks;
using starling::guarded;
using starling::row_loops;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// out[r] = silu(gate) · up of row r of `y2` ([n, 2·ff], contiguous), rows in parallel.
template <typename T>
void forward_rows(const at::Tensor& y2, const at::Tensor& out) {
  const int64_t n = y2.size(0), ff = y2.size(1) / 2;
  const T* yp = y2.data_ptr<T>();
  T* op = out.data_ptr<T>();
  starling::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      starling::simd::swiglu(yp + r * 2 * ff, yp + r * 2 * ff + ff, op + r * ff, ff);
    }
  });
}

/// Both halves of dy's rows from the output's gradient `g2` ([n, ff]), rows in parallel.
template <typename T>
void backward_rows(const at::Tensor& y2, const at::Tensor& g2, const at::Tensor& dy) {
  const int64_t n = y2.size(0), ff = y2.size(1) / 2;
  const T *yp = y2.data_ptr<T>(), *gp = g2.data_ptr<T>();
  T* dp = dy.data_ptr<T>();
  starling::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = yp + r * 2 * ff;
      T* d = dp + r * 2 * ff;
      starling::simd::swiglu_backward(row, row + ff, gp + r * ff, d, d + ff, ff);
    }
  });
}

struct SwiGlu : public torch::autograd::Function<SwiGlu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y) {
    if (y.dim() < 1 || y.size(-1) % 2 != 0)
      throw std::invalid_argument("swiglu: the last dimension (gate|up) must be even, got " +
                                  std::to_string(y.dim() < 1 ? 0 : y.size(-1)));
    const int64_t w = y.size(-1), ff = w / 2, n = y.numel() / std::max<int64_t>(w, 1);
    auto y2 = y.contiguous().view({n, w});
    auto out = at::empty({n, ff}, y.options());
    if (row_loops(y)) {
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "swiglu", [&] { forward_rows<scalar_t>(y2, out); });
    } else {
      by_blocks(y.is_cpu(), n, block_rows(w, y.element_size()), [&](int64_t r, int64_t m) {
        auto b = y2.narrow(0, r, m);
        auto o = out.narrow(0, r, m);
        at::silu_out(o, b.narrow(1, 0, ff));
        o.mul_(b.narrow(1, ff, ff));
      });
    }
    ctx->save_for_backward({y2});
    ctx->saved_data["sizes"] = y.sizes().vec();
    auto sizes = y.sizes().vec();
    sizes.back() = ff;
    return out.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto y2 = ctx->get_saved_variables()[0];
    const int64_t n = y2.size(0), w = y2.size(1), ff = w / 2;
    auto g2 = grads[0].contiguous().view({n, ff});
    auto dy = at::empty({n, w}, y2.options());
    if (row_loops(y2)) {
      AT_DISPATCH_FLOATING_TYPES(y2.scalar_type(), "swiglu_backward",
                                 [&] { backward_rows<scalar_t>(y2, g2, dy); });
    } else {
      by_blocks(y2.is_cpu(), n, block_rows(w, y2.element_size()), [&](int64_t r, int64_t m) {
        auto b = y2.narrow(0, r, m), d = dy.narrow(0, r, m), gb = g2.narrow(0, r, m);
        auto gate = b.narrow(1, 0, ff), up = b.narrow(1, ff, ff);
        auto dgate = d.narrow(1, 0, ff), dup = d.narrow(1, ff, ff);
        // d/dup = grad · silu(gate); d/dgate = (grad · up) · silu'(gate).
        at::silu_out(dup, gate);
        dup.mul_(gb);
        at::mul_out(dgate, gb, up);
        at::silu_backward_out(dgate, dgate, gate);
      });
    }
    // The gradient has the input's shape (its batch dimensions, then gate|up).
    return {dy.view(ctx->saved_data["sizes"].toIntVector())};
  }
};

}  // namespace

extern "C" {

/// silu(y[..., :ff]) * y[..., ff:] for a fused gate|up product `y`, as a new tensor whose
/// backward writes y's gradient in one tensor.
int starling_torch_swiglu(at::Tensor* y, at::Tensor** out, char* err, size_t len) {
  return guarded(err, len, [&] { *out = new at::Tensor(SwiGlu::apply(*y)); });
}

}  // extern "C"
