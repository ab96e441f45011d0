//! starling's C++ layer over ATen, for what the `tch` crate has no binding for: ATen's fused
//! AdamW kernel, foreach operations over tensor lists, a counter of host synchronisations, and
//! activation recomputation (a custom autograd function around a Rust callback).
//!
//! Tensors cross the boundary as tch's own handles (each an `at::Tensor*`), so autograd, devices
//! and dtypes come along; nothing is copied. The C++ source is `csrc/starling_torch.cpp`, compiled
//! against the torch wheel's headers by `build.rs`.
//!
//! ```no_run
//! use tch::{Device, Kind, Tensor};
//! let mut p = Tensor::ones([4], (Kind::Float, Device::Cpu));
//! let g = Tensor::full([4], 0.5, (Kind::Float, Device::Cpu));
//! let norm = starling_torch::global_norm(&[&g]).unwrap(); // 1.0, still a tensor
//! let m = p.zeros_like();
//! let v = p.zeros_like();
//! let step = Tensor::from(1.0f32);
//! let adam = starling_torch::AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.95, weight_decay: 0.1, eps: 1e-8 };
//! starling_torch::fused_adamw_(&[&p], &[&g], &[&m], &[&v], &step, &adam, None, None).unwrap();
//! # let _ = (&mut p, norm);
//! ```

mod ffi;
pub mod optim;
pub mod profile;
mod step_graph;

use tch::Tensor;

/// An error raised by libtorch inside the C++ layer (its message), or a refused argument.
#[derive(Debug, thiserror::Error)]
#[error("torch: {0}")]
pub struct Error(pub String);

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// AdamW's hyper-parameters for one fused step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate (ignored when a learning-rate tensor is passed).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Decoupled weight decay (applied as `p ← p·(1 − lr·wd)` before the Adam update).
    pub weight_decay: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

/// One AdamW step over parameters `params` with gradients `grads` and moments `m`, `v` (all
/// updated in place) through ATen's fused kernel. `step` is a 0-d float tensor on the parameters'
/// device holding the step number (1 for the first update) for the bias corrections. `lr`, when
/// given, is a 0-d device tensor used instead of `hyper.lr` (for captured graphs). When
/// `found_inf` (a 0-d float tensor) holds 1 the step changes nothing.
#[allow(clippy::too_many_arguments)]
pub fn fused_adamw_(
    params: &[&Tensor],
    grads: &[&Tensor],
    m: &[&Tensor],
    v: &[&Tensor],
    step: &Tensor,
    hyper: &AdamWHyper,
    lr: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(Error(format!(
            "fused AdamW: {} parameters, {} gradients, {} first and {} second moments",
            n,
            grads.len(),
            m.len(),
            v.len()
        )));
    }
    ffi::fused_adamw_(params, grads, m, v, step, hyper, lr, found_inf).map_err(Error)
}

/// The L2 norm over every element of `tensors` (computed in fp32), as a 0-d tensor on their device:
/// no value reaches the host.
pub fn global_norm(tensors: &[&Tensor]) -> Result<Tensor> {
    ffi::global_norm(tensors).map_err(Error)
}

/// Multiplies every tensor in place by the 0-d tensor `scale`, without reading it on the host.
pub fn foreach_mul_(tensors: &[&Tensor], scale: &Tensor) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    ffi::foreach_mul_(tensors, scale).map_err(Error)
}

/// Zeroes every tensor in place.
pub fn foreach_zero_(tensors: &[&Tensor]) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    ffi::foreach_zero_(tensors).map_err(Error)
}

/// Drops every tensor's gradient (PyTorch's `zero_grad(set_to_none=True)`): the next backward
/// hands its gradient over instead of adding it into zeros.
pub fn clear_grads(tensors: &[&Tensor]) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    ffi::clear_grads(tensors).map_err(Error)
}

/// Copies a tensor's values to the host as f64: the one deliberate device read, counted by the
/// [`SyncCounter`].
pub fn read_f64(t: &Tensor) -> Result<Vec<f64>> {
    ffi::read_f64(t).map_err(Error)
}

/// The mean cross-entropy of `logits` (`[rows, vocab]`, any float kind) against `targets`
/// (`[rows]`, -100: ignored), as a 0-d fp32 tensor (fp64 for fp64 logits): the value of PyTorch's `cross_entropy`, with
/// one logsumexp per row kept for backward instead of the log-probabilities, and a backward that
/// writes the gradient once (`csrc/loss.cpp`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    ffi::cross_entropy(logits, targets, false).map_err(Error)
}

/// [`cross_entropy`] of logits handed over: when they need a gradient and nothing else refers to
/// them (no other handle, no view of them alive), the forward writes their gradient over them
/// while each row (or chunk of rows) is in cache: no second logits-sized tensor, no full-size
/// fp32 copy of bf16 logits, one pass over them less. Otherwise the same as [`cross_entropy`]. A
/// second backward through a retained graph is refused when the first scaled the gradient.
pub fn cross_entropy_consuming(logits: Tensor, targets: &Tensor) -> Result<Tensor> {
    ffi::cross_entropy(&logits, targets, true).map_err(Error)
}

/// `silu(y[..., :ff]) * y[..., ff:]` for a fused gate|up product `y` (last dimension 2·ff):
/// Llama's SwiGLU without splitting the product, with a backward that writes `y`'s gradient as
/// one tensor (`csrc/swiglu.cpp`).
pub fn swiglu(y: &Tensor) -> Result<Tensor> {
    ffi::swiglu(y).map_err(Error)
}

/// Causal self-attention for training on the CPU: `softmax(q·kᵀ/√d)·v` with each query seeing
/// the keys up to its own position, for `q` `[batch, heads, time, head_dim]` and `k`, `v`
/// `[batch, kv_heads, time, head_dim]` (grouped heads: `heads` a multiple of `kv_heads`), fp32 or
/// fp64; the output as `[batch, time, heads·head_dim]`, the layout the output projection reads.
/// It keeps the attention probabilities for backward (half a `[time, time]` matrix per head)
/// instead of recomputing them, and runs on MKL's GEMM (`csrc/attention.cpp`).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    ffi::causal_attention(q, k, v).map_err(Error)
}

/// RMSNorm of `x` over its last dimension with weight `w` (`[d]`): `x · rsqrt(mean(x²) + eps) · w`,
/// on the CPU in fp32 or fp64, one pass per row forward and one backward (ATen's `rms_norm` is a
/// composition autograd differentiates op by op; `csrc/rmsnorm.cpp`).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    ffi::rms_norm(x, w, eps).map_err(Error)
}

