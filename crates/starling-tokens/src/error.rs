//! Errors of the tokens stage; each names the file it is about.

use std::path::PathBuf;

/// Result alias for the tokens stage.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong training a tokenizer or writing/reading token shards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A file's content is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file written in a format version this build does not read.
    #[error(transparent)]
    Version(#[from] starling_artifacts::VersionError),
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
        Error::Io(starling_artifacts::IoError::new(&path.into(), source))
    }
}
