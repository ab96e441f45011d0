// Cross-entropy over a language model's logits as one autograd function: mean over the targets
// that are not -100 of logsumexp(row) - row[target], in fp32 whatever the logits' kind (fp64 for
// fp64 logits).
//
// PyTorch's cross_entropy is log_softmax then nll_loss: it writes the log-probabilities (a whole
// logits-sized tensor), and its backward fills a logits-sized zero tensor, scatters into it and
// reads both back. Here the forward keeps one logsumexp per row, and the backward writes the
// gradient softmax(row)·g − g·onehot(target) once. On the CPU the rows go in blocks small enough
// to stay in cache, so each block's passes (max, exp, sum; then subtract, exp, scale) read the
// logits from memory once; fp32 rows run as two passes forward and one backward in AVX2
// (`simd.h`). Elsewhere (CUDA) the same arithmetic runs as whole-tensor ATen ops. Logits handed
// over (`consuming`: nothing else refers to them) get their gradient written over them in the
// forward, each row (fp32 CPU) or chunk of rows (elsewhere, through an fp32 copy of the chunk) at
// a time; backward then only scales it when the incoming gradient is not 1.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <stdexcept>

#include "blocks.h"
#include "guard.h"
#include "simd.h"

namespace {

using starling::block_rows;
using starling::by_blocks;
using starling::guarded;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kIgnore = -100;

/// The kind the arithmetic runs in: fp64 for fp64 logits, fp32 for every other kind.
at::ScalarType acc_kind(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

/// How many rows have a target (at least 1, so a batch of ignored rows divides by 1), as a 0-d
/// device tensor of `kind`: nothing is read on the host.
at::Tensor target_count(const at::Tensor& valid, at::ScalarType kind) {
  return valid.sum().to(kind).clamp_min(1.0);
}

/// The mean loss from each row's logsumexp and target logit, over the rows with a target.
at::Tensor mean_loss(const at::Tensor& lse, const at::Tensor& picked, const at::Tensor& valid,
                     const at::Tensor& count) {
  return ((lse - picked) * valid.to(lse.scalar_type())).sum() / count;
}

/// Refuses row `r`'s target `tp[r]`, outside a vocabulary of `v` (`r` < 0: every target was in it).
void refuse_target(int64_t r, const int64_t* tp, int64_t v) {
  if (r < 0) return;
  throw std::invalid_argument("cross-entropy: target " + std::to_string(tp[r]) + " of row " +
                              std::to_string(r) + " is outside the vocabulary of " +
                              std::to_string(v));
}

/// Runs `f(row, target, r)` over the rows of fp32 `x` ([n, v], contiguous) in parallel, each with
/// its target from `safe`; a target outside the vocabulary is refused by name after the loop.
template <typename F>
void fp32_rows(const at::Tensor& x, const at::Tensor& safe, F&& f) {
  const int64_t n = x.size(0), v = x.size(1);
  float* xp = x.data_ptr<float>();
  const int64_t* tp = safe.data_ptr<int64_t>();
  std::atomic<int64_t> bad{-1};
  starling::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (tp[r] < 0 || tp[r] >= v) {
        bad.store(r);
        continue;
      }
      f(xp + r * v, tp[r], r);
    }
  });
  refuse_target(bad.load(), tp, v);
}

/// logsumexp of every row of `x` ([n, v]) in fp32, and the logit of each row's target (0 where
/// it is ignored), as [n] fp32 tensors.
std::pair<at::Tensor, at::Tensor> rows_forward(const at::Tensor& x, const at::Tensor& safe) {
  const int64_t n = x.size(0), v = x.size(1);
  const auto acc = acc_kind(x);
  auto f32 = x.options().dtype(acc);
  if (!x.is_cpu()) {
    auto xf = x.to(acc);
    return {at::logsumexp(xf, {1}), xf.gather(1, safe.unsqueeze(1)).squeeze(1)};
  }
  auto lse = at::empty({n}, f32);
  auto picked = at::empty({n}, f32);
  if (x.scalar_type() == at::kFloat) {
    // fp32: one pass for each row's maximum and one for its sum of exponentials (`simd.h`).
    float *lp = lse.data_ptr<float>(), *pp = picked.data_ptr<float>();
    fp32_rows(x, safe, [&](float* row, int64_t t, int64_t r) {
      lp[r] = starling::simd::logsumexp(row, v);
      pp[r] = row[t];
    });
    return {lse, picked};
  }
  by_blocks(true, n, block_rows(v, x.element_size()), [&](int64_t r, int64_t m) {
    auto xb = x.narrow(0, r, m).to(acc);
    lse.narrow(0, r, m).copy_(at::logsumexp(xb, {1}));
    picked.narrow(0, r, m).copy_(xb.gather(1, safe.narrow(0, r, m).unsqueeze(1)).squeeze(1));
  });
  return {lse, picked};
}

