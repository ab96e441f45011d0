//! The post index on tantivy: schema, the post-aware analyzer, building from a corpus, and BM25
//! search in Twitter's query language, ranked `top` (relevance × engagement × recency) or `latest`.
//!
//! Here: the index's public types; [`schema`]: fields and the document of a post; [`analyzer`]:
//! words, entities and URLs as users search them; [`build`]: building from a corpus or posts;
//! [`reader`]: [`PostIndex`], searching and live changes; [`rank`]: the `top` score;
//! [`translate`]: the query language to tantivy queries.

use crate::query;
use serde::{Deserialize, Serialize};
use starling_embed::Embedder;
use std::path::Path;

mod analyzer;
mod build;
mod rank;
mod reader;
mod schema;
mod translate;

use analyzer::*;
pub use analyzer::{analyze, post_analyzer, PostTokenStream, PostTokenizer};
use build::*;
pub use build::{build, build_from, build_posts, PostSource};
use rank::*;
pub use rank::{top_score, LATEST_WINDOWS_S, RECENCY_HALF_LIFE_S, TOP_RERANK_DEPTH};
pub use reader::{AddReport, PostIndex};
use schema::*;
use translate::*;

/// Version of the index directory layout and schema.
pub const INDEX_VERSION: u32 = 3;
/// File beside tantivy's own that says what built the index.
pub const META_FILE: &str = "starling-index.json";
/// Name under which the post analyzer is registered.
pub const POST_ANALYZER: &str = "post";
/// Name under which the URL analyzer is registered.
pub const URL_ANALYZER: &str = "url";

/// Errors of the search stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query does not parse.
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// The index (or its input) is not what this build can use.
    #[error("{0}")]
    Format(String),
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] starling_corpus::Error),
    /// tantivy failed.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] starling_embed::EmbedError),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(path.as_ref(), source))
    }
}

/// Result alias of the search stage.
pub type Result<T> = std::result::Result<T, Error>;

/// `starling-index.json`: what built the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Layout version ([`INDEX_VERSION`]).
    pub version: u32,
    /// The starling version that built it.
    pub starling: String,
    /// Posts indexed.
    pub posts: u64,
    /// Newest post time (Unix seconds): "now" for the recency decay of an archive.
    pub newest: Option<i64>,
    /// SHA-256 of the corpus manifest it was built from.
    pub corpus_manifest_sha256: String,
    /// The dense vectors, when the index was built with a model.
    #[serde(default)]
    pub dense: Option<DenseMeta>,
}

/// What made an index's dense vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseMeta {
    /// [`Embedder::id`] of the embedder: queries must be embedded by the same one.
    pub embedder: String,
    /// Vector dimension.
    pub dim: usize,
    /// The model directory it was given as (for commands that load it again).
    pub model: Option<String>,
    /// The ANN structure and its parameters.
    pub ann: String,
}

/// How an index is built.
#[derive(Default)]
pub struct BuildOptions<'a> {
    /// Embeds every post into the dense index when given.
    pub embedder: Option<&'a dyn Embedder>,
    /// The model directory behind `embedder`, recorded in the index.
    pub model: Option<String>,
    /// Index with one thread, so every build of the same posts lays them out alike and equal
    /// scores rank the same way each time (what evaluations need; slower to build).
    pub reproducible: bool,
}

/// Which retrieval answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// BM25 over the post-aware analyzer, with every operator.
    Bm25,
    /// Nearest neighbours of the query's embedding, filtered by its operators.
    Dense,
    /// BM25 and dense fused by reciprocal rank ([`crate::dense::rrf`]).
    Hybrid,
}

impl SearchMode {
    /// Parses `bm25`, `dense` or `hybrid`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bm25" => Some(Self::Bm25),
            "dense" => Some(Self::Dense),
            "hybrid" => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// A search: query text, mode, order and how many results.
#[derive(Clone, Copy)]
pub struct SearchRequest<'a> {
    /// Query in Twitter's advanced-search language.
    pub query: &'a str,
    /// Retrieval mode.
    pub mode: SearchMode,
    /// Result order.
    pub order: SearchOrder,
    /// Most results.
    pub limit: usize,
    /// Embeds the query (dense and hybrid modes); must be the index's embedder.
    pub embedder: Option<&'a dyn Embedder>,
}

/// Candidates each ranked list contributes to hybrid fusion (and dense search with a filter).
pub const FUSION_DEPTH: usize = 100;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Relevance × engagement × recency ([`top_score`]).
    Top,
    /// Newest first.
    Latest,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Post id.
    pub id: String,
    /// Final score (`top`) or Unix seconds (`latest`).
    pub score: f64,
    /// Author handle.
    pub author: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: Option<String>,
    /// The post's text.
    pub text: String,
    /// Likes, reposts, replies, quotes.
    pub engagement: [u64; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzer_keeps_entities_whole_and_folds() {
        let mut a = post_analyzer();
        assert_eq!(
            analyze(
                &mut a,
                "Café time! #NBAFinals @Jack $TSLA don’t https://t.co/AbC?x=1. $5 ＃Tag"
            ),
            vec![
                "cafe",
                "time",
                "#nbafinals",
                "@jack",
                "$tsla",
                "don't",
                "https://t.co/abc?x=1",
                "5",
                "#tag"
            ]
        );
        let mut u = url_analyzer();
        assert_eq!(
            analyze(&mut u, "https://www.Example.com/a-b"),
            vec!["https", "www", "example", "com", "a", "b"]
        );
        assert_eq!(
            domain("https://www.Example.com:8080/x?y").as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn the_analyzer_splits_punctuation_and_folds_possessives() {
        let mut a = post_analyzer();
        assert_eq!(
            analyze(
                &mut a,
                "@BarackObama--he can't… Crooked Hillary's and China’s/India‘s ʼem ok`s"
            ),
            vec![
                "@barackobama",
                "he",
                "can't",
                "crooked",
                "hillary",
                "and",
                "china",
                "india",
                "em",
                "ok"
            ]
        );
        assert_eq!(
            analyze(&mut a, ".@user-Hood's #Tag's it's"),
            vec!["@user", "hood", "#tag", "it"]
        );
    }

    #[test]
    fn top_score_rewards_engagement_and_decays_with_age() {
        assert!(top_score(1.0, 100, 0.0) > top_score(1.0, 0, 0.0));
        assert!((top_score(2.0, 0, RECENCY_HALF_LIFE_S) - 1.0).abs() < 1e-12);
    }
}
