//! OpenAI's request shapes (unknown fields ignored) and their validation into sampling parameters.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use starling_model::SamplingConfig;

/// Most stop sequences per request (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Most sequences per request (`n`).
pub const MAX_N: usize = 8;
/// Most alternatives per token in log-probabilities (chat's `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Parses a JSON body into an object, checking the size and the content type.
pub fn parse_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "the request body is larger than this server accepts",
            )
        } else {
            ApiError::new(e.status(), "invalid_request_error", e.body_text())
        }
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!("Content-Type must be application/json (got {ct:?})"),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("malformed JSON body: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// A JSON object body, read with OpenAI-shaped rejections: 413 too large, 415 not JSON, 400
/// malformed or not an object.
pub struct ApiJson(pub serde_json::Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await;
        parse_json(&headers, body).map(ApiJson)
    }
}

/// A request shape read from a JSON object body, naming the field at fault (`messages[0].role`).
pub struct Typed<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for Typed<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let ApiJson(v) = ApiJson::from_request(req, state).await?;
        typed(&v).map(Typed)
    }
}

/// Reads a request shape from a parsed body, naming the field at fault.
pub fn typed<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("invalid request body: {inner}"),
            )
        } else {
            ApiError::invalid(&path, format!("{path}: {inner}"))
        }
    })
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message's content: text or a list of parts (text parts are joined).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part; only `text` parts carry text this model reads.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type (`text`, `image_url`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// A chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// system, developer, user, assistant or tool.
    pub role: String,
    /// Its content.
    pub content: Option<Content>,
}

impl Message {
    /// The message's text.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(p)) => p
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage`.
    pub include_usage: Option<bool>,
}

/// `grounding` (starling's extension): on/off or how many posts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Grounding {
    /// On with the server's default count, or off.
    On(bool),
    /// This many posts (0 is off).
    Count(i64),
}

/// Fields shared by chat and completions.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    /// Most new tokens.
    pub max_tokens: Option<i64>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// 0..=2; 0 is greedy.
    pub temperature: Option<f64>,
    /// (0, 1].
    pub top_p: Option<f64>,
    /// Extension: keep the k most likely tokens (0 = all).
    pub top_k: Option<i64>,
    /// Extension: repetition penalty (1 = off).
    pub repetition_penalty: Option<f64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Sampler seed.
    pub seed: Option<i64>,
    /// Choices to generate.
    pub n: Option<i64>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Stream options.
    pub stream_options: Option<StreamOptions>,
    /// Extension (vLLM's name): keep generating past the end token.
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Return log-probabilities of the chosen tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per token (0..=20; needs `logprobs`).
    pub top_logprobs: Option<i64>,
    /// Grounding in posts (extension).
    pub grounding: Option<Grounding>,
}

/// A completions prompt: text, texts, token ids or lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts (one set of choices each).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<i64>),
    /// Several token-id prompts.
    TokenLists(Vec<Vec<i64>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: Option<String>,
    /// The prompt.
    pub prompt: Option<Prompt>,
    /// Log-probabilities with this many alternatives (0..=5).
    pub logprobs: Option<i64>,
    /// Return the prompt before the completion.
    pub echo: Option<bool>,
}

/// Input of `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several.
    Texts(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: Option<String>,
    /// Texts to embed.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
}

/// Validated sampling parameters of a request.
#[derive(Debug, Clone)]
pub struct Params {
    /// Sampling (with `max_tokens` the request's or the default).
    pub sampling: SamplingConfig,
    /// Whether `max_tokens` was given.
    pub max_tokens_given: bool,
    /// Choices.
    pub n: usize,
    /// Stream.
    pub stream: bool,
    /// Last chunk with usage.
    pub include_usage: bool,
    /// Keep generating past the end token.
    pub ignore_eos: bool,
}

impl Sampling {
    /// Checks every field, naming the first one out of range; `default_max` when max_tokens is absent.
    pub fn validate(&self, default_max: usize) -> Result<Params, ApiError> {
        let max = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => Some(("max_completion_tokens", m)),
            (None, Some(m)) => Some(("max_tokens", m)),
            _ => None,
        };
        if let Some((name, m)) = max {
            if m <= 0 {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} must be at least 1 (got {m})"),
                ));
            }
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be between 0 and 2 (got {temperature})"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1] (got {top_p})"),
            ));
        }
        let top_k = self.top_k.unwrap_or(0);
        if top_k < 0 {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k must be 0 (off) or more (got {top_k})"),
            ));
        }
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("repetition_penalty must be in (0, 10] (got {repetition_penalty})"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "stop takes at most {MAX_STOP} sequences (got {})",
                    stop.len()
                ),
            ));
        }
        if stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
            return Err(ApiError::invalid(
                "stop",
                format!("each stop sequence must be 1 to {MAX_STOP_LEN} bytes"),
            ));
        }
        let n = self.n.unwrap_or(1);
        if n < 1 || n > MAX_N as i64 {
            return Err(ApiError::invalid(
                "n",
                format!("n must be between 1 and {MAX_N} (got {n})"),
            ));
        }
        let seed = self.seed.map(|s| s as u64).unwrap_or_else(rand::random);
        Ok(Params {
            sampling: SamplingConfig {
                temperature,
                top_k: top_k as usize,
                top_p,
                repetition_penalty,
                max_tokens: max.map_or(default_max, |(_, m)| m as usize),
                stop,
                seed,
            },
            max_tokens_given: max.is_some(),
            n: n as usize,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(json: &str) -> Result<Params, ApiError> {
        serde_json::from_str::<Sampling>(json)
            .expect("parses")
            .validate(16)
    }

    #[test]
    fn names_the_field_out_of_range() {
        let p = sampling("{}").expect("defaults");
        assert_eq!(
            (p.n, p.sampling.max_tokens, p.sampling.temperature),
            (1, 16, 1.0)
        );
        for (json, field) in [
            (r#"{"max_tokens": 0}"#, "max_tokens"),
            (r#"{"max_completion_tokens": -3}"#, "max_completion_tokens"),
            (r#"{"temperature": -0.1}"#, "temperature"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"n": 0}"#, "n"),
            (r#"{"stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"stop": ""}"#, "stop"),
        ] {
            let e = sampling(json).expect_err(json);
            assert_eq!(e.param.as_deref(), Some(field), "{json}");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        let p =
            sampling(r#"{"stop": "\n", "seed": 7, "max_tokens": 5, "unknown": 1}"#).expect("ok");
        assert_eq!(
            (
                p.sampling.stop.clone(),
                p.sampling.seed,
                p.sampling.max_tokens
            ),
            (vec!["\n".to_string()], 7, 5)
        );
    }

    #[test]
    fn json_errors_name_the_field_or_say_malformed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("hv"),
        );
        let v = parse_json(
            &h,
            Ok(Bytes::from_static(
                br#"{"messages": [{"role": 3}], "temperature": "hot"}"#,
            )),
        )
        .expect("json");
        let e = typed::<Sampling>(&v).expect_err("type error");
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = typed::<ChatRequest>(&v).expect_err("type error");
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let bad = parse_json(&h, Ok(Bytes::from_static(b"{\"messages\": [")));
        assert!(bad.expect_err("syntax").message.contains("malformed JSON"));
        let bad = parse_json(&h, Ok(Bytes::from_static(b"[1]")));
        assert!(bad.expect_err("array").message.contains("JSON object"));
        let mut text = HeaderMap::new();
        text.insert(header::CONTENT_TYPE, "text/plain".parse().expect("hv"));
        let bad = parse_json(&text, Ok(Bytes::from_static(b"{}")));
        assert_eq!(
            bad.expect_err("ct").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
