//! `starling bench ads`: decision latency and throughput over 1,000 active campaigns and 10,000
//! ad groups, on 2 threads: contexts whose vectors are known (search results, indexed posts) and,
//! separately, fresh contexts embedded at decision time.

use crate::measure::percentile;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_ads::simulate::{words, TOPICS};
use starling_ads::*;
use starling_embed::{Embedder, HashingEmbedder};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Options of `starling bench ads`.
#[derive(clap::Args)]
pub struct AdsBenchArgs {
    /// Model whose embeddings target (run or exported directory); hashed word vectors without it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Active campaigns.
    #[arg(long, default_value_t = 1_000)]
    campaigns: usize,
    /// Ad groups (spread over the campaigns), one creative each.
    #[arg(long, default_value_t = 10_000)]
    groups: usize,
    /// Decisions per setup (split over the threads).
    #[arg(long, default_value_t = 4_000)]
    decisions: usize,
    /// Decision threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Slots per decision.
    #[arg(long, default_value_t = 3)]
    slots: usize,
    /// Work directory (its database is rebuilt each run).
    #[arg(long, default_value = "out/bench-ads")]
    out: PathBuf,
}

struct Row {
    setup: String,
    decisions: usize,
    p50_ms: f64,
    p99_ms: f64,
    per_s: f64,
    filled: f64,
    candidates: f64,
}

