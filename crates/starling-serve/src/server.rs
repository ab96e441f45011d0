//! The HTTP server: state, routes and handlers of the OpenAI-compatible API, search, metrics and the page.

use crate::auth::ApiKeys;
use crate::chat::{grounding_query, ThreadLayout};
use crate::engine::{Engine, EngineConfig, Event, Finish, Job, TokenLogprob};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openai::{
    parse_json, typed, ChatRequest, CompletionRequest, EmbeddingInput, EmbeddingRequest, Grounding,
    Params, Prompt, Sampling,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use starling_embed::Embedder;
use starling_model::Llama;
use starling_search::{Hit, PostIndex, SearchMode, SearchOrder, SearchRequest};
use starling_tokens::template::{END_OF_POST, END_OF_TEXT};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

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
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    format!("tokenizer: {e}"),
                )
            })
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
            Ok(Err(e)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("preparing the request failed: {e}"),
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "preparing the request took longer than the request time limit",
            )
            .with_code("timeout")),
        }
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

    async fn ground(&self, message: &str, want: usize) -> Vec<Hit> {
        let (Some(index), Some(query)) = (self.index.clone(), grounding_query(message)) else {
            return Vec::new();
        };
        let found = tokio::task::spawn_blocking(move || {
            index.search_with(&SearchRequest {
                query: &query,
                mode: SearchMode::Bm25,
                order: SearchOrder::Top,
                limit: want,
                embedder: None,
            })
        })
        .await;
        match found {
            Ok(Ok(hits)) => hits,
            Ok(Err(e)) => {
                tracing::warn!("grounding search failed: {e}");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!("grounding search panicked: {e}");
                Vec::new()
            }
        }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The router with every route, authentication, body limit and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/search", get(search))
        .route("/v1/posts", post(add_posts))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(v1)
        .merge(crate::ads::routes())
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_large))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then saves the index (posts added
/// live included).
///
/// Each connection must send its headers within `header_timeout`; at most `max_connections` are
/// open at once, and one more is answered 503 and closed. Open connections get up to the
/// request timeout to finish after `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(state.config.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        let metrics = state.metrics.clone();
        metrics.connections_open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
            metrics.connections_open.dec();
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(state.config.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
    if let Some(index) = state.index.clone() {
        let flushed = tokio::task::spawn_blocking(move || index.flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!("saving the index: {e}");
        }
    }
    Ok(())
}

/// Answers a connection past the limit with 503 and closes it.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":{"message":"too many open connections; retry shortly","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Reads the whole request body within `body_timeout` (408 and the connection closed when it
/// does not arrive) and at most `max_body_bytes` of it (413).
async fn read_body(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limit = s.config.max_body_bytes;
    let read = tokio::time::timeout(
        s.config.body_timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is larger than this server accepts ({limit} bytes)"),
            )
            .into_response()
        }
        Ok(Err(e)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("reading the request body: {e}"),
            )
            .into_response()
        }
        Err(_) => {
            s.metrics.body_timeouts.inc();
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "the request body did not arrive within {:.0} s",
                    s.config.body_timeout.as_secs_f64()
                ),
            )
            .with_code("request_timeout")
            .into_response();
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    s.metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(t0.elapsed().as_secs_f64());
    resp
}

/// 413 from the declared length, before any of the body is read (no `100 Continue` for it);
/// bodies without a length are cut at the same limit while read.
async fn refuse_large(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.config.max_body_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is larger than this server accepts ({} bytes)",
                s.config.max_body_bytes
            ),
        )
        .into_response();
    }
    next.run(req).await
}

async fn require_key(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(keys) = &s.config.api_keys {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(ApiKeys::bearer)
            .is_some_and(|k| keys.accepts(k));
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "missing or incorrect API key (send `Authorization: Bearer <key>`)",
            )
            .with_code("invalid_api_key")
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such route",
    )
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": s.config.model_name,
        "queued": s.engine.queued(),
        "active": s.engine.active(),
        "index_posts": s.index.as_ref().map(|i| i.len()),
    }))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

fn model_json(s: &AppState) -> Value {
    json!({"id": s.config.model_name, "object": "model", "created": s.created, "owned_by": "starling"})
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_json(&s)]}))
}

