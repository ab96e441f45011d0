//! The train stage: a Llama trained on token shards by Rust around libtorch.
//!
//! - [`loader`]: random windows over memory-mapped shards, batch k a pure function of (seed, k).
//! - [`optim`]: AdamW with its state held by us, warm-up + cosine, global-norm clipping.
//! - [`train`]: the loop, evaluation, `metrics.jsonl`, checkpoints (atomic, sha256, keep last K), resume.

pub mod loader;
pub mod optim;
pub mod plot;

use loader::TokenLoader;
use optim::{lr_at, AdamW, OptimConfig};
use serde::{Deserialize, Serialize};
use starling_model::{Llama, LlamaConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind};

/// Errors of the train stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
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
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<starling_model::Error> for Error {
    fn from(e: starling_model::Error) -> Self {
        match e {
            starling_model::Error::Io { path, source } => Error::io(path, source),
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
    /// Validation batches per evaluation. By default 8.
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
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    version: u32,
    step: u64,
    tokens: u64,
    sha256: Vec<(String, String)>,
}

fn sha256(path: &Path) -> Result<String> {
    starling_tokens::shard::sha256_file(path)
        .map(|(sum, _)| sum)
        .map_err(|e| Error::Format(e.to_string()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    starling_model::write_atomic(path, bytes).map_err(Error::from)
}

/// Writes `ckpt-STEP/` through a temp directory, then `latest`; removes all but the last `keep`.
/// On failure the temp directory is removed: the previous checkpoints stay as they were.
fn save_checkpoint(
    run: &Path,
    vs: &VarStore,
    opt: &AdamW,
    tokens: u64,
    keep: usize,
) -> Result<PathBuf> {
    let name = format!("ckpt-{:08}", opt.step);
    let tmp = run.join(format!(".{name}.tmp"));
    let r = write_checkpoint(&tmp, vs, opt, tokens);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r?;
    let dir = run.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    write_atomic(&run.join("latest"), name.as_bytes())?;
    let mut all = checkpoints(run);
    while all.len() > keep.max(1) {
        let old = all.remove(0);
        let _ = std::fs::remove_dir_all(run.join(old));
    }
    Ok(dir)
}

/// Writes a checkpoint's files into `tmp`.
fn write_checkpoint(tmp: &Path, vs: &VarStore, opt: &AdamW, tokens: u64) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    for (file, store) in [
        ("model.safetensors", vs),
        ("adam-m.safetensors", &opt.m),
        ("adam-v.safetensors", &opt.v),
    ] {
        let p = tmp.join(file);
        store.save(&p).map_err(|e| {
            // libtorch reports a full disk in its own words; name the file and the likely cause.
            Error::Format(format!(
                "{}: writing the checkpoint failed ({e}); is the disk full? The last good checkpoint is intact",
                p.display()
            ))
        })?;
    }
    let mut sums = Vec::new();
    for f in [
        "model.safetensors",
        "adam-m.safetensors",
        "adam-v.safetensors",
    ] {
        let p = tmp.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&p, e))?;
        sums.push((f.to_string(), sha256(&p)?));
    }
    let state = CheckpointState {
        version: CHECKPOINT_VERSION,
        step: opt.step,
        tokens,
        sha256: sums,
    };
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
    let p = dir.join("state.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    let state: CheckpointState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?;
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
    let device = match cfg.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => {
            return Err(Error::Format(
                "--device cuda: CUDA is not available to libtorch here".into(),
            ))
        }
        other => {
            return Err(Error::Format(format!(
                "unknown device `{other}` (cpu or cuda)"
            )))
        }
    };
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
    let resume = latest_verified(run);
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

    tch::manual_seed(cfg.seed as i64);
    let mut vs = VarStore::new(device);
    let mut model = Llama::new(&vs.root(), &mc);
    model.set_compute_kind(kind);
    let mut opt = AdamW::new(&vs, cfg.optim.clone());
    let mut tokens_seen = 0u64;
    let mut history = Vec::new();
    if let Some((dir, state)) = &resume {
        let load = |vs: &mut VarStore, f: &str| {
            let p = dir.join(f);
            vs.load(&p)
                .map_err(|e| Error::Format(format!("{}: {e}", p.display())))
        };
        load(&mut vs, "model.safetensors")?;
        load(&mut opt.m, "adam-m.safetensors")?;
        load(&mut opt.v, "adam-v.safetensors")?;
        opt.step = state.step;
        tokens_seen = state.tokens;
        history = rewind_metrics(&run.join("metrics.jsonl"), state.step)?;
        tracing::info!("resumed from {} at step {}", dir.display(), state.step);
    } else if let Some(init) = &cfg.init {
        starling_model::load_weights(&mut vs, &init.join("model.safetensors"))?;
        // A fresh run: nothing of an earlier run's metrics applies.
        let _ = std::fs::remove_file(run.join("metrics.jsonl"));
        tracing::info!("initialised from {}", init.display());
    } else {
        let _ = std::fs::remove_file(run.join("metrics.jsonl"));
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
        .unwrap_or_else(|| default_peak_flops(&cfg.device));
    let metrics_path = run.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut last = StepMetrics {
        step: opt.step,
        loss: f64::NAN,
        lr: 0.0,
        grad_norm: 0.0,
        tokens: tokens_seen,
        tokens_per_s: 0.0,
        mfu: 0.0,
        val_loss: None,
        val_ppl: None,
    };
    let mut last_ckpt = resume.map(|(dir, _)| dir).unwrap_or_default();
    let title = format!(
        "{} · {:.1}M params · batch {}x{}x{} tokens",
        run.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        params as f64 / 1e6,
        cfg.batch,
        cfg.accum,
        ctx
    );
    let draw = |history: &[StepMetrics]| {
        if cfg.plot {
            if let Err(e) = plot::loss_png(history, &title, &run.join("loss.png")) {
                tracing::warn!("loss.png not drawn: {e}");
            }
        }
    };
    let per_step = (cfg.batch * cfg.accum * ctx) as u64;
    let started = Instant::now();
    while opt.step < cfg.steps {
        let t = Instant::now();
        let step = opt.step;
        let lr = lr_at(&cfg.optim, step, cfg.steps);
        let mut loss_sum = 0.0;
        for micro in 0..cfg.accum as u64 {
            let k = step * cfg.accum as u64 + micro;
            let (x, y) = train_data.batch(k, cfg.batch, ctx)?;
            let loss = model.loss(&x.to_device(device), &y.to_device(device)) / cfg.accum as f64;
            let v = loss.double_value(&[]);
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    step: step + 1,
                    batch: k,
                    loss: v,
                    last_good: last_ckpt.display().to_string(),
                });
            }
            loss.backward();
            loss_sum += v;
        }
        let grad_norm = opt.clip(&vs);
        opt.update(&vs, lr);
        tokens_seen += per_step;
        let secs = t.elapsed().as_secs_f64();
        last = StepMetrics {
            step: opt.step,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens: tokens_seen,
            tokens_per_s: per_step as f64 / secs,
            mfu: per_step as f64 * flops_per_token / secs / peak,
            val_loss: None,
            val_ppl: None,
        };
        if let Some(val) = val_data
            .as_ref()
            .filter(|_| opt.step.is_multiple_of(cfg.eval_every) || opt.step == cfg.steps)
        {
            let _g = tch::no_grad_guard();
            let mut total = 0.0;
            for k in 0..cfg.eval_batches as u64 {
                let (x, y) = val.batch(k, cfg.batch, ctx)?;
                total += model
                    .loss(&x.to_device(device), &y.to_device(device))
                    .to_kind(Kind::Double)
                    .double_value(&[]);
            }
            let vl = total / cfg.eval_batches.max(1) as f64;
            last.val_loss = Some(vl);
            last.val_ppl = Some(vl.exp());
        }
        let line = serde_json::to_string(&last).map_err(|e| Error::Format(e.to_string()))?;
        writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        history.push(last.clone());
        if last.val_loss.is_some() {
            draw(&history);
        }
        on_step(&last);
        let stopping = stop.load(Ordering::Relaxed)
            || cfg
                .max_seconds
                .is_some_and(|m| started.elapsed().as_secs_f64() >= m);
        if opt.step.is_multiple_of(cfg.ckpt_every) || opt.step == cfg.steps || stopping {
            metrics.flush().map_err(|e| Error::io(&metrics_path, e))?;
            last_ckpt = save_checkpoint(run, &vs, &opt, tokens_seen, cfg.keep)?;
        }
        if stopping {
            break;
        }
    }
    if last_ckpt.as_os_str().is_empty() {
        last_ckpt = save_checkpoint(run, &vs, &opt, tokens_seen, cfg.keep)?;
    }
    draw(&history);
    Ok(TrainSummary {
        steps: opt.step,
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