fn measure(
    setup: &str,
    server: &Arc<AdServer>,
    requests: &Arc<Vec<DecideRequest>>,
    threads: usize,
) -> Result<Row> {
    let started = Instant::now();
    let per = requests.len().div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let server = server.clone();
            let requests = requests.clone();
            std::thread::spawn(move || -> Result<Vec<(f64, usize, usize)>> {
                let mut rng = ChaCha8Rng::seed_from_u64(t as u64);
                let mut out = Vec::new();
                for r in requests.iter().skip(t * per).take(per) {
                    let t0 = Instant::now();
                    let d = server.decide_at(r, now_ms(), &mut rng)?;
                    out.push((
                        t0.elapsed().as_secs_f64() * 1e3,
                        d.ads.len(),
                        d.keyword_candidates + d.semantic_candidates,
                    ));
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a decision thread panicked"))??,
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = all.iter().map(|x| x.0).collect();
    lat.sort_by(f64::total_cmp);
    Ok(Row {
        setup: setup.to_string(),
        decisions: all.len(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        per_s: all.len() as f64 / wall,
        filled: all.iter().map(|x| x.1 as f64).sum::<f64>() / all.len().max(1) as f64,
        candidates: all.iter().map(|x| x.2 as f64).sum::<f64>() / all.len().max(1) as f64,
    })
}

/// Runs `starling bench ads`.
pub fn ads(a: &AdsBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(a))
}

async fn run(a: &AdsBenchArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let db = a.out.join("ads.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let embedder: Arc<dyn Embedder> = match &a.model {
        Some(m) => Arc::new(crate::measure::embedder(m, a.threads.max(1))?),
        None => Arc::new(HashingEmbedder::new(256)),
    };
    let store = AdStore::open(&db.display().to_string()).await?;
    let op = Scope::Operator;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let bar = ProgressBar::new(a.groups as u64);
    bar.set_style(
        ProgressStyle::with_template("inventory [{bar:30}] {pos}/{len} ad groups ({eta})")?
            .progress_chars("=> "),
    );
    let advertisers = (a.campaigns / 10).max(1);
    let mut adv_ids = Vec::new();
    for i in 0..advertisers {
        adv_ids.push(
            store
                .create_advertiser(&format!("bench advertiser {i}"))
                .await?
                .0
                .id,
        );
    }
    let mut campaign_ids = Vec::new();
    for c in 0..a.campaigns {
        let bid_type = [
            BidType::MaxCpc,
            BidType::MaxCpc,
            BidType::Cpm,
            BidType::TargetCpc,
        ][c % 4];
        let camp = store
            .create_campaign(
                &op,
                &CampaignSpec {
                    advertiser_id: Some(adv_ids[c % advertisers].clone()),
                    name: Some(format!("bench {c}")),
                    bid_type: Some(bid_type),
                    daily_budget_micros: Some(1_000_000_000),
                    frequency_cap: Some(10),
                    ..Default::default()
                },
            )
            .await?;
        campaign_ids.push((camp.id, bid_type));
    }
    for g in 0..a.groups {
        let (cid, bid_type) = &campaign_ids[g % campaign_ids.len()];
        let topic = rng.gen_range(0..TOPICS.len());
        let vocab = TOPICS[topic].1;
        let k1 = vocab[rng.gen_range(0..vocab.len())].to_string();
        let k2 = vocab[rng.gen_range(0..vocab.len())].to_string();
        let bid = if *bid_type == BidType::Cpm {
            rng.gen_range(1_000_000..10_000_000)
        } else {
            rng.gen_range(100_000..3_000_000)
        };
        let group = store
            .create_group(
                &op,
                &GroupSpec {
                    campaign_id: Some(cid.clone()),
                    name: Some(format!("group {g}")),
                    bid_micros: Some(bid),
                    keywords: Some(vec![k1, k2]),
                    description: Some(words(&mut rng, topic, 12, 1.0)),
                    ..Default::default()
                },
                None,
            )
            .await?;
        store
            .create_creative(
                &op,
                &CreativeSpec {
                    group_id: Some(group.id),
                    text: Some(format!("Brand {g}: {}", words(&mut rng, topic, 10, 0.8))),
                    ..Default::default()
                },
                None,
            )
            .await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let built = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let server = Arc::new(
        AdServer::new(
            store,
            Some(embedder.clone()),
            None,
            DecideConfig {
                pace: true,
                ..DecideConfig::default()
            },
        )
        .await?,
    );
    let embedded = t.elapsed().as_secs_f64();
    // Contexts: a search query or a viewed post, about one topic.
    let texts: Vec<String> = (0..a.decisions)
        .map(|_| {
            let topic = rng.gen_range(0..TOPICS.len());
            let n = rng.gen_range(6..20);
            words(&mut rng, topic, n, 0.5)
        })
        .collect();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        vectors.extend(embedder.embed(&refs)?);
    }
    let request = |i: usize, vector: Option<Vec<f32>>| DecideRequest {
        placement: Placement::ALL[i % 3],
        context: AdContext {
            text: texts[i].clone(),
            vector,
            post_ids: vec![],
        },
        user_id: format!("user{}", i % 5_000),
        language: Some("en".into()),
        slots: a.slots,
        exclude_advertisers: vec![],
    };
    let known: Arc<Vec<DecideRequest>> = Arc::new(
        vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| request(i, Some(v)))
            .collect(),
    );
    let fresh: Arc<Vec<DecideRequest>> =
        Arc::new((0..texts.len()).map(|i| request(i, None)).collect());
    // Warm-up (first-touch allocations, caches).
    measure(
        "warm-up",
        &server,
        &Arc::new(known.iter().take(200).cloned().collect()),
        a.threads,
    )?;
    let rows = vec![
        measure("context vector known", &server, &known, a.threads)?,
        measure("fresh context, embedded", &server, &fresh, a.threads)?,
    ];
    println!(
        "bench ads: {} campaigns, {} ad groups ({} creatives), {} threads, {} slots, embedder {} (dim {}); inventory built in {:.1}s, targeting vectors embedded and stored in {:.1}s [SYNTHETIC]",
        a.campaigns,
        a.groups,
        a.groups,
        a.threads,
        a.slots,
        embedder.id(),
        embedder.dim(),
        built,
        embedded
    );
    println!("| setup | decisions | p50 ms | p99 ms | decisions/s | candidates/decision | ads/decision |\n|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} |",
            r.setup, r.decisions, r.p50_ms, r.p99_ms, r.per_s, r.candidates, r.filled
        );
    }
    let goal = rows[0].p99_ms < 10.0;
    println!(
        "goal p99 < 10 ms with known vectors: {} ({:.2} ms); bench ads done in {:.0}s",
        if goal { "met" } else { "NOT met" },
        rows[0].p99_ms,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
