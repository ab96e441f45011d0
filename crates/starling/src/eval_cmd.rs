//! `starling eval search`: hashtag recovery on a corpus, BM25 against the model's dense vectors
//! and their hybrid; `starling eval grounding`: the chat's grounding posts for questions about
//! hashtags; `starling eval bots`. Each prints a table and writes JSON.

use crate::search_cmd::{load_embedder, spinner};
use anyhow::{Context, Result};
use starling_corpus::{Corpus, Post};
use starling_search::eval::{
    evaluate, evaluate_grounding, grounding_questions, hashtag_queries, lexical_mismatch,
    paired_bootstrap, strip_hashtags, word_counts, Grounder, GroundingScore, HashtagQuery,
    Interval, ModeScore, Template,
};
use starling_search::{build_posts, BuildOptions, Embedder, PostIndex, SearchMode};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Every written post of a corpus.
fn read_posts(corpus: &Path) -> Result<Vec<Post>> {
    let c = Corpus::open(corpus)?;
    let mut posts: Vec<Post> = Vec::new();
    c.for_each_post(&mut |p| posts.push(p))?;
    Ok(posts)
}

/// Writes `report` as `<out>/report.json` (atomically) and says where, with the time taken.
fn write_report(
    out: &Path,
    what: &str,
    report: &serde_json::Value,
    started: Instant,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("report.json");
    starling_artifacts::write_atomic(&path, &serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{what}report → {} ({:.0}s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Which hashtags of an evaluation corpus become queries.
#[derive(clap::Args)]
pub struct TagChoice {
    /// Fewest posts a hashtag needs to become a query.
    #[arg(long, default_value_t = 5)]
    min_posts: usize,
    /// Most posts a hashtag may have (very common tags are closer to stop words).
    #[arg(long, default_value_t = 1000)]
    max_posts: usize,
    /// Queries (spread evenly over the eligible hashtags).
    #[arg(long, default_value_t = 300)]
    queries: usize,
}

/// Builds (anew) an index of `posts` in `dir`, with `embedder`'s vectors when given.
fn build_eval_index(
    posts: &[Post],
    dir: &Path,
    embedder: Option<(&dyn Embedder, &Path)>,
    what: &str,
) -> Result<PostIndex> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let bar = spinner(what);
    let t = Instant::now();
    let opts = BuildOptions {
        embedder: embedder.map(|(e, _)| e),
        model: embedder.map(|(_, m)| m.display().to_string()),
        reproducible: true,
    };
    build_posts(posts, "eval", dir, &opts, &mut |n| {
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
        "  {what}: {} posts in {secs:.0}s ({:.0} posts/s)",
        posts.len(),
        posts.len() as f64 / secs
    );
    Ok(PostIndex::open(dir)?)
}

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
    /// Which hashtags become queries.
    #[command(flatten)]
    tags: TagChoice,
    /// A validation corpus (never the test one): hybrid's fusion (dense weight, RRF k) is tuned
    /// on its hashtags (nDCG@10) and a tuned hybrid row added.
    #[arg(long)]
    tune_fusion_on: Option<PathBuf>,
    /// A corpus with replies and quotes (e.g. the API samples): reply retrieval beside hashtag
    /// recovery — each held-out reply or quote (never trained on) asks for the post it answers.
    #[arg(long)]
    replies_from: Option<PathBuf>,
    /// Work directory (its indexes are rebuilt each run).
    #[arg(long, default_value = "out/eval-search")]
    out: PathBuf,
}

/// Dense weights and RRF constants tried when tuning fusion.
const FUSION_GRID: ([f64; 6], [f64; 2]) = ([0.0, 0.1, 0.25, 0.5, 1.0, 2.0], [10.0, 60.0]);

/// The fusion with the best mean nDCG@10 on `queries` over `idx` (validation data).
fn tune_fusion(
    idx: &PostIndex,
    queries: &[starling_search::eval::HashtagQuery],
    e: &dyn Embedder,
) -> Result<(starling_search::Fusion, f64)> {
    let mut best = (starling_search::Fusion::default(), f64::MIN);
    for k in FUSION_GRID.1 {
        for dense_weight in FUSION_GRID.0 {
            let f = starling_search::Fusion { dense_weight, k };
            idx.set_fusion(f);
            let s = evaluate(idx, queries, SearchMode::Hybrid, Some(e))?;
            if s.ndcg10 > best.1 {
                best = (f, s.ndcg10);
            }
        }
    }
    idx.set_fusion(starling_search::Fusion::default());
    Ok(best)
}

/// What `eval search` measures on: the test posts (hashtags stripped) and their tags, the
/// validation set fusion is tuned on, the lexical-mismatch subset and reply retrieval.
struct SearchSets {
    posts: Vec<Post>,
    queries: Vec<HashtagQuery>,
    tuning: Option<(Vec<Post>, Vec<HashtagQuery>)>,
    mismatch: Vec<HashtagQuery>,
    replies: Option<(Vec<Post>, Vec<HashtagQuery>)>,
}

/// The posts of `corpus` (hashtags stripped) and queries for the tags on `tags`' range of posts,
/// refused naming `corpus` and `purpose` when there are none; and how many posts carried a tag.
fn tag_set(
    corpus: &Path,
    tags: &TagChoice,
    purpose: &str,
) -> Result<(Vec<Post>, Vec<HashtagQuery>, usize)> {
    let mut posts = read_posts(corpus)?;
    let queries = hashtag_queries(&posts, tags.min_posts, tags.max_posts, tags.queries);
    anyhow::ensure!(
        !queries.is_empty(),
        "{}: no hashtag is carried by {}..={} posts; nothing to {purpose}",
        corpus.display(),
        tags.min_posts,
        tags.max_posts
    );
    let carrying = posts
        .iter()
        .filter(|p| !p.entities.hashtags.is_empty())
        .count();
    posts.iter_mut().for_each(strip_hashtags);
    Ok((posts, queries, carrying))
}

/// Reads and announces the sets `a` names.
fn search_sets(a: &EvalSearchArgs) -> Result<SearchSets> {
    let (posts, queries, carrying) = tag_set(&a.corpus, &a.tags, "evaluate")?;
    println!(
        "eval search: {} posts ({} carried hashtags, all stripped), {} queries (hashtags on {}..={} posts, mean {:.1} relevant)",
        posts.len(),
        carrying,
        queries.len(),
        a.tags.min_posts,
        a.tags.max_posts,
        queries.iter().map(|q| q.relevant.len()).sum::<usize>() as f64 / queries.len() as f64
    );
    // Validation tags for tuning fusion: their own posts, hashtags stripped, never the test's.
    let tuning = match &a.tune_fusion_on {
        None => None,
        Some(v) => {
            let (vposts, vq, _) = tag_set(v, &a.tags, "tune fusion on")?;
            println!(
                "  fusion tuned on {} ({} posts, {} tags)",
                v.display(),
                vposts.len(),
                vq.len()
            );
            Some((vposts, vq))
        }
    };
    let mismatch = lexical_mismatch(&queries, &posts);
    println!(
        "  lexical-mismatch subset: {} queries keep {} relevant posts that share no word with the query",
        mismatch.len(),
        mismatch.iter().map(|q| q.relevant.len()).sum::<usize>()
    );
    let replies = match &a.replies_from {
        None => None,
        Some(c) => {
            let (indexed, rq) = starling_search::eval::reply_queries(&read_posts(c)?);
            anyhow::ensure!(
                !rq.is_empty(),
                "{}: no held-out reply or quote whose parent it holds; no reply retrieval to run",
                c.display()
            );
            println!(
                "  reply retrieval: {} held-out replies and quotes of {} ask among {} posts",
                rq.len(),
                c.display(),
                indexed.len()
            );
            Some((indexed, rq))
        }
    };
    Ok(SearchSets {
        posts,
        queries,
        tuning,
        mismatch,
        replies,
    })
}

/// The rows of one `eval search` run: (mode, pooling, score) on the tags, and (mode, score) on
/// the lexical-mismatch subset and on reply retrieval.
#[derive(Default)]
struct SearchRows {
    tags: Vec<(String, String, ModeScore)>,
    mismatch: Vec<(String, ModeScore)>,
    replies: Vec<(String, ModeScore)>,
}

/// Measures one embedder (`which`: untrained or trained, with `pooling`) on every set, BM25
/// first when no row is there yet.
fn measure_embedder(
    a: &EvalSearchArgs,
    sets: &SearchSets,
    which: &str,
    pooling: &str,
    rows: &mut SearchRows,
) -> Result<()> {
    let e = if which == "trained" {
        load_embedder(&a.model, pooling)?
    } else {
        crate::search_cmd::load_lm_embedder(&a.model, pooling)?
    };
    let index_of = |posts: &[Post], dir: &str, what: &str| {
        build_eval_index(
            posts,
            &a.out.join(format!("{dir}-{which}-{pooling}")),
            Some((&e, &a.model)),
            &format!("{what} ({which}, {pooling})"),
        )
    };
    let idx = index_of(&sets.posts, "index", "indexed and embedded")?;
    let emb: &dyn Embedder = &e;
    let queries = &sets.queries;
    if rows.tags.is_empty() {
        let bm25 = evaluate(&idx, queries, SearchMode::Bm25, None)?;
        rows.tags.push(("bm25".into(), "-".into(), bm25));
    }
    for (name, mode) in [("dense", SearchMode::Dense), ("hybrid", SearchMode::Hybrid)] {
        let s = evaluate(&idx, queries, mode, Some(emb))?;
        rows.tags
            .push((format!("{name} ({which})"), pooling.to_string(), s));
    }
    if let Some((vposts, vq)) = &sets.tuning {
        let vidx = index_of(vposts, "val-index", "validation posts indexed and embedded")?;
        let (f, v) = tune_fusion(&vidx, vq, emb)?;
        idx.set_fusion(f);
        rows.tags.push((
            format!(
                "hybrid ({which}, dense weight {}, k {} from val nDCG@10 {v:.4})",
                f.dense_weight, f.k
            ),
            pooling.to_string(),
            evaluate(&idx, queries, SearchMode::Hybrid, Some(emb))?,
        ));
        idx.set_fusion(starling_search::Fusion::default());
    }
    if let Some((rposts, rq)) = &sets.replies {
        let what = "reply-retrieval posts indexed and embedded";
        let ridx = index_of(rposts, "replies-index", what)?;
        if rows.replies.is_empty() {
            let bm25 = evaluate(&ridx, rq, SearchMode::Bm25, None)?;
            rows.replies.push(("bm25".into(), bm25));
        }
        for (name, mode) in [("dense", SearchMode::Dense), ("hybrid", SearchMode::Hybrid)] {
            let s = evaluate(&ridx, rq, mode, Some(emb))?;
            rows.replies
                .push((format!("{name} ({which}, {pooling})"), s));
        }
    }
    if !sets.mismatch.is_empty() {
        let s = evaluate(&idx, &sets.mismatch, SearchMode::Dense, Some(emb))?;
        rows.mismatch
            .push((format!("dense ({which}, {pooling})"), s));
    }
    Ok(())
}

/// Each of `rows` after the first against the first (BM25), query by query: the mean difference
/// in nDCG@10 and recall@100 with 95% paired-bootstrap intervals (1,000 resamples of the queries).
fn differences(rows: &[(String, &ModeScore)], seed: u64) -> Vec<(String, Interval, Interval)> {
    let Some((_, base)) = rows.first() else {
        return Vec::new();
    };
    rows.iter()
        .skip(1)
        .map(|(m, s)| {
            (
                m.clone(),
                paired_bootstrap(&s.per_query_ndcg10, &base.per_query_ndcg10, 1000, seed),
                paired_bootstrap(
                    &s.per_query_recall100,
                    &base.per_query_recall100,
                    1000,
                    seed + 1,
                ),
            )
        })
        .collect()
}

/// Prints `eval search`'s tables and returns the tag rows' differences from BM25.
fn print_search_tables(sets: &SearchSets, rows: &SearchRows) -> Vec<(String, Interval, Interval)> {
    println!("\n| mode | pooling | nDCG@10 | recall@100 | p50 ms/query |");
    println!("|---|---|---|---|---|");
    for (mode, pooling, s) in &rows.tags {
        println!(
            "| {mode} | {pooling} | {:.4} | {:.4} | {:.1} |",
            s.ndcg10, s.recall100, s.p50_ms
        );
    }
    let named: Vec<(String, &ModeScore)> = rows
        .tags
        .iter()
        .map(|(m, p, s)| (format!("{m} ({p}) − bm25"), s))
        .collect();
    let diffs = differences(&named, 1);
    if !rows.mismatch.is_empty() {
        println!(
            "\nlexical-mismatch subset ({} queries; BM25 scores 0 here by construction):\n\n| mode | nDCG@10 | recall@100 |\n|---|---|---|",
            sets.mismatch.len()
        );
        for (m, s) in &rows.mismatch {
            println!("| {m} | {:.4} | {:.4} |", s.ndcg10, s.recall100);
        }
    }
    if let Some((_, first)) = rows.replies.first() {
        println!(
            "\nreply retrieval ({} held-out replies and quotes, one relevant post each):\n\n| mode | nDCG@10 | recall@100 | nDCG@10 − bm25 [95% CI] |\n|---|---|---|---|",
            first.queries
        );
        let replies: Vec<(String, &ModeScore)> =
            rows.replies.iter().map(|(m, s)| (m.clone(), s)).collect();
        let reply_diffs = differences(&replies, 3);
        for (i, (m, s)) in rows.replies.iter().enumerate() {
            let d = i
                .checked_sub(1)
                .and_then(|j| reply_diffs.get(j))
                .map_or(String::new(), |(_, d, _)| {
                    format!("{:+.4} [{:+.4}, {:+.4}]", d.mean, d.low, d.high)
                });
            println!("| {m} | {:.4} | {:.4} | {d} |", s.ndcg10, s.recall100);
        }
    }
    println!("\n| difference | nDCG@10 [95% CI] | recall@100 [95% CI] |");
    println!("|---|---|---|");
    for (name, n, r) in &diffs {
        println!(
            "| {name} | {:+.4} [{:+.4}, {:+.4}] | {:+.4} [{:+.4}, {:+.4}] |",
            n.mean, n.low, n.high, r.mean, r.low, r.high
        );
    }
    diffs
}

/// Runs `starling eval search`.
pub fn search(a: &EvalSearchArgs) -> Result<()> {
    let started = Instant::now();
    let sets = search_sets(a)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // The language model's own pooled states, and the trained embedder when there is one.
    let trained = starling_train::ModelDir::open(&a.model)
        .ok()
        .and_then(|m| starling_model::trained_embedder(&m.dir))
        .is_some();
    let mut embedders: Vec<(&str, &str)> = a
        .pooling
        .iter()
        .map(|p| ("untrained", p.as_str()))
        .collect();
    if trained {
        embedders.push(("trained", crate::search_cmd::DEFAULT_POOLING));
    }
    let mut rows = SearchRows::default();
    for (which, pooling) in embedders {
        measure_embedder(a, &sets, which, pooling, &mut rows)?;
    }
    let diffs = print_search_tables(&sets, &rows);
    let best = rows
        .tags
        .iter()
        .max_by(|a, b| a.2.ndcg10.total_cmp(&b.2.ndcg10))
        .map(|r| format!("{} ({})", r.0, r.1))
        .unwrap_or_default();
    let scores = |rows: &[(String, ModeScore)]| {
        rows.iter()
            .map(|(m, s)| {
                serde_json::json!({
                    "mode": m, "queries": s.queries, "ndcg10": s.ndcg10, "recall100": s.recall100,
                })
            })
            .collect::<Vec<_>>()
    };
    let report = serde_json::json!({
        "corpus": a.corpus.display().to_string(),
        "model": a.model.display().to_string(),
        "posts": sets.posts.len(),
        "queries": sets.queries.len(),
        "rows": rows.tags.iter().map(|(m, p, s)| serde_json::json!({
            "mode": m, "pooling": p, "ndcg10": s.ndcg10, "recall100": s.recall100, "p50_ms": s.p50_ms
        })).collect::<Vec<_>>(),
        "reply_retrieval": scores(&rows.replies),
        "lexical_mismatch": scores(&rows.mismatch),
        "differences_from_bm25": diffs.iter().map(|(name, n, r)| serde_json::json!({
            "rows": name, "ndcg10": [n.mean, n.low, n.high], "recall100": [r.mean, r.low, r.high],
        })).collect::<Vec<_>>(),
    });
    write_report(
        &a.out,
        &format!("\neval search: best nDCG@10 is {best}; "),
        &report,
        started,
    )
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

/// Options of `starling eval grounding`.
#[derive(clap::Args)]
pub struct EvalGroundingArgs {
    /// Corpus directory (every written post is indexed, hashtags kept).
    #[arg(long)]
    corpus: PathBuf,
    /// Model (run or exported directory): adds the hybrid rows.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Pooling of the model's embeddings.
    #[arg(long, default_value = crate::search_cmd::DEFAULT_POOLING)]
    pooling: String,
    /// A second corpus whose hashtags the index does not hold become questions whose right
    /// answer is to abstain.
    #[arg(long)]
    absent_from: Option<PathBuf>,
    /// Which hashtags the index holds to ask about.
    #[command(flatten)]
    tags: TagChoice,
    /// Tags it does not hold to ask about (from `--absent-from`).
    #[arg(long, default_value_t = 100)]
    absent: usize,
    /// Grounding posts per answer (the server's default is 3).
    #[arg(long, default_value_t = 3)]
    posts: usize,
    /// Work directory (its index is rebuilt each run).
    #[arg(long, default_value = "out/eval-grounding")]
    out: PathBuf,
}

/// Runs `starling eval grounding`.
pub fn grounding(a: &EvalGroundingArgs) -> Result<()> {
    let started = Instant::now();
    let posts = read_posts(&a.corpus)?;
    let present = hashtag_queries(&posts, a.tags.min_posts, a.tags.max_posts, a.tags.queries);
    anyhow::ensure!(
        !present.is_empty(),
        "{}: no hashtag is carried by {}..={} posts; nothing to ask about",
        a.corpus.display(),
        a.tags.min_posts,
        a.tags.max_posts
    );
    let absent = match &a.absent_from {
        None => Vec::new(),
        Some(other) => {
            let held: HashSet<String> = posts
                .iter()
                .flat_map(|p| p.entities.hashtags.iter().map(|h| h.text.to_lowercase()))
                .collect();
            let theirs = hashtag_queries(
                &read_posts(other)?,
                a.tags.min_posts,
                usize::MAX,
                usize::MAX,
            );
            let missing: Vec<_> = theirs
                .into_iter()
                .filter(|q| !held.contains(&q.tag))
                .collect();
            let step = (missing.len() as f64 / a.absent.max(1) as f64).max(1.0);
            (0..a.absent)
                .filter_map(|i| missing.get((i as f64 * step) as usize).cloned())
                .collect()
        }
    };
    let counts: HashMap<String, u64> = word_counts(&posts);
    let questions = grounding_questions(&present, &absent, &counts);
    println!(
        "eval grounding: {} posts (hashtags kept); {} tags the index holds ({}..={} posts each), {} it does not{}; {} posts per answer",
        posts.len(),
        present.len(),
        a.tags.min_posts,
        a.tags.max_posts,
        absent.len(),
        a.absent_from
            .as_ref()
            .map_or(String::new(), |p| format!(" (from {})", p.display())),
        a.posts
    );
    for q in questions.iter().take(4) {
        println!("  e.g. {:?} ({} relevant)", q.text, q.relevant.len());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let embedder = match &a.model {
        Some(m) => Some(load_embedder(m, &a.pooling)?),
        None => None,
    };
    let model = a.model.as_deref();
    let idx = build_eval_index(
        &posts,
        &a.out.join("index"),
        embedder
            .as_ref()
            .zip(model)
            .map(|(e, m)| (e as &dyn Embedder, m)),
        "indexed",
    )?;
    let mut rows: Vec<(Template, &str, GroundingScore)> = Vec::new();
    for template in [Template::Hashtag, Template::Words] {
        let mut row = |name, grounder, e: Option<&dyn Embedder>| -> Result<()> {
            let s = evaluate_grounding(&idx, &questions, template, grounder, a.posts, e)?;
            rows.push((template, name, s));
            Ok(())
        };
        row("any word, bm25 (before)", Grounder::AnyWord, None)?;
        row("tiered, bm25", Grounder::Tiered, None)?;
        if let Some(e) = &embedder {
            row("tiered, hybrid", Grounder::Tiered, Some(e as &dyn Embedder))?;
        }
    }
    println!("\n| template | grounding | precision@{} | abstained, tag held (wrong) | abstained, tag absent (right) | posts/answer |", a.posts);
    println!("|---|---|---|---|---|---|");
    for (t, name, s) in &rows {
        let absent = if s.absent > 0 {
            format!("{:.3}", s.abstained_absent)
        } else {
            "-".into()
        };
        println!(
            "| {} | {name} | {:.3} | {:.3} | {absent} | {:.2} |",
            t.name(),
            s.precision,
            s.abstained_present,
            s.posts
        );
    }
    let report = serde_json::json!({
        "corpus": a.corpus.display().to_string(),
        "model": a.model.as_ref().map(|m| m.display().to_string()),
        "absent_from": a.absent_from.as_ref().map(|m| m.display().to_string()),
        "posts": posts.len(),
        "tags_present": present.len(),
        "tags_absent": absent.len(),
        "rows": rows.iter().map(|(t, name, s)| serde_json::json!({
            "template": t.name(), "grounding": name, "precision": s.precision,
            "abstained_present": s.abstained_present, "abstained_absent": s.abstained_absent,
            "posts_per_answer": s.posts, "present": s.present, "absent": s.absent,
        })).collect::<Vec<_>>(),
    });
    write_report(&a.out, "\neval grounding: ", &report, started)
}

/// Options of `starling eval probes`.
#[derive(clap::Args)]
pub struct EvalProbesArgs {
    /// Model (run or exported directory) whose embeddings are probed.
    #[arg(long)]
    model: PathBuf,
    /// Pooling of the model's embeddings.
    #[arg(long, default_value = crate::search_cmd::DEFAULT_POOLING)]
    pooling: String,
    /// TweetEval's folder (one folder per task).
    #[arg(long, default_value = "../shared/data/tweeteval")]
    data: PathBuf,
    /// Tasks (comma-separated; default all seven).
    #[arg(long, value_delimiter = ',', default_values_t = starling_classify::tweeteval::Task::ALL.map(|t| t.name().to_string()))]
    tasks: Vec<String>,
    /// Most training examples per task or stance target (the first ones of the file).
    #[arg(long, default_value_t = 20_000)]
    max_train: usize,
    /// Where the report goes.
    #[arg(long, default_value = "out/eval-probes")]
    out: PathBuf,
}

/// Runs `starling eval probes`.
pub fn probes(a: &EvalProbesArgs) -> Result<()> {
    use starling_classify::tweeteval::{probe_task, read_task, Task};
    let started = Instant::now();
    let tasks: Vec<Task> = a
        .tasks
        .iter()
        .map(|t| {
            Task::parse(t).with_context(|| {
                format!(
                    "--tasks {t}: use emoji, emotion, hate, irony, offensive, sentiment, stance"
                )
            })
        })
        .collect::<Result<_>>()?;
    // Texts the embedder will see: train (capped), val and test; five folds of val more
    // where there is no train split.
    let mut total = 0usize;
    for &t in &tasks {
        for p in read_task(&a.data, t).with_context(|| format!("reading {}", a.data.display()))? {
            total += p.test.texts.len()
                + match &p.train {
                    Some(tr) => tr.texts.len().min(a.max_train) + p.val.texts.len(),
                    None => 6 * p.val.texts.len(),
                };
        }
    }
    let e = load_embedder(&a.model, &a.pooling)?;
    println!(
        "eval probes: {} on {} task(s) of {}; logistic regression (balanced classes, L2 in {:?} chosen on val by the task's metric), at most {} training posts per task or target",
        a.model.display(),
        tasks.len(),
        a.data.display(),
        starling_classify::tweeteval::L2_GRID,
        a.max_train
    );
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} texts embedded · {per_sec} · {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for &t in &tasks {
        bar.set_message(t.name());
        let row = probe_task(&a.data, t, &e, a.max_train, &mut |n| bar.inc(n as u64))
            .with_context(|| format!("probing {}", t.name()))?;
        // Printed around the bar (bar.println says nothing when the bar is hidden, as in a log).
        bar.suspend(|| {
            println!(
                "  {}: embeddings {:.1}, tf-idf {:.1} ({} train, {} test)",
                t.name(),
                100.0 * row.embeddings,
                100.0 * row.tfidf,
                row.train_examples,
                row.test_examples
            )
        });
        rows.push(row);
    }
    bar.finish_and_clear();
    println!("\n| task | metric | embeddings + LR | TF-IDF + LR | SVM (paper) | FastText (paper) | trained on |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} ({}) |",
            r.task.name(),
            r.task.metric(),
            100.0 * r.embeddings,
            100.0 * r.tfidf,
            r.task.svm(),
            r.task.fasttext(),
            r.trained_on,
            r.train_examples
        );
    }
    let n = rows.len().max(1) as f64;
    let avg = |f: &dyn Fn(&starling_classify::tweeteval::ProbeRow) -> f64| {
        rows.iter().map(f).sum::<f64>() / n
    };
    let (ae, at) = (avg(&|r| 100.0 * r.embeddings), avg(&|r| 100.0 * r.tfidf));
    let (asvm, aft) = (avg(&|r| r.task.svm()), avg(&|r| r.task.fasttext()));
    println!(
        "| average ({} tasks) | | {ae:.1} | {at:.1} | {asvm:.1} | {aft:.1} | |",
        rows.len()
    );
    let wins = rows.iter().filter(|r| r.embeddings > r.tfidf).count();
    println!(
        "\nembeddings beat TF-IDF + LR on {wins} of {} tasks; their average is {:+.1} points from the paper's SVM over the same tasks",
        rows.len(),
        ae - asvm
    );
    let report = serde_json::json!({
        "model": a.model.display().to_string(),
        "pooling": a.pooling,
        "max_train": a.max_train,
        "rows": rows.iter().map(|r| serde_json::json!({
            "task": r.task.name(), "metric": r.task.metric(), "embeddings": r.embeddings,
            "tfidf": r.tfidf, "svm_paper": r.task.svm() / 100.0, "fasttext_paper": r.task.fasttext() / 100.0,
            "train_examples": r.train_examples, "test_examples": r.test_examples, "trained_on": r.trained_on,
        })).collect::<Vec<_>>(),
        "average": {"embeddings": ae / 100.0, "tfidf": at / 100.0, "svm_paper": asvm / 100.0, "fasttext_paper": aft / 100.0},
    });
    write_report(&a.out, "eval probes: ", &report, started)
}
