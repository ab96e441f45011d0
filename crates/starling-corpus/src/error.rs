//! Errors of the corpus stage; each names the file (and line) it is about.

use std::path::PathBuf;

/// Result alias for the corpus stage.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong building or reading a corpus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input or output file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
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
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
