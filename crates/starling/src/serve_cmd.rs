//! `starling serve`: loads the model and index, starts the server, prints the page's URL; with
//! `--smoke`, answers one chat request through the network and exits.

use anyhow::{bail, Context, Result};
use starling_serve::{ApiKeys, EngineConfig, ServeConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `starling serve`.
#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// Model directory: a run or an exported HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Search index (from `starling index build`) to ground chat in and to search.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// File of accepted API keys, one per line (bearer tokens); none = no authentication.
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Most sequences decoding together (default: as many as 2 GiB of KV cache holds, at most 64).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Most sequences waiting for a slot before requests get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// A request's time limit in seconds, queueing included.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Seconds a client has to send a request's headers (the connection is closed after).
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout_s: f64,
    /// Seconds a client has to send a request's body once its headers are in (408 after).
    #[arg(long, default_value_t = 30.0)]
    pub body_timeout_s: f64,
    /// Most open client connections; more are answered 503 at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Posts each chat answer is grounded on (0 = off).
    #[arg(long, default_value_t = 3)]
    pub grounding: usize,
    /// Name of the model in the API (default: the model directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// libtorch threads of the decode worker (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Answer one chat request through the network, print it and exit.
    #[arg(long)]
    pub smoke: bool,
    /// Ad store (SQLite path or postgres:// URL): serves `/v1/ads/*`, targeting with the model's embeddings.
    #[arg(long)]
    pub ads_db: Option<String>,
    /// Brand-safety classifier for the ads (from `starling ads train-safety` on this model).
    #[arg(long)]
    pub ads_safety: Option<PathBuf>,
}

/// Loads the model and index of `a` and starts the engine; also returns the decode slots and
/// the KV-cache bytes of one.
pub fn load_state(
    a: &ServeArgs,
) -> Result<(std::sync::Arc<starling_serve::AppState>, usize, usize)> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let starling_train::ModelDir { dir, weights } = starling_train::ModelDir::open(&a.model)?;
    let device = match a.device.as_str() {
        "cpu" => tch::Device::Cpu,
        "cuda" if tch::Cuda::is_available() => tch::Device::Cuda(0),
        "cuda" => bail!("--device cuda: libtorch sees no CUDA device here"),
        other => bail!("--device {other}: use cpu or cuda"),
    };
    let lc = starling_model::LlamaConfig::load(&dir.join("config.json"))?;
    let (slots, per_slot) = starling_serve::default_slots(&lc, device);
    let max_batch = a.max_batch.unwrap_or(slots);
    let name = a.name.clone().unwrap_or_else(|| {
        a.model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "starling".into())
    });
    let api_keys = match &a.api_keys {
        Some(p) => Some(ApiKeys::load(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let config = ServeConfig {
        engine: EngineConfig {
            max_batch,
            max_queue: a.max_queue,
            ..EngineConfig::default()
        },
        request_timeout: Duration::from_secs_f64(a.timeout_s.max(0.001)),
        header_timeout: Duration::from_secs_f64(a.header_timeout_s.max(0.001)),
        body_timeout: Duration::from_secs_f64(a.body_timeout_s.max(0.001)),
        max_connections: a.max_connections.max(1),
        grounding_posts: a.grounding,
        api_keys,
        model_name: name.clone(),
        ..ServeConfig::default()
    };
    let state = starling_serve::load(&dir, &weights, a.index.as_deref(), device, config)
        .with_context(|| format!("loading {}", a.model.display()))?;
    Ok((state, max_batch, per_slot))
}

/// Runs `starling serve`.
pub fn serve(a: &ServeArgs) -> Result<()> {
    let (state, max_batch, per_slot) = load_state(a)?;
    let name = state.model_name().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("listening on {}", a.addr))?;
        let addr = listener.local_addr()?;
        if let Some(db) = &a.ads_db {
            let store = crate::ads_cmd::open_store(db).await?;
            let safety = a
                .ads_safety
                .as_deref()
                .map(starling_ads::BrandSafety::load)
                .transpose()?;
            let ads = starling_ads::AdServer::new(
                store,
                state.embedder().cloned(),
                safety,
                starling_ads::DecideConfig::default(),
            )
            .await
            .with_context(|| format!("starting the ad server on {db}"))?;
            state.attach_ads(std::sync::Arc::new(ads));
            println!("serve: ads from {db} at http://{addr}/v1/ads");
        }
        println!(
            "serve: model {name} ({} slots of {:.1} MiB KV cache) on {}{}; index {}",
            max_batch,
            per_slot as f64 / (1u64 << 20) as f64,
            a.device,
            if a.api_keys.is_some() { ", API keys required" } else { "" },
            a.index
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
        println!("serve: open http://{addr}/ (OpenAI API at http://{addr}/v1, metrics at /metrics); Ctrl-C stops");
        if a.smoke {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(starling_serve::serve(listener, state, async move {
                let _ = rx.await;
            }));
            let mut result = smoke(&format!("http://{addr}"), &name, a.api_keys.is_some()).await;
            if result.is_ok() && a.ads_db.is_some() {
                result = ads_smoke(&format!("http://{addr}")).await;
            }
            let _ = tx.send(());
            let _ = server.await;
            return result;
        }
        starling_serve::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("serve: stopping");
        })
        .await
        .context("serving")
    })
}

