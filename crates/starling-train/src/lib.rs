//! The train stage: a Llama trained on token shards by Rust around libtorch.
//!
//! - [`loader`]: random windows over memory-mapped shards, batch k a pure function of (seed, k).
//! - [`optim`]: AdamW with its state held by us, warm-up + cosine, global-norm clipping.
//! - [`train`]: the loop, evaluation, `metrics.jsonl`, checkpoints (atomic, sha256, keep last K), resume.
//! - [`ddp`] and [`zero`]: data parallel over c10d ([`train_distributed`]), with the optimizer state
//!   optionally split across ranks (ZeRO-1).

pub mod ddp;
pub mod loader;
mod model_dir;
pub mod optim;
pub mod plot;
pub mod zero;

pub use model_dir::ModelDir;

use ddp::DataParallel;
use loader::TokenLoader;
use optim::{lr_at, AdamW, OptimConfig};
use serde::{Deserialize, Serialize};
use starling_model::{Llama, LlamaConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind};
use zero::ShardedAdamW;

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
    /// The loss stopped being a number.
    #[error(
        "non-finite loss {loss} at step {step} (batch {batch}); last good checkpoint: {last_good}"
    )]
    NonFinite {
        /// Step.
        step: u64,
        /// Batch index within the data order.
        batch: u64,
        /// The loss.
        loss: f64,
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

impl From<starling_model::Error> for Error {
    fn from(e: starling_model::Error) -> Self {
        match e {
            starling_model::Error::Io(e) => Error::io(e.path, e.source),
            other => Error::Model(other),
        }
    }
}

/// Version of `state.json` in checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;

/// What to train and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Model preset (`tiny`, `small`, `gpt2-124m`, `llama-1b`). By default `small`.
    pub preset: String,
    /// Sequences per micro-batch. By default 16.
    pub batch: usize,
    /// Micro-batches per optimizer step. By default 1.
    pub accum: usize,
    /// Context length (≤ the preset's). By default the preset's.
    pub ctx: Option<usize>,
    /// Optimizer steps. By default 1,000.
    pub steps: u64,
    /// Evaluate every N steps. By default 100.
    pub eval_every: u64,
    /// Validation batches per evaluation, each one step's worth of sequences (batch × accum × ranks). By default 8.
    pub eval_batches: usize,
    /// Checkpoint every N steps. By default 200.
    pub ckpt_every: u64,
    /// Checkpoints kept. By default 3.
    pub keep: usize,
    /// Seed of weights and data order. By default 1.
    pub seed: u64,
    /// "cpu" or "cuda". By default "cpu".
    pub device: String,
    /// Device peak FLOP/s for MFU; by default 300e9 on CPU (DESIGN.md's measured fp32 ceiling here) and
    /// 989e12 (H100 bf16) on CUDA.
    pub peak_flops: Option<f64>,
    /// Matrix-product precision: "auto" (bf16 on CUDA, fp32 on CPU, where bf16 is slower), "fp32"
    /// or "bf16". Weights, optimizer state, norms and the loss stay fp32 either way.
    pub dtype: String,
    /// Start from this HF Llama directory's weights (its `config.json` replaces the preset).
    pub init: Option<PathBuf>,
    /// Draw `loss.png` at every evaluation and at the end. By default true.
    pub plot: bool,
    /// Wall-clock budget of this invocation in seconds: past it, checkpoint and stop (resumable).
    pub max_seconds: Option<f64>,
    /// ZeRO-1: split the AdamW state across the ranks of a data-parallel run. By default false.
    pub shard_optimizer: bool,
    /// Optimizer and schedule.
    pub optim: OptimConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            preset: "small".into(),
            batch: 16,
            accum: 1,
            ctx: None,
            steps: 1000,
            eval_every: 100,
            eval_batches: 8,
            ckpt_every: 200,
            keep: 3,
            seed: 1,
            device: "cpu".into(),
            peak_flops: None,
            dtype: "auto".into(),
            init: None,
            plot: true,
            max_seconds: None,
            shard_optimizer: false,
            optim: OptimConfig::default(),
        }
    }
}

