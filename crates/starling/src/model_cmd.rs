//! `starling train`, `starling generate`, `starling export`: arguments → starling-train/-model.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use starling_model::{generate, SamplingConfig};
use starling_train::TrainConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Options of `starling train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Token directory (from `starling tokens`).
    #[arg(long)]
    pub tokens: PathBuf,
    /// Run directory (resumed when it holds a checkpoint).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Model preset: tiny, llama-7m, small, gpt2-124m, llama-1b.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Context length (default: the preset's).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Evaluate every N steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 200)]
    pub ckpt_every: u64,
    /// Read loss and gradient norm on the host every N steps (one device sync per interval;
    /// metrics.jsonl still gets every step). In a data-parallel run a stop request is agreed at
    /// these intervals.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_every: u64,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matrix-product precision: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Start from an HF Llama directory (an exported starling model or another Llama).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Record step N under PyTorch's profiler and write <out>/profile.md: host ops, device
    /// kernels, host synchronisations, the GPU's idle share.
    #[arg(long, value_name = "N")]
    pub profile_step: Option<u64>,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Validation batches per evaluation (each one step's worth of sequences).
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Device peak FLOP/s for MFU (default: 300e9 on this CPU class; on CUDA the GPU's dense bf16 peak, by its name).
    #[arg(long)]
    pub peak_flops: Option<f64>,
    /// Stop (with a checkpoint) after this many minutes; the run resumes from there.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// libtorch threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// ZeRO-1 in a data-parallel run: split the AdamW state across the ranks.
    #[arg(long)]
    pub shard_optimizer: bool,
    /// FSDP (ZeRO-3) in a data-parallel run: split parameters, gradients and AdamW state across
    /// the ranks; each block's parameters are gathered just before it runs.
    #[arg(long, conflicts_with = "shard_optimizer")]
    pub fsdp: bool,
    /// Tensor parallel: split each block's heads and MLP columns over groups of N consecutive
    /// ranks (inside a node), FSDP over the ranks at the same place in the other groups.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub tp: u64,
    /// Clip gradients to this global L2 norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Activation recomputation: none, or block (each block keeps only its input and runs again
    /// in backward: less memory, about a third more compute).
    #[arg(long, default_value = "none")]
    pub recompute: starling_train::config::Recompute,
    /// CUDA graphs: capture one whole step and replay it (one launch per step): auto (on for a
    /// single-process CUDA run without --recompute), on or off.
    #[arg(long, default_value = "auto")]
    pub cuda_graphs: starling_train::config::CudaGraphs,
    /// Seconds a collective may wait for the other ranks before the run fails naming the laggard.
    #[arg(long, default_value_t = 300.0)]
    pub collective_timeout_s: f64,
}

/// Runs `starling train`; SIGINT/SIGTERM checkpoint and stop. Under torchrun's environment
/// (`RANK`, `WORLD_SIZE`, ...; `starling launch` sets it) it is one rank of a data-parallel run.
pub fn train(a: &TrainArgs) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    // A training process reuses the memory each step frees (see `retain_freed_memory`).
    if starling_train::retain_freed_memory() {
        tracing::debug!("heap: freed memory retained for reuse");
    }
    let mut cfg = TrainConfig {
        preset: a.preset.clone(),
        steps: a.steps,
        batch: a.batch,
        accum: a.accum,
        ctx: a.ctx,
        eval_every: a.eval_every,
        ckpt_every: a.ckpt_every,
        log_every: a.log_every,
        device: a.device.clone(),
        seed: a.seed,
        dtype: a.dtype.clone(),
        init: a.init.clone(),
        profile_step: a.profile_step,
        keep: a.keep,
        eval_batches: a.eval_batches,
        peak_flops: a.peak_flops,
        max_seconds: a.max_minutes.map(|m| m * 60.0),
        shard_optimizer: a.shard_optimizer,
        recompute: a.recompute,
        cuda_graphs: a.cuda_graphs,
        fsdp: a.fsdp,
        tp: a.tp as usize,
        ..Default::default()
    };
    if !(a.grad_clip.is_finite() && a.grad_clip >= 0.0) {
        bail!(
            "--grad-clip must be a finite number >= 0 (0: no clipping), not {}",
            a.grad_clip
        );
    }
    cfg.optim.lr = a.lr;
    cfg.optim.grad_clip = a.grad_clip;
    cfg.optim.min_lr = a.lr / 10.0;
    cfg.optim.warmup = a.warmup.min(a.steps / 2);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let mut dp =
        match starling_dist::DistEnv::from_env().context("reading the torchrun environment")? {
            Some(env) => {
                let device = if a.device == "cuda" {
                    tch::Device::Cuda(env.local_rank)
                } else {
                    tch::Device::Cpu
                };
                if !(a.collective_timeout_s > 0.0 && a.collective_timeout_s < 1e6) {
                    bail!(
                        "--collective-timeout-s must be in (0, 1e6), not {}",
                        a.collective_timeout_s
                    );
                }
                let backend = starling_dist::Backend::for_device(device);
                let timeout = std::time::Duration::from_secs_f64(a.collective_timeout_s);
                let group = starling_dist::ProcessGroup::join(&env, backend, timeout)?;
                eprintln!(
                    "train: rank {} of {} ({} on {device:?}, store {}:{}, restart {})",
                    env.rank,
                    env.world,
                    backend.name(),
                    env.master_addr,
                    env.master_port,
                    env.restart
                );
                Some(starling_train::ddp::DataParallel::new(group))
            }
            None => None,
        };
    let root = dp.as_ref().is_none_or(|d| d.rank() == 0);
    let bar = if root {
        ProgressBar::new(a.steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "train {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let peak = cfg
        .peak_flops
        .unwrap_or_else(|| starling_train::default_peak_flops(&a.device));
    if root {
        eprintln!(
            "train: {} on {} ({} threads), MFU against a peak of {:.3e} FLOP/s",
            a.init
                .as_ref()
                .map(|p| format!("from {}", p.display()))
                .unwrap_or_else(|| format!("preset {}", a.preset)),
            a.device,
            tch::get_num_threads(),
            peak
        );
    }
    let t = std::time::Instant::now();
    let s =
        starling_train::train_distributed(&a.tokens, &a.out, &cfg, dp.as_mut(), &stop, &mut |m| {
            bar.set_position(m.step);
            let val = m
                .val_loss
                .map(|v| format!(" val {v:.3} (ppl {:.1})", v.exp()))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.3}{val} · {:.0} tok/s · MFU {:.1}%",
                m.loss,
                m.tokens_per_s,
                m.mfu * 100.0
            ));
        })
        .with_context(|| format!("training into {}", a.out.display()))?;
    bar.finish_and_clear();
    if !root {
        return Ok(());
    }
    println!(
        "train: {} params, {} steps, {} tokens in {:.0}s; loss {:.3}{}{} → {} (checkpoint {})",
        s.params,
        s.steps,
        s.tokens,
        t.elapsed().as_secs_f64(),
        s.loss,
        s.val_loss
            .map(|v| format!(", val {v:.3} (ppl {:.1})", v.exp()))
            .unwrap_or_default(),
        s.peak_memory_bytes
            .map(|b| format!(", peak memory {:.2} GB", b as f64 / 1e9))
            .unwrap_or_default(),
        a.out.display(),
        s.checkpoint.display()
    );
    Ok(())
}

/// Options of `starling generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model directory: a run or an exported HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Start of the post.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Most new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Top-p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Repetition penalty.
    #[arg(long, default_value_t = 1.1)]
    pub repetition_penalty: f64,
    /// Extra stop strings.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (prompt ids, new ids, top-2 logit margins, text) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

