//! Errors of the corpus stage; each names the file (and line) it is about.

use std::path::PathBuf;

/// Result alias for the corpus stage.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong building or reading a corpus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A file's content could not be understood at all (records that fail alone are quarantined instead).
    #[error("{path}:{line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the whole file is concerned).
        line: u64,
        /// What was wrong.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("invalid config field `{field}`: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(&path.into(), source))
    }
}