async fn model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.check_model(Some(&id)) {
        Ok(()) => Json(model_json(&s)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn search(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let Some(index) = s.index.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this server has no index (start it with --index)",
        ));
    };
    let query = q
        .get("q")
        .filter(|v| !v.trim().is_empty())
        .cloned()
        .ok_or_else(|| ApiError::invalid("q", "q (the search query) is required"))?;
    let mode_name = q.get("mode").map_or("bm25", String::as_str);
    let mode = SearchMode::parse(mode_name).ok_or_else(|| {
        ApiError::invalid(
            "mode",
            format!("mode {mode_name:?}: use bm25, dense or hybrid"),
        )
    })?;
    let order = match q.get("order").map_or("top", String::as_str) {
        "top" => SearchOrder::Top,
        "latest" => SearchOrder::Latest,
        o => {
            return Err(ApiError::invalid(
                "order",
                format!("order {o:?}: use top or latest"),
            ))
        }
    };
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("limit {l:?}: use 1 to 100")))?,
    };
    let embedder = s.embedder.clone();
    let t0 = Instant::now();
    let q2 = query.clone();
    let hits = tokio::task::spawn_blocking(move || {
        index.search_with(&SearchRequest {
            query: &q2,
            mode,
            order,
            limit,
            embedder: embedder.as_deref(),
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?
    .map_err(|e| ApiError::invalid("q", e.to_string()))?;
    Ok(Json(json!({
        "object": "list",
        "query": query,
        "mode": mode_name,
        "order": if order == SearchOrder::Top { "top" } else { "latest" },
        "took_ms": t0.elapsed().as_secs_f64() * 1e3,
        "data": hits,
    })))
}

/// `POST /v1/posts`: posts in any Twitter API shape (v1.1 or v2 JSON, one per line, or an array),
/// searchable (and grounding chat) when it returns; delete notices in the body remove posts.
async fn add_posts(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Some(index) = s.index.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this server has no index (start it with --index)",
        ));
    };
    let body =
        body.map_err(|e| ApiError::new(e.status(), "invalid_request_error", e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("body", "the body holds no posts"));
    }
    let embedder = if index.has_dense() {
        s.embedder.clone()
    } else {
        None
    };
    let t0 = Instant::now();
    let done = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let path = std::env::temp_dir().join(format!(
            "starling-posts-{:016x}.jsonl",
            rand::random::<u64>()
        ));
        std::fs::write(&path, &body).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        })?;
        let mut u = starling_search::Updates::default();
        let read = u.read(&path);
        let _ = std::fs::remove_file(&path);
        read.map_err(|e| ApiError::invalid("body", e.to_string()))?;
        let added = index
            .add(&u.posts, embedder.as_deref())
            .map_err(|e| ApiError::invalid("body", e.to_string()))?;
        let deleted = index
            .delete(&u.deletions)
            .map_err(|e| ApiError::invalid("body", e.to_string()))?;
        let by_author = index
            .delete_authors(&u.user_deletions)
            .map_err(|e| ApiError::invalid("body", e.to_string()))?;
        let quarantined: Vec<Value> = u
            .quarantined
            .iter()
            .map(|q| json!({"line": q.line, "reason": q.reason}))
            .collect();
        Ok(json!({
            "read": u.records(),
            "posts": u.posts.len(),
            "added": added.added,
            "replaced": added.replaced,
            "repeated": added.repeated,
            "deletions": u.deletions.len() + u.user_deletions.len(),
            "deleted": deleted + by_author,
            "other": u.other,
            "quarantined": quarantined,
            "index_posts": index.len(),
        }))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })??;
    let mut done = done;
    done["took_ms"] = json!(t0.elapsed().as_secs_f64() * 1e3);
    Ok(Json(done))
}

async fn embeddings(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingRequest = typed(&parse_json(&headers, body)?)?;
    s.check_model(req.model.as_deref())?;
    let Some(embedder) = s.embedder.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this server has no embedder",
        ));
    };
    let texts = match req.input {
        EmbeddingInput::Text(t) => vec![t],
        EmbeddingInput::Texts(v) => v,
    };
    if texts.is_empty() || texts.len() > 2048 {
        return Err(ApiError::invalid(
            "input",
            "input must hold 1 to 2048 texts",
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            &format!("input[{i}]"),
            "input texts must not be empty",
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(o) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format {o:?}: use float or base64"),
            ))
        }
    };
    for (i, t) in texts.iter().enumerate() {
        s.check_text_fits(&format!("input[{i}]"), &format!("input[{i}]"), t.len())?;
    }
    let texts = Arc::new(texts);
    let tokens = {
        let (s, texts) = (s.clone(), texts.clone());
        s.clone()
            .off_runtime(move || {
                let mut n = 0;
                for t in texts.iter() {
                    n += s.encode(t)?.len();
                }
                Ok(n)
            })
            .await?
    };
    let vectors = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": s.config.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// Which API a response speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Completion,
}

