//! The train stage: a Llama trained on token shards by Rust around libtorch.
//!
//! - [`loader`]: random windows over memory-mapped shards, batch k a pure function of (seed, k).
//! - [`optim`]: AdamW with its state held by us, warm-up + cosine, global-norm clipping.
//! - [`train`] / [`train_distributed`] (this file): the step loop, evaluation and when to
//!   checkpoint; it knows ranks only through [`parallel::Parallelism`].
//! - [`parallel`]: how a run is spread over ranks — one process, data parallel ([`ddp`]), ZeRO-1
//!   ([`zero`]) — each one implementation of the seam.
//! - [`checkpoint`]: atomic checkpoints with sha256, keep last K, verify, the newest good one.
//! - [`config`], [`metrics`] (`metrics.jsonl`), [`setup`] (checks before a run), [`plot`].
//! - [`ModelDir`]: a run or an export as consumers open it.

mod captured_step;
pub mod checkpoint;
pub mod config;
pub mod ddp;
pub mod fsdp;
pub mod loader;
pub mod metrics;
mod model_dir;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod setup;
pub mod step_profile;
pub mod tp;
pub mod zero;

pub use checkpoint::{checkpoints, latest_good, CHECKPOINT_VERSION};
pub use config::TrainConfig;
pub use metrics::{default_peak_flops, StepMetrics};
pub use model_dir::ModelDir;
pub use parallel::NO_GRAD_SYNC_ENV;
pub use starling_torch::retain_freed_memory;

use checkpoint::save_checkpoint;
use ddp::DataParallel;
use loader::TokenLoader;
use metrics::rewind_metrics;
use optim::lr_at;
use setup::check_tokenizer;
use starling_model::Llama;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use step_profile::StepProfile;
use tch::{nn::VarStore, Kind};

/// Errors of the train stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(starling_artifacts::IoError),
    /// Bad input or state.
    #[error("{0}")]
    Format(String),
    /// The loss or the gradients stopped being numbers (that step changed nothing).
    #[error(
        "non-finite loss {loss} (gradient norm {grad_norm}) at step {step} (batch {batch}); the step was skipped and nothing after it is kept; last good checkpoint: {last_good}"
    )]
    NonFinite {
        /// Step.
        step: u64,
        /// Index of the step's first micro-batch within the data order.
        batch: u64,
        /// The loss.
        loss: f64,
        /// The global gradient norm before clipping.
        grad_norm: f64,
        /// Last good checkpoint directory.
        last_good: String,
    },
    /// The disk (or the file-size limit) is full; nothing half-written is left behind.
    #[error("{path}: disk full ({source}); the last good checkpoint is intact: free space and run the same command to resume")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The model does not fit the device's memory.
    #[error("{0}")]
    Memory(String),
    /// The model stage failed.
    #[error(transparent)]
    Model(starling_model::Error),
    /// A collective or the rendezvous failed (the message names the rank and the step).
    #[error("{0}")]
    Distributed(String),
    /// libtorch failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// An op of starling's C++ layer failed.
    #[error(transparent)]
    Kernel(#[from] starling_torch::Error),
}

/// Result alias of the train stage.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        // ENOSPC, EDQUOT and EFBIG (a file-size limit) all mean "no room to write".
        if matches!(source.raw_os_error(), Some(28 | 122 | 27)) {
            return Error::DiskFull {
                path: path.into(),
                source,
            };
        }
        Error::Io(starling_artifacts::IoError::new(&path.into(), source))
    }
}

impl From<starling_artifacts::IoError> for Error {
    fn from(e: starling_artifacts::IoError) -> Self {
        Error::io(e.path, e.source)
    }
}

impl From<starling_arch::Error> for Error {
    fn from(e: starling_arch::Error) -> Self {
        Error::from(starling_model::Error::from(e))
    }
}

impl From<starling_model::Error> for Error {
    fn from(e: starling_model::Error) -> Self {
        match e {
            starling_model::Error::Io(e) => Error::io(e.path, e.source),
            other => Error::Model(other),
        }
    }
}

/// Summary of a training run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done.
    pub steps: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// Last training loss.
    pub loss: f64,
    /// Last validation loss, if evaluated.
    pub val_loss: Option<f64>,
    /// Parameters.
    pub params: usize,
    /// The last checkpoint.
    pub checkpoint: PathBuf,
    /// Peak memory of this process over the steps and evaluations, set-up and checkpoint writes
    /// excluded (CPU: resident set; CUDA: the caching allocator's peak).
    pub peak_memory_bytes: Option<u64>,
}