/// The gradient of the mean loss: softmax(row)·g − g at the target, 0 on ignored rows; in `x`'s
/// kind. `g` is the incoming gradient divided by the count of targets (0-d fp32, on x's device).
at::Tensor rows_backward(const at::Tensor& x, const at::Tensor& safe, const at::Tensor& valid,
                         const at::Tensor& lse, const at::Tensor& g) {
  const int64_t n = x.size(0), v = x.size(1);
  const auto acc = acc_kind(x);
  if (!x.is_cpu()) {
    auto w = (g * valid.to(acc)).unsqueeze(1);  // [n, 1]
    auto dx = at::exp(x.to(acc) - lse.unsqueeze(1)).mul_(w);
    dx.scatter_add_(1, safe.unsqueeze(1), -w);
    return dx.to(x.scalar_type());
  }
  auto dx = at::empty_like(x);
  auto w = (g.to(acc) * valid.to(acc)).contiguous();  // [n]
  if (x.scalar_type() == at::kFloat) {
    // fp32: one pass per row writing exp(x − lse)·w, then the target's −w.
    const float *xp = x.data_ptr<float>(), *lp = lse.data_ptr<float>(), *wp = w.data_ptr<float>();
    const int64_t* tp = safe.data_ptr<int64_t>();
    float* dp = dx.data_ptr<float>();
    starling::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        starling::simd::exp_scaled(xp + r * v, lp[r], wp[r], dp + r * v, v);
        dp[r * v + tp[r]] -= wp[r];
      }
    });
    return dx;
  }
  by_blocks(true, n, block_rows(v, x.element_size()), [&](int64_t r, int64_t m) {
    auto wb = w.narrow(0, r, m).unsqueeze(1);
    auto out = dx.narrow(0, r, m);
    // In place in the gradient's own rows when it has the arithmetic's kind (no temporary).
    auto d = x.scalar_type() == acc ? out : at::empty({m, v}, x.options().dtype(acc));
    at::sub_out(d, x.narrow(0, r, m), lse.narrow(0, r, m).unsqueeze(1));
    d.exp_().mul_(wb);
    d.scatter_add_(1, safe.narrow(0, r, m).unsqueeze(1), -wb);
    if (!d.is_same(out)) out.copy_(d);
  });
  return dx;
}

/// The forward pass with the backward's work done in it, over fp32 CPU logits nothing else refers
/// to: each row, while it is in cache, gets its logsumexp and target logit and is then overwritten
/// with its gradient of the mean loss, exp(x − lse)/count − onehot(target)/count (0 on ignored
/// rows). Returns the row's logsumexp and target logit, as `rows_forward` does.
std::pair<at::Tensor, at::Tensor> rows_forward_in_place(const at::Tensor& x, const at::Tensor& safe,
                                                        const at::Tensor& valid, float count) {
  const int64_t n = x.size(0), v = x.size(1);
  auto lse = at::empty({n}, x.options());
  auto picked = at::empty({n}, x.options());
  const bool* ok = valid.data_ptr<bool>();
  float *lp = lse.data_ptr<float>(), *pp = picked.data_ptr<float>();
  fp32_rows(x, safe, [&](float* row, int64_t t, int64_t r) {
    pp[r] = row[t];
    const float w = ok[r] ? 1.0f / count : 0.0f;
    // One exponential per logit: softmax(row)·w, as the exponentials are summed.
    lp[r] = starling::simd::softmax_scaled(row, w, v);
    row[t] -= w;
  });
  return {lse, picked};
}

/// `rows_forward_in_place` for every other device and kind, in chunks of rows: on the CPU small
/// enough that their fp32 copy stays in a core's L2; on a GPU ~32 MiB of fp32 (L2-sized) but at
/// most 16 chunks, so a large batch costs ~150 kernel launches rather than one set per 32 MiB.
/// `w` is 1/count on targeted rows (a device tensor: nothing is read on the host).
std::pair<at::Tensor, at::Tensor> chunks_forward_in_place(at::Tensor& x, const at::Tensor& safe,
                                                          const at::Tensor& w) {
  const int64_t n = x.size(0), v = x.size(1);
  const auto acc = acc_kind(x);
  auto lse = at::empty({n}, x.options().dtype(acc));
  auto picked = at::empty({n}, x.options().dtype(acc));
  const int64_t rows = x.is_cpu() ? block_rows(v, 4)
                                  : std::max({int64_t{1}, (int64_t{32} << 20) / (v * 4), (n + 15) / 16});
  for (int64_t r = 0; r < n; r += rows) {
    const int64_t m = std::min(rows, n - r);
    auto xb = x.narrow(0, r, m);
    auto f = xb.to(acc);  // `xb` itself when it has the arithmetic's kind
    auto sb = safe.narrow(0, r, m).unsqueeze(1);
    auto wb = w.narrow(0, r, m).unsqueeze(1);
    auto l = at::logsumexp(f, {1}, true);
    lse.narrow(0, r, m).copy_(l.squeeze(1));
    picked.narrow(0, r, m).copy_(f.gather(1, sb).squeeze(1));
    f.sub_(l).exp_().mul_(wb).scatter_add_(1, sb, -wb);
    if (!f.is_same(xb)) xb.copy_(f);
  }
  return {lse, picked};
}

