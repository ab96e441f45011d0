//! `POST /tokenize` and `POST /detokenize`, shaped as llama-server's.

use super::AppState;
use crate::error::ApiError;
use crate::openai::Typed;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Body of `POST /tokenize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenizeRequest {
    content: String,
    /// Parse `<|endofpost|>` and the other special tokens as tokens (llama-server's default).
    #[serde(default = "yes")]
    parse_special: bool,
    /// Adds BOS in llama-server; starling's vocabulary has none, so it adds nothing.
    #[serde(default)]
    add_special: bool,
    /// Answer `{id, piece}` pairs instead of bare ids.
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// Body of `POST /detokenize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DetokenizeRequest {
    tokens: Vec<i64>,
}

pub(super) async fn tokenize(
    State(s): State<Arc<AppState>>,
    Typed(req): Typed<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let _ = req.add_special;
    let state = s.clone();
    let ids = s
        .off_runtime(move || {
            let tok = if req.parse_special {
                &state.tokenizer
            } else {
                state.plain_tokenizer()
            };
            let ids = starling_tokens::tokenizer::encode(tok, &req.content)
                .map_err(|e| ApiError::invalid("content", format!("content: {e}")))?;
            Ok(if req.with_pieces {
                json!(ids
                    .iter()
                    .map(|&id| json!({"id": id, "piece": state.decode(&[i64::from(id)])}))
                    .collect::<Vec<_>>())
            } else {
                json!(ids)
            })
        })
        .await?;
    Ok(Json(json!({ "tokens": ids })))
}

pub(super) async fn detokenize(
    State(s): State<Arc<AppState>>,
    Typed(req): Typed<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    if let Some(i) = req
        .tokens
        .iter()
        .position(|&t| t < 0 || t as usize >= s.vocab)
    {
        return Err(ApiError::invalid(
            &format!("tokens[{i}]"),
            format!(
                "tokens[{i}] = {} is not a token id (the vocabulary has {})",
                req.tokens[i], s.vocab
            ),
        ));
    }
    let state = s.clone();
    let content = s.off_runtime(move || Ok(state.decode(&req.tokens))).await?;
    Ok(Json(json!({ "content": content })))
}
