//! `POST /v1/chat/completions` and `POST /v1/completions`: requests to sequences on the engine, and
//! their answers, whole or streamed.

use super::{now_s, request_id, AppState};
use crate::engine::{Event, Finish, TokenLogprob};
use crate::error::ApiError;
use crate::openai::{typed, ApiJson, ChatRequest, CompletionRequest, Grounding, Prompt, Sampling};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use starling_search::Hit;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// Which API a response speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Api {
    Chat,
    Completion,
}

/// Fixed parts of one response.
pub(super) struct Reply {
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
    /// Why there are no grounding posts, when the server looked and found none relevant.
    grounding_note: Option<String>,
    include_usage: bool,
}

/// One finished choice.
#[derive(Default)]
pub(super) struct ChoiceOut {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<Finish>,
    tokens: usize,
}

/// What a chat request asks beyond sampling, checked.
struct ChatChecked {
    top: i64,
    logprobs: bool,
    want: usize,
}

/// Checks a chat request's messages, sampling, log-probability and grounding fields (in that
/// order), naming the field at fault.
fn check_chat(
    req: &ChatRequest,
    sampling: Sampling,
    config: &super::ServeConfig,
) -> Result<(crate::openai::Params, ChatChecked), ApiError> {
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
    let p = sampling.validate(config.chat_max_tokens)?;
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
        None | Some(Grounding::On(true)) => config.grounding_posts,
        Some(Grounding::On(false)) => 0,
        Some(Grounding::Count(c)) if (0..=20).contains(&c) => c as usize,
        Some(Grounding::Count(c)) => {
            return Err(ApiError::invalid(
                "grounding",
                format!("grounding {c}: use 0 to 20 posts"),
            ))
        }
    };
    Ok((
        p,
        ChatChecked {
            top,
            logprobs,
            want,
        },
    ))
}

pub(super) async fn chat(
    State(s): State<Arc<AppState>>,
    ApiJson(v): ApiJson,
) -> Result<Response, ApiError> {
    let req: ChatRequest = typed(&v)?;
    let sampling: Sampling = typed(&v)?;
    s.check_model(req.model.as_deref())?;
    let (
        p,
        ChatChecked {
            top,
            logprobs,
            want,
        },
    ) = check_chat(&req, sampling, &s.config)?;
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
    let grounded = if want > 0 && s.index.is_some() {
        Some(s.ground(&last_user, want).await)
    } else {
        None
    };
    let hits = grounded.as_ref().map_or(Vec::new(), |g| g.hits.clone());
    let note = grounded.and_then(|g| g.note);
    // Grounding posts go first, as many as leave room for the answer; when none is relevant, a
    // line that says so takes their place.
    let reserve = p.sampling.max_tokens.min(ctx / 4);
    let mut prompt = Vec::new();
    let mut used = Vec::new();
    let docs = {
        let (s2, hits, note) = (s.clone(), hits.clone(), note.clone());
        s.off_runtime(move || {
            let mut texts: Vec<String> = hits
                .iter()
                .map(|h| s2.layout.grounding_document(h))
                .collect();
            texts.extend(note.iter().map(|n| s2.layout.grounding_note_document(n)));
            texts
                .iter()
                .map(|t| s2.encode(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    };
    let mut docs = docs.into_iter();
    for (h, ids) in hits.into_iter().zip(docs.by_ref()) {
        if prompt.len() + ids.len() + thread.len() + reserve <= ctx {
            prompt.extend(ids);
            used.push(h);
        }
    }
    for ids in docs {
        if prompt.len() + ids.len() + thread.len() + reserve <= ctx {
            prompt.extend(ids);
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
        grounding_note: note,
        include_usage: p.include_usage,
    };
    Ok(if p.stream {
        stream(reply, rx)
    } else {
        let out = collect(rx, p.n).await?;
        Json(reply.full(out, logprobs)).into_response()
    })
}

pub(super) async fn completions(
    State(s): State<Arc<AppState>>,
    ApiJson(v): ApiJson,
) -> Result<Response, ApiError> {
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
        grounding_note: None,
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
        self.add_grounding(&mut v);
        v
    }

    /// `grounding` (the posts) and `grounding_note` (why there are none) on a response or its
    /// first chunk.
    fn add_grounding(&self, v: &mut Value) {
        if let Some(g) = &self.grounding {
            v["grounding"] = json!(g);
        }
        if let Some(note) = &self.grounding_note {
            v["grounding_note"] = json!(note);
        }
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
                st.reply.add_grounding(&mut c);
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