/// The peak FLOP/s MFU is measured against: 300e9 on CPU (DESIGN.md's measured fp32 matrix ceiling
/// of this 2-core class), 989e12 (H100 dense bf16) on CUDA.
pub fn default_peak_flops(device: &str) -> f64 {
    if device == "cpu" {
        300e9
    } else {
        989e12
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps done.
    pub step: u64,
    /// Mean training loss of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens seen so far.
    pub tokens: u64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation of this step.
    pub mfu: f64,
    /// Validation loss, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation perplexity, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ppl: Option<f64>,
    /// Seconds of this step spent in collectives (data-parallel runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_s: Option<f64>,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    version: u32,
    step: u64,
    tokens: u64,
    /// Training sequences consumed (the data cursor); older checkpoints lack it.
    #[serde(default)]
    sequences: Option<u64>,
    /// Ranks of the run that wrote it.
    #[serde(default)]
    world: Option<usize>,
    sha256: Vec<(String, String)>,
}

fn sha256(path: &Path) -> Result<String> {
    Ok(starling_artifacts::sha256_file(path)?.0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(starling_artifacts::write_atomic(path, bytes)?)
}

/// The optimizer: AdamW whole on every rank, or split across ranks (ZeRO-1).
#[derive(Debug)]
enum Optimizer {
    Full(AdamW),
    Sharded(ShardedAdamW),
}

impl Optimizer {
    fn step(&self) -> u64 {
        match self {
            Optimizer::Full(o) => o.step,
            Optimizer::Sharded(o) => o.step,
        }
    }
}

/// Where a checkpoint's writers meet: each rank says whether its part failed; all fail together.
fn agree(dp: Option<&mut DataParallel>, r: Result<()>) -> Result<()> {
    let Some(dp) = dp else { return r };
    let failed = dp.sum_scalars(&[if r.is_err() { 1.0 } else { 0.0 }])?[0];
    r?;
    if failed > 0.0 {
        return Err(Error::Format(
            "another rank failed to write its part of the checkpoint".into(),
        ));
    }
    Ok(())
}

/// Writes `ckpt-STEP/` through a temp directory, then `latest`; removes all but the last `keep`.
/// Rank 0 writes the model (and whole AdamW moments); with ZeRO-1 every rank writes its shard.
/// On failure the temp directory is removed: the previous checkpoints stay as they were.
fn save_checkpoint(
    run: &Path,
    vs: &VarStore,
    opt: &Optimizer,
    tokens: u64,
    sequences: u64,
    keep: usize,
    mut dp: Option<&mut DataParallel>,
) -> Result<PathBuf> {
    let (rank, world) = dp.as_ref().map(|d| (d.rank(), d.world())).unwrap_or((0, 1));
    let name = format!("ckpt-{:08}", opt.step());
    let tmp = run.join(format!(".{name}.tmp"));
    let dir = run.join(&name);
    let mut write = || -> Result<()> {
        let r = if rank == 0 {
            write_model_files(&tmp, vs, opt)
        } else {
            Ok(())
        };
        agree(dp.as_deref_mut(), r)?;
        if let Optimizer::Sharded(z) = opt {
            let r = z.save_shard(&tmp).map(|_| ());
            agree(dp.as_deref_mut(), r)?;
        }
        let r = if rank == 0 {
            let state = CheckpointState {
                version: CHECKPOINT_VERSION,
                step: opt.step(),
                tokens,
                sequences: Some(sequences),
                world: Some(world),
                sha256: Vec::new(),
            };
            finish_checkpoint(&tmp, state).and_then(|()| {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                write_atomic(&run.join("latest"), name.as_bytes())
            })
        } else {
            Ok(())
        };
        agree(dp.as_deref_mut(), r)
    };
    if let Err(e) = write() {
        if rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        return Err(e);
    }
    if rank == 0 {
        let mut all = checkpoints(run);
        while all.len() > keep.max(1) {
            let old = all.remove(0);
            let _ = std::fs::remove_dir_all(run.join(old));
        }
    }
    Ok(dir)
}

/// Writes the model (and whole AdamW moments) into a fresh `tmp`.
fn write_model_files(tmp: &Path, vs: &VarStore, opt: &Optimizer) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut files = vec![("model.safetensors", vs)];
    if let Optimizer::Full(o) = opt {
        files.push(("adam-m.safetensors", &o.m));
        files.push(("adam-v.safetensors", &o.v));
    }
    for (file, store) in files {
        let p = tmp.join(file);
        store.save(&p).map_err(|e| {
            // libtorch reports a full disk in its own words; name the file and the likely cause.
            Error::Format(format!(
                "{}: writing the checkpoint failed ({e}); is the disk full? The last good checkpoint is intact",
                p.display()
            ))
        })?;
        sync_file(&p)?;
    }
    Ok(())
}

/// Flushes a written file to disk.
pub(crate) fn sync_file(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(p, e))
}