/// One grounded chat request through the network; fails unless it is answered.
async fn smoke(base: &str, model: &str, needs_key: bool) -> Result<()> {
    if needs_key {
        bail!("--smoke with --api-keys: the smoke request carries no key");
    }
    let client = reqwest::Client::new();
    let t = std::time::Instant::now();
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "what are people saying about #nba tonight?"}],
            "max_tokens": 40,
            "temperature": 0.8,
            "seed": 1,
        }))
        .send()
        .await
        .context("smoke request")?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.context("smoke response")?;
    if !status.is_success() {
        bail!("smoke request failed: {status} {body}");
    }
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let grounded = body["grounding"].as_array().map_or(0, Vec::len);
    let note = body["grounding_note"]
        .as_str()
        .map_or(String::new(), |n| format!(" ({n})"));
    println!(
        "serve --smoke: answered in {:.2}s, {} tokens, finish {}, grounded on {grounded} posts{note}: {answer:?}",
        t.elapsed().as_secs_f64(),
        body["usage"]["completion_tokens"],
        body["choices"][0]["finish_reason"],
    );
    Ok(())
}

/// One advertiser, campaign, group and creative through `/v1/ads`, then a decision, its
/// impression and click, and the campaign's report; fails unless each step is answered.
async fn ads_smoke(base: &str) -> Result<()> {
    use serde_json::{json, Value};
    let client = reqwest::Client::new();
    let t = std::time::Instant::now();
    async fn call(
        client: &reqwest::Client,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value> {
        let _ = client;
        let r = req
            .send()
            .await
            .with_context(|| format!("ads smoke: {what}"))?;
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .with_context(|| format!("ads smoke: {what}"))?;
        if !status.is_success() {
            bail!("ads smoke: {what}: {status} {body}");
        }
        Ok(body)
    }
    let adv = call(
        &client,
        client
            .post(format!("{base}/v1/ads/advertisers"))
            .json(&json!({"name": "demo sports shop"})),
        "advertiser",
    )
    .await?;
    let key = adv["api_key"].as_str().unwrap_or_default().to_string();
    let camp = call(
        &client,
        client
            .post(format!("{base}/v1/ads/campaigns"))
            .bearer_auth(&key)
            .json(&json!({
        "name": "game night", "bid_type": "max_cpc", "daily_budget_micros": 20_000_000})),
        "campaign",
    )
    .await?;
    let group = call(&client, client.post(format!("{base}/v1/ads/groups")).bearer_auth(&key).json(&json!({
        "campaign_id": camp["id"], "name": "basketball fans", "bid_micros": 1_500_000,
        "keywords": ["nba", "#nba", "basketball"], "description": "basketball fans watching the game tonight"})), "group").await?;
    call(&client, client.post(format!("{base}/v1/ads/creatives")).bearer_auth(&key).json(&json!({
        "group_id": group["id"], "text": "Jerseys for game night, shipped tomorrow", "url": "https://shop.example/nba"})), "creative").await?;
    let d = call(&client, client.post(format!("{base}/v1/ads/decide")).json(&json!({
        "placement": "search", "context": {"text": "#nba game tonight"}, "user_id": "demo-user", "slots": 1})), "decide").await?;
    let Some(ad) = d["ads"].get(0) else {
        bail!("ads smoke: the decision filled no slot: {d}");
    };
    let imp = ad["impression_id"].clone();
    for (kind, key) in [("impression", "smoke-imp"), ("click", "smoke-click")] {
        call(
            &client,
            client.post(format!("{base}/v1/ads/events")).json(&json!({
            "type": kind, "impression_id": imp, "idempotency_key": key})),
            kind,
        )
        .await?;
    }
    let rep = call(
        &client,
        client
            .get(format!("{base}/v1/ads/reports"))
            .bearer_auth(&key),
        "report",
    )
    .await?;
    let r = &rep["data"][0];
    println!(
        "serve --smoke: ads answered in {:.2}s: \"{}\" at {} micros per click (pCTR {:.4}); report: {} impression, {} click, spend {} micros",
        t.elapsed().as_secs_f64(),
        ad["text"].as_str().unwrap_or_default(),
        ad["price_micros"],
        ad["pctr"].as_f64().unwrap_or_default(),
        r["impressions"],
        r["clicks"],
        r["spend_micros"],
    );
    if r["clicks"] != json!(1) || r["spend_micros"] != ad["price_micros"] {
        bail!("ads smoke: the report does not show the click charged at its price: {rep}");
    }
    Ok(())
}
