//! Checks before a run starts: the tokens' tokenizer, and that a step fits the memory there is.

use crate::config::TrainConfig;
use crate::{Error, Result};
use starling_model::LlamaConfig;
use std::path::Path;
use tch::{Device, Kind};

/// Checks that the token directory's tokenizer is the one its shards were encoded with.
pub(crate) fn check_tokenizer(
    tokens: &Path,
    manifest: &starling_tokens::TokensManifest,
) -> Result<()> {
    let p = tokens.join("tokenizer.json");
    if !p.exists() {
        return Err(Error::Format(format!(
            "{}: missing; a token directory from `starling tokens` carries the tokenizer its shards were encoded with",
            p.display()
        )));
    }
    let got = starling_artifacts::sha256_file(&p)?.0;
    if got != manifest.tokenizer_sha256 {
        return Err(Error::Format(format!(
            "{}: sha256 {got} is not the {} the manifest records: the shards were encoded with another tokenizer",
            p.display(),
            manifest.tokenizer_sha256
        )));
    }
    Ok(())
}

/// Refuses a configuration whose step would not fit the CPU's available memory.
pub(crate) fn check_memory(
    mc: &LlamaConfig,
    origin: &str,
    cfg: &TrainConfig,
    ctx: usize,
    (device, world): (Device, usize),
) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let recompute = cfg.recompute == crate::config::Recompute::Block;
    // FSDP and tensor parallel split the state over the ranks.
    let shards = if cfg.fsdp || cfg.tp > 1 { world } else { 1 };
    let need = mc.step_memory_bytes(cfg.batch, ctx, recompute, shards, cfg.tp.max(1));
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if need > avail {
        let gib = |x: f64| x / (1u64 << 30) as f64;
        return Err(Error::Memory(format!(
            "{origin} ({:.0}M params) with batch {} x context {ctx} needs about {:.1} GiB \
             ({:.1} GiB weights, gradients and AdamW state on this rank + activations), but {:.1} GiB \
             is available: use a smaller preset, --batch or --ctx (and --accum to keep the tokens \
             per step), --recompute block, or more ranks with --fsdp",
            mc.num_params() as f64 / 1e6,
            cfg.batch,
            gib(need),
            gib(16.0 * mc.num_params() as f64 / shards as f64),
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

/// The matrix-product precision `dtype` names on `device` ("auto": bf16 on CUDA, fp32 on CPU).
pub fn compute_kind(dtype: &str, device: Device) -> Result<Kind> {
    Ok(match (dtype, device) {
        ("auto", Device::Cpu) | ("fp32", _) => Kind::Float,
        ("auto", _) | ("bf16", _) => Kind::BFloat16,
        (other, _) => {
            return Err(Error::Format(format!(
                "unknown dtype `{other}` (auto, fp32 or bf16)"
            )))
        }
    })
}

/// The model a run trains and its context: the run's own config when resuming, else `--init`'s,
/// else the preset; checked against the tokens, the batch settings and the memory there is (for
/// one of `world` ranks).
pub fn model_config(
    run: &Path,
    resuming: bool,
    cfg: &TrainConfig,
    manifest: &starling_tokens::TokensManifest,
    tokens: &Path,
    (device, world): (Device, usize),
) -> Result<(LlamaConfig, usize)> {
    let (mut mc, origin) = if resuming {
        let p = run.join("config.json");
        (LlamaConfig::load(&p)?, p.display().to_string())
    } else if let Some(init) = &cfg.init {
        let p = init.join("config.json");
        (LlamaConfig::load(&p)?, p.display().to_string())
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
    check_memory(&mc, &origin, cfg, ctx, (device, world))?;
    mc.max_position_embeddings = mc.max_position_embeddings.max(ctx);
    Ok((mc, ctx))
}

/// Creates the run directory (rank 0: removes temp directories of checkpoints a kill
/// interrupted, writes `config.json`, `tokenizer.json` and `train.json`).
pub fn prepare_run_dir(
    run: &Path,
    root: bool,
    mc: &LlamaConfig,
    tokens: &Path,
    cfg: &TrainConfig,
) -> Result<()> {
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
        starling_artifacts::write_atomic(&run.join("tokenizer.json"), &tok_bytes)?;
        starling_artifacts::write_atomic(
            &run.join("train.json"),
            &serde_json::to_vec_pretty(cfg).map_err(|e| Error::Format(e.to_string()))?,
        )?;
    }
    Ok(())
}