/// Trains (or resumes, when `run` has a good checkpoint) on the token directory `tokens`.
/// Weights are initialised from torch's process-global seed: one training per process at a time.
/// `stop` is polled every step (set it from SIGINT/SIGTERM): the run checkpoints and returns.
pub fn train(
    tokens: &Path,
    run: &Path,
    cfg: &TrainConfig,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepMetrics),
) -> Result<TrainSummary> {
    train_distributed(tokens, run, cfg, None, stop, on_step)
}

/// [`train`] as one rank of a data-parallel group (None: alone). Every rank reads its own share
/// of each global batch (`cfg.batch` sequences per rank per micro-batch), gradients are averaged
/// once per optimizer step, loss and stop requests are reduced, and only rank 0 writes model files
/// and metrics. The run directory must be shared by all ranks (ZeRO-1 shards are written by each).
pub fn train_distributed(
    tokens: &Path,
    run: &Path,
    cfg: &TrainConfig,
    mut dp: Option<&mut DataParallel>,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepMetrics),
) -> Result<TrainSummary> {
    let (rank, world) = dp.as_ref().map(|d| (d.rank(), d.world())).unwrap_or((0, 1));
    let root = rank == 0;
    let device = parallel::device(&cfg.device, dp.as_deref())?;
    let kind = setup::compute_kind(&cfg.dtype, device)?;
    let (train_data, manifest) = TokenLoader::open(tokens, "train", cfg.seed)?;
    check_tokenizer(tokens, &manifest)?;
    let val_data = TokenLoader::open(tokens, "val", cfg.seed)
        .ok()
        .map(|(l, _)| l);
    // Rank 0 picks (and verifies) the checkpoint to resume; the others take its word.
    let resume = parallel::resume(dp.as_deref_mut(), run)?;
    let (mc, ctx) = setup::model_config(
        run,
        resume.is_some(),
        cfg,
        &manifest,
        tokens,
        (device, world),
    )?;
    setup::prepare_run_dir(run, root, &mc, tokens, cfg)?;

    tch::manual_seed(cfg.seed as i64);
    let mut vs = VarStore::new(device);
    let mut model = Llama::new(&vs.root(), &mc);
    model.set_compute_kind(kind);
    let sharding = match (cfg.fsdp, cfg.shard_optimizer) {
        (true, _) => parallel::Sharding::Full,
        (false, true) => parallel::Sharding::Optimizer,
        (false, false) => parallel::Sharding::None,
    };
    if cfg.tp > 1 {
        // torchrun / `starling launch` set LOCAL_WORLD_SIZE; under Slurm, its tasks per node.
        let local = ["LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.trim().parse().ok());
        tp::check(&mc, cfg.tp, ctx, local)?;
    }
    let mut par = parallel::apply(dp, sharding, cfg.tp, &vs, cfg.optim.clone())?;

    let Restored {
        mut tokens_seen,
        mut sequences,
        mut history,
    } = restore(run, cfg, resume.as_ref(), &mut vs, par.as_mut())?;
    par.place(&vs)?;
    model.set_runner(par.runner(cfg.recompute == config::Recompute::Block, kind));
    // The peak the summary reports is the steps' (and evaluations'), not set-up's or checkpoints'.
    metrics::reset_peak_memory(device);
    let mut peak_memory = None;
    let params = mc.num_params();
    let flops_per_token = mc.flops_per_token(ctx);
    let peak = cfg
        .peak_flops
        .unwrap_or_else(|| default_peak_flops(&cfg.device))
        * world as f64;
    let mut metrics = metrics::MetricsLog::open(run, root)?;
    let mut last = StepMetrics {
        step: par.steps(),
        loss: f64::NAN,
        lr: 0.0,
        grad_norm: 0.0,
        tokens: tokens_seen,
        tokens_per_s: 0.0,
        mfu: 0.0,
        val_loss: None,
        val_ppl: None,
        comm_s: None,
    };
    let mut last_ckpt = resume.map(|(dir, _)| dir).unwrap_or_default();
    let title = plot::run_title(run, params, cfg.batch, cfg.accum, ctx, world);
    let draw = |history: &[StepMetrics]| {
        if cfg.plot && root {
            if let Err(e) = plot::loss_png(history, &title, &run.join("loss.png")) {
                tracing::warn!("loss.png not drawn: {e}");
            }
        }
    };
    // A micro-batch is `batch` sequences on each rank: rank r reads sequences
    // [cursor + r·batch, cursor + (r+1)·batch) of the run's order, so one rank with batch B·W
    // sees exactly what W ranks with batch B see together.
    // Ranks of a tensor-parallel group read the same sequences.
    let (data_rank, data_world) = par.data_rank();
    let global_micro = (cfg.batch * data_world) as u64;
    let per_step = global_micro * cfg.accum as u64 * ctx as u64;
    let started = Instant::now();
    let log_every = cfg.log_every.max(1);
    let mut pending = Pending::new(par.comm());
    let graphs = (cfg.cuda_graphs)
        .resolve(captured_step::why_not(device, cfg, par.as_mut()))
        .map_err(Error::Format)?;
    let mut captured = graphs.then(|| captured_step::CapturedStep::new(device, cfg, ctx));
    while par.steps() < cfg.steps {
        let step = par.steps();
        par.begin_step(step + 1);
        let lr = lr_at(&cfg.optim, step, cfg.steps);
        let profiling = match cfg.profile_step {
            Some(p) if p == step + 1 && root => Some(StepProfile::start(step + 1, device)?),
            _ => None,
        };
        let batch = Batch {
            first: sequences + (data_rank * cfg.batch) as u64,
            stride: global_micro,
        };
        // Nothing in the step reads a value on the host: loss, norm and the non-finite flag stay
        // on the device until the next flush.
        let (loss, outcome) = match captured.as_mut() {
            Some(c) => {
                let opt = par
                    .capturable()
                    .ok_or_else(|| Error::Format("not capturable".into()))?;
                c.step(&model, &train_data, cfg, &batch, ctx, &vs, opt, lr)?
            }
            None => {
                let loss = forward_backward(&model, &train_data, cfg, &batch, ctx, par.as_mut())?;
                (loss, par.optimizer_step(&vs, lr)?)
            }
        };
        if let Some(p) = profiling {
            p.finish(run)?;
        }
        sequences += global_micro * cfg.accum as u64;
        tokens_seen += per_step;
        pending.steps.push(PendingStep {
            step: par.steps(),
            lr,
            tokens: tokens_seen,
            loss,
            outcome,
        });
        let n = par.steps();
        let stop_here = stop.load(Ordering::Relaxed)
            || cfg
                .max_seconds
                .is_some_and(|m| started.elapsed().as_secs_f64() >= m);
        let evaluating = val_data.is_some() && (n.is_multiple_of(cfg.eval_every) || n == cfg.steps);
        let checkpointing = n.is_multiple_of(cfg.ckpt_every) || n == cfg.steps;
        // Alone, a stop request is acted on after the step it arrived in; in a group the ranks
        // agree on it at the next flush (one collective per interval, not per step).
        let flushing = n.is_multiple_of(log_every)
            || evaluating
            || checkpointing
            || (stop_here && !par.is_group());
        if !flushing {
            continue;
        }
        let read = pending.read(par.as_mut(), stop_here, per_step, &last_ckpt, cfg.accum)?;
        let mut lines = read.lines;
        let secs = read.seconds;
        for m in &mut lines {
            m.mfu = m.tokens_per_s * flops_per_token / peak;
        }
        if let (Some(val), true) = (val_data.as_ref(), evaluating) {
            let vl = evaluate(&model, val, cfg, par.as_mut(), ctx, device)?;
            if let Some(l) = lines.last_mut() {
                l.val_loss = Some(vl);
                l.val_ppl = Some(vl.exp());
            }
        }
        tracing::debug!("{} steps read in one flush ({secs:.2}s)", lines.len());
        for m in lines {
            metrics.append(&m)?;
            history.push(m.clone());
            on_step(&m);
            last = m;
        }
        if last.val_loss.is_some() {
            draw(&history);
        }
        // Alone, a stop asked for during these steps (even by `on_step`) ends the run here; in a
        // group the ranks act on the request they agreed on in this flush's all-reduce.
        let stopping = if par.is_group() {
            read.stop_agreed
        } else {
            stop.load(Ordering::Relaxed)
                || cfg
                    .max_seconds
                    .is_some_and(|m| started.elapsed().as_secs_f64() >= m)
        };
        if checkpointing || stopping {
            peak_memory = peak_memory.max(metrics::peak_memory_bytes(device));
            metrics.flush()?;
            last_ckpt = save_checkpoint(run, &vs, par.as_mut(), tokens_seen, sequences, cfg.keep)?;
        }
        if stopping {
            break;
        }
        pending = Pending::new(par.comm());
    }
    if last_ckpt.as_os_str().is_empty() {
        last_ckpt = save_checkpoint(run, &vs, par.as_mut(), tokens_seen, sequences, cfg.keep)?;
    }
    draw(&history);
    Ok(TrainSummary {
        steps: par.steps(),
        tokens: tokens_seen,
        loss: last.loss,
        val_loss: last.val_loss,
        params,
        checkpoint: last_ckpt,
        peak_memory_bytes: peak_memory,
    })
}

/// The sequences of one optimizer step on this rank: micro-batch k starts at `first + k·stride`.
pub(crate) struct Batch {
    pub(crate) first: u64,
    pub(crate) stride: u64,
}

/// One step run but not yet read on the host.
struct PendingStep {
    step: u64,
    lr: f64,
    tokens: u64,
    /// This rank's loss (0-d, on the device).
    loss: tch::Tensor,
    outcome: optim::StepOutcome,
}

/// The steps since the last flush, and when they started.
struct Pending {
    steps: Vec<PendingStep>,
    since: Instant,
    comm0: Option<std::time::Duration>,
}

/// What one flush read: a metrics line per step, and the group's stop decision.
struct Flushed {
    lines: Vec<StepMetrics>,
    stop_agreed: bool,
    seconds: f64,
}

impl Pending {
    fn new(comm0: Option<std::time::Duration>) -> Self {
        Self {
            steps: Vec::new(),
            since: Instant::now(),
            comm0,
        }
    }

    /// Reads every pending step's loss, gradient norm and (in a group) the stop requests with one
    /// collective and one host read; a non-finite step stops the run, naming it and the last good
    /// checkpoint. Throughput is the interval's, shared by its steps.
    fn read(
        &self,
        par: &mut dyn parallel::Parallelism,
        stop_here: bool,
        per_step: u64,
        last_good: &Path,
        accum: usize,
    ) -> Result<Flushed> {
        let n = self.steps.len();
        let Some(first) = self.steps.first() else {
            return Ok(Flushed {
                lines: Vec::new(),
                stop_agreed: stop_here,
                seconds: 0.0,
            });
        };
        let device = first.loss.device();
        // Losses and the stop flag are summed over the ranks; norms are already global.
        let mut summed: Vec<tch::Tensor> = self.steps.iter().map(|p| p.loss.view([1])).collect();
        summed.push(tch::Tensor::full(
            [1],
            f64::from(u8::from(stop_here)),
            (Kind::Float, device),
        ));
        let summed = tch::Tensor::cat(&summed, 0);
        par.sum_tensor(&summed)?;
        let norms: Vec<tch::Tensor> = self
            .steps
            .iter()
            .map(|p| p.outcome.grad_norm.to_kind(Kind::Float).view([1]))
            .collect();
        let all = tch::Tensor::cat(&[summed, tch::Tensor::cat(&norms, 0)], 0);
        let v = starling_torch::read_f64(&all)?;
        let seconds = self.since.elapsed().as_secs_f64();
        let world = par.world() as f64;
        let comm = match (par.comm(), self.comm0) {
            (Some(c), Some(c0)) => Some((c - c0).as_secs_f64() / n as f64),
            _ => None,
        };
        let tokens_per_s = (per_step * n as u64) as f64 / seconds.max(1e-9);
        let mut lines = Vec::with_capacity(n);
        for (i, p) in self.steps.iter().enumerate() {
            let (loss, grad_norm) = (v[i] / world, v[n + 1 + i]);
            if !loss.is_finite() || !grad_norm.is_finite() {
                return Err(Error::NonFinite {
                    step: p.step,
                    batch: (p.step - 1) * accum as u64,
                    loss,
                    grad_norm,
                    last_good: last_good.display().to_string(),
                });
            }
            lines.push(StepMetrics {
                step: p.step,
                loss,
                lr: p.lr,
                grad_norm,
                tokens: p.tokens,
                tokens_per_s,
                mfu: 0.0,
                val_loss: None,
                val_ppl: None,
                comm_s: comm,
            });
        }
        Ok(Flushed {
            lines,
            stop_agreed: v[n] > 0.0,
            seconds,
        })
    }
}

/// Forward and backward over the step's `accum` micro-batches (gradients accumulate); returns
/// the summed loss as a 0-d device tensor (nothing is read on the host).
fn forward_backward(
    model: &Llama,
    data: &TokenLoader,
    cfg: &TrainConfig,
    b: &Batch,
    ctx: usize,
    par: &mut dyn parallel::Parallelism,
) -> Result<tch::Tensor> {
    let device = model.device();
    let mut loss_sum = tch::Tensor::zeros([], (Kind::Float, device));
    for micro in 0..cfg.accum as u64 {
        let (x, y) = data.batch_at(b.first + micro * b.stride, cfg.batch, ctx)?;
        let loss = model.loss(&upload(&x, device), &upload(&y, device)) / cfg.accum as f64;
        par.before_backward(micro + 1 == cfg.accum as u64);
        loss.backward();
        loss_sum += loss.detach();
    }
    Ok(loss_sum)
}

/// A batch on the training device; to CUDA through pinned memory without waiting for the copy.
pub(crate) fn upload(t: &tch::Tensor, device: tch::Device) -> tch::Tensor {
    if device.is_cuda() {
        t.pin_memory(device)
            .to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}

/// Where a run starts from: its newest good checkpoint, `--init`'s weights, or fresh weights.
struct Restored {
    tokens_seen: u64,
    sequences: u64,
    history: Vec<StepMetrics>,
}

/// Loads the checkpoint being resumed (model and optimizer state) or `--init`'s weights into
/// `vs`; a run that does not resume starts a fresh `metrics.jsonl`.
fn restore(
    run: &Path,
    cfg: &TrainConfig,
    resume: Option<&(PathBuf, checkpoint::CheckpointState)>,
    vs: &mut VarStore,
    par: &mut dyn parallel::Parallelism,
) -> Result<Restored> {
    let root = par.rank() == 0;
    let metrics_path = run.join("metrics.jsonl");
    let Some((dir, state)) = resume else {
        if let Some(init) = &cfg.init {
            starling_model::load_weights(vs, &init.join("model.safetensors"))?;
            tracing::info!("initialised from {}", init.display());
        }
        // A fresh run: nothing of an earlier run's metrics applies.
        if root {
            let _ = std::fs::remove_file(&metrics_path);
        }
        return Ok(Restored {
            tokens_seen: 0,
            sequences: 0,
            history: Vec::new(),
        });
    };
    let p = dir.join("model.safetensors");
    vs.load(&p)
        .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?;
    par.load_optimizer(dir, vs, state.step)?;
    tracing::info!(
        "resumed from {} at step {} (written by {} rank(s), now {})",
        dir.display(),
        state.step,
        state.world.unwrap_or(1),
        par.world()
    );
    Ok(Restored {
        tokens_seen: state.tokens,
        // Older checkpoints lack the cursor: one rank, `batch × accum` sequences per step.
        sequences: state
            .sequences
            .unwrap_or(state.step * (cfg.batch * cfg.accum) as u64),
        history: if root {
            rewind_metrics(&metrics_path, state.step)?
        } else {
            Vec::new()
        },
    })
}

/// Mean validation loss over `cfg.eval_batches` batches, each one step's worth of sequences cut
/// like a training step (micro-batches of `batch` per rank), so any rank count and accumulation
/// see the same.
fn evaluate(
    model: &Llama,
    val: &TokenLoader,
    cfg: &TrainConfig,
    par: &mut dyn parallel::Parallelism,
    ctx: usize,
    device: tch::Device,
) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let world = par.world();
    let (rank, data_world) = par.data_rank();
    let global_micro = (cfg.batch * data_world) as u64;
    let accum = cfg.accum as u64;
    // Summed on the device, reduced over the ranks and read once.
    let mut total = tch::Tensor::zeros([1], (Kind::Float, device));
    for k in 0..cfg.eval_batches as u64 {
        for micro in 0..accum {
            let first = (k * accum + micro) * global_micro + (rank * cfg.batch) as u64;
            let (x, y) = val.batch_at(first, cfg.batch, ctx)?;
            total += model.loss(&upload(&x, device), &upload(&y, device)) / accum as f64;
        }
    }
    par.sum_tensor(&total)?;
    let total = starling_torch::read_f64(&total)?[0] / world as f64;
    Ok(total / cfg.eval_batches.max(1) as f64)
}
