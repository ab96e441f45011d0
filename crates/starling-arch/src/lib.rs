//! The model's architecture as numbers, without tensors, so every crate that reasons about a
//! model (the model itself, the trainer, the cluster planner) reads the same definitions:
//!
//! - [`LlamaConfig`]: the shape, as Hugging Face's `config.json`; presets `tiny`, `small`,
//!   `gpt2-124m`, `llama-1b`; its parameters, training FLOPs per token and step memory.
//! - [`gpu`]: the GPU catalog (peak FLOP/s, memory, links, power, prices, with sources).

pub mod config;
pub mod gpu;

pub use config::LlamaConfig;

use std::path::PathBuf;

/// What can go wrong reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration is invalid.
    #[error("model config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A file's content is not what it should be.
    #[error("{0}")]
    Format(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(&path.into(), source))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