/// Fixed parts of one response.
struct Reply {
    api: Api,
    id: String,
    created: i64,
    model: String,
    prompt_tokens: usize,
    choices: usize,
    /// Completions: prompt text per prompt when echoing.
    echo: Vec<String>,
    n: usize,
    grounding: Option<Vec<Hit>>,
    include_usage: bool,
}

/// One finished choice.
#[derive(Default)]
struct ChoiceOut {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<Finish>,
    tokens: usize,
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_json(&headers, body)?;
    let req: ChatRequest = typed(&v)?;
    let sampling: Sampling = typed(&v)?;
    s.check_model(req.model.as_deref())?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !["system", "developer", "user", "assistant", "tool"].contains(&m.role.as_str()) {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "messages[{i}].role {:?}: use system, developer, user, assistant or tool",
                    m.role
                ),
            ));
        }
    }
    let p = sampling.validate(s.config.chat_max_tokens)?;
    let top = req.top_logprobs.unwrap_or(0);
    if !(0..=crate::openai::MAX_TOP_LOGPROBS as i64).contains(&top) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs must be 0 to 20",
        ));
    }
    let logprobs = req.logprobs.unwrap_or(false);
    if top > 0 && !logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let want = match req.grounding {
        None | Some(Grounding::On(true)) => s.config.grounding_posts,
        Some(Grounding::On(false)) => 0,
        Some(Grounding::Count(c)) if (0..=20).contains(&c) => c as usize,
        Some(Grounding::Count(c)) => {
            return Err(ApiError::invalid(
                "grounding",
                format!("grounding {c}: use 0 to 20 posts"),
            ))
        }
    };
    let texts: Vec<String> = req.messages.iter().map(|m| m.text()).collect();
    s.check_text_fits(
        "messages",
        "the conversation",
        texts.iter().map(String::len).sum(),
    )?;
    let thread = {
        let s2 = s.clone();
        s.off_runtime(move || s2.encode(&s2.layout.thread(&texts)))
            .await?
    };
    let ctx = s.engine.context();
    if thread.len() >= ctx {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the conversation is {} tokens; this model's context is {ctx} tokens, and the answer needs at least one",
                thread.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.text())
        .unwrap_or_default();
    let hits = if want > 0 {
        s.ground(&last_user, want).await
    } else {
        Vec::new()
    };
    // Grounding posts go first, as many as leave room for the answer.
    let reserve = p.sampling.max_tokens.min(ctx / 4);
    let mut prompt = Vec::new();
    let mut used = Vec::new();
    let docs = {
        let (s2, hits) = (s.clone(), hits.clone());
        s.off_runtime(move || {
            hits.iter()
                .map(|h| s2.encode(&s2.layout.grounding_document(h)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    };
    for (h, ids) in hits.into_iter().zip(docs) {
        if prompt.len() + ids.len() + thread.len() + reserve <= ctx {
            prompt.extend(ids);
            used.push(h);
        }
    }
    prompt.extend(thread);
    let rx = s.submit(
        std::slice::from_ref(&prompt),
        &p,
        logprobs.then_some(top as usize),
        s.stop_ids(true, p.ignore_eos),
    )?;
    let reply = Reply {
        api: Api::Chat,
        id: request_id("chatcmpl"),
        created: now_s(),
        model: s.config.model_name.clone(),
        prompt_tokens: prompt.len(),
        choices: p.n,
        echo: Vec::new(),
        n: p.n,
        grounding: s.index.is_some().then_some(used),
        include_usage: p.include_usage,
    };
    Ok(if p.stream {
        stream(reply, rx)
    } else {
        let out = collect(rx, p.n).await?;
        Json(reply.full(out, logprobs)).into_response()
    })
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_json(&headers, body)?;
    let req: CompletionRequest = typed(&v)?;
    let sampling: Sampling = typed(&v)?;
    s.check_model(req.model.as_deref())?;
    let p = sampling.validate(16)?;
    let lp = req.logprobs.unwrap_or(-1);
    if !(-1..=5).contains(&lp) {
        return Err(ApiError::invalid("logprobs", "logprobs must be 0 to 5"));
    }
    let start = s.eos.unwrap_or(0);
    let texts = match &req.prompt {
        Some(Prompt::Text(t)) => vec![t.clone()],
        Some(Prompt::Texts(v)) => v.clone(),
        _ => Vec::new(),
    };
    if texts.len() > 32 {
        return Err(ApiError::invalid(
            "prompt",
            "prompt must hold 1 to 32 prompts",
        ));
    }
    for (i, t) in texts.iter().enumerate() {
        s.check_text_fits("prompt", &format!("prompt {i}"), t.len())?;
    }
    let encoded = {
        let s2 = s.clone();
        s.off_runtime(move || {
            texts
                .iter()
                .map(|t| s2.encode(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    };
    let mut prompts: Vec<Vec<i64>> = match req.prompt {
        None => vec![Vec::new()],
        Some(Prompt::Text(_)) | Some(Prompt::Texts(_)) => encoded,
        Some(Prompt::Tokens(t)) => vec![t],
        Some(Prompt::TokenLists(v)) => v,
    };
    if prompts.is_empty() || prompts.len() > 32 {
        return Err(ApiError::invalid(
            "prompt",
            "prompt must hold 1 to 32 prompts",
        ));
    }
    let ctx = s.engine.context();
    for (i, pr) in prompts.iter_mut().enumerate() {
        if let Some(bad) = pr.iter().find(|&&t| t < 0 || t as usize >= s.vocab) {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "prompt {i}: token id {bad} is outside the vocabulary (0..{})",
                    s.vocab
                ),
            ));
        }
        if pr.is_empty() {
            // Like OpenAI's default prompt: start a new document.
            pr.push(start);
        }
        if pr.len() >= ctx {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "prompt {i} is {} tokens; this model's context is {ctx} tokens, and the completion needs at least one",
                    pr.len()
                ),
            )
            .with_code("context_length_exceeded"));
        }
    }
    let echo = if req.echo.unwrap_or(false) {
        prompts.iter().map(|p| s.decode(p)).collect()
    } else {
        Vec::new()
    };
    let rx = s.submit(
        &prompts,
        &p,
        (lp >= 0).then_some(lp as usize),
        s.stop_ids(false, p.ignore_eos),
    )?;
    let reply = Reply {
        api: Api::Completion,
        id: request_id("cmpl"),
        created: now_s(),
        model: s.config.model_name.clone(),
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        choices: prompts.len() * p.n,
        echo,
        n: p.n,
        grounding: None,
        include_usage: p.include_usage,
    };
    Ok(if p.stream {
        stream(reply, rx)
    } else {
        let out = collect(rx, reply.choices).await?;
        Json(reply.full(out, lp >= 0)).into_response()
    })
}

/// Waits for every choice; a timeout is a 504.
async fn collect(
    mut rx: UnboundedReceiver<Event>,
    total: usize,
) -> Result<Vec<ChoiceOut>, ApiError> {
    let mut out: Vec<ChoiceOut> = (0..total).map(|_| ChoiceOut::default()).collect();
    let mut done = 0;
    while done < total {
        match rx.recv().await {
            Some(Event::Token {
                index,
                text,
                logprob,
            }) => {
                if let Some(c) = out.get_mut(index) {
                    c.text.push_str(&text);
                    c.logprobs.extend(logprob);
                }
            }
            Some(Event::Done {
                index,
                finish,
                completion_tokens,
            }) => {
                if finish == Finish::Timeout {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "the request ran past the server's time limit",
                    ));
                }
                if let Some(c) = out.get_mut(index) {
                    c.finish = Some(finish);
                    c.tokens = completion_tokens;
                }
                done += 1;
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "the generation engine stopped",
                ))
            }
        }
    }
    Ok(out)
}

