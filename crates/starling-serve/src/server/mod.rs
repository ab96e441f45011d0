//! The HTTP server: its configuration and shared state here; the router, connection handling
//! and middleware in [`http`]; the handlers by API in [`search`], [`embeddings`] and
//! [`generate`] (chat and completions, whole or as server-sent events).

use crate::auth::ApiKeys;
use crate::chat::ThreadLayout;
use crate::engine::{Engine, EngineConfig, Event, Job};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openai::Params;
use axum::http::StatusCode;
use starling_embed::Embedder;
use starling_model::Llama;
use starling_search::{ground, Grounded, PostIndex, SearchMode};
use starling_tokens::template::{END_OF_POST, END_OF_TEXT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

mod embeddings;
mod generate;
mod http;
mod search;
mod tokenize;

pub use http::{router, serve};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Batching and queueing.
    pub engine: EngineConfig,
    /// A request's time limit, queueing included.
    pub request_timeout: Duration,
    /// Largest request body in bytes (larger ones get 413).
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers; the connection is closed after it.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in (408 after it).
    pub body_timeout: Duration,
    /// Most open client connections; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Posts a chat answer is grounded on by default (0 = off).
    pub grounding_posts: usize,
    /// Accepted API keys (None = no authentication).
    pub api_keys: Option<ApiKeys>,
    /// The model's name in the API.
    pub model_name: String,
    /// Chat's `max_tokens` when the request has none.
    pub chat_max_tokens: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            request_timeout: Duration::from_secs(120),
            max_body_bytes: 2 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            grounding_posts: 3,
            api_keys: None,
            model_name: "starling".into(),
            chat_max_tokens: 256,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    engine: Engine,
    tokenizer: Tokenizer,
    /// The tokenizer with special tokens read as text (`/tokenize` with `parse_special: false`).
    plain_tokenizer: std::sync::OnceLock<Tokenizer>,
    /// The model's shape (for `/v1/models`).
    model_config: starling_model::LlamaConfig,
    layout: ThreadLayout,
    index: Option<Arc<PostIndex>>,
    embedder: Option<Arc<dyn Embedder>>,
    metrics: Arc<Metrics>,
    config: ServeConfig,
    eos: Option<i64>,
    end_of_post: Option<i64>,
    vocab: usize,
    /// Bytes of text the longest token covers: no text longer than context x this fits.
    max_token_bytes: usize,
    created: i64,
    ads: std::sync::OnceLock<Arc<starling_ads::AdServer>>,
}

