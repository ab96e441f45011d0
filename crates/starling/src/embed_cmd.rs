//! `starling embed train-head`: a contrastive embedding head on the frozen model, trained on the
//! corpus's own pairs (hashtag words ↔ the post that carried the tag, parent ↔ reply), written into
//! the model directory so that every consumer of the embedder (search, ads, /v1/embeddings) uses it.

use crate::search_cmd::{load_embedder, spinner};
use anyhow::{bail, Context, Result};
use starling_corpus::{Corpus, Post, Verdict};
use starling_model::{HeadConfig, HeadPair};
use std::path::PathBuf;
use std::time::Instant;

/// Embedding subcommands.
#[derive(clap::Subcommand)]
pub enum EmbedCommand {
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

/// Runs an embed subcommand.
pub fn run(cmd: &EmbedCommand) -> Result<()> {
    match cmd {
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
    let mut held_out = 0usize;
    c.for_each_post(&mut |p| {
        if p.verdict == Verdict::HeldOut {
            held_out += 1;
        } else {
            posts.push(p);
        }
    })?;
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
        "embed: {} posts ({held_out} held-out test posts left out), {} pairs ({} hashtag ↔ post over {} tags, {} parent ↔ reply), {} texts to embed",
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