struct CrossEntropy : public torch::autograd::Function<CrossEntropy> {
  /// `in_place`: the logits are contiguous, wanted for a gradient and referred to by nothing
  /// else, so the forward may write their gradient over them.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& targets, bool in_place) {
    if (logits.dim() != 2) throw std::invalid_argument("cross-entropy: logits must be [rows, vocab]");
    if (targets.dim() != 1 || targets.size(0) != logits.size(0))
      throw std::invalid_argument("cross-entropy: " + std::to_string(targets.numel()) +
                                  " targets for " + std::to_string(logits.size(0)) + " rows");
    auto t = targets.to(at::kLong);
    auto valid = t.ne(kIgnore);
    auto safe = at::where(valid, t, at::zeros_like(t)).contiguous();
    if (in_place) {
      auto x = logits.detach();
      at::Tensor lse, picked, count;
      if (x.is_cpu() && x.scalar_type() == at::kFloat) {
        // The count of targets from the host's copy of them (CPU tensors: no device to wait for).
        auto ok = valid.contiguous();
        const bool* okp = ok.data_ptr<bool>();
        const float kept = std::max(1.0f, static_cast<float>(std::count(okp, okp + ok.numel(), true)));
        std::tie(lse, picked) = rows_forward_in_place(x, safe, ok, kept);
        count = at::full({}, kept, lse.options());
      } else {
        count = target_count(valid, acc_kind(x));
        std::tie(lse, picked) = chunks_forward_in_place(x, safe, valid.to(acc_kind(x)) / count);
      }
      ctx->saved_data["gradient"] = x;
      return mean_loss(lse, picked, valid, count);
    }
    auto x = logits.contiguous();
    auto [lse, picked] = rows_forward(x, safe);
    auto count = target_count(valid, lse.scalar_type());
    auto loss = mean_loss(lse, picked, valid, count);
    ctx->save_for_backward({x, safe, valid, lse, count});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (ctx->saved_data.count("gradient")) {
      // Written by the forward for an incoming gradient of 1 (a loss's own backward), returned as
      // it is for that on the CPU and scaled in place otherwise; a second backward through a
      // retained graph cannot undo the scaling, so it is refused.
      if (ctx->saved_data.count("scaled")) {
        throw std::invalid_argument(
            "cross-entropy: the logits were handed over and their gradient already scaled by a "
            "first backward; a second backward (retain_graph) needs `cross_entropy`");
      }
      auto dx = ctx->saved_data["gradient"].toTensor();
      const auto& g = grads[0];
      if (g.is_cpu() && g.to(at::kDouble).contiguous().data_ptr<double>()[0] == 1.0) {
        return {dx, at::Tensor(), at::Tensor()};
      }
      ctx->saved_data["scaled"] = true;
      return {dx.mul_(g), at::Tensor(), at::Tensor()};
    }
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &safe = s[1], &valid = s[2], &lse = s[3], &count = s[4];
    auto g = grads[0].to(count.scalar_type()) / count;
    return {rows_backward(x, safe, valid, lse, g), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

/// The mean cross-entropy of `logits` ([rows, vocab]) against `targets` ([rows], -100: ignored),
/// as a new 0-d fp32 tensor whose backward reaches `logits`. `consuming` != 0: the caller hands the
/// logits over, and when they need a gradient and nothing else refers to them (no other handle,
/// view or saved copy), the forward writes their gradient over them (no second logits-sized
/// tensor, no full-size fp32 copy, one pass over them less).
int starling_torch_cross_entropy(at::Tensor* logits, at::Tensor* targets, int consuming,
                                 at::Tensor** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    const at::Tensor& x = *logits;
    const bool in_place = consuming != 0 && at::GradMode::is_enabled() && x.requires_grad() &&
                          at::isFloatingType(x.scalar_type()) && x.dim() == 2 &&
                          x.is_contiguous() && x.use_count() == 1 &&
                          x.storage().use_count() == 1 && x.storage_offset() == 0;
    *out = new at::Tensor(CrossEntropy::apply(x, *targets, in_place));
  });
}

}  // extern "C"
