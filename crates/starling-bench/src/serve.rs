//! `starling bench serve`: streaming chat clients at several concurrencies against an in-process
//! server on the loopback: aggregate tokens/s, time to first token, inter-token latency; with
//! `--against llama-cpp`, llama.cpp's `llama-server` on the same model (exported GGUF, same dtype),
//! the same prompts, the same load and the same threads, level by level in one run.

use crate::measure::percentile;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `starling bench serve`.
#[derive(clap::Args)]
pub struct ServeBenchArgs {
    /// Model: the demo's `small` by default.
    #[arg(long, default_value = "out/demo/run")]
    model: PathBuf,
    /// Index to ground chat in (skipped when absent).
    #[arg(long, default_value = "out/demo/index")]
    index: PathBuf,
    /// Concurrent clients, comma-separated levels.
    #[arg(long, default_value = "1,4,16,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Requests each client sends, one after another, per level.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens per answer (the end token is ignored so every answer has this many).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Decode slots (default: as `serve`).
    #[arg(long)]
    max_batch: Option<usize>,
    /// A second server beside starling's: `llama-cpp` (llama-server, `-np` = clients).
    #[arg(long, value_parser = ["llama-cpp"])]
    against: Option<String>,
    /// The llama-server binary (built by scripts/llama-server.sh).
    #[arg(long, default_value = ".venv/llama.cpp/bin/llama-server")]
    llama_server: PathBuf,
    /// CPU threads of both servers (libtorch's intra-op threads; llama-server's -t and -tb).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Default)]
struct Sample {
    ttft: Vec<f64>,
    gaps: Vec<f64>,
    tokens: u64,
    ok: usize,
    refused: usize,
    failed: usize,
    /// The first failure's description.
    first_error: Option<String>,
}

impl Sample {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_error.get_or_insert(why);
    }
}

const QUESTIONS: &[&str] = &[
    "what are people saying about #nba tonight?",
    "how is the weather where you are?",
    "any good pizza places open late?",
    "what do you think of the new phone?",
    "who is winning the football match?",
    "is coffee better than tea?",
    "what's the latest crypto news?",
    "good night everyone, any plans for tomorrow?",
];

/// What each request asks, whichever server answers: the same sampling (temperature 0.8, top-p
/// 0.95, top-k 40, no min-p, no repetition penalty) and exactly `max_tokens` new tokens.
fn request(q: &str, max_tokens: usize, grounding: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": q}],
        "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": max_tokens, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.0,
        "repeat_penalty": 1.0, "ignore_eos": true, "grounding": grounding,
    })
}

async fn one(client: &reqwest::Client, url: &str, body: Value, s: &mut Sample) {
    let t0 = Instant::now();
    let r = match client.post(url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return s.fail(format!("sending: {e:?}")),
    };
    match r.status().as_u16() {
        200 => {}
        429 => {
            s.refused += 1;
            return;
        }
        st => {
            let text = r.text().await.unwrap_or_default();
            return s.fail(format!(
                "HTTP {st}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
    }
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut last: Option<Instant> = None;
    let mut tokens = 0;
    let mut counted = 0u64;
    let mut done = false;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                s.first_error
                    .get_or_insert(format!("reading the stream: {e:?}"));
                break;
            }
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(cut) = buf.find("\n\n") {
            let frame: String = buf.drain(..cut + 2).collect();
            let Some(data) = frame.trim().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                tokens = u;
            }
            // A content chunk is a token (text may be empty while a character is incomplete).
            let content = v["choices"][0]["delta"]
                .get("content")
                .is_some_and(|c| !c.is_null());
            if content && v["choices"][0]["delta"].get("role").is_none() {
                counted += 1;
            }
            if content && v["choices"][0]["delta"].get("role").is_none() {
                let now = Instant::now();
                match last {
                    None => s.ttft.push(now.duration_since(t0).as_secs_f64()),
                    Some(p) => s.gaps.push(now.duration_since(p).as_secs_f64()),
                }
                last = Some(now);
            }
        }
    }
    if done {
        s.ok += 1;
        s.tokens += if tokens > 0 { tokens } else { counted };
    } else {
        s.fail("the stream ended without [DONE]".into());
    }
}