/// Q, K and V (`[batch, heads, time, head_dim]` each, Q and K rotated) from a fused Q|K|V
/// product `y` (`[batch, time, (heads + 2·kv_heads)·head_dim]`) and the rotary tables `cos`, `sin`
/// (`[time, head_dim]`, HF layout) of its positions: split, rotary embedding and the heads'
/// layout in one pass, with a backward that writes `y`'s gradient as one tensor (`csrc/rope.cpp`).
pub fn qkv_rope(
    y: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
) -> Result<[Tensor; 3]> {
    ffi::qkv_rope(y, cos, sin, [heads, kv_heads, head_dim]).map_err(Error)
}

/// `f(x)` with activation recomputation: the graph keeps only `x`, and `f` runs again (with its
/// graph recorded) when backward reaches it, so the parameters `f` uses get their gradients then.
/// `f` must compute the same function both times (no dropout, no state it changes); it owns what
/// it needs (shallow clones of its weights), because the graph may outlive the caller's borrow.
/// Without a graph (no input requires a gradient, or gradients are off) it is `f(x)`.
pub fn recompute(x: &Tensor, f: impl FnMut(&Tensor) -> Tensor + Send + 'static) -> Result<Tensor> {
    ffi::recompute(x, Box::new(f)).map_err(Error)
}

/// Collectives that autograd differentiates, over a c10d process group registered by name
/// (`starling_dist::ProcessGroup::name`): the building blocks of FSDP and tensor parallelism.
/// Every rank of the group calls each one in the same order.
pub mod collective {
    use crate::{ffi, Error, Result};
    use tch::Tensor;

    /// Data-parallel gradient averaging overlapped with backward (PyTorch DDP's reducer): a
    /// hook after each parameter's gradient accumulation starts a bucket's all-reduce as soon as
    /// all of its gradients are ready. Arm it before the backward of a step's last micro-batch;
    /// [`Reducer::finish`] then waits and leaves the mean gradient in every parameter.
    #[derive(Debug)]
    pub struct Reducer {
        raw: ffi::RawReducer,
        world: usize,
    }

    impl Reducer {
        /// Hooks `params` (leaves requiring gradients, in the same order on every rank) to the
        /// group registered as `group` of `world` ranks, in buckets of about `bucket_bytes`.
        pub fn new(
            params: &[&Tensor],
            group: &str,
            world: usize,
            bucket_bytes: i64,
        ) -> Result<Self> {
            let raw = ffi::RawReducer::new(params, group, bucket_bytes).map_err(Error)?;
            Ok(Self { raw, world })
        }

        /// The next backward reduces (buckets start as their gradients become ready).
        pub fn arm(&mut self) {
            self.raw.arm();
        }

        /// Starts the buckets that are not started, waits for all and writes the mean over the
        /// ranks into every gradient.
        pub fn finish(&mut self) -> Result<()> {
            self.raw.finish(1.0 / self.world as f64).map_err(Error)
        }

        /// Time [`Reducer::finish`] has waited in all: the communication backward did not hide.
        pub fn exposed(&self) -> std::time::Duration {
            std::time::Duration::from_nanos(self.raw.wait_ns())
        }
    }

    /// Time this process has spent waiting in these collectives (forward and backward) so far.
    pub fn time_spent() -> std::time::Duration {
        std::time::Duration::from_nanos(ffi::collective_ns())
    }

    /// Every rank's `x` concatenated along dim 0 in rank order; backward reduce-scatters (sums)
    /// the gradient back to each rank's share.
    pub fn all_gather(x: &Tensor, group: &str) -> Result<Tensor> {
        ffi::collective(0, x, group).map_err(Error)
    }

    /// Every rank's `x` in bfloat16, concatenated along dim 0 in rank order; backward
    /// reduce-scatters the gradient in `x`'s own precision (FSDP's mixed precision: half the
    /// bytes gathered, gradients summed in fp32).
    pub fn all_gather_bf16(x: &Tensor, group: &str) -> Result<Tensor> {
        ffi::collective(4, x, group).map_err(Error)
    }

    /// Every rank's `x` (a leaf; in bfloat16 with `bf16`) concatenated along dim 0, whose
    /// backward starts the reduce-scatter of the gradient and goes on without waiting (FSDP's
    /// overlap of gradient reduction with backward): the summed share reaches `x.grad()` in
    /// [`finish_reductions`], in `x`'s own precision.
    pub fn all_gather_deferred(x: &Tensor, group: &str, bf16: bool) -> Result<Tensor> {
        ffi::collective(if bf16 { 6 } else { 5 }, x, group).map_err(Error)
    }

    /// Waits for the reduce-scatters [`all_gather_deferred`]'s backward started and adds each
    /// into its leaf's gradient; returns the time waited (the communication backward did not hide).
    pub fn finish_reductions() -> Result<std::time::Duration> {
        ffi::finish_reductions()
            .map(std::time::Duration::from_nanos)
            .map_err(Error)
    }

    /// The sum over ranks of `x`, this rank's 1/world share along dim 0 (which the world size
    /// must divide); backward all-gathers the gradient.
    pub fn reduce_scatter(x: &Tensor, group: &str) -> Result<Tensor> {
        ffi::collective(1, x, group).map_err(Error)
    }

    /// `x` unchanged; backward sums the gradient over ranks (Megatron's f, before a
    /// column-parallel layer).
    pub fn copy_to_group(x: &Tensor, group: &str) -> Result<Tensor> {
        ffi::collective(2, x, group).map_err(Error)
    }

    /// The sum over ranks of `x`; backward passes the gradient unchanged (Megatron's g, after a
    /// row-parallel layer).
    pub fn reduce_from_group(x: &Tensor, group: &str) -> Result<Tensor> {
        ffi::collective(3, x, group).map_err(Error)
    }
}

/// CUDA facts and tools tch does not reach: the caching allocator's peak, the device's name, side
/// streams and CUDA graphs. The facts answer `None` when this library was built without its CUDA
/// part (a CPU-only torch wheel); streams and graphs fail with a message there or without a GPU.
pub mod cuda {
    use crate::{ffi, Error, Result};

    pub use crate::step_graph::{StepGraph, StepOutputs};

