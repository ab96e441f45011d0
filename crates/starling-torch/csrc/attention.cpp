// Causal self-attention for training on the CPU, as one autograd function: softmax(Q·Kᵀ/√d)·V
// with grouped K/V heads, the output already in the `[batch, tokens, heads·head_dim]` layout the
// output projection reads.
//
// ATen's CPU flash attention recomputes the scores in backward and runs its small products
// through its own micro-kernels; at the head sizes of the CPU presets (head_dim 36) it reaches a
// third of what MKL's sgemm does on the same shapes, and its backward takes 2.5 times its forward.
// Here each (sequence, K/V head) pair is one task: for every query head of its group and every
// block of 64 queries, the scores against the keys up to the block's end (the rest is masked
// by causality and never computed) are one sgemm, the softmax one ATen call, the output one sgemm.
// The probabilities are kept for backward (half of a [t, t] matrix per head), which is then four
// sgemms and one element-wise pass per block (AVX2 for fp32, `simd.h`). Gradients of K and V
// accumulate inside their task, so no two threads write the same memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "blocks.h"
#include "guard.h"
#include "simd.h"

extern "C" {
// MKL's BLAS, exported by libtorch_cpu (column-major, 32-bit sizes).
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc);
}

namespace {

using starling::guarded;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// Queries per block.
constexpr int64_t kBlock = 64;

void blas(const char* ta, const char* tb, int m, int n, int k, float alpha, const float* a,
          int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(ta, tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

void blas(const char* ta, const char* tb, int m, int n, int k, double alpha, const double* a,
          int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(ta, tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

/// Row-major C[m×n] = alpha·op(A)·op(B) + beta·C, op(A) m×k and op(B) k×n (`ta`/`tb`: stored
/// transposed), each with its row stride: column-major BLAS computing Cᵀ = op(B)ᵀ·op(A)ᵀ.
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  blas(tb ? "T" : "N", ta ? "T" : "N", static_cast<int>(n), static_cast<int>(m),
       static_cast<int>(k), alpha, b, static_cast<int>(ldb), a, static_cast<int>(lda), beta, c,
       static_cast<int>(ldc));
}

/// Sizes of one call: batch, query heads, K/V heads, tokens, head size.
struct Dims {
  int64_t b, h, kvh, t, d;
  int64_t group() const { return h / kvh; }
  int64_t blocks() const { return (t + kBlock - 1) / kBlock; }
  /// First query and query count of block `qb`; its keys are [0, first + count).
  std::pair<int64_t, int64_t> block(int64_t qb) const {
    int64_t r0 = qb * kBlock;
    return {r0, std::min(kBlock, t - r0)};
  }
  /// Elements of one head's kept probabilities (its blocks' [count, first + count] one after
  /// another).
  int64_t kept() const {
    int64_t n = 0;
    for (int64_t qb = 0; qb < blocks(); ++qb) {
      auto [r0, m] = block(qb);
      n += m * (r0 + m);
    }
    return n;
  }
};

Dims dims_of(const at::Tensor& q, const at::Tensor& k) {
  return Dims{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
}

/// The output `[b, t, h·d]` and the kept probabilities `[b·h, kept]`.
template <typename T>
std::pair<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v) {
  const Dims s = dims_of(q, k);
  const int64_t hd = s.h * s.d, kept = s.kept();
  auto out = at::empty({s.b, s.t, hd}, q.options());
  auto probs = at::empty({s.b * s.h, kept}, q.options());
  const T scale = T(1) / std::sqrt(static_cast<T>(s.d));
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  T* pp = probs.data_ptr<T>();
  starling::by_pairs(s.b, s.kvh, [&](int64_t bi, int64_t kv) {
    auto scores = at::empty({kBlock * s.t}, q.options());
    T* sp = scores.data_ptr<T>();
    const T* kh = kp + (bi * s.kvh + kv) * s.t * s.d;
    const T* vh = vp + (bi * s.kvh + kv) * s.t * s.d;
    for (int64_t g = 0; g < s.group(); ++g) {
      const int64_t head = kv * s.group() + g;
      const T* qh = qp + (bi * s.h + head) * s.t * s.d;
      T* oh = op + bi * s.t * hd + head * s.d;
      T* ph = pp + (bi * s.h + head) * kept;
      for (int64_t qb = 0; qb < s.blocks(); ++qb) {
        auto [r0, m] = s.block(qb);
        const int64_t c = r0 + m;
        gemm<T>(false, true, m, c, s.d, scale, qh + r0 * s.d, s.d, kh, s.d, T(0), sp, c);
        for (int64_t i = 0; i < m; ++i) {
          std::fill(sp + i * c + r0 + i + 1, sp + (i + 1) * c, -std::numeric_limits<T>::infinity());
        }
        auto pb = at::from_blob(ph, {m, c}, q.options());
        at::_softmax_out(pb, at::from_blob(sp, {m, c}, q.options()), 1, false);
        gemm<T>(false, false, m, s.d, c, T(1), ph, c, vh, s.d, T(0), oh + r0 * hd, hd);
        ph += m * c;
      }
    }
  });
  return {out, probs};
}

/// Gradients of q, k, v from the output's gradient `dout` ([b, t, h·d], contiguous).
template <typename T>
variable_list backward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& out, const at::Tensor& probs,
                           const at::Tensor& dout) {
  const Dims s = dims_of(q, k);
  const int64_t hd = s.h * s.d, kept = s.kept();
  auto dq = at::empty_like(q);
  auto dk = at::zeros_like(k);
  auto dv = at::zeros_like(v);
  const T scale = T(1) / std::sqrt(static_cast<T>(s.d));
  const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
  const T *op = out.data_ptr<T>(), *pp = probs.data_ptr<T>(), *gp = dout.data_ptr<T>();
  T *dqp = dq.data_ptr<T>(), *dkp = dk.data_ptr<T>(), *dvp = dv.data_ptr<T>();
  starling::by_pairs(s.b, s.kvh, [&](int64_t bi, int64_t kv) {
    auto scratch = at::empty({kBlock * s.t}, q.options());
    T* ds = scratch.data_ptr<T>();
    const int64_t kvo = (bi * s.kvh + kv) * s.t * s.d;
    const T *kh = kp + kvo, *vh = vp + kvo;
    T *dkh = dkp + kvo, *dvh = dvp + kvo;
    for (int64_t g = 0; g < s.group(); ++g) {
      const int64_t head = kv * s.group() + g;
      const int64_t qo = (bi * s.h + head) * s.t * s.d;
      const T* oh = op + bi * s.t * hd + head * s.d;
      const T* gh = gp + bi * s.t * hd + head * s.d;
      const T* ph = pp + (bi * s.h + head) * kept;
      for (int64_t qb = 0; qb < s.blocks(); ++qb) {
        auto [r0, m] = s.block(qb);
        const int64_t c = r0 + m;
        const T* dob = gh + r0 * hd;
        // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale, in place.
        gemm<T>(false, true, m, c, s.d, T(1), dob, hd, vh, s.d, T(0), ds, c);
        for (int64_t i = 0; i < m; ++i) {
          const T* o = oh + (r0 + i) * hd;
          const T* go = dob + i * hd;
          T delta = 0;
          for (int64_t j = 0; j < s.d; ++j) delta += go[j] * o[j];
          starling::simd::softmax_backward(ph + i * c, delta, scale, ds + i * c, c);
        }
        gemm<T>(false, false, m, s.d, c, T(1), ds, c, kh, s.d, T(0), dqp + qo + r0 * s.d, s.d);
        gemm<T>(true, false, c, s.d, m, T(1), ds, c, qp + qo + r0 * s.d, s.d, T(1), dkh, s.d);
        gemm<T>(true, false, c, s.d, m, T(1), ph, c, dob, hd, T(1), dvh, s.d);
        ph += m * c;
      }
    }
  });
  return {dq, dk, dv};
}

struct CausalAttention : public torch::autograd::Function<CausalAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v) {
    auto [out, probs] = q.scalar_type() == at::kDouble ? forward_cpu<double>(q, k, v)
                                                       : forward_cpu<float>(q, k, v);
    ctx->save_for_backward({q, k, v, out});
    ctx->saved_data["probs"] = probs;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto probs = ctx->saved_data["probs"].toTensor();
    auto dout = grads[0].contiguous();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3];
    return q.scalar_type() == at::kDouble ? backward_cpu<double>(q, k, v, out, probs, dout)
                                          : backward_cpu<float>(q, k, v, out, probs, dout);
  }
};

}  // namespace