fn chat_logprobs(l: &[TokenLogprob]) -> Value {
    let tok = |t: &str, lp: f32| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()});
    json!({"content": l.iter().map(|t| {
        let mut v = tok(&t.token, t.logprob);
        v["top_logprobs"] = Value::Array(t.top.iter().map(|(s, lp)| tok(s, *lp)).collect());
        v
    }).collect::<Vec<_>>()})
}

fn completion_logprobs(l: &[TokenLogprob], start: usize) -> Value {
    let mut offset = start;
    let mut offsets = Vec::new();
    for t in l {
        offsets.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": l.iter().map(|t| t.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": l.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": l.iter().map(|t| t.top.iter().map(|(s, lp)| (s.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

impl Reply {
    fn usage(&self, completion: usize) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion})
    }

    fn echo_of(&self, index: usize) -> &str {
        self.echo
            .get(index / self.n.max(1))
            .map_or("", String::as_str)
    }

    fn full(&self, out: Vec<ChoiceOut>, logprobs: bool) -> Value {
        let completion: usize = out.iter().map(|c| c.tokens).sum();
        let choices: Vec<Value> = out
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let finish = c.finish.map(Finish::reason);
                match self.api {
                    Api::Chat => json!({
                        "index": i,
                        "message": {"role": "assistant", "content": c.text.trim_start()},
                        "logprobs": if logprobs { chat_logprobs(&c.logprobs) } else { Value::Null },
                        "finish_reason": finish,
                    }),
                    Api::Completion => {
                        let echo = self.echo_of(i);
                        json!({
                            "index": i,
                            "text": format!("{echo}{}", c.text),
                            "logprobs": if logprobs { completion_logprobs(&c.logprobs, echo.len()) } else { Value::Null },
                            "finish_reason": finish,
                        })
                    }
                }
            })
            .collect();
        let mut v = json!({
            "id": self.id,
            "object": if self.api == Api::Chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("starling-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
            "usage": self.usage(completion),
        });
        if let Some(g) = &self.grounding {
            v["grounding"] = json!(g);
        }
        v
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": if self.api == Api::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("starling-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        })
    }
}