    /// Whether the CUDA part was compiled in.
    pub fn available() -> bool {
        ffi::has_cuda()
    }

    /// Peak bytes the caching allocator handed out on `device` since the last
    /// [`reset_peak_memory`] (`torch.cuda.max_memory_allocated`).
    pub fn max_memory_allocated(device: usize) -> Result<Option<u64>> {
        if !available() {
            return Ok(None);
        }
        let b = ffi::cuda_max_memory_allocated(device as i32).map_err(Error)?;
        Ok(u64::try_from(b).ok())
    }

    /// Starts a new peak for [`max_memory_allocated`].
    pub fn reset_peak_memory(device: usize) -> Result<()> {
        if !available() {
            return Ok(());
        }
        ffi::cuda_reset_peak(device as i32).map_err(Error)
    }

    /// The name the driver gives `device` (`NVIDIA H200`).
    pub fn device_name(device: usize) -> Result<Option<String>> {
        if !available() {
            return Ok(None);
        }
        let n = ffi::cuda_device_name(device as i32).map_err(Error)?;
        Ok((!n.is_empty()).then_some(n))
    }

    /// Runs `f` with a fresh side stream current on `device` (it first waits for the current
    /// stream, which then waits for it): where warm-up before a capture runs, as in PyTorch.
    pub fn on_side_stream<R>(device: usize, f: impl FnOnce() -> R) -> Result<R> {
        let s = ffi::side_stream_begin(device as i32).map_err(Error)?;
        let r = f();
        ffi::side_stream_end(s).map_err(Error)?;
        Ok(r)
    }

    /// A CUDA graph (`torch.cuda.CUDAGraph`): the kernels one capture launched, launched again by
    /// [`Graph::replay`] with one call. What the captured work reads and writes must stay in the
    /// same tensors (copy new inputs into them before each replay), and nothing inside may read a
    /// value on the host.
    #[derive(Debug)]
    pub struct Graph {
        raw: *mut std::ffi::c_void,
        captured: bool,
    }

    impl Graph {
        /// An empty graph on `device`; fails without the CUDA part.
        pub fn new(device: usize) -> Result<Self> {
            let raw = ffi::graph_new(device as i32).map_err(Error)?;
            Ok(Self {
                raw,
                captured: false,
            })
        }

        /// Records what `f` launches on the device (after waiting for the device, on a side
        /// stream, into the graph's own memory pool) without running it; a graph is captured
        /// once. `f`'s result is returned when the capture succeeded.
        pub fn capture<R>(&mut self, f: impl FnOnce() -> R) -> Result<R> {
            if self.captured {
                return Err(Error("CUDA graph: already captured".into()));
            }
            ffi::graph_capture_begin(self.raw).map_err(Error)?;
            // The capture ends (and the previous stream comes back) even when `f` panics.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let end = ffi::graph_capture_end(self.raw).map_err(Error);
            let r = r.unwrap_or_else(|p| std::panic::resume_unwind(p));
            end?;
            self.captured = true;
            Ok(r)
        }

        /// Launches the captured work on the current stream (no host wait).
        pub fn replay(&self) -> Result<()> {
            if !self.captured {
                return Err(Error("CUDA graph: nothing captured".into()));
            }
            ffi::graph_replay(self.raw).map_err(Error)
        }
    }

    impl Drop for Graph {
        fn drop(&mut self) {
            ffi::graph_free(self.raw);
        }
    }
}

/// Makes this process's allocator (glibc malloc) keep the memory tensors free for reuse instead of
/// mapping large blocks afresh and giving them back on every free: a CPU training step allocates
/// and frees the same activations each step, and with glibc's defaults the kernel faults in and
/// zeroes every page of them again each time (a quarter of `small`'s step on a 2-core VM; what
/// PyTorch's CPU tuning guide gets from preloading jemalloc or tcmalloc). Freed memory stays with
/// the process until it exits. Call it once at the start of a training process; returns whether
/// it applied (glibc only).
pub fn retain_freed_memory() -> bool {
    ffi::retain_freed_memory()
}

/// The environment that gives a child process (a PyTorch reference) the same allocator settings as
/// [`retain_freed_memory`], through glibc's tunables.
pub const RETAIN_FREED_MEMORY_ENV: (&str, &str) = (
    "GLIBC_TUNABLES",
    "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615:glibc.malloc.top_pad=67108864",
);

/// Counts host synchronisations: `aten::item` / `aten::_local_scalar_dense` called from user code
/// (tch's `double_value`, `int64_value`), reads of device scalars inside ops, copies from a device
/// to the CPU, and the reads made through [`read_f64`]. It observes every op through ATen's global
/// RecordFunction callbacks, which costs time: install it to measure, not in production. It
/// counts the synchronisations of the thread that made it (the training loop's).
#[derive(Debug)]
pub struct SyncCounter {
    start: u64,
    /// Counts belong to the thread that made the counter.
    _thread: std::marker::PhantomData<*const ()>,
}

impl SyncCounter {
    /// Installs the observer (once per process; later calls share it) and starts counting from now.
    pub fn install() -> Result<Self> {
        ffi::sync_counter_install().map_err(Error)?;
        Ok(Self {
            start: ffi::sync_count_thread(),
            _thread: std::marker::PhantomData,
        })
    }

    /// Synchronisations this thread made since the counter was made.
    pub fn count(&self) -> u64 {
        ffi::sync_count_thread() - self.start
    }

    /// Synchronisations every thread made since the process started.
    pub fn process_total() -> u64 {
        ffi::sync_count()
    }

    /// Whether the observer is installed (by any thread).
    pub fn is_installed() -> bool {
        ffi::sync_counter_installed()
    }

