//! `starling serve` end to end on a tiny random model: OpenAI shapes, streaming, grounding,
//! bad input, load (queue, cancellation, idle connections, timeouts), API keys, and real clients
//! (the `openai` Python package, `curl -N`, headless Chromium).

use serde_json::{json, Value};
use starling_corpus::{Origin, Post};
use starling_serve::{ApiKeys, AppState, EngineConfig, ServeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A tiny model directory and an index of posts about two topics.
struct Fixture {
    dir: PathBuf,
    index: PathBuf,
}

const TOPICS: [&str; 4] = [
    "the #nba finals tonight were wild, what a game",
    "lakers and celtics in the #nba finals again",
    "heavy rain and wind in the weather forecast today",
    "sunny weather all week, perfect for the beach",
];

fn post(i: usize) -> Post {
    let text = format!("{} ({i})", TOPICS[i % TOPICS.len()]);
    let origin = Origin {
        file: "fixture".into(),
        line: i as u64 + 1,
        nested: false,
    };
    let mut p = Post::new(format!("{}", 1000 + i), text, origin);
    p.created_at = chrono::DateTime::from_timestamp(1_704_628_800 + i as i64 * 60, 0);
    p.author_handle = Some(format!("user{}", i % 5));
    p.lang = "en".into();
    p.entities = starling_text::extract_entities(&p.text);
    p
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = tempfile::tempdir().expect("tmp").keep();
        let dir = root.join("model");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let posts: Vec<Post> = (0..40).map(post).collect();
        let docs: Vec<String> = posts
            .iter()
            .map(|p| starling_tokens::template::document([p.text.as_str()]))
            .collect();
        let tok = starling_tokens::tokenizer::train(docs.iter(), 400).expect("tokenizer");
        starling_tokens::tokenizer::save(&tok, &dir.join("tokenizer.json")).expect("save tok");
        tch::manual_seed(0);
        let mut c =
            starling_model::LlamaConfig::preset("tiny", tok.get_vocab_size(true)).expect("preset");
        c.max_position_embeddings = 512;
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _m = starling_model::Llama::new(&vs.root(), &c);
        starling_model::save_dir(&vs, &c, &dir).expect("save model");
        let embedder = starling_model::PostEmbedder::load(
            &dir,
            &dir.join("model.safetensors"),
            starling_model::Pooling::Mean,
        )
        .expect("embedder");
        let index = root.join("index");
        starling_search::build_posts(
            &posts,
            "fixture",
            &index,
            &starling_search::BuildOptions {
                embedder: Some(&embedder),
                model: Some(dir.display().to_string()),
                ..Default::default()
            },
            &mut |_| {},
        )
        .expect("index");
        Fixture { dir, index }
    })
}

/// A running server on an ephemeral port; stops when dropped.
struct Server {
    base: String,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(config: ServeConfig) -> Server {
    start_on(config, &fixture().index).await
}

/// A server on its own copy of the fixture's index (for tests that change it).
async fn start_on_copy(config: ServeConfig) -> (Server, tempfile::TempDir) {
    let copy = tempfile::tempdir().expect("tmp");
    for e in std::fs::read_dir(&fixture().index).expect("index dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), copy.path().join(e.file_name())).expect("copy");
        }
    }
    (start_on(config, copy.path()).await, copy)
}

async fn start_on(config: ServeConfig, index: &Path) -> Server {
    let f = fixture();
    let state = starling_serve::load(
        &f.dir,
        &f.dir.join("model.safetensors"),
        Some(index),
        tch::Device::Cpu,
        ServeConfig {
            model_name: "tiny".into(),
            ..config
        },
    )
    .expect("load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(starling_serve::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Server {
        base,
        state,
        stop: Some(tx),
    }
}

