//! starling's models as GGUF files that llama.cpp (and Ollama, LM Studio, llama-server) load as a
//! Llama: a small GGUF v3 writer and reader ([`file`]), f16/bf16/`Q8_0` encoding ([`quant`]), the
//! `llama.*` metadata and tensor names ([`llama`]) and the byte-level BPE tokenizer embedded as
//! llama.cpp's `gpt2` vocabulary ([`vocab`]). No tensors library: the caller hands over f32 values.

pub mod file;
pub mod llama;
pub mod quant;
pub mod vocab;

pub use file::{GgufFile, GgufHeader, TensorInfo, Value};
pub use llama::{gguf_name, permute_rotary, write_llama, ExportDtype, ExportSummary, SourceTensor};
pub use quant::GgmlType;
pub use vocab::{GgufVocab, CHAT_TEMPLATE};

/// Errors of the GGUF export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A file's content or a tensor is not what the format needs.
    #[error("{0}")]
    Format(String),
    /// The tokenizer cannot be represented in llama.cpp (names the field).
    #[error("{0}")]
    Tokenizer(String),
}

/// Result alias of the GGUF export.
pub type Result<T> = std::result::Result<T, Error>;