/// Records the sha256 of every file in `tmp` (every rank's included) in its `state.json`.
fn finish_checkpoint(tmp: &Path, mut state: CheckpointState) -> Result<()> {
    let mut files: Vec<String> = std::fs::read_dir(tmp)
        .map_err(|e| Error::io(tmp, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    for f in files {
        let sum = sha256(&tmp.join(&f))?;
        state.sha256.push((f, sum));
    }
    write_atomic(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(&state).map_err(|e| Error::Format(e.to_string()))?,
    )
}

/// Checkpoint directory names of a run, oldest first.
pub fn checkpoints(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ckpt-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Verifies a checkpoint's files against its sha256 list; returns its state.
fn verify(dir: &Path) -> Result<CheckpointState> {
    let state = read_state(dir)?;
    let p = dir.join("state.json");
    if state.version != CHECKPOINT_VERSION {
        return Err(Error::Format(format!(
            "{}: checkpoint version {}",
            p.display(),
            state.version
        )));
    }
    for (f, sum) in &state.sha256 {
        let got = sha256(&dir.join(f))?;
        if &got != sum {
            return Err(Error::Format(format!(
                "{}: sha256 mismatch",
                dir.join(f).display()
            )));
        }
    }
    Ok(state)
}

/// A checkpoint's `state.json`, unverified.
fn read_state(dir: &Path) -> Result<CheckpointState> {
    let p = dir.join("state.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Format(format!("{}: {e}", p.display())))
}

/// The newest checkpoint that verifies, trying `latest` first; warns about each bad one.
pub fn latest_good(run: &Path) -> Option<PathBuf> {
    latest_verified(run).map(|(dir, _)| dir)
}

/// [`latest_good`] with the state it verified.
fn latest_verified(run: &Path) -> Option<(PathBuf, CheckpointState)> {
    let mut order: Vec<String> = checkpoints(run);
    order.reverse();
    if let Ok(l) = std::fs::read_to_string(run.join("latest")) {
        order.retain(|n| n != l.trim());
        order.insert(0, l.trim().to_string());
    }
    for name in order {
        let dir = run.join(&name);
        match verify(&dir) {
            Ok(state) => return Some((dir, state)),
            Err(e) => tracing::warn!("skipping checkpoint {}: {e}", dir.display()),
        }
    }
    None
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
    let device = match (cfg.device.as_str(), dp.as_ref()) {
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
    if let Some(d) = dp.as_ref() {
        if d.group.device() != device {
            return Err(Error::Format(format!(
                "the {} group works on {:?} but training runs on {device:?}",
                d.group.backend().name(),
                d.group.device()
            )));
        }
    }
    let kind = match (cfg.dtype.as_str(), device) {
        ("auto", Device::Cpu) | ("fp32", _) => Kind::Float,
        ("auto", _) | ("bf16", _) => Kind::BFloat16,
        (other, _) => {
            return Err(Error::Format(format!(
                "unknown dtype `{other}` (auto, fp32 or bf16)"
            )))
        }
    };
    let (train_data, manifest) = TokenLoader::open(tokens, "train", cfg.seed)?;
    check_tokenizer(tokens, &manifest)?;
    let val_data = TokenLoader::open(tokens, "val", cfg.seed)
        .ok()
        .map(|(l, _)| l);
    // Rank 0 picks (and verifies) the checkpoint to resume; the others take its word.
    let resume = match dp.as_deref_mut() {
        None => latest_verified(run),
        Some(d) if root => {
            let r = latest_verified(run);
            let name = r
                .as_ref()
                .and_then(|(dir, _)| dir.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            d.group.store_set("starling/resume", name.as_bytes())?;
            r
        }
        Some(d) => {
            let name = String::from_utf8_lossy(&d.group.store_get("starling/resume")?).into_owned();
            if name.is_empty() {
                None
            } else {
                let dir = run.join(&name);
                let state = read_state(&dir)?;
                Some((dir, state))
            }
        }
    };
    let (mut mc, origin) = if resume.is_some() {
        let p = run.join("config.json");
        (
            starling_model::LlamaConfig::load(&p)?,
            p.display().to_string(),
        )
    } else if let Some(init) = &cfg.init {
        let p = init.join("config.json");
        (
            starling_model::LlamaConfig::load(&p)?,
            p.display().to_string(),
        )
    } else {
        (
            LlamaConfig::preset(&cfg.preset, manifest.vocab_size)?,
            format!("preset {}", cfg.preset),
        )
    };
    if mc.vocab_size != manifest.vocab_size {
        return Err(Error::Format(format!(
            "vocabulary mismatch: {origin} has vocab_size {} but the tokens in {} were encoded with {} ids; \
             train a model for this tokenizer or re-encode the corpus with the model's tokenizer",
            mc.vocab_size,
            tokens.display(),
            manifest.vocab_size
        )));
    }
    let ctx = cfg.ctx.unwrap_or(mc.max_position_embeddings);
    if ctx == 0 || ctx > mc.max_position_embeddings {
        return Err(Error::Format(format!(
            "context {ctx} must be in 1..={}",
            mc.max_position_embeddings
        )));
    }
    if cfg.batch == 0 || cfg.accum == 0 || cfg.steps == 0 {
        return Err(Error::Format(
            "batch, accum and steps must be at least 1".into(),
        ));
    }
    check_memory(&mc, &origin, cfg, ctx, device)?;
    mc.max_position_embeddings = mc.max_position_embeddings.max(ctx);
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    if root {
        // Temp directories of checkpoints interrupted by a kill are never valid: remove them.
        for e in std::fs::read_dir(run)
            .map_err(|e| Error::io(run, e))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".ckpt-") && n.ends_with(".tmp") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        mc.save(&run.join("config.json"))?;
        let tok_src = tokens.join("tokenizer.json");
        let tok_bytes = std::fs::read(&tok_src).map_err(|e| Error::io(&tok_src, e))?;
        write_atomic(&run.join("tokenizer.json"), &tok_bytes)?;
        write_atomic(
            &run.join("train.json"),
            &serde_json::to_vec_pretty(cfg).map_err(|e| Error::Format(e.to_string()))?,
        )?;
    }

    tch::manual_seed(cfg.seed as i64);
    let mut vs = VarStore::new(device);
    let mut model = Llama::new(&vs.root(), &mc);
    model.set_compute_kind(kind);
    let mut opt = if cfg.shard_optimizer {
        Optimizer::Sharded(ShardedAdamW::new(&vs, cfg.optim.clone(), rank, world))
    } else {
        Optimizer::Full(AdamW::new(&vs, cfg.optim.clone()))
    };
    let mut tokens_seen = 0u64;
    let mut sequences = 0u64;
    let mut history = Vec::new();
    if let Some((dir, state)) = &resume {
        let load = |vs: &mut VarStore, f: &str| {
            let p = dir.join(f);
            vs.load(&p)
                .map_err(|e| Error::Format(format!("{}: {e}", p.display())))
        };
        load(&mut vs, "model.safetensors")?;
        match &mut opt {
            Optimizer::Full(o) => {
                match zero::shard_world(dir) {
                    Some(w) => zero::load_full_from_shards(o, &vs, dir, w)?,
                    None => {
                        load(&mut o.m, "adam-m.safetensors")?;
                        load(&mut o.v, "adam-v.safetensors")?;
                    }
                }
                o.step = state.step;
            }
            Optimizer::Sharded(z) => z.load(dir, state.step)?,
        }
        tokens_seen = state.tokens;
        // Older checkpoints lack the cursor: one rank, `batch × accum` sequences per step.
        sequences = state
            .sequences
            .unwrap_or(state.step * (cfg.batch * cfg.accum) as u64);
        if root {
            history = rewind_metrics(&run.join("metrics.jsonl"), state.step)?;
        }
        tracing::info!(
            "resumed from {} at step {} (written by {} rank(s), now {world})",
            dir.display(),
            state.step,
            state.world.unwrap_or(1)
        );
    } else if let Some(init) = &cfg.init {
        starling_model::load_weights(&mut vs, &init.join("model.safetensors"))?;
        // A fresh run: nothing of an earlier run's metrics applies.
        if root {
            let _ = std::fs::remove_file(run.join("metrics.jsonl"));
        }
        tracing::info!("initialised from {}", init.display());
    } else if root {
        let _ = std::fs::remove_file(run.join("metrics.jsonl"));
    }
    if let Some(d) = dp.as_deref_mut() {
        d.broadcast_params(&vs)?;
    }
    let params = mc.num_params();
    let matmul = (params - mc.vocab_size * mc.hidden_size
        + if mc.tie_word_embeddings {
            mc.vocab_size * mc.hidden_size
        } else {
            0
        }) as f64;
    let flops_per_token =
        6.0 * matmul + 12.0 * (mc.num_hidden_layers * mc.hidden_size * ctx) as f64;
    let peak = cfg
        .peak_flops
        .unwrap_or_else(|| default_peak_flops(&cfg.device))
        * world as f64;
    let metrics_path = run.join("metrics.jsonl");
    let mut metrics = if root {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .map_err(|e| Error::io(&metrics_path, e))?,
        )
    } else {
        None
    };
    let mut last = StepMetrics {
        step: opt.step(),
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
    let title = format!(
        "{} · {:.1}M params · batch {}x{}x{}{} tokens",
        run.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        params as f64 / 1e6,
        cfg.batch,
        cfg.accum,
        ctx,
        if world > 1 {
            format!(" x {world} ranks")
        } else {
            String::new()
        }
    );
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
    let global_micro = (cfg.batch * world) as u64;
    let per_step = global_micro * cfg.accum as u64 * ctx as u64;
    let started = Instant::now();
    while opt.step() < cfg.steps {
        let t = Instant::now();
        let comm0 = dp.as_ref().map(|d| d.comm());
        let step = opt.step();
        if let Some(d) = dp.as_deref_mut() {
            d.group.mark_step(step + 1);
        }
        let lr = lr_at(&cfg.optim, step, cfg.steps);
        let mut loss_sum = 0.0;
        for micro in 0..cfg.accum as u64 {
            let first = sequences + micro * global_micro + (rank * cfg.batch) as u64;
            let (x, y) = train_data.batch_at(first, cfg.batch, ctx)?;
            let loss = model.loss(&x.to_device(device), &y.to_device(device)) / cfg.accum as f64;
            let v = loss.double_value(&[]);
            if !v.is_finite() && dp.is_none() {
                return Err(Error::NonFinite {
                    step: step + 1,
                    batch: step * cfg.accum as u64 + micro,
                    loss: v,
                    last_good: last_ckpt.display().to_string(),
                });
            }
            loss.backward();
            loss_sum += v;
        }
        let stop_here = stop.load(Ordering::Relaxed)
            || cfg
                .max_seconds
                .is_some_and(|m| started.elapsed().as_secs_f64() >= m);
        // One small all-reduce per step: the mean loss, and whether any rank was asked to stop.
        let (loss_mean, stop_agreed) = match dp.as_deref_mut() {
            Some(d) => {
                let r = d.sum_scalars(&[loss_sum, f64::from(u8::from(stop_here))])?;
                (r[0] / world as f64, r[1] > 0.0)
            }
            None => (loss_sum, stop_here),
        };
        if !loss_mean.is_finite() {
            return Err(Error::NonFinite {
                step: step + 1,
                batch: step * cfg.accum as u64,
                loss: loss_mean,
                last_good: last_ckpt.display().to_string(),
            });
        }
        let grad_norm = match (&mut opt, dp.as_deref_mut()) {
            (Optimizer::Full(o), d) => {
                if let Some(d) = d {
                    d.average_grads(&vs)?;
                }
                let n = o.clip(&vs);
                o.update(&vs, lr);
                n
            }
            (Optimizer::Sharded(z), Some(d)) => z.step(&vs, d, lr)?,
            (Optimizer::Sharded(_), None) => {
                return Err(Error::Format(
                    "--shard-optimizer needs a data-parallel group (start with `starling launch` or torchrun's environment)".into(),
                ))
            }
        };
        sequences += global_micro * cfg.accum as u64;
        tokens_seen += per_step;
        let secs = t.elapsed().as_secs_f64();
        last = StepMetrics {
            step: opt.step(),
            loss: loss_mean,
            lr,
            grad_norm,
            tokens: tokens_seen,
            tokens_per_s: per_step as f64 / secs,
            mfu: per_step as f64 * flops_per_token / secs / peak,
            val_loss: None,
            val_ppl: None,
            comm_s: None,
        };
        if let Some(val) = val_data
            .as_ref()
            .filter(|_| opt.step().is_multiple_of(cfg.eval_every) || opt.step() == cfg.steps)
        {
            let _g = tch::no_grad_guard();
            let mut total = 0.0;
            // A validation batch is one step's worth of sequences, cut like a training step
            // (micro-batches of `batch` per rank), so any rank count and accumulation see the same.
            let accum = cfg.accum as u64;
            for k in 0..cfg.eval_batches as u64 {
                for micro in 0..accum {
                    let first = (k * accum + micro) * global_micro + (rank * cfg.batch) as u64;
                    let (x, y) = val.batch_at(first, cfg.batch, ctx)?;
                    total += model
                        .loss(&x.to_device(device), &y.to_device(device))
                        .to_kind(Kind::Double)
                        .double_value(&[])
                        / accum as f64;
                }
            }
            if let Some(d) = dp.as_deref_mut() {
                total = d.sum_scalars(&[total])?[0] / world as f64;
            }
            let vl = total / cfg.eval_batches.max(1) as f64;
            last.val_loss = Some(vl);
            last.val_ppl = Some(vl.exp());
        }
        if let (Some(d), Some(c0)) = (dp.as_ref(), comm0) {
            last.comm_s = Some((d.comm() - c0).as_secs_f64());
        }
        if let Some(m) = metrics.as_mut() {
            let line = serde_json::to_string(&last).map_err(|e| Error::Format(e.to_string()))?;
            writeln!(m, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        }
        history.push(last.clone());
        if last.val_loss.is_some() {
            draw(&history);
        }
        on_step(&last);
        // Alone, a stop asked for during this step (even by `on_step`) ends it here; in a group
        // the ranks act on the request they agreed on in this step's all-reduce.
        let stopping = if dp.is_some() {
            stop_agreed
        } else {
            stop.load(Ordering::Relaxed)
                || cfg
                    .max_seconds
                    .is_some_and(|m| started.elapsed().as_secs_f64() >= m)
        };
        if opt.step().is_multiple_of(cfg.ckpt_every) || opt.step() == cfg.steps || stopping {
            if let Some(m) = metrics.as_mut() {
                m.flush().map_err(|e| Error::io(&metrics_path, e))?;
            }
            last_ckpt = save_checkpoint(
                run,
                &vs,
                &opt,
                tokens_seen,
                sequences,
                cfg.keep,
                dp.as_deref_mut(),
            )?;
        }
        if stopping {
            break;
        }
    }
    if last_ckpt.as_os_str().is_empty() {
        last_ckpt = save_checkpoint(run, &vs, &opt, tokens_seen, sequences, cfg.keep, dp)?;
    }
    draw(&history);
    Ok(TrainSummary {
        steps: opt.step(),
        tokens: tokens_seen,
        loss: last.loss,
        val_loss: last.val_loss,
        params,
        checkpoint: last_ckpt,
    })
}

/// Checks that the token directory's tokenizer is the one its shards were encoded with.
fn check_tokenizer(tokens: &Path, manifest: &starling_tokens::TokensManifest) -> Result<()> {
    let p = tokens.join("tokenizer.json");
    if !p.exists() {
        return Err(Error::Format(format!(
            "{}: missing; a token directory from `starling tokens` carries the tokenizer its shards were encoded with",
            p.display()
        )));
    }
    let got = sha256(&p)?;
    if got != manifest.tokenizer_sha256 {
        return Err(Error::Format(format!(
            "{}: sha256 {got} is not the {} the manifest records: the shards were encoded with another tokenizer",
            p.display(),
            manifest.tokenizer_sha256
        )));
    }
    Ok(())
}

/// Bytes a training step needs: fp32 weights, gradients and two AdamW moments, plus activations
/// kept for backward (per layer ≈ 34·b·t·d + 5·b·heads·t² values, Korthikanti et al. 2022, in
/// fp32) and the logits with their gradient.
pub fn step_memory_bytes(mc: &LlamaConfig, batch: usize, ctx: usize) -> f64 {
    let (b, t) = (batch as f64, ctx as f64);
    let d = mc.hidden_size as f64;
    let states = 16.0 * mc.num_params() as f64;
    let per_layer = 34.0 * b * t * d + 5.0 * b * mc.num_attention_heads as f64 * t * t;
    let acts = 4.0 * per_layer * mc.num_hidden_layers as f64;
    let logits = 3.0 * 4.0 * b * t * mc.vocab_size as f64;
    states + acts + logits
}

/// Refuses a configuration whose step would not fit the CPU's available memory.
fn check_memory(
    mc: &LlamaConfig,
    origin: &str,
    cfg: &TrainConfig,
    ctx: usize,
    device: Device,
) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let need = step_memory_bytes(mc, cfg.batch, ctx);
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if need > avail {
        let gib = |x: f64| x / (1u64 << 30) as f64;
        return Err(Error::Memory(format!(
            "{origin} ({:.0}M params) with batch {} x context {ctx} needs about {:.1} GiB \
             ({:.1} GiB weights, gradients and AdamW state + activations), but {:.1} GiB is available: \
             use a smaller preset, --batch or --ctx (and --accum to keep the tokens per step)",
            mc.num_params() as f64 / 1e6,
            cfg.batch,
            gib(need),
            gib(16.0 * mc.num_params() as f64),
            gib(avail)
        )));
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Keeps the metrics of steps up to `step` (a resumed run re-does the later ones) and returns them.
fn rewind_metrics(path: &Path, step: u64) -> Result<Vec<StepMetrics>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let kept: Vec<StepMetrics> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
        .filter(|m| m.step <= step)
        .collect();
    let mut out = String::new();
    for m in &kept {
        out.push_str(&serde_json::to_string(m).map_err(|e| Error::Format(e.to_string()))?);
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())?;
    Ok(kept)
}