async fn post_json(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A JSON request answered by the router itself (no socket, no server): status and JSON body.
async fn call(state: &Arc<AppState>, path: &str, body: Value) -> (u16, Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let resp = starling_serve::router(state.clone())
        .oneshot(req)
        .await
        .expect("the router answers");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST /v1/posts` with JSON lines; the report.
async fn add_posts(base: &str, lines: String) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/posts"))
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .expect("add posts")
        .json()
        .await
        .expect("json")
}

async fn get_json(url: String) -> Value {
    reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Data payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| {
            frame
                .lines()
                .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
        })
        .collect()
}

async fn wait_idle(state: &AppState) {
    let t = Instant::now();
    while state.engine().active() + state.engine().queued() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "decode slots leaked: {} active, {} queued",
            state.engine().active(),
            state.engine().queued()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_shapes_streaming_grounding_and_search() {
    let s = start(ServeConfig::default()).await;
    let b = &s.base;
    let models: Value = get_json(format!("{b}/v1/models")).await;
    assert_eq!(models["data"][0]["id"], "tiny");

    // Chat: shape, usage, grounding on the posts about the message's topic, seed determinism.
    let ask = json!({"model": "tiny", "messages": [{"role": "user", "content": "who won the #nba finals?"}],
        "max_tokens": 12, "temperature": 0.9, "seed": 42, "logprobs": true, "top_logprobs": 3, "some_unknown_field": [1]});
    let (st, a) = post_json(b, "/v1/chat/completions", ask.clone()).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    let used = a["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!((1..=12).contains(&used));
    assert_eq!(
        a["usage"]["total_tokens"].as_u64(),
        Some(used + a["usage"]["prompt_tokens"].as_u64().unwrap_or(0))
    );
    let g = a["grounding"].as_array().expect("grounding");
    assert_eq!(g.len(), 3, "{a}");
    assert!(g
        .iter()
        .all(|h| h["text"].as_str().unwrap_or("").contains("#nba")));
    let lp = a["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs");
    assert_eq!(lp.len() as u64, used);
    assert!(lp
        .iter()
        .all(|t| t["logprob"].as_f64().unwrap_or(1.0) <= 0.0
            && t["top_logprobs"].as_array().map(Vec::len) == Some(3)));
    let (_, again) = post_json(b, "/v1/chat/completions", ask.clone()).await;
    assert_eq!(a["choices"][0]["message"], again["choices"][0]["message"]);

    // The same request streamed: role first, the same text, a finish reason, usage, [DONE].
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let body = reqwest::Client::new()
        .post(format!("{b}/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .expect("stream");
    assert_eq!(
        body.headers()["content-type"].to_str().unwrap_or(""),
        "text/event-stream"
    );
    let data = sse_data(&body.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["grounding"].as_array().map(Vec::len), Some(3));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        a["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("?")
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
    assert_eq!(chunks.last().expect("usage")["usage"], a["usage"]);

    // n = 2, no grounding: two choices, prompt counted once.
    let (st, two) = post_json(b, "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hello"}], "n": 2, "max_tokens": 5, "grounding": false})).await;
    assert_eq!(st, 200);
    assert_eq!(two["choices"].as_array().map(Vec::len), Some(2));
    assert_eq!(two["grounding"].as_array().map(Vec::len), Some(0));
    assert!(two.get("grounding_note").is_none(), "{two}");

    // A question about a tag the index does not hold is answered without grounding, and says so:
    // the posts that share its other words (the weather ones) do not stand in.
    let (st, none) = post_json(b, "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "what is the weather forecast saying about #curling?"}], "max_tokens": 3})).await;
    assert_eq!(st, 200, "{none}");
    assert_eq!(
        none["grounding"].as_array().map(Vec::len),
        Some(0),
        "{none}"
    );
    assert!(
        none["grounding_note"]
            .as_str()
            .is_some_and(|n| n.contains("#curling")),
        "{none}"
    );

    // Completions: echo, logprobs in the legacy shape, token-id prompts, ignore_eos runs to max_tokens.
    let (st, c) = post_json(b, "/v1/completions",
        json!({"prompt": "<|user|>: rain", "max_tokens": 7, "echo": true, "logprobs": 2, "seed": 1, "ignore_eos": true})).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert!(c["choices"][0]["text"]
        .as_str()
        .unwrap_or("")
        .starts_with("<|user|>: rain"));
    assert_eq!(c["usage"]["completion_tokens"], 7);
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(
        c["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .map(Vec::len),
        Some(7)
    );
    let (st, c) = post_json(
        b,
        "/v1/completions",
        json!({"prompt": [[5, 6, 7], [8]], "max_tokens": 3}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(c["choices"].as_array().map(Vec::len), Some(2));

    // Embeddings: float and base64 carry the same unit vectors.
    let (st, e) = post_json(
        b,
        "/v1/embeddings",
        json!({"input": ["nba finals", "rain"], "model": "tiny"}),
    )
    .await;
    assert_eq!(st, 200, "{e}");
    let v: Vec<f64> = e["data"][0]["embedding"]
        .as_array()
        .expect("vec")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
    let (_, e64) = post_json(
        b,
        "/v1/embeddings",
        json!({"input": "nba finals", "encoding_format": "base64"}),
    )
    .await;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(e64["data"][0]["embedding"].as_str().expect("b64"))
        .expect("decode");
    let first = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    assert!((f64::from(first) - v[0]).abs() < 1e-6);

    // Search with operators, both orders; a bad query names `q`.
    let r: Value = get_json(format!(
        "{b}/v1/search?q=%23nba%20-lakers&order=latest&limit=5"
    ))
    .await;
    let hits = r["data"].as_array().expect("hits");
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| {
        let t = h["text"].as_str().unwrap_or("");
        t.contains("#nba") && !t.contains("lakers")
    }));
    let bad = reqwest::get(format!("{b}/v1/search?q=%22unclosed"))
        .await
        .expect("bad");
    assert_eq!(bad.status().as_u16(), 400);
    let bad: Value = bad.json().await.expect("json");
    assert_eq!(bad["error"]["param"], "q");
    let r = reqwest::get(format!("{b}/v1/search?q=rain&mode=hybrid"))
        .await
        .expect("hybrid");
    assert_eq!(r.status().as_u16(), 200);

    // Live posts: a v1.1 line is searchable and grounds chat when the call returns; a malformed
    // line beside it is quarantined with its line; a delete notice removes it.
    let live = json!({"id_str": "990000000000000001", "created_at": "Mon Jan 01 10:00:00 +0000 2024",
        "user": {"id_str": "7", "screen_name": "zed"}, "text": "a zeppelin over the harbour #skywatch", "lang": "en"});
    let r = add_posts(b, format!("{live}\n{{\"id_str\": \"9\", \"text\n")).await;
    assert_eq!(
        (r["read"].as_u64(), r["added"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["quarantined"][0]["line"], 2, "{r}");
    assert_eq!(r["index_posts"], 41);
    let found: Value = get_json(format!("{b}/v1/search?q=zeppelin")).await;
    assert_eq!(found["data"][0]["id"], "990000000000000001");
    let (_, g) = post_json(
        b,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "seen the zeppelin?"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(g["grounding"][0]["id"], "990000000000000001", "{g}");
    let gone = json!({"delete": {"status": {"id_str": "990000000000000001", "user_id_str": "7"}}});
    let r = add_posts(b, gone.to_string()).await;
    assert_eq!(r["deleted"], 1, "{r}");
    let found: Value = get_json(format!("{b}/v1/search?q=zeppelin")).await;
    assert_eq!(found["data"].as_array().map(Vec::len), Some(0));

    // Metrics and health.
    let m = reqwest::get(format!("{b}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("starling_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("starling_time_to_first_token_seconds_count"));
    // llama-server's counterparts: slots, slots in use, queue, prompt and generated tokens.
    for name in [
        "starling_slots 32",
        "starling_batch_size ",
        "starling_queue_depth ",
        "starling_prompt_tokens_total ",
        "starling_generated_tokens_total ",
    ] {
        assert!(m.contains(name), "{name} missing from {m}");
    }
    let h: Value = get_json(format!("{b}/health")).await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["index_posts"], 40);
    assert_eq!(
        (h["slots"].as_u64(), h["context_length"].as_u64()),
        (Some(32), Some(512))
    );
    assert_eq!(
        h["slots_idle"].as_u64().unwrap_or(0) + h["slots_processing"].as_u64().unwrap_or(99),
        32
    );
    assert!(m.contains("route=\"/v1/posts\""));
    assert_eq!(models["data"][0]["context_length"], 512);
    assert_eq!(models["data"][0]["meta"]["n_ctx_train"], 512);

    // /tokenize and /detokenize as llama-server answers them; special tokens parsed by default.
    let text = "<|user|>: hello #nba<|endofpost|>";
    let (st, t) = post_json(b, "/tokenize", json!({"content": text})).await;
    assert_eq!(st, 200, "{t}");
    let ids = t["tokens"].as_array().expect("tokens").clone();
    assert_eq!(ids[0], 3, "<|user|> is one token: {t}");
    let (_, plain) = post_json(
        b,
        "/tokenize",
        json!({"content": text, "parse_special": false}),
    )
    .await;
    assert!(
        plain["tokens"].as_array().map(Vec::len) > Some(ids.len() + 2),
        "{plain}"
    );
    let (_, pieces) = post_json(
        b,
        "/tokenize",
        json!({"content": text, "with_pieces": true}),
    )
    .await;
    assert_eq!(pieces["tokens"][0], json!({"id": 3, "piece": "<|user|>"}));
    let (st, d) = post_json(b, "/detokenize", json!({"tokens": ids})).await;
    assert_eq!((st, d["content"].as_str()), (200, Some(text)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_answering() {
    let s = start(ServeConfig::default()).await;
    let b = &s.base;
    let client = reqwest::Client::new();
    let raw = |body: Vec<u8>, ct: &'static str| {
        client
            .post(format!("{b}/v1/chat/completions"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw(b"{\"messages\": [".to_vec(), "application/json")
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed JSON"),
        "{e}"
    );
    let r = raw(b"{}".to_vec(), "text/plain").await.expect("send");
    assert_eq!(r.status().as_u16(), 415);
    // A 10 MB body: refused from its Content-Length with 413 before it is sent (the way curl and
    // other clients send large bodies, `Expect: 100-continue`; writing it all would race the close).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(b.trim_start_matches("http://"))
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            10 << 20
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut resp)).await;
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains("invalid_request_error"), "{resp}");
    }

    let user = |t: &str| json!([{"role": "user", "content": t}]);
    let long = "word ".repeat(2000);
    for (body, status, param) in [
        (json!({"messages": user(&long)}), 400, "messages"),
        (
            json!({"messages": user("hi"), "max_tokens": 0}),
            400,
            "max_tokens",
        ),
        (
            json!({"messages": user("hi"), "temperature": -1}),
            400,
            "temperature",
        ),
        (
            json!({"messages": user("hi"), "stop": vec!["x"; 100]}),
            400,
            "stop",
        ),
        (
            json!({"messages": user("hi"), "temperature": "warm"}),
            400,
            "temperature",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        (json!({"messages": []}), 400, "messages"),
        (
            json!({"messages": user("hi"), "model": "gpt-4o"}),
            404,
            "model",
        ),
        (
            json!({"messages": user("hi"), "top_logprobs": 3}),
            400,
            "top_logprobs",
        ),
    ] {
        let (st, e) = call(&s.state, "/v1/chat/completions", body.clone()).await;
        assert_eq!(st, status, "{body} → {e}");
        assert_eq!(e["error"]["param"], param, "{body} → {e}");
        assert!(!e["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    // Too long by its bytes (refused before tokenising) and by its tokens (counted).
    for (text, needle) in [
        (long.clone(), "holds at most"),
        ("word ".repeat(1200), "context is 512 tokens"),
    ] {
        let (st, e) = call(
            &s.state,
            "/v1/chat/completions",
            json!({"messages": user(&text)}),
        )
        .await;
        assert_eq!(st, 400);
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{e}"
        );
        assert_eq!(e["error"]["code"], "context_length_exceeded");
    }
    let (st, e) = call(&s.state, "/v1/completions", json!({"prompt": [1, 99999]})).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("prompt")));
    let (st, _) = call(&s.state, "/v1/nothing", json!({})).await;
    assert_eq!(st, 404);
    let (st, e) = call(&s.state, "/detokenize", json!({"tokens": [1, -4]})).await;
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("tokens[1]")),
        "{e}"
    );
    let (st, e) = call(&s.state, "/tokenize", json!({"contents": "x"})).await;
    assert_eq!(st, 400, "{e}");
    // Near the body limit, one unbroken word and many short ones tokenise in bounded time
    // (9 s for the 1.8 MB word in this debug build, 1.9 s for a quarter of it: about n log n; 21 s
    // on a 2-core machine while the binary's other tests share it, so the bound is 60 s — a
    // quadratic merge would take hours).
    for content in ["ab".repeat(900_000), "ab ".repeat(600_000)] {
        let t0 = std::time::Instant::now();
        let (st, t) = call(
            &s.state,
            "/tokenize",
            json!({"content": content, "with_pieces": true}),
        )
        .await;
        let n = t["tokens"].as_array().map_or(0, Vec::len);
        assert!(
            st == 200 && n > 0 && t0.elapsed() < Duration::from_secs(60),
            "{st} after {:?}",
            t0.elapsed()
        );
        // The first 30,000-40,000 ids detokenise back to the start of the text (all of them
        // are over the body limit: 413, as tested above).
        let ids: Vec<u64> = t["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .take(if content.contains(' ') {
                40_000
            } else {
                30_000
            })
            .collect();
        let (st, d) = call(&s.state, "/detokenize", json!({ "tokens": ids })).await;
        let back = d["content"].as_str().unwrap_or_default();
        assert!(
            st == 200 && back.len() >= 30_000 && content.starts_with(back),
            "{st}: {} bytes back",
            back.len()
        );
    }
    // Still answering (through the network too).
    let (st, _) = post_json(
        b,
        "/v1/chat/completions",
        json!({"messages": user("hi"), "max_tokens": 2}),
    )
    .await;
    assert_eq!(st, 200);
    wait_idle(&s.state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cancellation_timeouts_idle_connections_and_keys() {
    // One slot, one waiting: the rest of a burst gets 429 with Retry-After.
    let s = start(ServeConfig {
        engine: EngineConfig {
            max_batch: 1,
            max_queue: 1,
            ..EngineConfig::default()
        },
        ..ServeConfig::default()
    })
    .await;
    let long = json!({"prompt": "<|user|>: rain", "max_tokens": 400, "ignore_eos": true});
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let c = reqwest::Client::new();
            let url = format!("{}/v1/completions", s.base);
            let body = long.clone();
            tokio::spawn(async move { c.post(url).json(&body).send().await })
        })
        .collect();
    let mut codes = Vec::new();
    for h in burst {
        let r = h.await.expect("join").expect("send");
        if r.status().as_u16() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        codes.push(r.status().as_u16());
    }
    codes.sort_unstable();
    assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
    assert!(codes.contains(&429) && codes.contains(&200), "{codes:?}");
    wait_idle(&s.state).await;

    // A client that goes away mid-stream frees its slot.
    let mut streamed = long.clone();
    streamed["stream"] = json!(true);
    let mut r = reqwest::Client::new()
        .post(format!("{}/v1/completions", s.base))
        .json(&streamed)
        .send()
        .await
        .expect("stream");
    let first = r.chunk().await.expect("chunk");
    assert!(first.is_some());
    drop(r);
    wait_idle(&s.state).await;
    assert!(s.state.metrics().cancelled.get() >= 1);

    // 1,000 idle connections do not stop it answering.
    let mut idle = Vec::new();
    let addr = s.base.trim_start_matches("http://").to_string();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let (st, _) = post_json(
        &s.base,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(st, 200);
    drop(idle);
    drop(s);

    // A request past its time limit gets 504 (not a hang), and the slot is freed.
    let s = start(ServeConfig {
        request_timeout: Duration::from_millis(30),
        ..ServeConfig::default()
    })
    .await;
    let (st, e) = post_json(&s.base, "/v1/completions", long.clone()).await;
    assert_eq!(st, 504, "{e}");
    wait_idle(&s.state).await;
    drop(s);

    // API keys: none or a wrong one is 401 (OpenAI's shape), the right one passes; /health is open.
    let s = start(ServeConfig {
        api_keys: Some(ApiKeys::new(["sk-test-1"])),
        ..ServeConfig::default()
    })
    .await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/models", s.base);
    assert_eq!(
        c.get(&url).send().await.expect("get").status().as_u16(),
        401
    );
    let r = c
        .get(&url)
        .bearer_auth("sk-wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let r = c
        .get(&url)
        .bearer_auth("sk-test-1")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(format!("{}/health", s.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
}

/// Reads from a raw connection until the server closes it (or `limit` passes); returns what
/// arrived and whether it was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

/// The hostile requests of issue 21, against one live server: each gets a clear answer in
/// bounded time, and the server keeps answering others normally meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_leave_the_server_answering() {
    use tokio::io::AsyncWriteExt;
    let (s, _copy) = start_on_copy(ServeConfig {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    let b = &s.base;
    let c = reqwest::Client::new();

    // Deep and long queries: 400 naming the limit (this killed the process at depth ~2,500).
    let deep = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    for (q, needle) in [
        (deep(40), "nest deeper than 32"),
        (deep(2500), "the limit is 4096"),
        ("a ".repeat(3000), "the limit is 4096"),
    ] {
        let r = c
            .get(format!("{b}/v1/search"))
            .query(&[("q", q.as_str())])
            .send()
            .await
            .expect("search");
        assert_eq!(r.status().as_u16(), 400);
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["param"], "q");
        let m = e["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(needle) && m.len() < 600, "{e}");
    }

    // One 1.9 MB word (under the body limit) to chat, embeddings and completions: 400 within a
    // second, while /health keeps answering within 100 ms.
    let word = "a".repeat(1_900_000);
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": word}]}),
            "messages",
        ),
        ("/v1/embeddings", json!({"input": word}), "input[0]"),
        ("/v1/completions", json!({"prompt": word}), "prompt"),
    ];
    for (path, body, param) in bodies {
        let url = format!("{b}{path}");
        let t0 = Instant::now();
        let big = tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("send");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
        let mut slowest = Duration::ZERO;
        while !big.is_finished() {
            let t = Instant::now();
            let h = c.get(format!("{b}/health")).send().await.expect("health");
            assert_eq!(h.status().as_u16(), 200);
            slowest = slowest.max(t.elapsed());
        }
        let (status, e) = big.await.expect("join");
        let took = t0.elapsed();
        assert_eq!(status, 400, "{path}: {e}");
        assert_eq!(e["error"]["code"], "context_length_exceeded", "{path}: {e}");
        assert_eq!(e["error"]["param"], param, "{path}: {e}");
        assert!(
            took < Duration::from_secs(1),
            "{path}: answered after {took:?}"
        );
        assert!(
            slowest < Duration::from_millis(100),
            "{path}: /health took {slowest:?}"
        );
    }

    // A client that stalls in its headers is disconnected; one that stalls in its body gets 408.
    let addr = b.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .expect("write");
    let t0 = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed, "a connection stalled in its headers is still open");
    assert!(t0.elapsed() < Duration::from_secs(3));
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    let (got, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    assert!(closed);
    assert!(s.state.metrics().body_timeouts.get() >= 1);

    // A post repeated within one batch counts once, against what the index holds after.
    let before = get_json(format!("{b}/health")).await["index_posts"]
        .as_u64()
        .expect("n");
    let post = json!({"id_str": "990000000000000077", "created_at": "Mon Jan 01 10:00:00 +0000 2024",
        "user": {"id_str": "7", "screen_name": "zed"}, "text": "a kite over the harbour", "lang": "en"});
    let r = add_posts(b, format!("{post}\n{post}\n{post}\n")).await;
    assert_eq!(
        (r["added"].as_u64(), r["repeated"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(r["index_posts"].as_u64(), Some(before + 1), "{r}");

    // After all that, a normal chat still answers.
    let (st, _) = post_json(
        b,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "weather today?"}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(st, 200);
    drop(s);

    // Past the connection limit a client gets 503 at once; freed slots are reused.
    let s = start(ServeConfig {
        max_connections: 8,
        ..ServeConfig::default()
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let mut extra = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("too_many_connections") && closed, "{got}");
    drop(held);
    let mut answered = false;
    for _ in 0..40 {
        if let Ok(r) = reqwest::get(format!("{}/health", s.base)).await {
            if r.status().as_u16() == 200 {
                answered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "freed connection slots are not reused");
    assert!(s.state.metrics().connections_refused.get() >= 1);
}

/// The ad API of one server, called with a bearer key or none; each call returns status and JSON body.
struct AdsApi<'a> {
    base: &'a str,
}

impl AdsApi<'_> {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let c = reqwest::Client::new();
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => c.get(url),
            "PATCH" => c.patch(url),
            "DELETE" => c.delete(url),
            _ => c.post(url),
        };
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.call("GET", path, key, None).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, key, Some(body)).await
    }
}

/// The error code and param of a refusal, beside its status.
fn refusal((code, e): (u16, Value)) -> (u16, Value, Value) {
    (
        code,
        e["error"]["code"].clone(),
        e["error"]["param"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_api_keeps_advertisers_apart_and_charges_once() {
    let s = start(ServeConfig {
        api_keys: Some(ApiKeys::new(["sk-operator"])),
        ..ServeConfig::default()
    })
    .await;
    let api = AdsApi { base: &s.base };
    let op = Some("sk-operator");
    // Without an ad store the routes say so.
    assert_eq!(api.get("/v1/ads/campaigns", op).await.0, 404);
    let dir = tempfile::tempdir().expect("tmp");
    let store = starling_ads::AdStore::open(&dir.path().join("ads.db").display().to_string())
        .await
        .expect("store");
    let ads =
        starling_ads::AdServer::new(store, s.state.embedder().cloned(), None, Default::default())
            .await
            .expect("ad server");
    s.state.attach_ads(Arc::new(ads));

    // Keys: none, a wrong one, an advertiser's where the platform's is needed.
    assert_eq!(api.get("/v1/ads/campaigns", None).await.0, 401);
    assert_eq!(api.get("/v1/ads/campaigns", Some("sk-wrong")).await.0, 401);
    let (code, a) = api
        .post("/v1/ads/advertisers", op, json!({"name": "Acme"}))
        .await;
    assert_eq!(code, 201, "{a}");
    let (_, bolt) = api
        .post("/v1/ads/advertisers", op, json!({"name": "Bolt"}))
        .await;
    let ka = a["api_key"].as_str().expect("key").to_string();
    let kb = bolt["api_key"].as_str().expect("key").to_string();
    let (acme, bolt) = (Some(ka.as_str()), Some(kb.as_str()));
    let forbidden = refusal(
        api.post("/v1/ads/advertisers", acme, json!({"name": "x"}))
            .await,
    );
    assert_eq!((forbidden.0, forbidden.1), (403, json!("forbidden")));

    // Acme builds a campaign; every bad value is refused by name.
    let campaign =
        json!({"name": "finals", "bid_type": "max_cpc", "daily_budget_micros": 5_000_000});
    let (code, c) = api.post("/v1/ads/campaigns", acme, campaign).await;
    assert_eq!(code, 201, "{c}");
    let cid = c["id"].as_str().expect("id").to_string();
    for (body, param) in [
        (
            json!({"name": "n", "daily_budget_micros": -1}),
            "daily_budget_micros",
        ),
        (
            json!({"name": "n", "daily_budget_micros": 1_000_000_000_000_000i64}),
            "daily_budget_micros",
        ),
        (
            json!({"name": "n".repeat(300), "daily_budget_micros": 1}),
            "name",
        ),
        (
            json!({"name": "n", "daily_budget_micros": 1, "bid_type": "free"}),
            "bid_type",
        ),
        (
            json!({"name": "n", "daily_budget_micros": 1, "surprise": 1}),
            "surprise",
        ),
    ] {
        let (code, e) = api.post("/v1/ads/campaigns", acme, body.clone()).await;
        assert_eq!(code, 400, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap_or("").contains(param)
                || e["error"]["param"] == json!(param),
            "{body}: {e}"
        );
    }
    let group = json!({"campaign_id": cid, "name": "fans", "bid_micros": 2_000_000,
        "keywords": ["#nba"], "description": "basketball fans watching the finals"});
    let (code, g) = api.post("/v1/ads/groups", acme, group).await;
    assert_eq!(code, 201, "{g}");
    let gid = g["id"].as_str().expect("id").to_string();
    let bad = json!({"campaign_id": cid, "name": "x", "bid_micros": -5, "keywords": ["a"]});
    let bad = refusal(api.post("/v1/ads/groups", acme, bad).await);
    assert_eq!((bad.0, bad.2), (400, json!("bid_micros")));
    let creative = json!({"group_id": gid, "text": "Finals jerseys, shipped tomorrow"});
    let (code, cr) = api.post("/v1/ads/creatives", acme, creative).await;
    assert_eq!(code, 201, "{cr}");

    // Bolt tries Acme's things: not found, never changed.
    let foreign_group =
        json!({"campaign_id": cid, "name": "x", "bid_micros": 1, "keywords": ["a"]});
    for (method, path, body) in [
        ("GET", format!("/v1/ads/campaigns/{cid}"), None),
        (
            "PATCH",
            format!("/v1/ads/campaigns/{cid}"),
            Some(json!({"daily_budget_micros": 1})),
        ),
        ("POST", format!("/v1/ads/campaigns/{cid}/pause"), None),
        ("DELETE", format!("/v1/ads/campaigns/{cid}"), None),
        ("GET", format!("/v1/ads/groups/{gid}"), None),
        (
            "PATCH",
            format!("/v1/ads/groups/{gid}"),
            Some(json!({"bid_micros": 1})),
        ),
        ("POST", "/v1/ads/groups".to_string(), Some(foreign_group)),
        ("GET", format!("/v1/ads/reports?campaign_id={cid}"), None),
    ] {
        let (code, e) = api.call(method, &path, bolt, body).await;
        assert_eq!(code, 404, "{method} {path}: {e}");
    }
    assert_eq!(
        api.get("/v1/ads/campaigns", bolt).await.1["data"],
        json!([])
    );
    let (_, mine) = api.get(&format!("/v1/ads/campaigns/{cid}"), acme).await;
    assert_eq!(
        (mine["daily_budget_micros"].clone(), mine["status"].clone()),
        (json!(5_000_000), json!("active"))
    );
    // Deciding and recording events is the platform's.
    let decide = json!({"placement": "search", "context": {"text": "#nba finals tonight"}, "user_id": "u1", "slots": 1});
    assert_eq!(
        api.post("/v1/ads/decide", acme, decide.clone()).await.0,
        403
    );
    let (code, d) = api.post("/v1/ads/decide", op, decide).await;
    assert_eq!(code, 200, "{d}");
    let ad = d["ads"][0].clone();
    assert_eq!(ad["campaign_id"], json!(cid));
    let imp = ad["impression_id"].clone();

    // Events: click before impression refused; retries counted once; charged at the price.
    let event = |kind: &str, key: &str| {
        api.post(
            "/v1/ads/events",
            op,
            json!({"type": kind, "impression_id": imp, "idempotency_key": key}),
        )
    };
    let early = refusal(event("click", "c1").await);
    assert_eq!((early.0, early.1), (422, json!("event_refused")));
    for _ in 0..2 {
        event("impression", "i1").await;
    }
    let (_, first) = event("click", "c1").await;
    assert_eq!(
        first["outcome"]["counted"]["cost_micros"], ad["price_micros"],
        "{first}"
    );
    assert_eq!(event("click", "c1").await.1["outcome"], json!("duplicate"));
    let forged = format!("{}x", imp.as_str().unwrap_or(""));
    let forged = json!({"type": "click", "impression_id": forged, "idempotency_key": "c2"});
    assert_eq!(api.post("/v1/ads/events", op, forged).await.0, 422);
    let (_, rep) = api.get("/v1/ads/reports", acme).await;
    let r = &rep["data"][0];
    assert_eq!(
        (r["impressions"].clone(), r["clicks"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(r["spend_micros"], ad["price_micros"]);
    // A context of indexed posts is decided on their stored vectors; too many is refused.
    let stored = json!({"placement": "conversation",
        "context": {"text": "", "post_ids": ["1000", "1001"]}, "user_id": "u3"});
    let (code, d) = api.post("/v1/ads/decide", op, stored).await;
    assert_eq!(code, 200, "{d}");
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let many = json!({"placement": "search", "context": {"post_ids": many}, "user_id": "u3"});
    let many = refusal(api.post("/v1/ads/decide", op, many).await);
    assert_eq!((many.0, many.2), (400, json!("context.post_ids")));
    // Pausing stops delivery.
    let pause = format!("/v1/ads/campaigns/{cid}/pause");
    assert_eq!(api.call("POST", &pause, acme, None).await.0, 200);
    let after = json!({"placement": "search", "context": {"text": "#nba"}, "user_id": "u2"});
    assert_eq!(
        api.post("/v1/ads/decide", op, after).await.1["ads"],
        json!([])
    );
}

/// Whether a missing client tool must fail the test (CI) rather than skip it.
fn required() -> bool {
    std::env::var("STARLING_REQUIRE_SHARED").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

fn python() -> Option<PathBuf> {
    std::env::var_os("STARLING_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
            p.exists().then_some(p)
        })
}

fn skip_or_fail(what: &str) {
    if required() {
        panic!("{what} (required in CI)");
    }
    eprintln!("SKIP: {what}");
}

async fn run_script(args: Vec<std::ffi::OsString>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(&args[0])
            .args(&args[1..])
            .output()
            .expect("run client")
    })
    .await
    .expect("join")
}

/// Runs a client script: its output when it passed; `None` when it exited 77 (a tool it needs is
/// missing: skipped, or a failure in CI). Panics with the output when it failed.
async fn run_client(what: &str, args: Vec<std::ffi::OsString>) -> Option<String> {
    let out = run_script(args).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(77) {
        skip_or_fail(&format!("{what}: {log}"));
        return None;
    }
    assert!(out.status.success(), "{what} failed:\n{log}");
    Some(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_openai_python_curl_and_chromium() {
    let s = start(ServeConfig::default()).await;
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");

    // curl -N: the raw SSE framing.
    match run_script(vec![
        "curl".into(),
        "-sN".into(),
        format!("{}/v1/chat/completions", s.base).into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        r#"{"messages":[{"role":"user","content":"rain today?"}],"stream":true,"max_tokens":5}"#
            .into(),
    ])
    .await
    {
        out if out.status.success() => {
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(body.starts_with("data: {"), "{body}");
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            assert!(body
                .split("\n\n")
                .filter(|f| !f.is_empty())
                .all(|f| f.starts_with("data: ")));
        }
        out => skip_or_fail(&format!(
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }

    let Some(py) = python() else {
        return skip_or_fail("no Python (run scripts/setup.sh or set STARLING_PYTHON)");
    };
    let openai = vec![
        py.clone().into(),
        clients.join("openai_client.py").into(),
        format!("{}/v1", s.base).into(),
        "tiny".into(),
    ];
    if let Some(log) = run_client("openai client", openai).await {
        assert!(log.contains("openai client: all checks passed"), "{log}");
    }

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    let _ = std::fs::remove_file(&shot);
    let browser = vec![
        py.into(),
        clients.join("browser.py").into(),
        format!("{}/", s.base).into(),
        shot.clone().into(),
    ];
    if run_client("browser", browser).await.is_some() {
        assert!(std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false));
        eprintln!("browser: screenshot at {}", shot.display());
    }
}
