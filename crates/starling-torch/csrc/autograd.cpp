// Autograd pieces tch cannot define (it has no custom autograd functions): activation
// recomputation of a block whose forward is a Rust callback, and collectives that autograd
// understands, over a c10d::ProcessGroup registered by name (starling-dist registers its groups).
//
// The recomputed block is a torch::autograd::Function: its forward runs the callback without
// recording a graph and keeps only the input; its backward runs the callback again with the graph
// recorded and back-propagates through it (PyTorch's reentrant checkpoint), so the block's
// parameters receive their gradients there and the input's gradient is returned.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "guard.h"

extern "C" {
/// A block's forward: reads `x` (a new handle the callee owns and frees), writes a new handle
/// to the result into `*out` (owned by the caller); 0, or 1 with a message in `err`.
typedef int (*starling_block_fn)(void* ctx, at::Tensor* x, at::Tensor** out, char* err,
                                 size_t len);
/// Frees the callback's context.
typedef void (*starling_drop_fn)(void* ctx);
}

namespace {

/// The Rust callback and its context, owned by the autograd graph until the backward ran (or the
/// graph is dropped).
struct RustBlock : torch::CustomClassHolder {
  starling_block_fn f;
  void* ctx;
  starling_drop_fn drop;

  RustBlock(starling_block_fn f, void* ctx, starling_drop_fn drop) : f(f), ctx(ctx), drop(drop) {}
  RustBlock(const RustBlock&) = delete;
  RustBlock& operator=(const RustBlock&) = delete;
  ~RustBlock() override {
    if (drop != nullptr) drop(ctx);
  }

  at::Tensor call(const at::Tensor& x) const {
    char err[4096] = {0};
    at::Tensor* out = nullptr;
    if (f(ctx, new at::Tensor(x), &out, err, sizeof err) != 0 || out == nullptr)
      throw std::runtime_error(std::string("recomputed block: ") + err);
    at::Tensor y = std::move(*out);
    delete out;
    return y;
  }
};

struct Recompute : public torch::autograd::Function<Recompute> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<RustBlock> block) {
    // Function::apply runs this without recording a graph: nothing of the block is kept.
    at::Tensor y = block->call(x);
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = at::IValue::make_capsule(block);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto block = c10::static_intrusive_pointer_cast<RustBlock>(ctx->saved_data["block"].toCapsule());
    at::Tensor y;
    {
      at::AutoGradMode on(true);
      y = block->call(x);
    }
    torch::autograd::backward({y}, {grads[0]});
    // One gradient per forward argument; the callback gets none.
    return {x.grad(), at::Tensor()};
  }
};

// ---- collectives with autograd -------------------------------------------------------------

c10::intrusive_ptr<c10d::ProcessGroup> group(const std::string& name) {
  return c10d::resolve_process_group(name);
}

/// Nanoseconds spent waiting in the collectives below (forward and backward), every thread.
std::atomic<uint64_t> g_collective_ns{0};

/// Runs a collective's work and counts the time until it completes.
template <typename F>
void timed(F&& f) {
  auto t = std::chrono::steady_clock::now();
  f();
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::steady_clock::now() - t)
                .count();
  g_collective_ns.fetch_add(static_cast<uint64_t>(ns));
}

/// Every rank's `x` concatenated along dim 0, in rank order.
at::Tensor gather(const std::string& name, const at::Tensor& x) {
  auto pg = group(name);
  auto in = x.contiguous();
  auto sizes = in.sizes().vec();
  if (sizes.empty()) throw std::invalid_argument("all-gather of a 0-d tensor");
  sizes[0] *= pg->getSize();
  auto out = at::empty(sizes, in.options());
  timed([&] { pg->_allgather_base(out, in)->wait(); });
  return out;
}

/// A reduce-scatter started and not waited for: the work, its input (kept alive) and output.
struct StartedScatter {
  c10::intrusive_ptr<c10d::Work> work;
  at::Tensor in;
  at::Tensor out;
};

