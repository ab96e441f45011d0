//! How a run is spread over ranks, as one seam: the training loop asks a [`Parallelism`] to place
//! the parameters, reduce and apply gradients, sum scalars and write its part of a checkpoint,
//! and knows nothing else of ranks. Today's implementations: one process ([`Single`]), data
//! parallel with the whole AdamW state on every rank ([`Replicated`]), ZeRO-1 with the AdamW
//! state split across ranks ([`Zero1`]) and FSDP with parameters, gradients and AdamW state split
//! ([`Fsdp`](crate::fsdp::Fsdp)). A new strategy (tensor parallel) is one more.

use crate::checkpoint::{latest_verified, read_state, write_model_files, CheckpointState};
use crate::ddp::DataParallel;
use crate::fsdp::{self, Fsdp};
use crate::optim::{AdamW, OptimConfig, StepOutcome};
use crate::zero::{self, ShardedAdamW};
use crate::{Error, Result};
use starling_model::{BlockTemplate, Runner};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Where parameters, gradients and optimizer state live across ranks, and how they move.
pub trait Parallelism {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// This rank's place among the ranks that read different batches, and how many do (the
    /// ranks of a tensor-parallel group read the same ones).
    fn data_rank(&self) -> (usize, usize) {
        (self.rank(), self.world())
    }
    /// True when ranks take part (even a group of one): decisions such as stopping are agreed.
    fn is_group(&self) -> bool;
    /// Makes the parameters equal on every rank (rank 0's).
    fn place(&mut self, vs: &VarStore) -> Result<()>;
    /// Optimizer steps taken.
    fn steps(&self) -> u64;
    /// Loads the optimizer state a checkpoint holds (written at any world size).
    fn load_optimizer(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()>;
    /// Marks the start of step `step` (collective errors name it).
    fn begin_step(&mut self, _step: u64) {}
    /// Called before each micro-batch's backward; `last` for the step's last one (when the
    /// gradients are complete and may be reduced while backward runs).
    fn before_backward(&mut self, _last: bool) {}
    /// Sums a few scalars over the ranks.
    fn sum_scalars(&mut self, values: &[f64]) -> Result<Vec<f64>>;
    /// Sums a device tensor over the ranks in place (no host read).
    fn sum_tensor(&mut self, t: &Tensor) -> Result<()>;
    /// Reduces the gradients, clips them by the global norm and updates the parameters, all on
    /// the device; a step whose gradients are not finite changes nothing.
    fn optimizer_step(&mut self, vs: &VarStore, lr: f64) -> Result<StepOutcome>;
    /// Writes this rank's part of a checkpoint into the fresh directory `tmp`; all ranks succeed
    /// or fail together.
    fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()>;
    /// All ranks succeed or fail together: each says whether its part failed.
    fn agree(&mut self, r: Result<()>) -> Result<()>;
    /// Time spent in collectives so far (None alone).
    fn comm(&self) -> Option<Duration>;
    /// How the model's training forward runs (set after [`Parallelism::place`]): with
    /// `recompute`, blocks recompute their activations in backward; `kind` is the precision of
    /// the matrix products (FSDP gathers parameters in bf16 when it is bf16).
    fn runner(&self, recompute: bool, _kind: tch::Kind) -> Option<Box<dyn Runner>> {
        recompute.then(|| Box::new(RecomputeBlocks) as Box<dyn Runner>)
    }
    /// The optimizer, when a whole step (forward, backward, clipping, update) of this strategy
    /// can be captured in a CUDA graph: no collective, no host callback inside. None otherwise.
    fn capturable(&mut self) -> Option<&mut AdamW> {
        None
    }
}

/// Blocks run with activation recomputation (the C++ layer's autograd function).
#[derive(Debug)]
pub(crate) struct RecomputeBlocks;

impl Runner for RecomputeBlocks {
    fn run(&self, x: &Tensor, block: BlockTemplate) -> Tensor {
        starling_torch::recompute(x, move |x: &Tensor| block.forward(x))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// How the data-parallel ranks share the model's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// Every rank holds everything (DDP).
    None,
    /// ZeRO-1: the AdamW state is split.
    Optimizer,
    /// FSDP / ZeRO-3: parameters, gradients and AdamW state are split.
    Full,
}

/// Builds the strategy a run asks for: alone, data parallel, or data parallel with the optimizer
/// state (ZeRO-1) or everything (FSDP) sharded, which need a group; with `tp` > 1, tensor
/// parallel groups of `tp` ranks inside FSDP over the others (a 2-D mesh).
pub fn apply<'a>(
    dp: Option<&'a mut DataParallel>,
    sharding: Sharding,
    tp: usize,
    vs: &VarStore,
    optim: OptimConfig,
) -> Result<Box<dyn Parallelism + 'a>> {
    if tp > 1 {
        return match (dp, sharding) {
            (None, _) => Err(Error::Format(
                "--tp needs a group of ranks (start with `starling launch` or torchrun's environment)"
                    .into(),
            )),
            (Some(_), Sharding::Optimizer) => Err(Error::Format(
                "--tp shards the data-parallel dimension with FSDP; --shard-optimizer (ZeRO-1) does not combine with it"
                    .into(),
            )),
            (Some(dp), _) => Ok(Box::new(Fsdp::new(dp, vs, optim, tp)?)),
        };
    }
    Ok(match (dp, sharding) {
        (None, Sharding::None) => Box::new(Single {
            opt: AdamW::new(vs, optim),
        }),
        (None, s) => {
            let flag = if s == Sharding::Full {
                "--fsdp"
            } else {
                "--shard-optimizer"
            };
            return Err(Error::Format(format!(
                "{flag} needs a data-parallel group (start with `starling launch` or torchrun's environment)"
            )));
        }
        (Some(dp), Sharding::None) => {
            let no_sync = std::env::var_os(NO_GRAD_SYNC_ENV).is_some();
            if no_sync {
                tracing::warn!(
                    "{NO_GRAD_SYNC_ENV} is set: gradients are not averaged (a measurement of the \
                     step without communication; the ranks' models drift apart)"
                );
            }
            Box::new(Replicated {
                opt: AdamW::new(vs, optim),
                dp,
                reducer: None,
                no_sync,
            })
        }
        (Some(dp), Sharding::Optimizer) => {
            let (rank, world) = (dp.rank(), dp.world());
            Box::new(Zero1 {
                opt: ShardedAdamW::new(vs, optim, rank, world),
                dp,
            })
        }
        (Some(dp), Sharding::Full) => Box::new(Fsdp::new(dp, vs, optim, 1)?),
    })
}

