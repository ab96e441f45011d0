//! The model stage: the Llama architecture on libtorch through `tch`, with Hugging Face tensor
//! names and `config.json`, so transformers and llama.cpp can run starling's models.
//!
//! - [`LlamaConfig`]: the shape, as HF's `config.json`; presets `tiny`, `small`, `gpt2-124m`, `llama-1b`.
//! - [`Llama`]: RMSNorm, rotary positions, grouped-query attention, SwiGLU, optional tied head.

mod config;
mod model;

pub use config::LlamaConfig;
pub use model::{KvCache, Llama};

use std::path::{Path, PathBuf};

/// Errors of the model stage.
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
    /// A configuration is invalid.
    #[error("model config: {0}")]
    Config(String),
    /// A file's content is not what it should be.
    #[error("{0}")]
    Format(String),
    /// libtorch reported an error.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of the model stage.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
