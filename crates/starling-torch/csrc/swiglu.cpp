// SwiGLU over one fused gate|up product: silu(y[..., :ff]) * y[..., ff:] as one autograd
// function, so the MLP's two projections can be one matrix product without splitting it.
//
// Written with autograd's own pieces, a split, a silu and a product, the backward concatenates
// the two halves' gradients into a new tensor and runs silu on a strided half. Here the backward
// writes both halves of the one gradient tensor in place. On the CPU the rows go in blocks small
// enough to stay in cache, so each block's passes read its inputs from memory once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>

#include "blocks.h"
#include "guard.h"

namespace {

using starling::block_rows;
using starling::by_blocks;
using starling::guarded;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SwiGlu : public torch::autograd::Function<SwiGlu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y) {
    if (y.dim() < 1 || y.size(-1) % 2 != 0)
      throw std::invalid_argument("swiglu: the last dimension (gate|up) must be even, got " +
                                  std::to_string(y.dim() < 1 ? 0 : y.size(-1)));
    const int64_t w = y.size(-1), ff = w / 2, n = y.numel() / std::max<int64_t>(w, 1);
    auto y2 = y.contiguous().view({n, w});
    auto out = at::empty({n, ff}, y.options());
    by_blocks(y.is_cpu(), n, block_rows(w, y.element_size()), [&](int64_t r, int64_t m) {
      auto b = y2.narrow(0, r, m);
      auto o = out.narrow(0, r, m);
      at::silu_out(o, b.narrow(1, 0, ff));
      o.mul_(b.narrow(1, ff, ff));
    });
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
