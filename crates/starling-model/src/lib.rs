//! The model stage: the Llama architecture on libtorch through `tch`, with Hugging Face tensor
//! names and `config.json`, so transformers and llama.cpp can run starling's models.
//!
//! - [`LlamaConfig`]: the shape, as HF's `config.json`; presets `tiny`, `small`, `gpt2-124m`, `llama-1b`.
//! - [`Llama`]: RMSNorm, rotary positions, grouped-query attention, SwiGLU, optional tied head.
//! - [`PostEmbedder`]: the model as search's and ads' `Embedder` (pooled final hidden states).
//! - [`generate`]: KV-cache decoding with temperature, top-k, top-p, repetition penalty, stop strings.
//! - [`export_gguf`]: the model and its tokenizer as one GGUF file llama.cpp runs.

mod cache;
pub mod classifier;
pub mod contrastive;
mod embed;
mod generate;
mod gguf;
pub mod head;
mod model;
mod parallel;

pub use cache::{KvCache, SlotCache};
pub use classifier::{fine_tune, ClassifyConfig, ClassifyReport, TextClassifier};
pub use contrastive::{
    train_embedder, trained_embedder, ContrastConfig, ContrastPair, ContrastReport, CurvePoint,
    EMBEDDER_CHECKPOINT_DIR, EMBEDDER_DIR, EMBEDDER_REPORT_FILE,
};
pub use embed::{Pooling, PostEmbedder, MAX_EMBED_TOKENS};
pub use generate::{generate, sample, top2_margin, FinishReason, Generation, SamplingConfig};
pub use gguf::export_gguf;
pub use head::{train_head, EmbeddingHead, HeadConfig, HeadPair, HeadReport};
pub use model::{BlockTemplate, Llama};
pub use parallel::{Runner, TensorParallel, BLOCK_WEIGHTS};
pub use starling_arch::LlamaConfig;

use std::path::{Path, PathBuf};

/// Errors of the model stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A configuration is invalid.
    #[error("model config: {0}")]
    Config(String),
    /// A file's content is not what it should be.
    #[error("{0}")]
    Format(String),
    /// The GGUF export refused or failed.
    #[error(transparent)]
    Gguf(#[from] starling_gguf::Error),
    /// libtorch reported an error.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of the model stage.
pub type Result<T> = std::result::Result<T, Error>;

impl From<starling_torch::Error> for Error {
    fn from(e: starling_torch::Error) -> Self {
        Error::Format(e.to_string())
    }
}

impl From<starling_arch::Error> for Error {
    fn from(e: starling_arch::Error) -> Self {
        match e {
            starling_arch::Error::Config(m) => Error::Config(m),
            starling_arch::Error::Io(e) => Error::Io(e),
            other => Error::Format(other.to_string()),
        }
    }
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(&path.into(), source))
    }
}

/// Loads an HF-layout model directory (`config.json` + `model.safetensors`) onto `device`.
pub fn load_dir(dir: &Path, device: tch::Device) -> Result<(tch::nn::VarStore, Llama)> {
    let config = LlamaConfig::load(&dir.join("config.json"))?;
    let mut vs = tch::nn::VarStore::new(device);
    let model = Llama::new(&vs.root(), &config);
    load_weights(&mut vs, &dir.join("model.safetensors"))?;
    Ok((vs, model))
}

/// Loads weights by HF name into `vs` and keeps them fp32 (bf16/fp16 files are widened).
pub fn load_weights(vs: &mut tch::nn::VarStore, path: &Path) -> Result<()> {
    vs.load(path).map_err(|e| {
        Error::Format(format!(
            "{}: not this Llama's weights (names or shapes differ): {e}",
            path.display()
        ))
    })?;
    vs.float();
    Ok(())
}

/// Writes an HF-layout model directory: `config.json`, `model.safetensors`, `generation_config.json`.
pub fn save_dir(vs: &tch::nn::VarStore, config: &LlamaConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    config.save(&dir.join("config.json"))?;
    // tch picks the format from the extension; the temp name keeps it.
    starling_artifacts::write_atomic_with(&dir.join("model.safetensors"), |tmp| {
        vs.save(tmp).map_err(Error::from)
    })?;
    let gen = serde_json::json!({ "eos_token_id": config.eos_token_id, "do_sample": true, "temperature": 0.8, "top_k": 50, "top_p": 0.95 });
    Ok(starling_artifacts::write_atomic(
        &dir.join("generation_config.json"),
        gen.to_string().as_bytes(),
    )?)
}
