//! The train stage: a Llama trained on token shards by Rust around libtorch.
//!
//! - [`loader`]: random windows over memory-mapped shards, batch k a pure function of (seed, k).
//! - [`optim`]: AdamW with its state held by us, warm-up + cosine, global-norm clipping.
//! - [`train`]: the loop, evaluation, `metrics.jsonl`, checkpoints (atomic, sha256, keep last K), resume.

pub mod loader;
pub mod optim;

use loader::TokenLoader;
use optim::{lr_at, AdamW, OptimConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// The model stage failed.
    #[error(transparent)]
    Model(#[from] starling_model::Error),
    /// libtorch failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of the train stage.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
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
            optim: OptimConfig::default(),
        }
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
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    starling_model::write_atomic(path, bytes).map_err(Error::from)
}

/// Writes `ckpt-STEP/` through a temp directory, then `latest`; removes all but the last `keep`.
fn save_checkpoint(
    run: &Path,
    vs: &VarStore,
    opt: &AdamW,
    tokens: u64,
    keep: usize,
) -> Result<PathBuf> {
    let name = format!("ckpt-{:08}", opt.step);
    let tmp = run.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    vs.save(tmp.join("model.safetensors"))?;
    opt.m.save(tmp.join("adam-m.safetensors"))?;
    opt.v.save(tmp.join("adam-v.safetensors"))?;
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
    )?;
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
    let mut order: Vec<String> = checkpoints(run);
    order.reverse();
    if let Ok(l) = std::fs::read_to_string(run.join("latest")) {
        order.retain(|n| n != l.trim());
        order.insert(0, l.trim().to_string());
    }
    for name in order {
        let dir = run.join(&name);
        match verify(&dir) {
            Ok(_) => return Some(dir),
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
    let (train_data, manifest) = TokenLoader::open(tokens, "train", cfg.seed)?;
    let val_data = TokenLoader::open(tokens, "val", cfg.seed)
        .ok()
        .map(|(l, _)| l);
    let mut mc = LlamaConfig::preset(&cfg.preset, manifest.vocab_size).map_err(Error::from)?;
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
    mc.max_position_embeddings = mc.max_position_embeddings.max(ctx);
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    mc.save(&run.join("config.json"))?;
    let tok_src = tokens.join("tokenizer.json");
    std::fs::copy(&tok_src, run.join("tokenizer.json")).map_err(|e| Error::io(&tok_src, e))?;
    write_atomic(
        &run.join("train.json"),
        &serde_json::to_vec_pretty(cfg).map_err(|e| Error::Format(e.to_string()))?,
    )?;

    tch::manual_seed(cfg.seed as i64);
    let mut vs = VarStore::new(device);
    let model = Llama::new(&vs.root(), &mc);
    let mut opt = AdamW::new(&vs, cfg.optim.clone());
    let mut tokens_seen = 0u64;
    if let Some(dir) = latest_good(run) {
        let state = verify(&dir)?;
        vs.load(dir.join("model.safetensors"))?;
        opt.m.load(dir.join("adam-m.safetensors"))?;
        opt.v.load(dir.join("adam-v.safetensors"))?;
        opt.step = state.step;
        tokens_seen = state.tokens;
        tracing::info!("resumed from {} at step {}", dir.display(), state.step);
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
        .unwrap_or(if device == Device::Cpu { 300e9 } else { 989e12 });
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
    let mut last_ckpt = latest_good(run).unwrap_or_default();
    let per_step = (cfg.batch * cfg.accum * ctx) as u64;
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
        on_step(&last);
        let stopping = stop.load(Ordering::Relaxed);
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
    Ok(TrainSummary {
        steps: opt.step,
        tokens: tokens_seen,
        loss: last.loss,
        val_loss: last.val_loss,
        params,
        checkpoint: last_ckpt,
    })
}
