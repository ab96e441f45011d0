//! `starling bench serve`: streaming chat clients at several concurrencies against an in-process
//! server on the loopback: aggregate tokens/s, time to first token, inter-token latency.

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
}

#[derive(Default)]
struct Sample {
    ttft: Vec<f64>,
    gaps: Vec<f64>,
    tokens: u64,
    ok: usize,
    refused: usize,
    failed: usize,
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

async fn one(client: &reqwest::Client, url: &str, q: &str, max_tokens: usize, s: &mut Sample) {
    let t0 = Instant::now();
    let body = json!({
        "messages": [{"role": "user", "content": q}],
        "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": max_tokens, "temperature": 0.8, "ignore_eos": true,
    });
    let r = match client.post(url).json(&body).send().await {
        Ok(r) => r,
        Err(_) => {
            s.failed += 1;
            return;
        }
    };
    match r.status().as_u16() {
        200 => {}
        429 => {
            s.refused += 1;
            return;
        }
        _ => {
            s.failed += 1;
            return;
        }
    }
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut last: Option<Instant> = None;
    let mut tokens = 0;
    let mut done = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
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
            if v["choices"][0]["delta"].get("content").is_some()
                && v["choices"][0]["delta"].get("role").is_none()
            {
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
        s.tokens += tokens;
    } else {
        s.failed += 1;
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
    let (slots, _) = starling_serve::default_slots(&model.config()?, device);
    let slots = a.max_batch.unwrap_or(slots);
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
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(starling_serve::serve(listener, state, async move {
            let _ = rx.await;
        }));
        println!(
            "bench serve: model {} on {} ({slots} decode slots), grounding {}, {} tokens per answer, {} rounds per client",
            a.model.display(),
            a.device,
            index.as_ref().map_or("off (no index)".into(), |p| format!("on ({})", p.display())),
            a.max_tokens,
            a.rounds
        );
        println!();
        println!("| clients | answers | tokens/s (all) | tokens/s per client | TTFT p50 | TTFT p99 | inter-token p50 | inter-token p99 | 429 | errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(600))
            .build()?;
        // Warm-up: one answer.
        let mut warm = Sample::default();
        one(&client, &url, QUESTIONS[0], 8, &mut warm).await;
        let mut rates = Vec::new();
        let mut ttft16 = None;
        for &c in &a.clients {
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..c)
                .map(|i| {
                    let client = client.clone();
                    let url = url.clone();
                    let (rounds, max_tokens) = (a.rounds, a.max_tokens);
                    tokio::spawn(async move {
                        let mut s = Sample::default();
                        for r in 0..rounds {
                            let q = QUESTIONS[(i + r) % QUESTIONS.len()];
                            one(&client, &url, q, max_tokens, &mut s).await;
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
            }
            let secs = t0.elapsed().as_secs_f64();
            all.ttft.sort_by(f64::total_cmp);
            all.gaps.sort_by(f64::total_cmp);
            let rate = all.tokens as f64 / secs;
            rates.push((c, rate));
            if c == 16 {
                ttft16 = Some(percentile(&all.ttft, 0.99));
            }
            println!(
                "| {c} | {} | {rate:.0} | {:.1} | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {} | {} |",
                all.ok,
                rate / c as f64,
                percentile(&all.ttft, 0.5) * 1e3,
                percentile(&all.ttft, 0.99) * 1e3,
                percentile(&all.gaps, 0.5) * 1e3,
                percentile(&all.gaps, 0.99) * 1e3,
                all.refused,
                all.failed,
            );
        }
        println!();
        let single = rates.iter().find(|(c, _)| *c == 1).map(|r| r.1);
        let sixteen = rates.iter().find(|(c, _)| *c == 16).map(|r| r.1);
        if let (Some(s1), Some(s16)) = (single, sixteen) {
            println!(
                "goal: tokens/s at 16 clients >= 4x one client: {:.1}x {}",
                s16 / s1,
                if s16 >= 4.0 * s1 { "✓" } else { "✗" }
            );
        }
        if let Some(t) = ttft16 {
            println!(
                "goal: p99 time to first token at 16 clients < 1 s: {:.0} ms {}",
                t * 1e3,
                if t < 1.0 { "✓" } else { "✗" }
            );
        }
        let _ = tx.send(());
        let _ = server.await;
        Ok(())
    })
}
