//! `starling bench search`: BM25 index build speed, size and query latency on synthetic posts;
//! for dense and hybrid on a subset, embedding speed, ANN build time, ANN recall@10 against exact
//! search, and query latency with the query's embedding.

use crate::measure::percentile;
use anyhow::{bail, Context, Result};
use starling_corpus::read::{read_file, Item, ReadOptions};
use starling_corpus::synth::SynthConfig;
use starling_corpus::Post;
use starling_embed::{EmbedError, Embedder};
use starling_search::{
    build_posts, BuildOptions, DenseIndex, PostIndex, SearchMode, SearchOrder, SearchRequest,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Options of `starling bench search`.
#[derive(clap::Args)]
pub struct SearchBenchArgs {
    /// Synthetic posts in the BM25 index.
    #[arg(long, default_value_t = 1_000_000)]
    posts: u64,
    /// Posts of the dense/hybrid subset (0 skips that part).
    #[arg(long, default_value_t = 50_000)]
    dense_posts: usize,
    /// Model for the dense part (a model of the synthetic posts: the demo's by default).
    #[arg(long, default_value = "out/demo/run")]
    model: PathBuf,
    /// Query threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds of the query mix per thread.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Work directory (the synthetic stream is kept; indexes are rebuilt).
    #[arg(long, default_value = "out/bench-search")]
    dir: PathBuf,
}

/// The fixed operator mix: common and rare words, phrases, entities, every kind of filter.
pub const QUERY_MIX: &[&str] = &[
    "pizza",
    "good night",
    "\"good night\"",
    "the",
    "#nba",
    "#crypto OR #ai",
    "match -game",
    "from:user1",
    "@user0 lang:en",
    "news since:2020-01-01",
    "love min_faves:20",
    "coffee -filter:replies filter:links",
    "(weather OR news) lang:es",
    "url:example.com",
    "to:user230 OR from:user230",
    "happy -filter:retweets min_retweets:1",
];

/// The words dense and hybrid are asked (dense takes no operators that would make it trivial).
const DENSE_MIX: &[&str] = &[
    "pizza tonight",
    "good night everyone",
    "#nba game",
    "crypto market today",
    "weather news",
    "love this song",
    "coffee at home",
    "football match lang:en",
];

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn read_posts(path: &Path) -> Result<Vec<Post>> {
    let mut posts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    read_file(path, &ReadOptions::default(), &mut |item| {
        if let Item::Post(p) = item {
            // A post nested in several retweets is read once per copy; the corpus keeps the first.
            if !seen.insert(p.id.clone()) {
                return;
            }
            let mut p = *p;
            if p.refs.repost_of.is_none() {
                p.entities = starling_text::extract_entities(&p.text);
            }
            posts.push(p);
        }
    })
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(posts)
}

/// Latencies (ms) of every query of `mix`, `rounds` times on each of `threads` threads.
fn latencies(
    idx: &PostIndex,
    mix: &[&str],
    mode: SearchMode,
    embedder: Option<&dyn Embedder>,
    threads: usize,
    rounds: usize,
) -> Result<Vec<(f64, usize, bool)>> {
    let failed = AtomicBool::new(false);
    let mut all: Vec<(f64, usize, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let failed = &failed;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for r in 0..rounds {
                        for (i, q) in mix.iter().enumerate() {
                            let order = if (i + r + t) % 2 == 0 {
                                SearchOrder::Top
                            } else {
                                SearchOrder::Latest
                            };
                            let t0 = Instant::now();
                            let req = SearchRequest {
                                query: q,
                                mode,
                                order,
                                limit: 10,
                                embedder,
                            };
                            if idx.search_with(&req).is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                            out.push((
                                t0.elapsed().as_secs_f64() * 1e3,
                                i,
                                order == SearchOrder::Top,
                            ));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if failed.load(Ordering::Relaxed) {
        bail!("a query of the mix failed");
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(all)
}

fn ms(l: &[(f64, usize, bool)]) -> Vec<f64> {
    l.iter().map(|x| x.0).collect()
}

/// Per query and order: p50 and worst, slowest first.
fn per_query(mix: &[&str], l: &[(f64, usize, bool)]) {
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    for (i, q) in mix.iter().enumerate() {
        for top in [true, false] {
            let mut v: Vec<f64> = l
                .iter()
                .filter(|x| x.1 == i && x.2 == top)
                .map(|x| x.0)
                .collect();
            v.sort_by(f64::total_cmp);
            if !v.is_empty() {
                let name = format!("`{q}` ({})", if top { "top" } else { "latest" });
                rows.push((name, percentile(&v, 0.5), v[v.len() - 1]));
            }
        }
    }
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("| query (order) | p50 ms | max ms |");
    println!("|---|---|---|");
    for (name, p50, max) in rows {
        println!("| {name} | {p50:.2} | {max:.2} |");
    }
}

fn print_bm25(
    a: &SearchBenchArgs,
    n_posts: f64,
    build_s: f64,
    bytes: u64,
    lat: &[(f64, usize, bool)],
    nrt: &(Vec<f64>, Vec<f64>),
) {
    println!(
        "\nBM25, {n_posts} posts ({} synthetic stream lines and the originals nested in them), {} query threads:",
        a.posts, a.threads
    );
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| index build | {:.0} posts/s ({build_s:.1} s) | >= 50,000 posts/s |",
        n_posts / build_s
    );
    println!(
        "| index size | {:.0} bytes/post ({:.1} MiB) | — |",
        bytes as f64 / n_posts,
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| query p50 / p99 ({} queries, {}-query mix, top and latest) | {:.2} / {:.2} ms | p99 < 10 ms |",
        lat.len(),
        QUERY_MIX.len(),
        percentile(&ms(lat), 0.5),
        percentile(&ms(lat), 0.99)
    );
    println!(
        "| add-to-visible p50 / max ({} single-post adds while {} threads query) | {:.1} / {:.1} ms | < 1 s |",
        nrt.0.len(),
        a.threads,
        percentile(&nrt.0, 0.5),
        nrt.0.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| delete-to-gone p50 / max | {:.1} / {:.1} ms | < 1 s |",
        percentile(&nrt.1, 0.5),
        nrt.1.last().copied().unwrap_or(f64::NAN)
    );
    per_query(QUERY_MIX, lat);
}

/// Adds 50 posts one at a time, then deletes them, while `threads` threads keep querying; the
/// milliseconds until each change is visible to a new query (sorted).
fn live_updates(idx: &PostIndex, posts: &[Post], threads: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| -> Result<(Vec<f64>, Vec<f64>)> {
        for _ in 0..threads {
            s.spawn(|| {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = idx.search(QUERY_MIX[i % QUERY_MIX.len()], SearchOrder::Latest, 10);
                    i += 1;
                }
            });
        }
        let (mut added, mut deleted) = (Vec::new(), Vec::new());
        let fresh: Vec<Post> = posts
            .iter()
            .take(50)
            .enumerate()
            .map(|(i, p)| {
                let mut p = p.clone();
                p.id = format!("live-{i}");
                p
            })
            .collect();
        let r = (|| -> Result<()> {
            for p in &fresh {
                let t = Instant::now();
                idx.add(std::slice::from_ref(p), None)?;
                added.push(t.elapsed().as_secs_f64() * 1e3);
            }
            for p in &fresh {
                let t = Instant::now();
                idx.delete(std::slice::from_ref(&p.id))?;
                deleted.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        r?;
        added.sort_by(f64::total_cmp);
        deleted.sort_by(f64::total_cmp);
        Ok((added, deleted))
    });
    result
}

/// Serves vectors computed beforehand (so the index build is not timed twice), else embeds.
struct Precomputed<'a> {
    inner: &'a dyn Embedder,
    vectors: HashMap<String, Vec<f32>>,
}

impl Embedder for Precomputed<'_> {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(v) = texts
            .iter()
            .map(|t| self.vectors.get(*t).cloned())
            .collect::<Option<Vec<_>>>()
        {
            return Ok(v);
        }
        self.inner.embed(texts)
    }
}

/// Runs `starling bench search`.
pub fn search(a: &SearchBenchArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let stream = a.dir.join(format!("synth-{}.jsonl.zst", a.posts));
    if !stream.exists() {
        let cfg = SynthConfig {
            posts: a.posts,
            ..SynthConfig::default()
        };
        starling_corpus::synth::write_file(&cfg, &stream)?;
    }
    let t = Instant::now();
    let posts = read_posts(&stream)?;
    println!(
        "bench search: {} synthetic posts read and entity-tagged in {:.1}s [SYNTHETIC]",
        posts.len(),
        t.elapsed().as_secs_f64()
    );

    // BM25 at full size.
    let bm25_dir = a.dir.join("bm25");
    if bm25_dir.exists() {
        std::fs::remove_dir_all(&bm25_dir)?;
    }
    let t = Instant::now();
    build_posts(
        &posts,
        "bench",
        &bm25_dir,
        &BuildOptions::default(),
        &mut |_| {},
    )?;
    let build_s = t.elapsed().as_secs_f64();
    let n_posts = posts.len() as f64;
    let bytes = dir_bytes(&bm25_dir);
    let idx = PostIndex::open(&bm25_dir)?;
    let lat = latencies(&idx, QUERY_MIX, SearchMode::Bm25, None, a.threads, a.rounds)?;
    let nrt = live_updates(&idx, &posts, a.threads)?;
    drop(idx);
    if a.dense_posts == 0 {
        print_bm25(a, n_posts, build_s, bytes, &lat, &nrt);
        return Ok(());
    }

    // Dense and hybrid on a subset.
    let subset: Vec<Post> = posts.iter().take(a.dense_posts).cloned().collect();
    drop(posts);
    let model = crate::measure::embedder(&a.model, a.threads).with_context(|| {
        format!(
            "the dense part needs a model of the synthetic posts: run `scripts/demo` (it writes {}) or pass --model",
            a.model.display()
        )
    })?;
    let texts: Vec<&str> = subset.iter().map(|p| p.text.as_str()).collect();
    let t = Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(1024) {
        vectors.extend(model.embed(chunk)?);
    }
    let embed_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut graph = DenseIndex::new(model.dim())?;
    let items: Vec<(u64, Vec<f32>)> = subset
        .iter()
        .zip(&vectors)
        .map(|(p, v)| (starling_search::dense::key(&p.id), v.clone()))
        .collect();
    graph.add(&items)?;
    let ann_s = t.elapsed().as_secs_f64();
    // Recall@10 of the graph against exact search, queried with held-in post vectors.
    let probes: Vec<Vec<f32>> = vectors
        .iter()
        .step_by((vectors.len() / 500).max(1))
        .cloned()
        .collect();
    let (mut found, mut total) = (0usize, 0usize);
    for q in &probes {
        let exact: std::collections::HashSet<u64> = graph
            .exact_search(q, 10)?
            .into_iter()
            .map(|x| x.0)
            .collect();
        total += exact.len();
        found += graph
            .search(q, 10, None)?
            .iter()
            .filter(|x| exact.contains(&x.0))
            .count();
    }
    let recall = found as f64 / total.max(1) as f64;
    let exact_ms = {
        let t = Instant::now();
        for q in probes.iter().take(50) {
            graph.exact_search(q, 10)?;
        }
        t.elapsed().as_secs_f64() * 1e3 / probes.len().clamp(1, 50) as f64
    };
    let ann_ms = {
        let t = Instant::now();
        for q in probes.iter().take(50) {
            graph.search(q, 10, None)?;
        }
        t.elapsed().as_secs_f64() * 1e3 / probes.len().clamp(1, 50) as f64
    };
    drop(graph);
    let hnsw_row = hnsw_rs_row(&vectors, &probes)?;
    let pre = Precomputed {
        inner: &model,
        vectors: texts.iter().map(|t| t.to_string()).zip(vectors).collect(),
    };
    let dense_dir = a.dir.join("dense");
    if dense_dir.exists() {
        std::fs::remove_dir_all(&dense_dir)?;
    }
    build_posts(
        &subset,
        "bench",
        &dense_dir,
        &BuildOptions {
            embedder: Some(&pre),
            model: Some(a.model.display().to_string()),
            reproducible: false,
        },
        &mut |_| {},
    )?;
    let didx = PostIndex::open(&dense_dir)?;
    // Queries run side by side, one model copy and one intra-op thread each (as a server
    // would run them); bulk embedding above used every core for one batch.
    tch::set_num_threads(1);
    let e: &dyn Embedder = &model;
    let sub_bm25 = latencies(
        &didx,
        DENSE_MIX,
        SearchMode::Bm25,
        None,
        a.threads,
        a.rounds,
    )?;
    let dense = latencies(
        &didx,
        DENSE_MIX,
        SearchMode::Dense,
        Some(e),
        a.threads,
        a.rounds,
    )?;
    let hybrid = latencies(
        &didx,
        DENSE_MIX,
        SearchMode::Hybrid,
        Some(e),
        a.threads,
        a.rounds,
    )?;

    print_bm25(a, n_posts, build_s, bytes, &lat, &nrt);
    println!(
        "\nDense and hybrid, {} posts, model {} ({}-d, {}):",
        subset.len(),
        a.model.display(),
        model.dim(),
        model.id()
    );
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| embedding | {:.0} posts/s ({embed_s:.1} s) | — |",
        subset.len() as f64 / embed_s
    );
    println!(
        "| ANN build (usearch HNSW, M={}, efC={}) | {ann_s:.1} s ({:.0} vectors/s) | — |",
        starling_search::dense::CONNECTIVITY,
        starling_search::dense::EXPANSION_ADD,
        subset.len() as f64 / ann_s
    );
    println!(
        "| ANN recall@10 vs exact ({} probes, ef={}) | {recall:.4} | — |",
        probes.len(),
        starling_search::dense::EXPANSION_SEARCH
    );
    println!("| ANN / exact search, one query | {ann_ms:.3} / {exact_ms:.3} ms | — |");
    println!("{hnsw_row}");
    println!("\nDense, per query:");
    per_query(DENSE_MIX, &dense);
    println!("\nHybrid, per query:");
    per_query(DENSE_MIX, &hybrid);
    println!();
    for (name, l, goal) in [
        ("bm25 (same subset)", &sub_bm25, "—"),
        ("dense (embedding included)", &dense, "—"),
        ("hybrid (embedding included)", &hybrid, "p99 < 20 ms"),
    ] {
        println!(
            "| {name} p50 / p99 | {:.2} / {:.2} ms | {goal} |",
            percentile(&ms(l), 0.5),
            percentile(&ms(l), 0.99)
        );
    }
    Ok(())
}

/// The same vectors in hnsw_rs (same M, efConstruction and ef): a table row of build time, recall@10
/// against exact search and one query's time. Built only with `--features hnsw-compare`.
#[cfg(feature = "hnsw-compare")]
fn hnsw_rs_row(vectors: &[Vec<f32>], probes: &[Vec<f32>]) -> Result<String> {
    use hnsw_rs::prelude::{DistCosine, Hnsw};
    let t = Instant::now();
    let h: Hnsw<f32, DistCosine> = Hnsw::new(
        starling_search::dense::CONNECTIVITY,
        vectors.len(),
        16,
        starling_search::dense::EXPANSION_ADD,
        DistCosine {},
    );
    let data: Vec<(&Vec<f32>, usize)> = vectors.iter().zip(0..).collect();
    h.parallel_insert(&data);
    let build_s = t.elapsed().as_secs_f64();
    let exact = |q: &[f32]| -> std::collections::HashSet<usize> {
        let mut d: Vec<(f32, usize)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (-starling_embed::dot(q, v), i))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        d.into_iter().take(10).map(|x| x.1).collect()
    };
    let (mut found, mut total) = (0, 0);
    for q in probes {
        let truth = exact(q);
        total += truth.len();
        found += h
            .search(q, 10, starling_search::dense::EXPANSION_SEARCH)
            .iter()
            .filter(|n| truth.contains(&n.d_id))
            .count();
    }
    let t = Instant::now();
    for q in probes.iter().take(50) {
        h.search(q, 10, starling_search::dense::EXPANSION_SEARCH);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / probes.len().clamp(1, 50) as f64;
    Ok(format!(
        "| hnsw_rs 0.3 (same M, efC, ef): build / recall@10 / one query | {build_s:.1} s / {:.4} / {ms:.3} ms | — |",
        found as f64 / total.max(1) as f64
    ))
}

/// Without the `hnsw-compare` feature: says how to get the row.
#[cfg(not(feature = "hnsw-compare"))]
fn hnsw_rs_row(_vectors: &[Vec<f32>], _probes: &[Vec<f32>]) -> Result<String> {
    Ok("| hnsw_rs comparison | run with `--features hnsw-compare` | — |".into())
}
