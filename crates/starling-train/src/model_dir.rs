//! A model directory as every consumer takes it: an exported HF directory, or a training run whose
//! newest good checkpoint holds the weights. Search, serve, ads, eval and embed open models
//! through it.

use crate::{latest_good, Error, Result};
use starling_model::{Pooling, PostEmbedder};
use std::path::{Path, PathBuf};

/// A resolved model directory: `config.json` and `tokenizer.json` in `dir`, weights in `weights`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// The directory given (run or export).
    pub dir: PathBuf,
    /// The safetensors file with the weights (the export's, or the run's newest good checkpoint's).
    pub weights: PathBuf,
}

impl ModelDir {
    /// Resolves `path`: an export (`model.safetensors` in it) or a run with a checkpoint that
    /// verifies.
    pub fn open(path: &Path) -> Result<Self> {
        let exported = path.join("model.safetensors");
        if exported.exists() {
            return Ok(Self {
                dir: path.to_path_buf(),
                weights: exported,
            });
        }
        match latest_good(path) {
            Some(ckpt) => Ok(Self {
                dir: path.to_path_buf(),
                weights: ckpt.join("model.safetensors"),
            }),
            None => Err(Error::Format(format!(
                "{}: neither an exported model (model.safetensors) nor a run with a good checkpoint",
                path.display()
            ))),
        }
    }

    /// The model's `config.json`.
    pub fn config(&self) -> Result<starling_model::LlamaConfig> {
        Ok(starling_model::LlamaConfig::load(
            &self.dir.join("config.json"),
        )?)
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let path = self.dir.join("tokenizer.json");
        starling_tokens::tokenizer::load(&path).map_err(|e| Error::Format(e.to_string()))
    }

    /// The model as a post embedder with `replicas` copies for parallel batches.
    pub fn embedder(&self, pooling: Pooling, replicas: usize) -> Result<PostEmbedder> {
        Ok(PostEmbedder::load_replicated(
            &self.dir,
            &self.weights,
            pooling,
            replicas,
        )?)
    }
}