/// One load level: `c` clients, each sending `rounds` requests one after another.
async fn level(
    client: &reqwest::Client,
    url: &str,
    c: usize,
    rounds: usize,
    max_tokens: usize,
    grounding: bool,
) -> Result<(Sample, f64)> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|i| {
            let client = client.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let mut s = Sample::default();
                for r in 0..rounds {
                    let q = QUESTIONS[(i + r) % QUESTIONS.len()];
                    one(&client, &url, request(q, max_tokens, grounding), &mut s).await;
                }
                s
            })
        })
        .collect();
    let mut all = Sample::default();
    for t in tasks {
        let s = t.await?;
        all.ttft.extend(s.ttft);
        all.gaps.extend(s.gaps);
        all.tokens += s.tokens;
        all.ok += s.ok;
        all.refused += s.refused;
        all.failed += s.failed;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }
    all.ttft.sort_by(f64::total_cmp);
    all.gaps.sort_by(f64::total_cmp);
    Ok((all, t0.elapsed().as_secs_f64()))
}

/// A table row: which server, how many clients, what they saw.
struct Row {
    server: &'static str,
    clients: usize,
    rate: f64,
    ttft_p99: f64,
}

fn print_row(server: &'static str, c: usize, all: &Sample, secs: f64) -> Row {
    let rate = all.tokens as f64 / secs;
    println!(
        "| {server} | {c} | {} | {rate:.0} | {:.1} | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {} | {} |",
        all.ok,
        rate / c as f64,
        percentile(&all.ttft, 0.5) * 1e3,
        percentile(&all.ttft, 0.99) * 1e3,
        percentile(&all.gaps, 0.5) * 1e3,
        percentile(&all.gaps, 0.99) * 1e3,
        all.refused,
        all.failed,
    );
    if let Some(e) = &all.first_error {
        eprintln!("bench serve: {server} at {c} clients: first error: {e}");
    }
    Row {
        server,
        clients: c,
        rate,
        ttft_p99: percentile(&all.ttft, 0.99),
    }
}

/// llama.cpp's server on the loopback, stopped when dropped.
struct LlamaServer {
    child: std::process::Child,
    base: String,
}

