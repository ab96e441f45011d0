//! The corpus stage: post dumps in, a clean, accounted-for corpus out.
//!
//! - [`read`]: streaming readers for Twitter API v1.1/v2 JSON, archives, CSV and text.
//! - [`Post`]: the record every stage shares.

pub mod error;
mod hash;
pub mod post;
pub mod read;

pub use error::{Error, Result};
pub use post::{Engagement, Origin, Post, References, Verdict};
pub mod authors;
pub mod bots;
pub mod bots_eval;
pub mod corpus;
pub mod curate;
pub mod dedup;
pub mod lang;
mod order;
pub use corpus::{Corpus, CorpusBuilder, CorpusConfig, Counts, Manifest};
pub mod synth;
