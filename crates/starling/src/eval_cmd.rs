//! `starling eval search`: hashtag recovery on a corpus, BM25 against the model's dense vectors
//! and their hybrid, printed as a table and written as JSON.

use crate::search_cmd::{load_embedder, spinner};
use anyhow::{Context, Result};
use starling_corpus::{Corpus, Post};
use starling_search::eval::{evaluate, hashtag_queries, strip_hashtags, ModeScore};
use starling_search::{build_posts, BuildOptions, Embedder, PostIndex, SearchMode};
use std::path::PathBuf;
use std::time::Instant;

/// Options of `starling eval search`.
#[derive(clap::Args)]
pub struct EvalSearchArgs {
    /// Corpus directory (every written post is indexed, hashtags stripped).
    #[arg(long)]
    corpus: PathBuf,
    /// Model (run or exported directory) for the dense and hybrid modes.
    #[arg(long)]
    model: PathBuf,
    /// Poolings to compare (comma-separated: mean, weighted-mean, last).
    #[arg(long, value_delimiter = ',', default_value = crate::search_cmd::DEFAULT_POOLING)]
    pooling: Vec<String>,
    /// Fewest posts a hashtag needs to become a query.
    #[arg(long, default_value_t = 5)]
    min_posts: usize,
    /// Most posts a hashtag may have (very common tags are closer to stop words).
    #[arg(long, default_value_t = 1000)]
    max_posts: usize,
    /// Queries (spread evenly over the eligible hashtags).
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Work directory (its indexes are rebuilt each run).
    #[arg(long, default_value = "out/eval-search")]
    out: PathBuf,
}

/// Runs `starling eval search`.
pub fn search(a: &EvalSearchArgs) -> Result<()> {
    let started = Instant::now();
    let c = Corpus::open(&a.corpus)?;
    let mut posts: Vec<Post> = Vec::new();
    c.for_each_post(&mut |p| posts.push(p))?;
    let queries = hashtag_queries(&posts, a.min_posts, a.max_posts, a.queries);
    let carrying = posts
        .iter()
        .filter(|p| !p.entities.hashtags.is_empty())
        .count();
    anyhow::ensure!(
        !queries.is_empty(),
        "{}: no hashtag is carried by {}..={} posts; nothing to evaluate",
        a.corpus.display(),
        a.min_posts,
        a.max_posts
    );
    posts.iter_mut().for_each(strip_hashtags);
    println!(
        "eval search: {} posts ({} carried hashtags, all stripped), {} queries (hashtags on {}..={} posts, mean {:.1} relevant)",
        posts.len(),
        carrying,
        queries.len(),
        a.min_posts,
        a.max_posts,
        queries.iter().map(|q| q.relevant.len()).sum::<usize>() as f64 / queries.len() as f64
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rows: Vec<(String, String, ModeScore)> = Vec::new();
    let mut bm25_done = false;
    for pooling in &a.pooling {
        let e = load_embedder(&a.model, pooling)?;
        let dir = a.out.join(format!("index-{pooling}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let bar = spinner(&format!("eval index ({pooling})"));
        let t = Instant::now();
        let opts = BuildOptions {
            embedder: Some(&e),
            model: Some(a.model.display().to_string()),
        };
        build_posts(&posts, "eval", &dir, &opts, &mut |n| {
            bar.set_message(format!(
                "{n}/{} posts · {:.0} posts/s",
                posts.len(),
                n as f64 / t.elapsed().as_secs_f64().max(1e-9)
            ));
            bar.tick();
        })?;
        bar.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  indexed and embedded ({pooling}) in {secs:.0}s ({:.0} posts/s)",
            posts.len() as f64 / secs
        );
        let idx = PostIndex::open(&dir)?;
        let emb: &dyn Embedder = &e;
        if !bm25_done {
            rows.push((
                "bm25".into(),
                "-".into(),
                evaluate(&idx, &queries, SearchMode::Bm25, None)?,
            ));
            bm25_done = true;
        }
        for (name, mode) in [("dense", SearchMode::Dense), ("hybrid", SearchMode::Hybrid)] {
            rows.push((
                name.into(),
                pooling.clone(),
                evaluate(&idx, &queries, mode, Some(emb))?,
            ));
        }
    }
    println!("\n| mode | pooling | nDCG@10 | recall@100 | p50 ms/query |");
    println!("|---|---|---|---|---|");
    for (mode, pooling, s) in &rows {
        println!(
            "| {mode} | {pooling} | {:.4} | {:.4} | {:.1} |",
            s.ndcg10, s.recall100, s.p50_ms
        );
    }
    let best = rows
        .iter()
        .max_by(|a, b| a.2.ndcg10.total_cmp(&b.2.ndcg10))
        .map(|r| format!("{} ({})", r.0, r.1))
        .unwrap_or_default();
    let report = serde_json::json!({
        "corpus": a.corpus.display().to_string(),
        "model": a.model.display().to_string(),
        "posts": posts.len(),
        "queries": queries.len(),
        "rows": rows.iter().map(|(m, p, s)| serde_json::json!({
            "mode": m, "pooling": p, "ndcg10": s.ndcg10, "recall100": s.recall100, "p50_ms": s.p50_ms
        })).collect::<Vec<_>>(),
    });
    let path = a.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\neval search: best nDCG@10 is {best}; report → {} ({:.0}s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Options of `starling eval bots`.
#[derive(clap::Args)]
pub struct EvalBotsArgs {
    /// The PAN 2019 bots-and-gender folder (`train-{en,es}.csv.gz`, `truth-train-{en,es}.tsv`).
    #[arg(long, default_value = "../shared/data/pan19-bots")]
    data: PathBuf,
    /// Write the fitted model here (use it with `corpus --bot-model`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Work directory (the corpora built to score the verdicts).
    #[arg(long, default_value = "out/eval-bots")]
    work: PathBuf,
    /// Model degree: 1 linear, 2 with squares and pairwise products.
    #[arg(long, default_value_t = 2)]
    degree: u8,
    /// L2 penalty.
    #[arg(long, default_value_t = 30.0)]
    l2: f64,
    /// Most share of training humans the threshold may flag.
    #[arg(long, default_value_t = 0.002)]
    max_human_fpr: f64,
}

/// `starling eval bots`: the bot rule fitted and scored on labelled authors.
pub fn bots(a: &EvalBotsArgs) -> Result<()> {
    let settings = starling_corpus::bots_eval::FitSettings {
        degree: a.degree,
        l2: a.l2,
        max_human_fpr: a.max_human_fpr,
    };
    let bar = spinner("fitting on 80% of the authors, then building and scoring each language");
    let t = Instant::now();
    let (model, scores) = starling_corpus::bots_eval::pan_2019(&a.data, &settings, &a.work)
        .with_context(|| format!("evaluating on {}", a.data.display()))?;
    bar.finish_and_clear();
    println!(
        "bot rule on PAN 2019 (held-out 20% of authors; an author is flagged when at least half of its non-repost posts get `bot`) in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    print!("\n{}", starling_corpus::bots_eval::scores_table(&scores));
    println!(
        "\nmodel: degree {}, L2 {}, threshold {:.3} ({})",
        model.degree, a.l2, model.threshold, model.trained_on
    );
    if let Some(out) = &a.out {
        let json = serde_json::to_vec_pretty(&model)?;
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
        println!("→ {}", out.display());
    }
    Ok(())
}
