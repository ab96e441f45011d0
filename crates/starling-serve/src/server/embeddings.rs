//! `POST /v1/embeddings`.

use super::AppState;
use crate::error::ApiError;
use crate::openai::{typed, ApiJson, EmbeddingInput, EmbeddingRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) async fn embeddings(
    State(s): State<Arc<AppState>>,
    ApiJson(v): ApiJson,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingRequest = typed(&v)?;
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
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
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