/// Runs `starling generate`: streams the post's continuation and reports tokens/s.
pub fn generate_cmd(a: &GenerateArgs) -> Result<()> {
    let starling_train::ModelDir { dir, weights } = starling_train::ModelDir::open(&a.model)?;
    let config = starling_model::LlamaConfig::load(&dir.join("config.json"))?;
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = starling_model::Llama::new(&vs.root(), &config);
    starling_model::load_weights(&mut vs, &weights)?;
    let tok = starling_tokens::tokenizer::load(&dir.join("tokenizer.json"))?;
    let prefix = format!("<|user|>: {}", a.prompt);
    let ids: Vec<i64> = starling_tokens::tokenizer::encode(&tok, &prefix)?
        .into_iter()
        .map(i64::from)
        .collect();
    let mut stop = a.stop.clone();
    stop.push(starling_tokens::template::END_OF_POST.to_string());
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        max_tokens: a.max_tokens,
        stop,
        seed: a.seed,
    };
    let decode = |ids: &[i64]| {
        let u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        tok.decode(&u, false).unwrap_or_default()
    };
    use std::io::Write;
    if !a.json {
        print!("{}", a.prompt);
    }
    let g = generate(&model, &ids, &cfg, &decode, &mut |t| {
        if !a.json {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
    });
    if a.json {
        let finish = serde_json::to_value(g.finish)?;
        let j = serde_json::json!({"prompt_ids": ids, "ids": g.ids, "margins": g.margins,
            "text": g.text, "finish": finish});
        println!("{j}");
    } else {
        println!();
    }
    eprintln!(
        "generate: {} tokens at {:.1} tokens/s ({:?})",
        g.ids.len(),
        g.tokens_per_s,
        g.finish
    );
    Ok(())
}

