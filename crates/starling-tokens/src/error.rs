//! Errors of the tokens stage; each names the file it is about.

use std::path::PathBuf;

/// Result alias for the tokens stage.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong training a tokenizer or writing/reading token shards.
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
    /// A file's content is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizers library failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The corpus stage failed.
    #[error(transparent)]
    Corpus(#[from] starling_corpus::Error),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
