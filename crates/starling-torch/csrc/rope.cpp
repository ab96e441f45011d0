// The attention's inputs from one fused Q|K|V product: the product split into heads, rotary
// position embedding applied to Q and K (HF layout: the two halves of each head rotate
// together), as one autograd function.
//
// Written with autograd's own pieces (split, view, transpose, negate, concatenate, two products
// and a sum per tensor), the forward makes five passes over Q and K and keeps their copies, and
// the backward makes as many again and concatenates the three gradients into a new tensor. Here
// each of Q and K is written once from the product (out1 = x1·cos − x2·sin, out2 = x2·cos +
// x1·sin), V is copied out, and the backward writes the product's one gradient in place with the
// inverse rotation. On the CPU, fp32 and fp64 go as one loop over each head's row (the rows of a
// sequence and head in parallel); other kinds as ATen ops, one sequence at a time in parallel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

#include "blocks.h"
#include "guard.h"

namespace {

using starling::by_blocks;
using starling::by_pairs;
using starling::guarded;
using starling::row_loops;
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

/// o = rotate(x) over one head's row of 2·half elements: o1 = x1·c − sign·x2·s,
/// o2 = x2·c + sign·x1·s.
template <typename T>
void rotate_row(T* __restrict o, const T* __restrict x, const T* __restrict c,
                const T* __restrict s, int64_t half, T sign) {
  for (int64_t j = 0; j < half; ++j) {
    const T a = x[j], b = x[j + half];
    o[j] = a * c[j] - sign * b * s[j];
    o[j + half] = b * c[j] + sign * a * s[j];
  }
}

/// Where one head's rows lie: the fused product (or its gradient) `[b, t, all, d]` on one side,
/// a head tensor `[b, n, t, d]` on the other.
struct Heads {
  int64_t b, t, all, d;
  /// Offset of (sequence, head, token) in the fused `[b, t, all, d]` layout.
  int64_t fused(int64_t bi, int64_t head, int64_t ti) const { return ((bi * t + ti) * all + head) * d; }
};

/// The forward's CPU loops: q, k rotated and v copied out of the contiguous product `yp`.
template <typename T>
void forward_rows(const Heads& g, const T* yp, const at::Tensor& c, const at::Tensor& s,
                  std::array<at::Tensor, 3>& qkv, const std::array<int64_t, 3>& first) {
  const int64_t half = g.d / 2;
  const T *cp = c.data_ptr<T>(), *sp = s.data_ptr<T>();
  for (int which = 0; which < 3; ++which) {
    const int64_t n = qkv[which].size(1);
    T* out = qkv[which].data_ptr<T>();
    by_pairs(g.b, n, [&](int64_t bi, int64_t h) {
      for (int64_t ti = 0; ti < g.t; ++ti) {
        const T* x = yp + g.fused(bi, first[which] + h, ti);
        T* o = out + ((bi * n + h) * g.t + ti) * g.d;
        if (which == 2) std::copy(x, x + g.d, o);
        else rotate_row(o, x, cp + ti * half, sp + ti * half, half, T(1));
      }
    });
  }
}

/// The backward's CPU loops: the product's gradient `dp` from q's and k's (rotated back) and v's;
/// an undefined gradient gives zeros.
template <typename T>
void backward_rows(const Heads& g, T* dp, const at::Tensor& c, const at::Tensor& s,
                   const std::array<at::Tensor, 3>& grads, const std::array<int64_t, 3>& first,
                   const std::array<int64_t, 3>& count) {
  const int64_t half = g.d / 2;
  const T *cp = c.data_ptr<T>(), *sp = s.data_ptr<T>();
  for (int which = 0; which < 3; ++which) {
    const int64_t n = count[which];
    const T* gp = grads[which].defined() ? grads[which].data_ptr<T>() : nullptr;
    by_pairs(g.b, n, [&](int64_t bi, int64_t h) {
      for (int64_t ti = 0; ti < g.t; ++ti) {
        T* o = dp + g.fused(bi, first[which] + h, ti);
        const T* x = gp == nullptr ? nullptr : gp + ((bi * n + h) * g.t + ti) * g.d;
        if (x == nullptr) std::fill(o, o + g.d, T(0));
        else if (which == 2) std::copy(x, x + g.d, o);
        else rotate_row(o, x, cp + ti * half, sp + ti * half, half, T(-1));
      }
    });
  }
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
    auto yc = y.contiguous();
    auto y4 = yc.view({b, t, all, head_dim}).permute({0, 2, 1, 3});
    auto c = cos.narrow(1, 0, half).to(y.scalar_type()).contiguous();
    auto s = sin.narrow(1, 0, half).to(y.scalar_type()).contiguous();
    auto q = at::empty({b, heads, t, head_dim}, y.options());
    auto k = at::empty({b, kv_heads, t, head_dim}, y.options());
    auto v = at::empty({b, kv_heads, t, head_dim}, y.options());
    if (row_loops(y)) {
      std::array<at::Tensor, 3> qkv = {q, k, v};
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "qkv_rope", [&] {
        forward_rows<scalar_t>(Heads{b, t, all, head_dim}, yc.data_ptr<scalar_t>(), c, s, qkv,
                               {0, heads, heads + kv_heads});
      });
    } else {
      by_blocks(y.is_cpu(), b, 1, [&](int64_t i, int64_t m) {
        auto src = y4.narrow(0, i, m);
        rotate(q.narrow(0, i, m), src.narrow(1, 0, heads), c, s, 1.0);
        rotate(k.narrow(0, i, m), src.narrow(1, heads, kv_heads), c, s, 1.0);
        v.narrow(0, i, m).copy_(src.narrow(1, heads + kv_heads, kv_heads));
      });
    }
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
    if (row_loops(dy)) {
      std::array<at::Tensor, 3> g;
      for (size_t i = 0; i < 3; ++i) g[i] = grads[i].defined() ? grads[i].contiguous() : grads[i];
      AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "qkv_rope_backward", [&] {
        backward_rows<scalar_t>(Heads{b, t, all, hd}, dy.data_ptr<scalar_t>(), c, s, g,
                                {0, heads, heads + kv}, {heads, kv, kv});
      });
      return {dy, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    by_blocks(dy.is_cpu(), b, 1, [&](int64_t i, int64_t m) {
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