/// Loads whole AdamW moments from a checkpoint, sharded by ZeRO-1 or FSDP or not.
pub(crate) fn load_full(opt: &mut AdamW, vs: &VarStore, dir: &Path, step: u64) -> Result<()> {
    match (zero::shard_world(dir), fsdp::shard_world(dir)) {
        (Some(w), _) => zero::load_full_from_shards(opt, vs, dir, w)?,
        (None, Some(w)) => {
            let (m, v) = fsdp::moments_from_shards(dir, vs, w)?;
            let _g = tch::no_grad_guard();
            for (by_name, store) in [(m, &opt.m), (v, &opt.v)] {
                for (name, mut t) in store.variables() {
                    let src = by_name.get(&name).ok_or_else(|| {
                        Error::Format(format!("{}: no moments of `{name}`", dir.display()))
                    })?;
                    t.copy_(src);
                }
            }
        }
        (None, None) => {
            for (file, store) in [
                ("adam-m.safetensors", &mut opt.m),
                ("adam-v.safetensors", &mut opt.v),
            ] {
                let p = dir.join(file);
                store
                    .load(&p)
                    .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?;
            }
        }
    }
    opt.step = step;
    Ok(())
}

/// The checkpoint a run resumes: alone, the newest that verifies; in a group, rank 0's choice.
pub(crate) fn resume(
    dp: Option<&mut DataParallel>,
    run: &Path,
) -> Result<Option<(PathBuf, CheckpointState)>> {
    match dp {
        None => Ok(latest_verified(run)),
        Some(dp) => agree_resume(dp, run),
    }
}