/// Starts the sum over ranks of `x`, this rank's 1/world share along dim 0.
StartedScatter start_scatter_sum(const std::string& name, const at::Tensor& x) {
  auto pg = group(name);
  auto in = x.contiguous();
  auto sizes = in.sizes().vec();
  const int64_t w = pg->getSize();
  if (sizes.empty() || sizes[0] % w != 0)
    throw std::invalid_argument("reduce-scatter of a tensor whose first dimension (" +
                                std::to_string(sizes.empty() ? 0 : sizes[0]) +
                                ") the world size " + std::to_string(w) + " does not divide");
  sizes[0] /= w;
  auto out = at::empty(sizes, in.options());
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  return {pg->_reduce_scatter_base(out, in, o), in, out};
}

/// The sum over ranks of `x`, this rank's 1/world share along dim 0.
at::Tensor scatter_sum(const std::string& name, const at::Tensor& x) {
  auto s = start_scatter_sum(name, x);
  timed([&] { s.work->wait(); });
  return s.out;
}

/// The sum over ranks of `x`, a new tensor.
at::Tensor sum(const std::string& name, const at::Tensor& x) {
  auto pg = group(name);
  std::vector<at::Tensor> ts{x.contiguous().clone()};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  timed([&] { pg->allreduce(ts, o)->wait(); });
  return ts[0];
}

/// All-gather whose backward is a reduce-scatter (FSDP's parameter gather).
struct AllGather : public torch::autograd::Function<AllGather> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::string& name) {
    ctx->saved_data["group"] = name;
    return gather(name, x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    return {scatter_sum(ctx->saved_data["group"].toStringRef(), g[0]), at::Tensor()};
  }
};

/// All-gather in bfloat16 whose backward reduce-scatters the gradient in the input's precision
/// (FSDP2's mixed precision: half the bytes gathered, gradients reduced in fp32).
struct AllGatherBf16 : public torch::autograd::Function<AllGatherBf16> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::string& name) {
    ctx->saved_data["group"] = name;
    ctx->saved_data["kind"] = static_cast<int64_t>(x.scalar_type());
    return gather(name, x.to(at::kBFloat16));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto kind = static_cast<at::ScalarType>(ctx->saved_data["kind"].toInt());
    return {scatter_sum(ctx->saved_data["group"].toStringRef(), g[0].to(kind)), at::Tensor()};
  }
};

/// A reduce-scatter backward started and did not wait for, and the leaf whose gradient its
/// result is.
struct PendingReduction {
  StartedScatter scatter;
  at::Tensor leaf;
};

std::mutex g_pending_mutex;
std::vector<PendingReduction> g_pending;

/// All-gather (in bfloat16 when asked) whose backward starts the gradient's reduce-scatter and
/// returns at once: backward goes on computing while the gradient travels (FSDP's overlap). The
/// result reaches the leaf's `.grad` in `starling_torch_finish_reductions`.
struct AllGatherDeferred : public torch::autograd::Function<AllGatherDeferred> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::string& name, bool bf16) {
    if (!x.is_leaf()) throw std::invalid_argument("a deferred all-gather needs a leaf tensor");
    ctx->saved_data["group"] = name;
    ctx->saved_data["leaf"] = x;
    return gather(name, bf16 ? x.to(at::kBFloat16) : x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto leaf = ctx->saved_data["leaf"].toTensor();
    auto s = start_scatter_sum(ctx->saved_data["group"].toStringRef(),
                               g[0].to(leaf.scalar_type()));
    {
      std::lock_guard<std::mutex> lock(g_pending_mutex);
      g_pending.push_back({std::move(s), leaf});
    }
    // No gradient through autograd: the leaf gets it when the reduction is finished.
    return {at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

/// Reduce-scatter (sum) whose backward is an all-gather (sequence parallel, FSDP's gradients).
struct ReduceScatter : public torch::autograd::Function<ReduceScatter> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::string& name) {
    ctx->saved_data["group"] = name;
    return scatter_sum(name, x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    return {gather(ctx->saved_data["group"].toStringRef(), g[0]), at::Tensor()};
  }
};

/// Megatron's f: identity forward, all-reduce backward (the input of a column-parallel layer).
struct CopyToGroup : public torch::autograd::Function<CopyToGroup> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::string& name) {
    ctx->saved_data["group"] = name;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    return {sum(ctx->saved_data["group"].toStringRef(), g[0]), at::Tensor()};
  }
};