impl AppState {
    /// Starts the engine on `model` and gathers what the handlers need.
    pub fn new(
        model: Llama,
        vs: tch::nn::VarStore,
        tokenizer: Tokenizer,
        index: Option<Arc<PostIndex>>,
        embedder: Option<Arc<dyn Embedder>>,
        config: ServeConfig,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let eos = model
            .config
            .eos_token_id
            .map(i64::from)
            .or_else(|| tokenizer.token_to_id(END_OF_TEXT).map(i64::from));
        let end_of_post = tokenizer.token_to_id(END_OF_POST).map(i64::from);
        let vocab = model.config.vocab_size;
        let model_config = model.config.clone();
        metrics.slots.set(config.engine.max_batch as i64);
        // Byte-level BPE: one vocabulary character per byte.
        let max_token_bytes = tokenizer
            .get_vocab(true)
            .keys()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1)
            .max(1);
        let engine = Engine::start(
            model,
            vs,
            tokenizer.clone(),
            config.engine.clone(),
            metrics.clone(),
        );
        Arc::new(Self {
            engine,
            tokenizer,
            plain_tokenizer: std::sync::OnceLock::new(),
            model_config,
            layout: ThreadLayout::default(),
            index,
            embedder,
            metrics,
            config,
            eos,
            end_of_post,
            vocab,
            max_token_bytes,
            created: now_s(),
            ads: std::sync::OnceLock::new(),
        })
    }

    /// The model's name in the API.
    pub fn model_name(&self) -> &str {
        &self.config.model_name
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Attaches the ad server behind `/v1/ads/*` (once; later calls are ignored).
    pub fn attach_ads(&self, ads: Arc<starling_ads::AdServer>) {
        let _ = self.ads.set(ads);
    }

    /// The attached ad server.
    pub fn ads(&self) -> Option<&Arc<starling_ads::AdServer>> {
        self.ads.get()
    }

    /// The search index, if any.
    pub fn index(&self) -> Option<&Arc<PostIndex>> {
        self.index.as_ref()
    }

    /// The embedder of queries and posts, if any.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// The server's API keys (the operator's), if any.
    pub fn api_keys(&self) -> Option<&ApiKeys> {
        self.config.api_keys.as_ref()
    }

    /// The generation engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.config.model_name => Err(ApiError {
                param: Some("model".into()),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!(
                        "the model `{m}` does not exist; this server has `{}`",
                        self.config.model_name
                    ),
                )
                .with_code("model_not_found")
            }),
            _ => Ok(()),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<i64>, ApiError> {
        starling_tokens::tokenizer::encode(&self.tokenizer, text)
            .map(|v| v.into_iter().map(i64::from).collect())
            .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))
    }

    /// Refuses, before any work is spent on it, text that cannot fit the context: `bytes` of
    /// text make at least `bytes / max_token_bytes` tokens.
    fn check_text_fits(&self, param: &str, what: &str, bytes: usize) -> Result<(), ApiError> {
        let ctx = self.engine.context();
        let cap = ctx.saturating_mul(self.max_token_bytes);
        if bytes > cap {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{what} is {bytes} bytes of text; this model's context of {ctx} tokens holds at most {cap} bytes (no token is longer than {} bytes)",
                    self.max_token_bytes
                ),
            )
            .with_code("context_length_exceeded"));
        }
        Ok(())
    }

    /// Runs CPU-heavy work (normalising, tokenising) off the async runtime, within the
    /// request's time limit.
    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let task = tokio::task::spawn_blocking(work);
        match tokio::time::timeout(self.config.request_timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ApiError::internal(format!(
                "preparing the request failed: {e}"
            ))),
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "preparing the request took longer than the request time limit",
            )
            .with_code("timeout")),
        }
    }

    /// The tokenizer that reads special tokens as plain text.
    fn plain_tokenizer(&self) -> &Tokenizer {
        self.plain_tokenizer.get_or_init(|| {
            let mut t = self.tokenizer.clone();
            t.set_encode_special_tokens(true);
            t
        })
    }

    fn decode(&self, ids: &[i64]) -> String {
        let u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer.decode(&u, false).unwrap_or_default()
    }

    /// Queues `n` sequences for each prompt; their events arrive on one channel.
    fn submit(
        &self,
        prompts: &[Vec<i64>],
        p: &Params,
        logprobs: Option<usize>,
        stop_ids: Vec<i64>,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = unbounded_channel();
        let deadline = Instant::now() + self.config.request_timeout;
        let ctx = self.engine.context();
        let mut jobs = Vec::new();
        for (i, prompt) in prompts.iter().enumerate() {
            for j in 0..p.n {
                let index = i * p.n + j;
                let mut sampling = p.sampling.clone();
                sampling.max_tokens = sampling.max_tokens.min(ctx - prompt.len());
                sampling.seed = sampling.seed.wrapping_add(index as u64);
                jobs.push(Job {
                    index,
                    prompt: prompt.clone(),
                    sampling,
                    stop_ids: stop_ids.clone(),
                    logprobs,
                    deadline,
                    events: tx.clone(),
                });
            }
        }
        self.engine.submit(jobs).map_err(|e| ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("the server is busy: {e}; retry shortly"),
            )
        })?;
        Ok(rx)
    }

    fn stop_ids(&self, chat: bool, ignore_eos: bool) -> Vec<i64> {
        if ignore_eos {
            return Vec::new();
        }
        let mut v: Vec<i64> = self.eos.into_iter().collect();
        if chat {
            v.extend(self.end_of_post);
        }
        v
    }

    /// The posts `message` is about (hybrid when the index has vectors), or none and why.
    async fn ground(&self, message: &str, want: usize) -> Grounded {
        let none = |note: &str| Grounded {
            hits: Vec::new(),
            queries: Vec::new(),
            mode: SearchMode::Bm25,
            note: Some(note.to_string()),
        };
        let Some(index) = self.index.clone() else {
            return none("this server has no index");
        };
        let (message, embedder) = (message.to_string(), self.embedder.clone());
        let found = tokio::task::spawn_blocking(move || {
            ground(&index, &message, want, embedder.as_deref())
        })
        .await;
        match found {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                tracing::warn!("grounding search failed: {e}");
                none("the search for posts failed")
            }
            Err(e) => {
                tracing::warn!("grounding search panicked: {e}");
                none("the search for posts failed")
            }
        }
    }
}

pub(super) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(super) fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