/// Rank 0 verifies and names the checkpoint to resume through the group's store.
fn agree_resume(dp: &mut DataParallel, run: &Path) -> Result<Option<(PathBuf, CheckpointState)>> {
    if dp.rank() == 0 {
        let r = latest_verified(run);
        let name = r
            .as_ref()
            .and_then(|(dir, _)| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dp.group.store_set("starling/resume", name.as_bytes())?;
        return Ok(r);
    }
    let name = String::from_utf8_lossy(&dp.group.store_get("starling/resume")?).into_owned();
    if name.is_empty() {
        return Ok(None);
    }
    let dir = run.join(&name);
    let state = read_state(&dir)?;
    Ok(Some((dir, state)))
}

/// Each rank says whether its part failed; all fail together.
pub(crate) fn agree_in(dp: &mut DataParallel, r: Result<()>) -> Result<()> {
    let failed = dp.sum_scalars(&[if r.is_err() { 1.0 } else { 0.0 }])?[0];
    r?;
    if failed > 0.0 {
        return Err(Error::Format(
            "another rank failed to write its part of the checkpoint".into(),
        ));
    }
    Ok(())
}

/// One process: AdamW on the whole model.
pub struct Single {
    opt: AdamW,
}

impl Parallelism for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn is_group(&self) -> bool {
        false
    }
    fn place(&mut self, _vs: &VarStore) -> Result<()> {
        Ok(())
    }
    fn steps(&self) -> u64 {
        self.opt.step
    }
    fn load_optimizer(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        load_full(&mut self.opt, vs, dir, step)
    }
    fn sum_scalars(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        Ok(values.to_vec())
    }
    fn sum_tensor(&mut self, _t: &Tensor) -> Result<()> {
        Ok(())
    }
    fn optimizer_step(&mut self, vs: &VarStore, lr: f64) -> Result<StepOutcome> {
        let o = self.opt.clip(vs)?;
        self.opt.update(vs, lr, Some(&o.found_inf))?;
        Ok(o)
    }
    fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()> {
        write_model_files(tmp, vs, Some(&self.opt))
    }
    fn agree(&mut self, r: Result<()>) -> Result<()> {
        r
    }
    fn comm(&self) -> Option<Duration> {
        None
    }
    fn capturable(&mut self) -> Option<&mut AdamW> {
        Some(&mut self.opt)
    }
}

/// Data parallel: every rank holds the whole model and AdamW state; gradients are averaged in
/// buckets whose all-reduce starts during backward, as soon as a bucket's gradients are ready.
pub struct Replicated<'a> {
    opt: AdamW,
    dp: &'a mut DataParallel,
    /// Made in `place` (the parameters' gradient hooks).
    reducer: Option<starling_torch::collective::Reducer>,
    /// Gradients are not averaged ([`NO_GRAD_SYNC_ENV`]).
    no_sync: bool,
}

/// Set in the environment, data parallel skips the gradient averaging, like PyTorch's
/// `no_sync()`: `bench ddp` measures the step without its communication this way.
pub const NO_GRAD_SYNC_ENV: &str = "STARLING_NO_GRAD_SYNC";

/// Bytes per gradient bucket (PyTorch DDP's default).
const BUCKET_BYTES: i64 = 25 << 20;

/// ZeRO-1: every rank holds the whole model and 1/world of the AdamW state; gradients are
/// reduce-scattered, each rank updates its share, parameters are all-gathered.
pub struct Zero1<'a> {
    opt: ShardedAdamW,
    dp: &'a mut DataParallel,
}

/// The methods both data-parallel strategies share.
macro_rules! group_common {
    () => {
        fn rank(&self) -> usize {
            self.dp.rank()
        }
        fn world(&self) -> usize {
            self.dp.world()
        }
        fn is_group(&self) -> bool {
            true
        }
        fn steps(&self) -> u64 {
            self.opt.step
        }
        fn begin_step(&mut self, step: u64) {
            self.dp.group.mark_step(step);
        }
        fn sum_scalars(&mut self, values: &[f64]) -> Result<Vec<f64>> {
            self.dp.sum_scalars(values)
        }
        fn sum_tensor(&mut self, t: &Tensor) -> Result<()> {
            Ok(self.dp.group.all_reduce_sum(t)?)
        }
        fn agree(&mut self, r: Result<()>) -> Result<()> {
            agree_in(self.dp, r)
        }
    };
}