impl LlamaServer {
    /// Starts `bin` on `gguf` with `slots` parallel slots of `ctx` tokens each and `threads`
    /// threads, and waits (up to 2 minutes) until `/health` answers 200.
    async fn start(
        bin: &std::path::Path,
        gguf: &std::path::Path,
        slots: usize,
        ctx: usize,
        threads: usize,
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(bin)
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &slots.to_string(), "-c", &(ctx * slots).to_string()])
            .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
            .args(["--cont-batching", "--jinja", "--no-webui", "-b", "2048"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            let up = client.get(format!("{}/health", server.base)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if t0.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("{} did not answer /health within 2 minutes", bin.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `starling bench serve`.
pub fn serve(a: &ServeBenchArgs) -> Result<()> {
    let index = a.index.exists().then(|| a.index.clone());
    let model = starling_train::ModelDir::open(&a.model)?;
    let device = match a.device.as_str() {
        "cpu" => tch::Device::Cpu,
        "cuda" if tch::Cuda::is_available() => tch::Device::Cuda(0),
        other => anyhow::bail!("--device {other}: use cpu, or cuda where libtorch sees a GPU"),
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tch::set_num_threads(threads as i32);
    let model_config = model.config()?;
    let (slots, _) = starling_serve::default_slots(&model_config, device);
    let slots = a.max_batch.unwrap_or(slots);
    // llama.cpp runs the same weights in the same dtype: f32 on the CPU (starling's CPU dtype).
    let gguf = match a.against.as_deref() {
        Some(_) => {
            anyhow::ensure!(
                a.llama_server.exists(),
                "{} is missing: build it with scripts/llama-server.sh",
                a.llama_server.display()
            );
            let dir =
                std::env::temp_dir().join(format!("starling-bench-serve-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("model-f32.gguf");
            let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let _m = starling_model::Llama::new(&vs.root(), &model_config);
            starling_model::load_weights(&mut vs, &model.weights)?;
            starling_model::export_gguf(
                &vs,
                &model_config,
                &model.dir.join("tokenizer.json"),
                &path,
                starling_gguf::ExportDtype::F32,
                || {},
            )?;
            Some(path)
        }
        None => None,
    };
    let config = starling_serve::ServeConfig {
        engine: starling_serve::EngineConfig {
            max_batch: slots,
            max_queue: 1024,
            ..Default::default()
        },
        request_timeout: std::time::Duration::from_secs(600),
        model_name: "bench".into(),
        ..Default::default()
    };
    let state = starling_serve::load(&model.dir, &model.weights, index.as_deref(), device, config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(starling_serve::serve(listener, state, async move {
            let _ = rx.await;
        }));
        println!(
            "bench serve: model {} ({} parameters) on {} with {threads} threads ({slots} decode slots), {} tokens per answer, {} rounds per client; grounding off unless the row says so{}",
            a.model.display(),
            model_config.num_params(),
            a.device,
            a.max_tokens,
            a.rounds,
            if gguf.is_some() { "; llama.cpp: llama-server on the model exported as GGUF f32, -np = clients, continuous batching, the same threads" } else { "" },
        );
        println!();
        println!("| server | clients | answers | tokens/s (all) | tokens/s per client | TTFT p50 | TTFT p99 | inter-token p50 | inter-token p99 | 429 | errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        // A new connection per request for both servers: llama-server closes kept-alive
        // connections after a streamed answer, and a reused one then fails (IncompleteMessage).
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(600))
            .build()?;
        // Warm-up: one answer.
        let mut warm = Sample::default();
        one(&client, &url, request(QUESTIONS[0], 8, false), &mut warm).await;
        let mut rows = Vec::new();
        for &c in &a.clients {
            let (all, secs) = level(&client, &url, c, a.rounds, a.max_tokens, false).await?;
            rows.push(print_row("starling", c, &all, secs));
            if let Some(gguf) = &gguf {
                let ctx = model_config.max_position_embeddings;
                let ls = LlamaServer::start(&a.llama_server, gguf, c, ctx, threads).await?;
                let lurl = format!("{}/v1/chat/completions", ls.base);
                let mut warm = Sample::default();
                one(&client, &lurl, request(QUESTIONS[0], 8, false), &mut warm).await;
                let (all, secs) = level(&client, &lurl, c, a.rounds, a.max_tokens, false).await?;
                rows.push(print_row("llama.cpp", c, &all, secs));
            }
        }
        if index.is_some() {
            for &c in &a.clients {
                let (all, secs) = level(&client, &url, c, a.rounds, a.max_tokens, true).await?;
                rows.push(print_row("starling + grounding", c, &all, secs));
            }
        }
        println!();
        let find = |server: &str, c: usize| rows.iter().find(|r| r.server == server && r.clients == c);
        if let (Some(s1), Some(s16)) = (find("starling", 1), find("starling", 16)) {
            println!(
                "goal: tokens/s at 16 clients >= 4x one client: {:.1}x {}",
                s16.rate / s1.rate,
                if s16.rate >= 4.0 * s1.rate { "✓" } else { "✗" }
            );
            println!(
                "goal: p99 time to first token at 16 clients < 1 s: {:.0} ms {}",
                s16.ttft_p99 * 1e3,
                if s16.ttft_p99 < 1.0 { "✓" } else { "✗" }
            );
        }
        if let (Some(s), Some(l)) = (find("starling", 16), find("llama.cpp", 16)) {
            println!(
                "goal: tokens/s at 16 clients >= llama.cpp's: {:.0} vs {:.0} = {:.2}x {}",
                s.rate,
                l.rate,
                s.rate / l.rate,
                if s.rate >= l.rate { "✓" } else { "✗" }
            );
            println!(
                "goal: p99 TTFT at 16 clients no worse than llama.cpp's: {:.0} ms vs {:.0} ms {}",
                s.ttft_p99 * 1e3,
                l.ttft_p99 * 1e3,
                if s.ttft_p99 <= l.ttft_p99 { "✓" } else { "✗" }
            );
        }
        let _ = tx.send(());
        let _ = server.await;
        Ok(())
    });
    if let Some(dir) = gguf.as_ref().and_then(|g| g.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}
