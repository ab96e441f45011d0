//! The serving stage: one process that puts the model, the search index and their uses behind
//! an HTTP API that OpenAI clients speak, plus a web page.
//!
//! - [`engine`]: continuous batching on a worker thread that owns the model (never on the async
//!   runtime's threads), a bounded queue, cancellation when the client goes away, deadlines.
//! - [`server`]: axum routes: `/v1/chat/completions` (grounded in posts found by the index),
//!   `/v1/completions`, `/v1/embeddings`, `/v1/models`, `/v1/search`, `/metrics`, `/health`, `/`.
//! - [`openai`]: the request shapes and their validation; [`error`]: OpenAI's error shape.
//! - [`ads`]: `/v1/ads/*`: ad inventory, reports, decisions and events (with `--ads-db`).
//! - [`chat`]: the conversation as a reply thread in the training template; [`auth`]: API keys.

pub mod ads;
pub mod auth;
pub mod chat;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod server;

pub use auth::ApiKeys;
pub use engine::{Engine, EngineConfig, Event, Finish, Job};
pub use error::ApiError;
pub use metrics::Metrics;
pub use server::{router, serve, AppState, ServeConfig};

use std::path::Path;
use std::sync::Arc;

/// Errors of loading what a server serves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model could not be loaded.
    #[error("model: {0}")]
    Model(#[from] starling_model::Error),
    /// The tokenizer could not be loaded.
    #[error("{0}")]
    Tokenizer(String),
    /// The index could not be opened.
    #[error("index: {0}")]
    Index(#[from] starling_search::index::Error),
}

/// Bytes of decode-slot cache one sequence needs (keys and values of every layer, full context).
pub fn server_slot_bytes(c: &starling_model::LlamaConfig, bytes_per_value: usize) -> usize {
    2 * c.num_hidden_layers
        * c.num_key_value_heads
        * c.head_dim()
        * c.max_position_embeddings
        * bytes_per_value
}

/// Decode slots for `c` on `device` by default (as many as 2 GiB of KV cache holds, 1 to 64)
/// and the KV-cache bytes of one slot.
pub fn default_slots(c: &starling_model::LlamaConfig, device: tch::Device) -> (usize, usize) {
    let per_slot = server_slot_bytes(c, if device.is_cuda() { 2 } else { 4 });
    (((2usize << 30) / per_slot.max(1)).clamp(1, 64), per_slot)
}

/// Loads the model of `dir` (weights from `weights`) onto `device` and the index at `index`
/// (with the trained embedder in `<dir>/embedder/`, else the model, as its query embedder), and
/// starts the engine.
pub fn load(
    dir: &Path,
    weights: &Path,
    index: Option<&Path>,
    device: tch::Device,
    config: ServeConfig,
) -> Result<Arc<AppState>, Error> {
    let lc = starling_model::LlamaConfig::load(&dir.join("config.json"))
        .map_err(starling_model::Error::from)?;
    let mut vs = tch::nn::VarStore::new(device);
    let mut model = starling_model::Llama::new(&vs.root(), &lc);
    starling_model::load_weights(&mut vs, weights)?;
    if device.is_cuda() {
        model.set_compute_kind(tch::Kind::BFloat16);
    }
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = starling_tokens::tokenizer::load(&tok_path)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let index = match index {
        Some(p) => Some(Arc::new(starling_search::PostIndex::open(p)?)),
        None => None,
    };
    // Queries must be embedded as the index's posts were: same pooling (its id ends with it).
    let pooling = index
        .as_ref()
        .and_then(|i| i.meta.dense.as_ref())
        .and_then(|d| d.embedder.rsplit('/').next())
        .and_then(starling_model::Pooling::parse)
        .unwrap_or(starling_model::Pooling::Mean);
    // The trained embedder beside the model when there is one, else the model's own states.
    let (edir, eweights) = starling_model::trained_embedder(dir)
        .unwrap_or_else(|| (dir.to_path_buf(), weights.to_path_buf()));
    let embedder: Arc<dyn starling_embed::Embedder> = Arc::new(
        starling_model::PostEmbedder::load_replicated(&edir, &eweights, pooling, 2)?,
    );
    Ok(AppState::new(
        model,
        vs,
        tokenizer,
        index,
        Some(embedder),
        config,
    ))
}
