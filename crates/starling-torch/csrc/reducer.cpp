// Data-parallel gradient reduction overlapped with backward, as PyTorch DDP's reducer does it: a
// hook after each parameter's gradient accumulates marks it ready; when every parameter of a
// bucket (~25 MB, in reverse parameter order, where backward produces them first) is ready, the
// bucket's all-reduce starts asynchronously on the group registered by name, while backward goes
// on. `finish` starts what never became ready, waits for every bucket and scales the sums into
// means. Each parameter's gradient is a view into its bucket's flat buffer (DDP's
// `gradient_as_bucket_view=True`): autograd accumulates into the bucket in place, so nothing is
// copied in before the all-reduce or out after it.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "guard.h"

namespace {

struct ReducerState {
  std::string group;
  std::vector<at::Tensor> params;
  std::vector<std::vector<size_t>> buckets;  // parameter indices
  std::vector<size_t> bucket_of;
  std::vector<size_t> pending;
  std::vector<at::Tensor> flat;
  std::vector<c10::intrusive_ptr<c10d::Work>> work;
  bool armed = false;
  uint64_t wait_ns = 0;
  std::mutex mu;

  /// Makes every gradient of bucket `b` a view into its flat buffer (keeping any value it had).
  void bind(size_t b) {
    at::NoGradGuard no_grad;
    int64_t n = 0;
    for (size_t i : buckets[b]) n += params[i].numel();
    flat[b] = at::zeros({n}, params[buckets[b].front()].options());
    int64_t off = 0;
    for (size_t i : buckets[b]) {
      auto& p = params[i];
      auto view = flat[b].narrow(0, off, p.numel()).view(p.sizes());
      off += p.numel();
      auto& grad = p.mutable_grad();
      if (grad.defined()) view.copy_(grad);
      grad = view;
    }
  }

  /// Whether some gradient of bucket `b` stopped being a view into it (replaced, set to None).
  bool unbound(size_t b) {
    for (size_t i : buckets[b]) {
      const auto& g = params[i].grad();
      if (!g.defined() || !g.is_alias_of(flat[b])) return true;
    }
    return false;
  }

  void launch(size_t b) {
    std::vector<at::Tensor> ts{flat[b]};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    work[b] = c10d::resolve_process_group(group)->allreduce(ts, o);
  }

  void ready(size_t i) {
    std::lock_guard<std::mutex> g(mu);
    if (!armed) return;
    size_t b = bucket_of[i];
    if (pending[b] > 0 && --pending[b] == 0 && !work[b]) launch(b);
  }
};

struct Reducer {
  std::shared_ptr<ReducerState> state;
  // The accumulators the hooks hang on (a parameter holds its own only weakly).
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
};

}  // namespace

extern "C" {

/// A reducer for n parameters over the group registered as `name`, in buckets of about
/// `bucket_bytes`; null with the error in `err`.
void* starling_torch_reducer_new(at::Tensor** params, size_t n, const char* name,
                                 int64_t bucket_bytes, char* err, size_t len) {
  Reducer* out = nullptr;
  starling::guarded(err, len, [&] {
    auto r = std::make_unique<Reducer>();
    auto s = std::make_shared<ReducerState>();
    s->group = name;
    for (size_t i = 0; i < n; ++i) s->params.push_back(*params[i]);
    s->bucket_of.assign(n, 0);
    // Reverse order: backward reaches the last parameters first.
    int64_t size = 0;
    for (size_t k = n; k-- > 0;) {
      if (s->buckets.empty() || size >= bucket_bytes) {
        s->buckets.emplace_back();
        size = 0;
      }
      s->buckets.back().push_back(k);
      s->bucket_of[k] = s->buckets.size() - 1;
      size += s->params[k].numel() * s->params[k].element_size();
    }
    s->pending.assign(s->buckets.size(), 0);
    s->flat.resize(s->buckets.size());
    s->work.resize(s->buckets.size());
    for (size_t b = 0; b < s->buckets.size(); ++b) s->bind(b);
    for (size_t i = 0; i < n; ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(s->params[i]);
      if (!acc) throw std::invalid_argument("a parameter that is not a leaf requiring grad");
      std::weak_ptr<ReducerState> weak = s;
      acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [weak, i](const torch::autograd::variable_list& outputs,
                    const torch::autograd::variable_list&) {
            if (auto st = weak.lock()) st->ready(i);
            return outputs;
          }));
      r->accumulators.push_back(std::move(acc));
    }
    r->state = std::move(s);
    out = r.release();
  });
  return out;
}

/// Frees a reducer (its hooks stay on the parameters and do nothing).
void starling_torch_reducer_free(void* r) { delete static_cast<Reducer*>(r); }

/// Arms the hooks for the next backward (the last micro-batch of a step).
void starling_torch_reducer_arm(void* rp) {
  auto& s = *static_cast<Reducer*>(rp)->state;
  std::lock_guard<std::mutex> g(s.mu);
  s.armed = true;
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    // Someone replaced a gradient (zero_grad(set_to_none), an optimizer): bind it again.
    if (s.unbound(b)) s.bind(b);
    s.pending[b] = s.buckets[b].size();
    s.work[b].reset();
  }
}

/// Starts the buckets not started yet, waits for all, scales the sums (in the gradients) by `scale`.
int starling_torch_reducer_finish(void* rp, double scale, char* err, size_t len) {
  auto& s = *static_cast<Reducer*>(rp)->state;
  return starling::guarded(err, len, [&] {
    std::lock_guard<std::mutex> g(s.mu);
    for (size_t b = 0; b < s.buckets.size(); ++b)
      if (!s.work[b]) s.launch(b);
    auto t = std::chrono::steady_clock::now();
    for (auto& w : s.work) w->wait();
    s.wait_ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::steady_clock::now() - t)
                                           .count());
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      s.flat[b].mul_(scale);
      s.work[b].reset();
    }
    s.armed = false;
  });
}

/// Nanoseconds `finish` has waited for buckets in all (the communication backward did not hide).
uint64_t starling_torch_reducer_wait_ns(void* rp) {
  return static_cast<Reducer*>(rp)->state->wait_ns;
}

}  // extern "C"
