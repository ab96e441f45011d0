//! The router, the accept loop with its connection limits, and the middleware (authentication,
//! body limits and timeouts, metrics); the small routes (page, health, metrics, models).

use super::AppState;
use crate::auth::ApiKeys;
use crate::error::ApiError;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The router with every route, authentication, body limit and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(super::generate::chat))
        .route("/v1/completions", post(super::generate::completions))
        .route("/v1/embeddings", post(super::embeddings::embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/search", get(super::search::search))
        .route("/v1/posts", post(super::search::add_posts))
        .route("/tokenize", post(super::tokenize::tokenize))
        .route("/detokenize", post(super::tokenize::detokenize))
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
    Html(include_str!("../../assets/index.html"))
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": s.config.model_name,
        "queued": s.engine.queued(),
        "active": s.engine.active(),
        "slots": s.config.engine.max_batch,
        "slots_idle": s.config.engine.max_batch.saturating_sub(s.engine.active()),
        "slots_processing": s.engine.active(),
        "context_length": s.engine.context(),
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

/// A model as `/v1/models` lists it: OpenAI's fields, the context length, and llama-server's
/// `meta` (training context, vocabulary, width, parameters).
fn model_json(s: &AppState) -> Value {
    let c = &s.model_config;
    json!({"id": s.config.model_name, "object": "model", "created": s.created, "owned_by": "starling",
        "context_length": s.engine.context(),
        "meta": {"vocab_type": 2, "n_vocab": c.vocab_size, "n_ctx_train": c.max_position_embeddings,
            "n_embd": c.hidden_size, "n_params": c.num_params()}})
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
