// The attention's inputs from one fused Q|K|V product: the product split into heads, rotary
// position embedding applied to Q and K (HF layout: the two halves of each head rotate
// together), as one autograd function.
//
// Written with autograd's own pieces (split, view, transpose, negate, concatenate, two products
// and a sum per tensor), the forward makes five passes over Q and K and keeps their copies, and
// the backward makes as many again and concatenates the three gradients into a new tensor. Here
// each of Q and K is written once from the product (out1 = x1·cos − x2·sin, out2 = x2·cos +
// x1·sin), V is copied out, and the backward writes the product's one gradient in place with the
// inverse rotation. On the CPU the work goes one sequence at a time, in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "blocks.h"
#include "guard.h"

namespace {

using starling::by_blocks;
using starling::guarded;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// out = rotate(x) with half-tables c, s ([t, half]); `sign` −1 rotates back (the backward).
void rotate(const at::Tensor& out, const at::Tensor& x, const at::Tensor& c, const at::Tensor& s,
            double sign) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto o1 = out.narrow(-1, 0, half), o2 = out.narrow(-1, half, half);
  at::mul_out(o1, x1, c);
  o1.addcmul_(x2, s, -sign);
  at::mul_out(o2, x2, c);
  o2.addcmul_(x1, s, sign);
}

struct QkvRope : public torch::autograd::Function<QkvRope> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& cos,
                               const at::Tensor& sin, int64_t heads, int64_t kv_heads,
                               int64_t head_dim) {
    const int64_t all = heads + 2 * kv_heads;
    if (y.dim() != 3 || y.size(2) != all * head_dim || head_dim % 2 != 0)
      throw std::invalid_argument(
          "qkv_rope: the product must be [batch, time, (heads + 2·kv_heads)·head_dim] = [.., .., " +
          std::to_string(all * head_dim) + "] with an even head_dim, got " +
          std::to_string(y.dim() == 3 ? y.size(2) : -1) + " columns");
    const int64_t b = y.size(0), t = y.size(1), half = head_dim / 2;
    if (cos.dim() != 2 || cos.size(0) != t || cos.size(1) != head_dim || !cos.sizes().equals(sin.sizes()))
      throw std::invalid_argument("qkv_rope: cos and sin must be [time, head_dim] = [" +
                                  std::to_string(t) + ", " + std::to_string(head_dim) + "]");
    // [batch, heads, time, head_dim] views of the product, no copy.
    auto y4 = y.contiguous().view({b, t, all, head_dim}).permute({0, 2, 1, 3});
    auto c = cos.narrow(1, 0, half).to(y.scalar_type()).contiguous();
    auto s = sin.narrow(1, 0, half).to(y.scalar_type()).contiguous();
    auto q = at::empty({b, heads, t, head_dim}, y.options());
    auto k = at::empty({b, kv_heads, t, head_dim}, y.options());
    auto v = at::empty({b, kv_heads, t, head_dim}, y.options());
    by_blocks(y.is_cpu(), b, 1, [&](int64_t i, int64_t m) {
      auto src = y4.narrow(0, i, m);
      rotate(q.narrow(0, i, m), src.narrow(1, 0, heads), c, s, 1.0);
      rotate(k.narrow(0, i, m), src.narrow(1, heads, kv_heads), c, s, 1.0);
      v.narrow(0, i, m).copy_(src.narrow(1, heads + kv_heads, kv_heads));
    });
    ctx->save_for_backward({c, s});
    ctx->saved_data["shape"] = std::vector<int64_t>{b, t, heads, kv_heads, head_dim};
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &c = saved[0], &s = saved[1];
    auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t b = shape[0], t = shape[1], heads = shape[2], kv = shape[3], hd = shape[4];
    const int64_t all = heads + 2 * kv;
    auto options = c.options();
    auto dy = at::empty({b, t, all * hd}, options);
    auto dy4 = dy.view({b, t, all, hd}).permute({0, 2, 1, 3});
    const bool cpu = dy.is_cpu();
    by_blocks(cpu, b, 1, [&](int64_t i, int64_t m) {
      auto dst = dy4.narrow(0, i, m);
      const int64_t spans[3][2] = {{0, heads}, {heads, kv}, {heads + kv, kv}};
      for (int which = 0; which < 3; ++which) {
        auto part = dst.narrow(1, spans[which][0], spans[which][1]);
        const auto& g = grads[which];
        if (!g.defined()) {
          part.zero_();
        } else if (which == 2) {
          part.copy_(g.narrow(0, i, m));
        } else {
          rotate(part, g.narrow(0, i, m), c, s, -1.0);
        }
      }
    });
    return {dy, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

/// Q, K (rotated) and V, each [batch, heads, time, head_dim], from a fused Q|K|V product `y`
/// [batch, time, (heads + 2·kv_heads)·head_dim] and the rotary tables `cos`, `sin` [time,
/// head_dim] of its positions; `out` receives three new tensors.
int starling_torch_qkv_rope(at::Tensor* y, at::Tensor* cos, at::Tensor* sin, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, at::Tensor** out, char* err,
                            size_t len) {
  return guarded(err, len, [&] {
    auto r = QkvRope::apply(*y, *cos, *sin, heads, kv_heads, head_dim);
    for (size_t i = 0; i < 3; ++i) out[i] = new at::Tensor(r[i]);
  });
}

}  // extern "C"