/// Megatron's g: all-reduce forward, identity backward (the output of a row-parallel layer).
struct ReduceFromGroup : public torch::autograd::Function<ReduceFromGroup> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x,
                            const std::string& name) {
    return sum(name, x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list g) {
    return {g[0], at::Tensor()};
  }
};

}  // namespace

extern "C" {

/// Seconds (as nanoseconds) spent in the collectives with autograd so far, every thread.
uint64_t starling_torch_collective_ns() { return g_collective_ns.load(); }

/// One collective with autograd over the group registered as `name`: 0 all-gather (backward:
/// reduce-scatter), 1 reduce-scatter of the sum (backward: all-gather), 2 identity (backward:
/// all-reduce), 3 all-reduce (backward: identity), 4 all-gather in bfloat16 (backward:
/// reduce-scatter in the input's precision), 5 and 6 all-gather in the input's precision or
/// bfloat16 whose backward reduce-scatter is left running (see the next function). Writes a new
/// handle into `*out`.
int starling_torch_collective(int op, at::Tensor* x, const char* name, at::Tensor** out, char* err,
                              size_t len) {
  return starling::guarded(err, len, [&] {
    if (x == nullptr || name == nullptr) throw std::invalid_argument("null argument");
    std::string n(name);
    at::Tensor y;
    switch (op) {
      case 0: y = AllGather::apply(*x, n); break;
      case 1: y = ReduceScatter::apply(*x, n); break;
      case 2: y = CopyToGroup::apply(*x, n); break;
      case 3: y = ReduceFromGroup::apply(*x, n); break;
      case 4: y = AllGatherBf16::apply(*x, n); break;
      case 5: y = AllGatherDeferred::apply(*x, n, false); break;
      case 6: y = AllGatherDeferred::apply(*x, n, true); break;
      default: throw std::invalid_argument("unknown collective " + std::to_string(op));
    }
    *out = new at::Tensor(std::move(y));
  });
}

/// Waits for every reduce-scatter the deferred all-gathers' backward started and adds each
/// result into its leaf's `.grad`; writes the time waited into `*waited_ns`.
int starling_torch_finish_reductions(uint64_t* waited_ns, char* err, size_t len) {
  return starling::guarded(err, len, [&] {
    std::vector<PendingReduction> all;
    {
      std::lock_guard<std::mutex> lock(g_pending_mutex);
      all.swap(g_pending);
    }
    const auto start = std::chrono::steady_clock::now();
    at::NoGradGuard no_grad;
    for (auto& p : all) {
      timed([&] { p.scatter.work->wait(); });
      auto& grad = p.leaf.mutable_grad();
      if (grad.defined())
        grad.add_(p.scatter.out);
      else
        grad = p.scatter.out;
    }
    if (waited_ns != nullptr)
      *waited_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::steady_clock::now() - start)
                                             .count());
  });
}

/// `f(x)` with activation recomputation: nothing but `x` is kept for backward, where `f` runs
/// again. Takes ownership of `ctx` (freed by `drop` when the graph no longer needs it, even on
/// failure). Writes a new handle to the result into `*out`.
int starling_torch_recompute(at::Tensor* x, starling_block_fn f, void* ctx, starling_drop_fn drop,
                             at::Tensor** out, char* err, size_t len) {
  auto block = c10::make_intrusive<RustBlock>(f, ctx, drop);
  return starling::guarded(err, len, [&] {
    if (x == nullptr) throw std::invalid_argument("recompute of a null tensor");
    *out = new at::Tensor(Recompute::apply(*x, std::move(block)));
  });
}

}  // extern "C"