/// State of one server-sent event stream.
struct StreamState {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<SseEvent>,
    started: Vec<bool>,
    done: usize,
    completion: usize,
    finished: bool,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl StreamState {
    fn on(&mut self, event: Event) {
        let r = &self.reply;
        match event {
            Event::Token {
                index,
                text,
                logprob,
            } => {
                let started = self.started.get(index).copied().unwrap_or(true);
                let text = if r.api == Api::Chat && !started {
                    text.trim_start().to_string()
                } else {
                    text
                };
                if text.is_empty() && logprob.is_none() {
                    return;
                }
                if let Some(s) = self.started.get_mut(index) {
                    *s |= !text.is_empty();
                }
                let lp = logprob.map(|l| vec![l]);
                let choice = match r.api {
                    Api::Chat => json!({"index": index, "delta": {"content": text},
                        "logprobs": lp.as_deref().map_or(Value::Null, chat_logprobs), "finish_reason": null}),
                    Api::Completion => json!({"index": index, "text": text,
                        "logprobs": lp.as_deref().map_or(Value::Null, |l| completion_logprobs(l, 0)), "finish_reason": null}),
                };
                self.pending.push_back(data(&r.chunk(vec![choice])));
            }
            Event::Done {
                index,
                finish,
                completion_tokens,
            } => {
                self.done += 1;
                self.completion += completion_tokens;
                if finish == Finish::Timeout {
                    let e = ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "the request ran past the server's time limit",
                    );
                    self.pending.push_back(data(&e.body()));
                    self.end();
                    return;
                }
                let choice = match r.api {
                    Api::Chat => {
                        json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish.reason()})
                    }
                    Api::Completion => {
                        json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish.reason()})
                    }
                };
                self.pending.push_back(data(&r.chunk(vec![choice])));
                if self.done == r.choices {
                    if r.include_usage {
                        let mut u = r.chunk(Vec::new());
                        u["usage"] = r.usage(self.completion);
                        self.pending.push_back(data(&u));
                    }
                    self.end();
                }
            }
        }
    }

    fn end(&mut self) {
        self.pending.push_back(SseEvent::default().data("[DONE]"));
        self.finished = true;
    }
}

/// Streams a reply as server-sent events; dropping the stream (the client went away) drops the
/// receiver, which cancels the sequences.
fn stream(reply: Reply, rx: UnboundedReceiver<Event>) -> Response {
    let mut st = StreamState {
        started: vec![false; reply.choices],
        rx,
        pending: VecDeque::new(),
        done: 0,
        completion: 0,
        finished: false,
        reply,
    };
    // The opening chunks: the role (chat) and the grounding posts.
    if st.reply.api == Api::Chat {
        for i in 0..st.reply.choices {
            let mut c = st.reply.chunk(vec![json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})]);
            if i == 0 {
                if let Some(g) = &st.reply.grounding {
                    c["grounding"] = json!(g);
                }
            }
            st.pending.push_back(data(&c));
        }
    }
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(ev) => st.on(ev),
                None => {
                    let e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "the generation engine stopped",
                    );
                    st.pending.push_back(data(&e.body()));
                    st.end();
                }
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
