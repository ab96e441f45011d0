//! `GET /v1/search` and `POST /v1/posts`: the live index.

use super::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use starling_search::{SearchMode, SearchOrder, SearchRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub(super) async fn search(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let index = index_of(&s)?;
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
    .map_err(ApiError::internal)?
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
pub(super) async fn add_posts(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let index = index_of(&s)?;
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
        std::fs::write(&path, &body).map_err(ApiError::internal)?;
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
    .map_err(ApiError::internal)??;
    let mut done = done;
    done["took_ms"] = json!(t0.elapsed().as_secs_f64() * 1e3);
    Ok(Json(done))
}

/// The server's index, or the API's answer when it has none.
fn index_of(s: &AppState) -> Result<Arc<starling_search::PostIndex>, ApiError> {
    s.index.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this server has no index (start it with --index)",
        )
    })
}
