//! `starling embed train`: the whole model fine-tuned contrastively into an embedder of its own
//! (`<model>/embedder/`); `starling embed train-head`: a linear head on the frozen model. Both
//! learn from the corpus's own pairs (hashtag words ↔ the post that carried the tag, parent ↔
//! reply) and are found by every consumer of the embedder (search, ads, /v1/embeddings).

use crate::search_cmd::{load_embedder, spinner};
use anyhow::{bail, Context, Result};
use starling_corpus::{Corpus, Post};
use starling_model::{HeadConfig, HeadPair};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Embedding subcommands.
#[derive(clap::Subcommand)]
pub enum EmbedCommand {
    /// Fine-tune the whole model contrastively into an embedder (written to <model>/embedder/).
    Train(TrainArgs),
    /// Train the embedding head on a corpus's hashtag and reply pairs (held-out test posts never used).
    TrainHead(TrainHeadArgs),
}

/// Options of `starling embed train-head`.
#[derive(clap::Args)]
pub struct TrainHeadArgs {
    /// Model (run or exported directory); the head is written into it.
    #[arg(long)]
    model: PathBuf,
    /// Corpus whose posts give the pairs.
    #[arg(long)]
    corpus: PathBuf,
    /// Pooling under the head.
    #[arg(long, default_value = crate::search_cmd::DEFAULT_POOLING)]
    pooling: String,
    /// Most posts per hashtag (so a few huge tags do not dominate).
    #[arg(long, default_value_t = 50)]
    per_tag: usize,
    /// Most pairs in all (each needs the model's forward pass).
    #[arg(long, default_value_t = 40_000)]
    max_pairs: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Options of `starling embed train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Model (run or exported directory) to start from.
    #[arg(long)]
    model: PathBuf,
    /// Corpus whose posts give the pairs (its held-out test posts are never used).
    #[arg(long)]
    corpus: PathBuf,
    /// Corpora whose hashtags must not be trained on (the evaluation's): every pair of a tag
    /// they carry is dropped.
    #[arg(long, value_delimiter = ',')]
    exclude_tags_of: Vec<PathBuf>,
    /// Where the embedder goes (default `<model>/embedder`, where it is found automatically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pooling of the hidden states.
    #[arg(long, default_value = crate::search_cmd::DEFAULT_POOLING)]
    pooling: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Pairs per step (each from a different hashtag or thread).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate (AdamW; warm-up over the first tenth of the steps).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Starting temperature (learnt).
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Most tokens per text.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Most posts per hashtag.
    #[arg(long, default_value_t = 50)]
    per_tag: usize,
    /// Most pairs in all.
    #[arg(long, default_value_t = 40_000)]
    max_pairs: usize,
    /// No BM25-mined hard negatives (in-batch negatives only).
    #[arg(long)]
    no_hard_negatives: bool,
    /// Measure held-out top-1 every this many steps.
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// Most held-out pairs measured each time.
    #[arg(long, default_value_t = 1024)]
    max_val_pairs: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train only this many top blocks (and the final norm); every weight when absent.
    #[arg(long)]
    train_blocks: Option<usize>,
    /// Train a linear projection to this many dimensions with the model (saved as the
    /// embedder's head; with `--train-blocks`, the "top blocks plus a projection" variant).
    #[arg(long)]
    projection: Option<usize>,
    /// Checkpoint every this many steps (and at the end, or when stopped); 0 never.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Continue from the checkpoint in the output directory (same pairs and settings; `--steps`
    /// may grow).
    #[arg(long)]
    resume: bool,
    /// Stop after this many minutes (checkpointed; `--resume` continues) and write the embedder
    /// as it stands.
    #[arg(long)]
    max_minutes: Option<f64>,
}

/// Hashtags (lower-cased) carried by the posts of a corpus.
fn tags_of(corpus: &std::path::Path) -> Result<std::collections::HashSet<String>> {
    let mut tags = std::collections::HashSet::new();
    Corpus::open(corpus)?.for_each_post(&mut |p| {
        tags.extend(p.entities.hashtags.iter().map(|h| h.text.to_lowercase()));
    })?;
    Ok(tags)
}

/// Hard negatives for hashtag pairs: the best BM25 match of the tag's words, hashtags stripped,
/// among posts that did not carry the tag (`None` where there is no such match).
fn hard_negatives(
    posts: &[Post],
    queries: &[(String, String)],
    work: &std::path::Path,
) -> Result<Vec<Option<String>>> {
    let mut stripped: Vec<Post> = posts.to_vec();
    stripped
        .iter_mut()
        .for_each(starling_search::eval::strip_hashtags);
    let texts: std::collections::HashMap<&str, &str> = stripped
        .iter()
        .map(|p| (p.id.as_str(), p.text.as_str()))
        .collect();
    let tags: std::collections::HashMap<&str, Vec<String>> = posts
        .iter()
        .map(|p| {
            let t = p
                .entities
                .hashtags
                .iter()
                .map(|h| h.text.to_lowercase())
                .collect();
            (p.id.as_str(), t)
        })
        .collect();
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    let opts = starling_search::BuildOptions {
        embedder: None,
        model: None,
        // The same posts give the same hard negatives on every run.
        reproducible: true,
    };
    starling_search::build_posts(&stripped, "hard-negatives", work, &opts, &mut |_| {})?;
    let idx = starling_search::PostIndex::open(work)?;
    let mut out = Vec::with_capacity(queries.len());
    for (tag, words) in queries {
        let query = words
            .split_whitespace()
            .filter(|w| w.chars().all(|c| c.is_alphanumeric()))
            .collect::<Vec<_>>()
            .join(" OR ");
        let hits = if query.is_empty() {
            Vec::new()
        } else {
            idx.search(&query, starling_search::SearchOrder::Top, 10)
                .unwrap_or_default()
        };
        out.push(
            hits.iter()
                .find(|h| !tags.get(h.id.as_str()).is_some_and(|t| t.contains(tag)))
                .and_then(|h| texts.get(h.id.as_str()))
                .filter(|t| t.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
                .map(|t| t.to_string()),
        );
    }
    std::fs::remove_dir_all(work).ok();
    Ok(out)
}

/// The training pairs of `a.corpus`'s kept posts (the excluded corpora's tags make none), each
/// with its BM25 hard negative unless turned off; counts of each kind printed.
fn contrast_pairs(a: &TrainArgs, out: &Path) -> Result<Vec<starling_model::ContrastPair>> {
    let mut excluded = std::collections::HashSet::new();
    for c in &a.exclude_tags_of {
        excluded.extend(tags_of(c).with_context(|| format!("reading {}", c.display()))?);
    }
    let mut posts: Vec<Post> = Vec::new();
    let mut dropped = 0usize;
    // Kept posts only: filtered ones (bots, spam, duplicates, …) and held-out test posts are
    // written for the audit, never trained on.
    let passed = Corpus::open(&a.corpus)?.for_each_kept(&mut |p| {
        dropped += p
            .entities
            .hashtags
            .iter()
            .filter(|h| excluded.contains(&h.text.to_lowercase()))
            .count();
        posts.push(p);
    })?;
    // Tags the evaluation asks about make no pair (and are stripped from every text).
    let mined =
        starling_search::pairs::mine_pairs_except(&posts, a.max_pairs, a.per_tag, &excluded);
    if mined.pairs.len() < 100 {
        bail!(
            "{}: only {} pairs (hashtag or reply) in its posts; an embedder needs more",
            a.corpus.display(),
            mined.pairs.len()
        );
    }
    // Which tag each hashtag pair came from (by its words), for its hard negative.
    let mut tag_of_words: std::collections::HashMap<String, String> = Default::default();
    for p in &posts {
        for h in &p.entities.hashtags {
            tag_of_words
                .entry(starling_search::eval::tag_words(&h.text))
                .or_insert_with(|| h.text.to_lowercase());
        }
    }
    let negatives = if a.no_hard_negatives {
        vec![None; mined.pairs.len()]
    } else {
        let bar = spinner("mining hard negatives (BM25)");
        let queries: Vec<(String, String)> = mined
            .pairs
            .iter()
            .map(|p| {
                let words = mined.texts[p.query].clone();
                match tag_of_words.get(&words) {
                    Some(tag) if p.group < 1_000_000_000 => (tag.clone(), words),
                    _ => (String::new(), String::new()),
                }
            })
            .collect();
        let n = hard_negatives(&posts, &queries, &out.with_extension("bm25-tmp"))?;
        bar.finish_and_clear();
        n
    };
    let pairs: Vec<starling_model::ContrastPair> = mined
        .pairs
        .iter()
        .zip(negatives)
        .map(|(p, neg)| starling_model::ContrastPair {
            query: mined.texts[p.query].clone(),
            doc: mined.texts[p.doc].clone(),
            hard_negative: neg,
            group: p.group,
        })
        .collect();
    println!(
        "embed train: {} kept posts ({passed} filtered or held-out posts left out; {dropped} uses of the {} tags of {} excluded corpora make no pair), {} pairs: {} hashtag ↔ post over {} tags, {} parent ↔ reply, {} quoted ↔ quote ({} reply/quote pairs held out for reply retrieval); {} with a BM25 hard negative",
        posts.len(),
        excluded.len(),
        a.exclude_tags_of.len(),
        pairs.len(),
        mined.hashtag_pairs,
        mined.tags,
        mined.reply_pairs,
        mined.quote_pairs,
        mined.held_out_threads,
        pairs.iter().filter(|p| p.hard_negative.is_some()).count()
    );
    Ok(pairs)
}

/// Prints the embedder's training curve as a table and plots it to `<out>/embedder.png`.
fn print_curve(report: &starling_model::ContrastReport, out: &Path, model: &Path) -> Result<()> {
    println!("\n| step | train loss | held-out loss | held-out top-1 |");
    println!("|---|---|---|---|");
    for c in &report.curve {
        println!(
            "| {} | {} | {:.3} | {:.3} |",
            c.step,
            c.train_loss.map_or("-".into(), |l| format!("{l:.3}")),
            c.val_loss,
            c.val_top1
        );
    }
    let png = out.join("embedder.png");
    let points = |f: &dyn Fn(&starling_model::CurvePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .curve
            .iter()
            .filter_map(|c| f(c).map(|y| (c.step as f64, y)))
            .collect()
    };
    starling_train::plot::curve_png(
        &png,
        &format!("embed train · {}", model.display()),
        &[
            ("train InfoNCE", points(&|c| c.train_loss)),
            ("held-out InfoNCE", points(&|c| Some(c.val_loss))),
        ],
        &("held-out top-1", points(&|c| Some(c.val_top1))),
    )
    .map_err(anyhow::Error::msg)?;
    println!("embed train: curve → {}", png.display());
    Ok(())
}

fn train(a: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let md = starling_train::ModelDir::open(&a.model)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| md.dir.join(starling_model::EMBEDDER_DIR));
    let pooling = starling_model::Pooling::parse(&a.pooling)
        .with_context(|| format!("--pooling {}: use mean, weighted-mean or last", a.pooling))?;
    let pairs = contrast_pairs(a, &out)?;
    let cfg = starling_model::ContrastConfig {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        temperature: a.temperature,
        max_tokens: a.max_tokens,
        pooling,
        eval_every: a.eval_every,
        max_val_pairs: a.max_val_pairs,
        seed: a.seed,
        train_blocks: a.train_blocks,
        projection: a.projection,
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        ..Default::default()
    };
    let budget = a
        .max_minutes
        .map(|m| std::time::Duration::from_secs_f64(m * 60.0));
    let clock = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(a.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} step {pos}/{len} · loss {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = starling_model::train_embedder(
        &md.dir,
        &md.weights,
        &pairs,
        &cfg,
        &out,
        &mut |step, loss| {
            bar.set_position(step as u64);
            bar.set_message(format!("{loss:.3}"));
            match budget {
                Some(b) if clock.elapsed() >= b => std::ops::ControlFlow::Break(()),
                _ => std::ops::ControlFlow::Continue(()),
            }
        },
    )
    .context("training the embedder")?;
    bar.finish_and_clear();
    if let Some(from) = report.resumed_from {
        println!("embed train: resumed from the checkpoint at step {from}");
    }
    if report.steps < report.target_steps {
        println!(
            "embed train: stopped at the {} minute budget after {} of {} steps (checkpointed in {}; the same command with --resume continues)",
            a.max_minutes.unwrap_or_default(),
            report.steps,
            report.target_steps,
            out.join(starling_model::EMBEDDER_CHECKPOINT_DIR).display()
        );
    }
    print_curve(&report, &out, &md.dir)?;
    println!(
        "\nembed train: held-out top-1 {:.3} → {:.3} over {} held-out groups ({} pairs, batches of {}); temperature {:.3}; {} steps in {:.0}s → {} (found automatically under {}; indexes built before must be rebuilt)",
        report.val_top1_before,
        report.val_top1_after,
        report.val_groups,
        report.val_pairs,
        a.batch,
        report.temperature,
        report.steps,
        started.elapsed().as_secs_f64(),
        out.display(),
        md.dir.display()
    );
    Ok(())
}

/// Runs an embed subcommand.
pub fn run(cmd: &EmbedCommand) -> Result<()> {
    match cmd {
        EmbedCommand::Train(a) => train(a),
        EmbedCommand::TrainHead(a) => train_head(a),
    }
}

fn train_head(a: &TrainHeadArgs) -> Result<()> {
    let started = Instant::now();
    let c = Corpus::open(&a.corpus)?;
    let dir = starling_train::ModelDir::open(&a.model)?.dir;
    let old_head = dir.join(starling_model::head::HEAD_FILE);
    if old_head.exists() {
        // The pairs are embedded by the model alone; the old head is replaced at the end.
        eprintln!("embed: {} exists and will be replaced", old_head.display());
    }
    let mut posts: Vec<Post> = Vec::new();
    let passed = c.for_each_kept(&mut |p| posts.push(p))?;
    let mined = starling_search::pairs::mine_pairs(&posts, a.max_pairs, a.per_tag);
    let pairs: Vec<HeadPair> = mined
        .pairs
        .iter()
        .map(|p| HeadPair {
            query: p.query,
            doc: p.doc,
            group: p.group,
        })
        .collect();
    let texts = &mined.texts;
    if pairs.len() < 100 {
        bail!(
            "{}: only {} pairs (hashtag or reply) in its posts; an embedding head needs more",
            a.corpus.display(),
            pairs.len()
        );
    }
    println!(
        "embed: {} kept posts ({passed} filtered or held-out posts left out), {} pairs ({} hashtag ↔ post over {} tags, {} parent ↔ reply), {} texts to embed",
        posts.len(),
        pairs.len(),
        mined.hashtag_pairs,
        mined.tags,
        mined.reply_pairs,
        texts.len()
    );
    let embedder = load_embedder(&a.model, &a.pooling)?;
    let bar = spinner("embed");
    let t = Instant::now();
    let mut parts = Vec::new();
    let mut done = 0usize;
    for chunk in texts.chunks(512) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        parts.push(embedder.pooled(&refs)?);
        done += chunk.len();
        bar.set_message(format!(
            "{done}/{} texts · {:.0}/s",
            texts.len(),
            done as f64 / t.elapsed().as_secs_f64().max(1e-9)
        ));
        bar.tick();
    }
    bar.finish_and_clear();
    let vectors = tch::Tensor::cat(&parts, 0);
    println!(
        "embed: {} texts embedded in {:.0}s",
        texts.len(),
        t.elapsed().as_secs_f64()
    );
    let cfg = HeadConfig {
        steps: a.steps,
        seed: a.seed,
        ..HeadConfig::default()
    };
    let t = Instant::now();
    let (head, report) = starling_model::train_head(&vectors, &pairs, &cfg)
        .context("training the embedding head")?;
    starling_model::head::save_head(&dir, &head, &report)
        .with_context(|| format!("writing the head into {}", dir.display()))?;
    println!(
        "embed: head trained in {:.0}s ({} steps): held-out InfoNCE {:.3} → {:.3}, in-batch top-1 {:.3} → {:.3} over {} held-out groups",
        t.elapsed().as_secs_f64(),
        report.steps,
        report.val_loss_before,
        report.val_loss_after,
        report.val_top1_before,
        report.val_top1_after,
        report.val_groups
    );
    println!(
        "embed: done in {:.0}s → {} (indexes built before it must be rebuilt: the embedder id changed)",
        started.elapsed().as_secs_f64(),
        dir.join(starling_model::head::HEAD_FILE).display()
    );
    Ok(())
}
