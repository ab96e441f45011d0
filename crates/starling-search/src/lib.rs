//! The search stage: posts found by Twitter's advanced-search language.
//!
//! - [`index`]: the tantivy index of a corpus (post-aware analyzer, entity and engagement fields),
//!   BM25 search ranked `top` or `latest`, dense and hybrid modes, near-real-time add and delete.
//! - [`eval`]: hashtag recovery (nDCG@10, recall@100) and grounding precision for comparing
//!   modes without labels.
//! - [`grounding`]: the posts a chat message is about (tiered, gated), or none.
//! - [`pairs`]: hashtag ↔ post and parent ↔ reply pairs for contrastive embedding training.
//! - [`dense`]: post vectors in usearch's HNSW graph, reciprocal rank fusion.
//! - [`query`]: the query language (implicit AND, `OR`, `-`, phrases, `#` `$` `@`, `from:` `to:`
//!   `since:` `until:` `since_id:` `max_id:` `lang:` `min_*:` `filter:` `url:` `conversation_id:`,
//!   parentheses) parsed into a [`Query`] tree, with errors that point at the column.
//!
//! ```
//! use starling_search::query::{parse, Query};
//! let q = parse("#rust from:jack -filter:replies").unwrap();
//! assert!(matches!(q, Query::And(ref parts) if parts.len() == 3));
//! assert_eq!(parse("since:2024-13-01").unwrap_err().column, 6);
//! ```

pub mod dense;
pub mod eval;
pub mod grounding;
pub mod index;
pub mod pairs;
pub mod query;
pub mod updates;

pub use dense::{DenseIndex, Fusion};
pub use grounding::{ground, Grounded, GroundingQuery};
pub use index::{
    build, build_from, build_posts, AddReport, BuildOptions, DenseMeta, Hit, IndexMeta, PostIndex,
    SearchMode, SearchOrder, SearchRequest,
};
pub use query::{parse, Filter, Query, QueryError};
pub use starling_embed::Embedder;
pub use updates::Updates;
