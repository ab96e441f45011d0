//! Text classification without tensors, for measuring what an embedder knows.
//!
//! - [`features`]: sparse rows, the TF-IDF baseline's vocabulary, standardised dense rows.
//! - [`logreg`]: multinomial logistic regression (full-batch Adam, L2, balanced classes).
//! - [`metrics`]: F1 per class, macro-F1, macro-recall.
//! - [`tweeteval`]: TweetEval's seven tasks, their official metrics, and linear probes of an
//!   [`Embedder`](starling_embed::Embedder) beside TF-IDF + logistic regression on the same splits.

pub mod features;
pub mod logreg;
pub mod metrics;
pub mod tweeteval;

pub use features::{SparseRow, Tfidf};
pub use logreg::LogReg;

/// Errors of reading labelled data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A line of a labelled file is not usable.
    #[error(transparent)]
    Data(#[from] starling_artifacts::Malformed),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] starling_embed::EmbedError),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