impl Parallelism for Replicated<'_> {
    group_common!();
    fn place(&mut self, vs: &VarStore) -> Result<()> {
        self.dp.broadcast_params(vs)?;
        let vars = crate::ddp::sorted_variables(vs);
        let params: Vec<&Tensor> = vars.iter().map(|(_, t)| t).collect();
        let (name, world) = (self.dp.group.name().to_string(), self.dp.world());
        self.reducer = Some(starling_torch::collective::Reducer::new(
            &params,
            &name,
            world,
            BUCKET_BYTES,
        )?);
        Ok(())
    }
    fn before_backward(&mut self, last: bool) {
        if let (true, false, Some(r)) = (last, self.no_sync, self.reducer.as_mut()) {
            r.arm();
        }
    }
    fn comm(&self) -> Option<Duration> {
        // Collectives outside backward, and the wait for buckets backward did not hide.
        let exposed = self
            .reducer
            .as_ref()
            .map(|r| r.exposed())
            .unwrap_or_default();
        Some(self.dp.comm() + exposed)
    }
    fn load_optimizer(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        load_full(&mut self.opt, vs, dir, step)
    }
    fn optimizer_step(&mut self, vs: &VarStore, lr: f64) -> Result<StepOutcome> {
        match (self.no_sync, self.reducer.as_mut()) {
            (true, _) => {}
            (false, Some(r)) => r.finish()?,
            (false, None) => self.dp.average_grads(vs)?,
        }
        let o = self.opt.clip(vs)?;
        self.opt.update(vs, lr, Some(&o.found_inf))?;
        Ok(o)
    }
    fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()> {
        let r = if self.dp.rank() == 0 {
            write_model_files(tmp, vs, Some(&self.opt))
        } else {
            Ok(())
        };
        agree_in(self.dp, r)
    }
}

impl Parallelism for Zero1<'_> {
    group_common!();
    fn comm(&self) -> Option<Duration> {
        Some(self.dp.comm())
    }
    fn place(&mut self, vs: &VarStore) -> Result<()> {
        self.dp.broadcast_params(vs)
    }
    fn load_optimizer(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        self.opt.load(dir, vs, step)
    }
    fn optimizer_step(&mut self, vs: &VarStore, lr: f64) -> Result<StepOutcome> {
        self.opt.step(vs, self.dp, lr)
    }
    fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()> {
        let r = if self.dp.rank() == 0 {
            write_model_files(tmp, vs, None)
        } else {
            Ok(())
        };
        agree_in(self.dp, r)?;
        let r = self.opt.save_shard(tmp).map(|_| ());
        agree_in(self.dp, r)
    }
}

impl Parallelism for Fsdp<'_> {
    fn rank(&self) -> usize {
        self.dp_ref().rank()
    }
    fn world(&self) -> usize {
        self.dp_ref().world()
    }
    fn data_rank(&self) -> (usize, usize) {
        Fsdp::data_rank(self)
    }
    fn is_group(&self) -> bool {
        true
    }
    fn place(&mut self, vs: &VarStore) -> Result<()> {
        Fsdp::place(self, vs)
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn load_optimizer(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        self.load(dir, vs, step)
    }
    fn begin_step(&mut self, step: u64) {
        self.dp().group.mark_step(step);
    }
    fn sum_scalars(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        self.dp().sum_scalars(values)
    }
    fn sum_tensor(&mut self, t: &Tensor) -> Result<()> {
        Ok(self.dp().group.all_reduce_sum(t)?)
    }
    fn optimizer_step(&mut self, _vs: &VarStore, lr: f64) -> Result<StepOutcome> {
        Fsdp::optimizer_step(self, lr)
    }
    fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()> {
        Fsdp::save(self, tmp, vs)
    }
    fn agree(&mut self, r: Result<()>) -> Result<()> {
        agree_in(self.dp(), r)
    }
    fn comm(&self) -> Option<Duration> {
        // The gathers and reduce-scatters inside forward and backward, and the rest.
        Some(self.dp_ref().comm() + starling_torch::collective::time_spent())
    }
    fn runner(&self, recompute: bool, kind: tch::Kind) -> Option<Box<dyn Runner>> {
        Some(Fsdp::runner(self, recompute, kind))
    }
}

/// The device a run trains on: `--device`, checked against the group's.
pub fn device(name: &str, dp: Option<&DataParallel>) -> Result<Device> {
    let device = match (name, dp) {
        ("cuda", Some(d)) if tch::Cuda::is_available() => d.group.device(),
        ("cpu", _) => Device::Cpu,
        ("cuda", _) if tch::Cuda::is_available() => Device::Cuda(0),
        ("cuda", _) => {
            return Err(Error::Format(
                "--device cuda: CUDA is not available to libtorch here".into(),
            ))
        }
        (other, _) => {
            return Err(Error::Format(format!(
                "unknown device `{other}` (cpu or cuda)"
            )))
        }
    };
    if let Some(d) = dp {
        if d.group.device() != device {
            return Err(Error::Format(format!(
                "the {} group works on {:?} but training runs on {device:?}",
                d.group.backend().name(),
                d.group.device()
            )));
        }
    }
    Ok(device)
}
