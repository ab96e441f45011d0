// Autograd pieces tch cannot define (it has no custom autograd functions): activation
// recomputation of a block whose forward is a Rust callback.
//
// The recomputed block is a torch::autograd::Function: its forward runs the callback without
// recording a graph and keeps only the input; its backward runs the callback again with the graph
// recorded and back-propagates through it (PyTorch's reentrant checkpoint), so the block's
// parameters receive their gradients there and the input's gradient is returned.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

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

}  // namespace

extern "C" {

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