    /// Removes the observer for the whole process (counts made through [`read_f64`] go on).
    pub fn remove() {
        ffi::sync_counter_remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Without a GPU every graph call is an error with a message, never a crash; with one, a
    /// captured add replays on fresh inputs copied into its static buffer.
    #[test]
    fn cuda_graph_replays_or_fails_clearly() {
        if !tch::Cuda::is_available() {
            let e = cuda::Graph::new(0)
                .and_then(|mut g| g.capture(|| ()))
                .expect_err("no GPU here");
            assert!(!e.0.is_empty(), "a message");
            let e = cuda::on_side_stream(0, || ()).expect_err("no GPU here");
            assert!(!e.0.is_empty(), "a message");
            eprintln!("no CUDA device: graph calls fail with `{e}`");
            return;
        }
        let dev = Device::Cuda(0);
        let mut x = Tensor::zeros([4], (Kind::Float, dev));
        let y = Tensor::ones([4], (Kind::Float, dev));
        let _ = cuda::on_side_stream(0, || (&x + &y) * 2.0).expect("warm-up");
        let mut g = cuda::Graph::new(0).expect("graph");
        assert!(g.replay().is_err(), "nothing captured yet");
        let out = g.capture(|| (&x + &y) * 2.0).expect("capture");
        for v in [1.0, 5.0] {
            let _ = x.fill_(v);
            g.replay().expect("replay");
            assert_eq!(out.double_value(&[3]), (v + 1.0) * 2.0);
        }
        assert!(g.capture(|| ()).is_err(), "captured once");
    }

    /// A `StepGraph` runs its warm-up eagerly, then replays a captured AdamW step that moves the
    /// parameters as eager steps do; without a GPU it fails with a message and counts no step.
    #[test]
    fn step_graph_replays_the_eager_step_or_fails_clearly() {
        use crate::optim::{AdamW, OptimConfig};
        let on = |dev: Device| {
            tch::manual_seed(4);
            let vs = tch::nn::VarStore::new(dev);
            let w = vs.root().randn("w", &[8, 4], 0.0, 1.0);
            let x = Tensor::randn([16, 8], (Kind::Float, dev));
            (vs, w, x)
        };
        let cfg = OptimConfig {
            lr: 1e-2,
            ..Default::default()
        };
        if !tch::Cuda::is_available() {
            let (vs, w, x) = on(Device::Cpu);
            let mut opt = AdamW::new(&vs, cfg);
            let mut g = cuda::StepGraph::<Tensor>::new(0, 1);
            let e = g
                .step(&mut opt, |_| -> Result<Tensor> {
                    Ok(x.matmul(&w).sum(Kind::Float))
                })
                .expect_err("no GPU here");
            assert!(!e.0.is_empty(), "a message");
            assert_eq!(opt.step, 0, "a failed step is not counted");
            return;
        }
        let dev = Device::Cuda(0);
        let (vs_e, w_e, x) = on(dev);
        let mut opt_e = AdamW::new(&vs_e, cfg.clone());
        let (vs_g, w_g, _) = on(dev);
        let mut opt_g = AdamW::new(&vs_g, cfg);
        let lr = Tensor::full([], 1e-2, (Kind::Float, dev));
        let mut g = cuda::StepGraph::<Tensor>::new(0, 2);
        for step in 0..6 {
            let loss = x.matmul(&w_e).square().sum(Kind::Float);
            loss.backward();
            opt_e.update(&vs_e, 1e-2, None).expect("eager");
            let out = g
                .step(&mut opt_g, |opt| -> Result<Tensor> {
                    let loss = x.matmul(&w_g).square().sum(Kind::Float);
                    loss.backward();
                    opt.update_on_device(&vs_g, &lr, None)?;
                    Ok(loss.detach())
                })
                .expect("graph step");
            let diff = (&w_e - &w_g).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "step {step}: parameters off by {diff}");
            assert!((out.double_value(&[]) - loss.double_value(&[])).abs() < 1e-3);
            assert_eq!(g.is_captured(), step >= 2);
        }
        assert_eq!(opt_g.step, 6);
    }