/// Options of `starling export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run directory (its latest good checkpoint) or an HF model directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Output: a directory for `hf`, a file (`.gguf`) for `gguf`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// `hf` (config.json, model.safetensors, tokenizer.json) or `gguf` (one file llama.cpp loads).
    #[arg(long, default_value = "hf", value_parser = ["hf", "gguf"])]
    pub format: String,
    /// GGUF storage of the matrices: f32, f16 (default), bf16 or q8_0 (norms stay f32).
    #[arg(long, value_parser = ["f32", "f16", "bf16", "q8_0"])]
    pub dtype: Option<String>,
}

/// Runs `starling export`: the run's latest good checkpoint as an HF directory or a GGUF file.
pub fn export(a: &ExportArgs) -> Result<()> {
    let (run, out) = (a.run.as_path(), a.out.as_path());
    if a.format == "hf" && a.dtype.is_some() {
        bail!("--dtype applies to --format gguf; an HF export keeps the checkpoint's f32 weights");
    }
    let starling_train::ModelDir { dir, weights } = starling_train::ModelDir::open(run)?;
    let config = starling_model::LlamaConfig::load(&dir.join("config.json"))?;
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = starling_model::Llama::new(&vs.root(), &config);
    starling_model::load_weights(&mut vs, &weights)?;
    if a.format == "gguf" {
        return export_gguf(a, &dir, &config, &vs);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    starling_model::save_dir(&vs, &config, out)?;
    std::fs::copy(dir.join("tokenizer.json"), out.join("tokenizer.json"))
        .with_context(|| "copying tokenizer.json")?;
    println!(
        "export: {} → {} (config.json, model.safetensors, tokenizer.json, generation_config.json)",
        weights.display(),
        out.display()
    );
    Ok(())
}

/// Writes the loaded model and the run's tokenizer as one GGUF file (and `<file>.sha256`).
fn export_gguf(
    a: &ExportArgs,
    dir: &Path,
    config: &starling_model::LlamaConfig,
    vs: &tch::nn::VarStore,
) -> Result<()> {
    let dtype_name = a.dtype.as_deref().unwrap_or("f16");
    let dtype = starling_gguf::ExportDtype::parse(dtype_name).context("--dtype")?;
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let pb = ProgressBar::new(vs.variables().len() as u64).with_style(
        ProgressStyle::with_template("export gguf {bar:30} {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = starling_model::export_gguf(
        vs,
        config,
        &dir.join("tokenizer.json"),
        &a.out,
        dtype,
        || pb.inc(1),
    )?;
    pb.finish_and_clear();
    let file = a
        .out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = PathBuf::from(format!("{}.sha256", a.out.display()));
    starling_artifacts::write_atomic(&sidecar, format!("{}  {file}\n", summary.sha256).as_bytes())?;
    println!(
        "export: {} → {} (GGUF v3, {}, {} tensors, {:.1} MiB, {} tokens, sha256 {})",
        dir.display(),
        a.out.display(),
        dtype_name,
        summary.tensors,
        summary.bytes as f64 / (1 << 20) as f64,
        config.vocab_size,
        &summary.sha256[..16]
    );
    Ok(())
}