extern "C" {

/// Causal attention of q [b, h, t, d] over k, v [b, kvh, t, d] (h a multiple of kvh; CPU, fp32 or
/// fp64), differentiable: a new tensor [b, t, h·d] in `*out`.
int starling_torch_causal_attention(at::Tensor* q, at::Tensor* k, at::Tensor* v,
                                    at::Tensor** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    const auto kind = q->scalar_type();
    if (q->dim() != 4 || k->dim() != 4 || v->dim() != 4) {
      throw std::invalid_argument("causal attention: q, k and v must be [batch, heads, tokens, head_dim]");
    }
    if (!q->is_cpu() || !k->is_cpu() || !v->is_cpu()) {
      throw std::invalid_argument("causal attention: CPU tensors only (use SDPA elsewhere)");
    }
    if ((kind != at::kFloat && kind != at::kDouble) || k->scalar_type() != kind ||
        v->scalar_type() != kind) {
      throw std::invalid_argument("causal attention: q, k and v must all be fp32 or all fp64");
    }
    if (k->sizes() != v->sizes() || k->size(0) != q->size(0) || k->size(2) != q->size(2) ||
        k->size(3) != q->size(3) || k->size(1) == 0 || q->size(1) % k->size(1) != 0) {
      throw std::invalid_argument(
          "causal attention: k and v must be [batch, kv_heads, tokens, head_dim] like q, with the "
          "query heads a multiple of kv_heads");
    }
    *out = new at::Tensor(CausalAttention::apply(q->contiguous(), k->contiguous(), v->contiguous()));
  });
}

}  // extern "C"