    /// Output and gradients equal ATen's `rms_norm` (f32 and f64, rows spanning several tasks);
    /// in f64 the gradients of x and w match central finite differences (a gradcheck); bad
    /// arguments are refused by name.
    #[test]
    fn rms_norm_matches_aten_and_finite_differences() {
        tch::manual_seed(8);
        for (kind, tol) in [(Kind::Float, 1e-5), (Kind::Double, 1e-12)] {
            let x = Tensor::randn([3, 70, 36], (kind, Device::Cpu)).set_requires_grad(true);
            let w = (Tensor::randn([36], (kind, Device::Cpu)) + 1.0).set_requires_grad(true);
            let g = Tensor::randn([3, 70, 36], (kind, Device::Cpu));
            let mut got = Vec::new();
            for ours in [true, false] {
                let _ = x.grad().f_zero_();
                let _ = w.grad().f_zero_();
                let y = if ours {
                    rms_norm(&x, &w, 1e-5).unwrap()
                } else {
                    x.rms_norm([36], Some(&w), 1e-5)
                };
                (&y * &g).sum(kind).backward();
                got.push([y.detach(), x.grad().copy(), w.grad().copy()]);
            }
            for (i, name) in ["output", "x's gradient", "w's gradient"]
                .iter()
                .enumerate()
            {
                let d = (&got[0][i] - &got[1][i]).abs().max().double_value(&[]);
                assert!(d < tol * 10.0, "{kind:?}: {name} off by {d}");
            }
        }
        let x = Tensor::randn([4, 5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::randn([4, 5], (Kind::Double, Device::Cpu));
        let f = |x: &Tensor, w: &Tensor| (rms_norm(x, w, 1e-5).unwrap() * &g).sum(Kind::Double);
        f(&x, &w).backward();
        for (which, t) in [&x, &w].into_iter().enumerate() {
            let analytic = t.grad().view([-1]);
            let flat = t.detach().reshape([-1]);
            for i in 0..flat.numel() as i64 {
                let at = |d: f64| {
                    let z = flat.copy();
                    let _ = z.get(i).g_add_scalar_(d);
                    let z = z.view_as(t);
                    let (xa, wa) = if which == 0 {
                        (z, w.detach())
                    } else {
                        (x.detach(), z)
                    };
                    f(&xa, &wa).double_value(&[])
                };
                let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
                let a = analytic.double_value(&[i]);
                assert!(
                    (a - numeric).abs() < 1e-6,
                    "input {which}, element {i}: {a} vs {numeric}"
                );
            }
        }
        let e = rms_norm(&x, &Tensor::ones([4], (Kind::Double, Device::Cpu)), 1e-5).unwrap_err();
        assert!(e.to_string().contains("w must be [d]"), "{e}");
    }

    /// Retaining freed memory applies where glibc is the allocator, and tensors still work.
    #[test]
    fn retained_freed_memory_applies_on_glibc() {
        let applied = retain_freed_memory();
        assert_eq!(applied, cfg!(target_env = "gnu"));
        for _ in 0..2 {
            let t = Tensor::ones([64, 1 << 18], (Kind::Float, Device::Cpu));
            assert_eq!(t.sum(Kind::Float).double_value(&[]), (64 << 18) as f64);
        }
    }

    /// Loss and gradient equal PyTorch's cross_entropy, ignored targets included; in f64 the
    /// gradient also matches central finite differences (a gradcheck).
    #[test]
    fn cross_entropy_matches_pytorch_and_finite_differences() {
        tch::manual_seed(3);
        for kind in [Kind::Float, Kind::Double] {
            let logits =
                (Tensor::randn([37, 53], (kind, Device::Cpu)) * 3.0).set_requires_grad(true);
            let t = Tensor::randint(53, [37], (Kind::Int64, Device::Cpu));
            let _ = t.narrow(0, 5, 4).fill_(-100);
            let ours = cross_entropy(&logits, &t).unwrap();
            assert_eq!(ours.kind(), kind);
            ours.backward();
            let g_ours = logits.grad().copy();
            let _ = logits.grad().zero_();
            let theirs = logits.cross_entropy_for_logits(&t);
            theirs.backward();
            let g_theirs = logits.grad().copy();
            let dl = (ours.double_value(&[]) - theirs.double_value(&[])).abs();
            assert!(dl < 1e-5, "{kind:?}: loss off by {dl}");
            let dg = (&g_ours - &g_theirs).abs().max().double_value(&[]);
            assert!(dg < 1e-6, "{kind:?}: gradient off by {dg}");
            assert_eq!(
                g_ours
                    .narrow(0, 5, 4)
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[]),
                0.0,
                "ignored rows get no gradient"
            );
        }
        // Gradcheck: the analytic gradient against central differences, in f64.
        let x = Tensor::randn([6, 9], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let t = Tensor::from_slice(&[0i64, 8, -100, 3, 3, 5]);
        cross_entropy(&x, &t).unwrap().backward();
        let analytic = x.grad().copy();
        let eps = 1e-6;
        let flat = x.detach().reshape([-1]);
        for i in 0..flat.numel() as i64 {
            let at = |d: f64| {
                let y = flat.copy();
                let _ = y.get(i).g_add_scalar_(d);
                cross_entropy(&y.view([6, 9]), &t)
                    .unwrap()
                    .double_value(&[])
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let a = analytic.view([-1]).double_value(&[i]);
            assert!((a - numeric).abs() < 1e-6, "element {i}: {a} vs {numeric}");
        }
    }

    /// Logits handed over give the loss and the gradients (of what made them) of `cross_entropy`,
    /// with an incoming gradient of 1 or not and ignored targets; a view still alive, or no
    /// gradient wanted, leaves the logits as they were.
    #[test]
    fn cross_entropy_consuming_matches_and_leaves_shared_logits_alone() {
        tch::manual_seed(5);
        let o = (Kind::Float, Device::Cpu);
        let mut h = Tensor::randn([29, 16], o).set_requires_grad(true);
        let mut w = (Tensor::randn([41, 16], o) * 0.5).set_requires_grad(true);
        let t = Tensor::randint(41, [29], (Kind::Int64, Device::Cpu));
        let _ = t.narrow(0, 3, 5).fill_(-100);
        let mut run = |consume: bool, scale: f64| {
            h.zero_grad();
            w.zero_grad();
            let logits = h.matmul(&w.tr());
            let loss = if consume {
                cross_entropy_consuming(logits, &t).unwrap()
            } else {
                cross_entropy(&logits, &t).unwrap()
            };
            (&loss * scale).backward();
            (loss.double_value(&[]), h.grad().copy(), w.grad().copy())
        };
        for scale in [1.0, 3.0] {
            let (l0, h0, w0) = run(false, scale);
            let (l1, h1, w1) = run(true, scale);
            assert!((l0 - l1).abs() < 1e-6, "loss {l0} vs {l1}");
            for (a, b) in [(&h0, &h1), (&w0, &w1)] {
                let d = (a - b).abs().max().double_value(&[]);
                assert!(d < 1e-6, "scale {scale}: gradient off by {d}");
            }
        }
        // Other kinds take the chunked path (as CUDA does; 8,192 wide rows make three chunks
        // here): the same loss and gradients, within each kind's rounding (bf16: 8-bit mantissa).
        let h2 = Tensor::randn([40, 16], o);
        let w2 = Tensor::randn([8192, 16], o) * 0.5;
        let t2 = Tensor::randint(8192, [40], (Kind::Int64, Device::Cpu));
        let _ = t2.narrow(0, 20, 3).fill_(-100);
        for (kind, tol) in [(Kind::Double, 1e-12), (Kind::BFloat16, 2e-2)] {
            let hk = h2.to_kind(kind).set_requires_grad(true);
            let wk = w2.to_kind(kind).set_requires_grad(true);
            let mut grads = vec![];
            for consume in [false, true] {
                let logits = hk.matmul(&wk.tr());
                let loss = if consume {
                    cross_entropy_consuming(logits, &t2).unwrap()
                } else {
                    cross_entropy(&logits, &t2).unwrap()
                };
                let g = Tensor::run_backward(&[&loss * 3.0], &[&hk, &wk], false, false);
                grads.push((loss.to_kind(Kind::Double), g));
            }
            let (a, b) = (&grads[0], &grads[1]);
            let dl = (&a.0 - &b.0).abs().double_value(&[]);
            assert!(dl < tol, "{kind:?}: loss off by {dl}");
            for (x, y) in a.1.iter().zip(&b.1) {
                let scale = x.abs().max().to_kind(Kind::Double).double_value(&[]);
                let d = (x - y).abs().max().to_kind(Kind::Double).double_value(&[]);
                assert!(d <= tol * scale.max(1e-3), "{kind:?}: gradient off by {d}");
            }
        }
        // A second backward through a retained graph after a scaled first one is refused.
        let loss = cross_entropy_consuming(h.matmul(&w.tr()), &t).unwrap() * 2.0;
        let _ = Tensor::run_backward(&[&loss], &[&h], true, false);
        let again = Tensor::f_run_backward(&[&loss], &[&h], false, false).unwrap_err();
        assert!(again.to_string().contains("second backward"), "{again}");
        // A view alive: the logits stay logits.
        let logits = h.matmul(&w.tr());
        let view = logits.view([-1]);
        let before = view.copy();
        let loss = cross_entropy_consuming(logits, &t).unwrap();
        loss.backward();
        assert_eq!((&view - &before).abs().max().double_value(&[]), 0.0);
        // No gradient wanted: nothing to write.
        let logits = tch::no_grad(|| h.matmul(&w.tr()));
        let kept = logits.shallow_clone();
        let before = logits.copy();
        let l = cross_entropy_consuming(logits, &t).unwrap();
        assert!(l.double_value(&[]).is_finite());
        assert_eq!((&kept - &before).abs().max().double_value(&[]), 0.0);
        // A NaN logit (in the 8-wide part of its row) gives a NaN loss on the in-place path too.
        let logits = h.matmul(&w.tr());
        let _ = logits.detach().get(0).get(2).fill_(f64::NAN);
        let l = cross_entropy_consuming(logits, &t).unwrap();
        assert!(l.double_value(&[]).is_nan());
        // A target outside the vocabulary is refused by name on the in-place path too.
        let bad = Tensor::from_slice(&[0i64, 41]);
        let e = cross_entropy_consuming(h.narrow(0, 0, 2).matmul(&w.tr()), &bad).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }

    /// Output and gradient equal autograd's own split + silu + product; in f64 the gradient
    /// also matches central finite differences.
    #[test]
    fn swiglu_matches_autograd_and_finite_differences() {
        tch::manual_seed(4);
        // Largest difference relative to max(1, |b|): fp32's own rounding is ~6e-8 of it.
        let off = |a: &Tensor, b: &Tensor| {
            ((a - b).abs() / b.abs().clamp_min(1.0))
                .max()
                .double_value(&[])
        };
        // 384 wide: whole 8-lane vectors; 13: a vector and a tail of 5.
        for (kind, ff) in [
            (Kind::Float, 384),
            (Kind::Double, 384),
            (Kind::Float, 13),
            (Kind::BFloat16, 384),
        ] {
            // Enough rows for several blocks on the CPU.
            let y = Tensor::randn([3, 200, 2 * ff], (kind, Device::Cpu)).set_requires_grad(true);
            let w = Tensor::randn([3, 200, ff], (kind, Device::Cpu));
            let ours = swiglu(&y).unwrap();
            assert_eq!(ours.size(), [3, 200, ff]);
            (&ours * &w).sum(kind).backward();
            let g_ours = y.grad().copy();
            let _ = y.grad().zero_();
            let halves = y.split(ff, -1);
            let theirs = halves[0].silu() * &halves[1];
            (&theirs * &w).sum(kind).backward();
            let (dv, dg) = (off(&ours, &theirs), off(&g_ours, &y.grad()));
            let tolerance = if kind == Kind::BFloat16 { 2e-2 } else { 1e-6 };
            assert!(
                dv < tolerance && dg < 10.0 * tolerance,
                "{kind:?} x {ff}: value off by {dv}, gradient by {dg}"
            );
        }
        // A NaN gate gives a NaN output and gradient, in the vector part and in the tail.
        let y = Tensor::ones([1, 2 * 13], (Kind::Float, Device::Cpu));
        let _ = y.get(0).get(2).fill_(f64::NAN);
        let _ = y.get(0).get(10).fill_(f64::NAN);
        let y = y.set_requires_grad(true);
        let out = swiglu(&y).unwrap();
        out.sum(Kind::Float).backward();
        for j in [2, 10] {
            assert!(out.double_value(&[0, j]).is_nan(), "output {j} not NaN");
            assert!(
                y.grad().double_value(&[0, j]).is_nan(),
                "gradient {j} not NaN"
            );
        }
        assert!((out.double_value(&[0, 0]) - 0.731_058_6).abs() < 1e-6);
        let y = Tensor::randn([2, 6], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([2, 3], (Kind::Double, Device::Cpu));
        (swiglu(&y).unwrap() * &w).sum(Kind::Double).backward();
        let analytic = y.grad().copy().view([-1]);
        let flat = y.detach().reshape([-1]);
        let eps = 1e-6;
        for i in 0..12 {
            let at = |d: f64| {
                let z = flat.copy();
                let _ = z.get(i).g_add_scalar_(d);
                (swiglu(&z.view([2, 6])).unwrap() * &w)
                    .sum(Kind::Double)
                    .double_value(&[])
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let a = analytic.double_value(&[i]);
            assert!((a - numeric).abs() < 1e-6, "element {i}: {a} vs {numeric}");
        }
        let odd = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        let e = swiglu(&odd).unwrap_err();
        assert!(e.to_string().contains("must be even, got 5"), "{e}");
    }

    /// Autograd's composition of what `qkv_rope` does: split, heads, HF rotation.
    fn qkv_rope_reference(y: &Tensor, cos: &Tensor, sin: &Tensor, hkd: [i64; 3]) -> [Tensor; 3] {
        let [h, kv, d] = hkd;
        let (b, t, _) = y.size3().unwrap();
        let parts = y.split_with_sizes([h * d, kv * d, kv * d], -1);
        let heads = |z: &Tensor, n: i64| z.view([b, t, n, d]).transpose(1, 2);
        let rot = |x: Tensor| {
            let half = d / 2;
            let r = Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], -1);
            &x * cos + r * sin
        };
        [
            rot(heads(&parts[0], h)),
            rot(heads(&parts[1], kv)),
            heads(&parts[2], kv),
        ]
    }

    fn rope_tables(t: i64, d: i64, kind: Kind) -> (Tensor, Tensor) {
        let inv = Tensor::arange(d / 2, (kind, Device::Cpu)).g_mul_scalar(-2.0 / d as f64);
        let inv = Tensor::from(10000.0f64).to_kind(kind).pow(&inv);
        let f = Tensor::arange(t, (kind, Device::Cpu)).outer(&inv);
        let emb = Tensor::cat(&[&f, &f], -1);
        (emb.cos(), emb.sin())
    }

    /// Q, K, V and the product's gradient equal autograd's composition (GQA shapes, an odd
    /// half-width like `small`'s 36-wide heads); in f64 the gradient matches finite differences.
    #[test]
    fn qkv_rope_matches_autograd_and_finite_differences() {
        tch::manual_seed(5);
        let hkd = [4, 2, 36];
        for kind in [Kind::Float, Kind::Double] {
            let (cos, sin) = rope_tables(7, 36, kind);
            let y = Tensor::randn([3, 7, 8 * 36], (kind, Device::Cpu)).set_requires_grad(true);
            let ws: Vec<Tensor> = [4, 2, 2]
                .iter()
                .map(|&n| Tensor::randn([3, n, 7, 36], (kind, Device::Cpu)))
                .collect();
            let loss = |qkv: &[Tensor; 3]| -> Tensor {
                qkv.iter()
                    .zip(&ws)
                    .map(|(a, w)| (a * w).sum(kind))
                    .sum::<Tensor>()
            };
            let ours = qkv_rope(&y, &cos, &sin, 4, 2, 36).unwrap();
            loss(&ours).backward();
            let g_ours = y.grad().copy();
            let _ = y.grad().zero_();
            let theirs = qkv_rope_reference(&y, &cos, &sin, hkd);
            loss(&theirs).backward();
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(a.size(), b.size());
                let dv = (a - b).abs().max().double_value(&[]);
                assert!(dv < 1e-6, "{kind:?}: value off by {dv}");
            }
            let dg = (&g_ours - y.grad()).abs().max().double_value(&[]);
            assert!(dg < 1e-5, "{kind:?}: gradient off by {dg}");
        }
        // Gradcheck in f64, with V's gradient absent (an output that does not reach the loss).
        let (cos, sin) = rope_tables(3, 4, Kind::Double);
        let y = Tensor::randn([1, 3, 3 * 4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([1, 1, 3, 4], (Kind::Double, Device::Cpu));
        let f = |y: &Tensor| {
            let [q, k, _] = qkv_rope(y, &cos, &sin, 1, 1, 4).unwrap();
            (q * &w + k * (&w * 2.0)).sum(Kind::Double)
        };
        f(&y).backward();
        let analytic = y.grad().copy().view([-1]);
        let flat = y.detach().reshape([-1]);
        for i in 0..flat.numel() as i64 {
            let at = |d: f64| {
                let z = flat.copy();
                let _ = z.get(i).g_add_scalar_(d);
                f(&z.view([1, 3, 12])).double_value(&[])
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            let a = analytic.double_value(&[i]);
            assert!((a - numeric).abs() < 1e-6, "element {i}: {a} vs {numeric}");
        }
        let bad = Tensor::zeros([1, 3, 11], (Kind::Double, Device::Cpu));
        let e = qkv_rope(&bad, &cos, &sin, 1, 1, 4).unwrap_err();
        assert!(e.to_string().contains("got 11 columns"), "{e}");
    }

    /// Output and q, k, v gradients equal PyTorch's SDPA (causal, grouped heads, a sequence that
    /// is not a multiple of the 64-query block and spans several); in f64 the gradients match
    /// finite differences (a gradcheck); bad shapes are refused by name.
    #[test]
    fn causal_attention_matches_sdpa_and_finite_differences() {
        tch::manual_seed(6);
        let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor| {
            let (b, h, t, d) = q.size4().unwrap();
            Tensor::scaled_dot_product_attention(q, k, v, None::<&Tensor>, 0.0, true, None, true)
                .transpose(1, 2)
                .contiguous()
                .view([b, t, h * d])
        };
        for (kind, tol) in [(Kind::Float, 1e-5), (Kind::Double, 1e-10)] {
            let make = |h: i64| {
                Tensor::randn([2, h, 150, 12], (kind, Device::Cpu)).set_requires_grad(true)
            };
            let (q, k, v) = (make(6), make(2), make(2));
            let w = Tensor::randn([2, 150, 6 * 12], (kind, Device::Cpu));
            let mut grads = Vec::new();
            let mut outs = Vec::new();
            for ours in [true, false] {
                for x in [&q, &k, &v] {
                    let _ = x.grad().f_zero_();
                }
                let y = if ours {
                    causal_attention(&q, &k, &v).unwrap()
                } else {
                    sdpa(&q, &k, &v)
                };
                (&y * &w).sum(kind).backward();
                outs.push(y.detach());
                grads.push([&q, &k, &v].map(|x| x.grad().copy()));
            }
            let off = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
            assert!(off(&outs[0], &outs[1]) < tol, "{kind:?}: output");
            for (i, name) in ["q", "k", "v"].iter().enumerate() {
                let d = off(&grads[0][i], &grads[1][i]);
                assert!(d < tol * 10.0, "{kind:?}: gradient of {name} off by {d}");
            }
        }
        // Gradcheck in f64 on a tiny case: every input element of q, k and v.
        let make = |h: i64| Tensor::randn([1, h, 5, 3], (Kind::Double, Device::Cpu));
        let (q, k, v) = (make(2), make(1), make(1));
        let w = Tensor::randn([1, 5, 6], (Kind::Double, Device::Cpu));
        let f = |q: &Tensor, k: &Tensor, v: &Tensor| {
            (causal_attention(q, k, v).unwrap() * &w).sum(Kind::Double)
        };
        let inputs = [&q, &k, &v].map(|x| x.detach().set_requires_grad(true));
        f(&inputs[0], &inputs[1], &inputs[2]).backward();
        for which in 0..3 {
            let analytic = inputs[which].grad().view([-1]);
            let flat = inputs[which].detach().reshape([-1]);
            for i in 0..flat.numel() as i64 {
                let at = |d: f64| {
                    let z = flat.copy();
                    let _ = z.get(i).g_add_scalar_(d);
                    let mut args = [&q, &k, &v].map(|x| x.shallow_clone());
                    args[which] = z.view_as(&inputs[which]);
                    f(&args[0], &args[1], &args[2]).double_value(&[])
                };
                let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
                let a = analytic.double_value(&[i]);
                assert!(
                    (a - numeric).abs() < 1e-6,
                    "input {which}, element {i}: {a} vs {numeric}"
                );
            }
        }
        let e = causal_attention(&make(3), &make(2), &make(2)).unwrap_err();
        assert!(e.to_string().contains("multiple of kv_heads"), "{e}");
    }

    #[test]
    fn cross_entropy_refuses_mismatched_shapes_by_name() {
        let x = Tensor::zeros([4, 7], (Kind::Float, Device::Cpu));
        let e = cross_entropy(&x, &Tensor::zeros([3], (Kind::Int64, Device::Cpu))).unwrap_err();
        assert!(e.to_string().contains("3 targets for 4 rows"), "{e}");
        let e = cross_entropy(
            &x.view([28]),
            &Tensor::zeros([28], (Kind::Int64, Device::Cpu)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[rows, vocab]"), "{e}");
        let e = cross_entropy(&x, &Tensor::from_slice(&[0i64, 7, 1, 2])).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary of 7"), "{e}");
        // A NaN logit makes the loss NaN (the trainer's non-finite check must see it).
        let mut v = vec![0.5f32; 80];
        v[23] = f32::NAN; // row 1, in its first 8 (the vectorised part)
        let loss = cross_entropy(&t(&v).view([4, 20]), &Tensor::from_slice(&[0i64, 1, 2, 3]));
        assert!(loss.unwrap().double_value(&[]).is_nan());
    }

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn hyper(weight_decay: f64) -> AdamWHyper {
        AdamWHyper {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay,
            eps: 1e-8,
        }
    }

    #[test]
    fn global_norm_and_scaling_stay_tensors() {
        let a = t(&[3.0, 0.0]);
        let b = t(&[0.0, 4.0, 0.0]);
        let n = global_norm(&[&a, &b]).unwrap();
        assert_eq!(n.size(), Vec::<i64>::new());
        assert!((n.double_value(&[]) - 5.0).abs() < 1e-6);
        foreach_mul_(&[&a, &b], &Tensor::from(0.5f32)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![0.0, 2.0, 0.0]);
        foreach_zero_(&[&a]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![0.0, 0.0]);
        assert!(global_norm(&[]).is_err());
    }

    #[test]
    fn fused_adamw_matches_the_formula_and_skips_on_found_inf() {
        let p = t(&[1.0, -2.0]);
        let g = t(&[3.0, -0.5]);
        let (m, v) = (p.zeros_like(), p.zeros_like());
        let step = Tensor::from(1.0f32);
        let h = hyper(0.5);
        let inf = Tensor::from(1.0f32);
        fused_adamw_(&[&p], &[&g], &[&m], &[&v], &step, &h, None, Some(&inf)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), vec![1.0, -2.0]);
        assert_eq!(Vec::<f32>::try_from(&m).unwrap(), vec![0.0, 0.0]);
        let ok = Tensor::from(0.0f32);
        fused_adamw_(&[&p], &[&g], &[&m], &[&v], &step, &h, None, Some(&ok)).unwrap();
        // Step 1: m̂ = g, v̂ = g², so p = (1 − lr·wd)·p − lr·sign(g).
        let got = Vec::<f32>::try_from(&p).unwrap();
        assert!((got[0] - (0.95 - 0.1)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-1.9 + 0.1)).abs() < 1e-6, "{got:?}");
        // A learning rate given as a tensor replaces the number.
        let lr = Tensor::from(0.0f32);
        let before = Vec::<f32>::try_from(&p).unwrap();
        let h0 = hyper(0.0);
        fused_adamw_(&[&p], &[&g], &[&m], &[&v], &step, &h0, Some(&lr), None).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), before);
    }

    /// A two-layer "block" owning handles to its weights, counting its calls.
    fn block(
        w1: &Tensor,
        w2: &Tensor,
        calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl FnMut(&Tensor) -> Tensor + Send + 'static {
        let (w1, w2, calls) = (w1.shallow_clone(), w2.shallow_clone(), calls.clone());
        move |x: &Tensor| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            x + x.matmul(&w1).tanh().matmul(&w2)
        }
    }

    #[test]
    fn recompute_gives_the_same_gradients_and_runs_the_block_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let w1 = Tensor::randn([6, 5], opts).set_requires_grad(true);
        let w2 = Tensor::randn([5, 6], opts).set_requires_grad(true);
        let x0 = Tensor::randn([4, 6], opts).set_requires_grad(true);
        let calls = Arc::new(AtomicUsize::new(0));
        let grads = |recomputed: bool| {
            for t in [&w1, &w2, &x0] {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let mut f = block(&w1, &w2, &calls);
            let h = &x0 * 2.0;
            let y = if recomputed {
                recompute(&h, block(&w1, &w2, &calls)).unwrap()
            } else {
                f(&h)
            };
            let y = if recomputed {
                recompute(&y, block(&w1, &w2, &calls)).unwrap()
            } else {
                f(&y)
            };
            (y.sin().sum(Kind::Double) * 1.0).backward();
            (y.detach(), [&w1, &w2, &x0].map(|t| t.grad().copy()))
        };
        let (y_plain, g_plain) = grads(false);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 2);
        let (y_re, g_re) = grads(true);
        // Two blocks, each run in forward and again in backward.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(y_re.allclose(&y_plain, 0.0, 0.0, false));
        for (a, b) in g_re.iter().zip(&g_plain) {
            assert!(a.allclose(b, 1e-12, 1e-12, false), "{a} vs {b}");
        }
        // Without gradients it is a plain call.
        let _off = tch::no_grad_guard();
        let y = recompute(&x0.detach(), block(&w1, &w2, &calls)).unwrap();
        assert!(!y.requires_grad());
    }

    #[test]
    fn a_panicking_block_is_an_error_in_forward_and_in_backward() {
        let x = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let e = recompute(&x, |_: &Tensor| -> Tensor { panic!("shape mismatch") }).unwrap_err();
        assert!(e.0.contains("shape mismatch"), "{e}");
        let mut first = true;
        let y = recompute(&x, move |x: &Tensor| {
            if !first {
                panic!("second call");
            }
            first = false;
            x * 3.0
        })
        .unwrap();
        let back = y.sum(Kind::Float).f_backward();
        assert!(format!("{back:?}").contains("second call"), "{back:?}");
    }

    #[test]
    fn mismatched_lists_are_refused() {
        let p = t(&[1.0]);
        let step = Tensor::from(1.0f32);
        let h = hyper(0.0);
        let e = fused_adamw_(&[&p], &[], &[&p], &[&p], &step, &h, None, None).unwrap_err();
        assert!(e.0.contains("1 parameters, 0 gradients"), "{e}");
    }

    #[test]
    fn the_counter_sees_item_but_not_device_free_work() {
        let c = SyncCounter::install().unwrap();
        let x = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        let y = x.matmul(&x).sum(Kind::Float);
        let _ = global_norm(&[&x, &y]).unwrap();
        let before = c.count();
        let _ = y.double_value(&[]);
        let _ = read_f64(&y).unwrap();
        assert!(c.count() >= before + 2, "{} -> {}", before, c.count());
        assert_eq!(read_f64(&t(&[1.0, 2.5])).unwrap(), vec![1.0, 2.5]);
    }
}
