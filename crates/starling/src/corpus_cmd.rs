//! `starling synth`, `corpus`, `tokenizer train` and `tokens`: posts in, a curated corpus and its
//! token shards out, with progress and a summary.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use starling_corpus::dedup::NearDupConfig;
use starling_corpus::read::Format;
use starling_corpus::synth::{SynthConfig, SynthFlavor};
use starling_corpus::{CorpusBuilder, CorpusConfig, Manifest};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tokenizer subcommands.
#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a tokenizer.
    Train {
        /// Corpus directory.
        #[arg(long)]
        corpus: PathBuf,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 8192)]
        vocab: usize,
        /// Output: a tokenizer.json path, or a directory to write it into.
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Options of `starling tokens`.
#[derive(Args)]
pub struct TokensArgs {
    /// Corpus directory.
    #[arg(long)]
    pub corpus: PathBuf,
    /// tokenizer.json (or a directory holding one).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output token directory.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Options of `starling synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Output file (`.gz`/`.zst` compress); with `--archive`, a directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Write one prolific author's archive instead: v1.1 JSON, one array per year, newest first.
    #[arg(long)]
    pub archive: bool,
    /// Days of the archive (20-30 posts a day, an occasional burst of 5-10 in a few minutes).
    #[arg(long, default_value_t = 1200)]
    pub days: u32,
    /// Number of posts.
    #[arg(long, default_value_t = 10_000)]
    pub posts: u64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// API shape to write.
    #[arg(long, value_enum, default_value_t = FlavorArg::V1)]
    pub flavor: FlavorArg,
    /// Share of lines written malformed (truncated, invalid UTF-8, wrong shape).
    #[arg(long, default_value_t = 0.0)]
    pub malformed: f64,
}

/// API shape of synthetic posts.
#[derive(Clone, Copy, ValueEnum)]
pub enum FlavorArg {
    V1,
    V2,
}

/// Options of `starling corpus`.
#[derive(Args)]
pub struct CorpusArgs {
    /// Input files or directories.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output corpus directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Force an input format instead of sniffing.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// File of post ids (or `user:ID` lines) to remove everywhere.
    #[arg(long)]
    pub deletions: Vec<PathBuf>,
    /// Keep only these languages for training (comma-separated ISO codes).
    #[arg(long, value_delimiter = ',')]
    pub lang: Vec<String>,
    /// Near-duplicate Jaccard threshold (0 turns near-dup removal off).
    #[arg(long, default_value_t = 0.8)]
    pub near_dup: f64,
    /// Replace @mentions with a placeholder in training text.
    #[arg(long)]
    pub anonymize_mentions: bool,
    /// CSV column holding the text (adds to the defaults).
    #[arg(long)]
    pub csv_text: Option<String>,
    /// Validation share (newest posts).
    #[arg(long, default_value_t = 0.02)]
    pub val_fraction: f64,
    /// JSON config file (a full CorpusConfig); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Memory for sorting posts by time before curation, in MiB (sorted runs spill to disk past it).
    #[arg(long)]
    pub sort_memory_mb: Option<usize>,
    /// A bot model file (`starling eval bots --out`) instead of the built-in one.
    #[arg(long)]
    pub bot_model: Option<PathBuf>,
    /// Judge authors by timing only (no content model).
    #[arg(long)]
    pub no_bot_content: bool,
    /// Train only on these authors' posts: a file of author ids or handles, one per line (more
    /// columns after a tab or comma are ignored; posts that name no author are not judged by it).
    #[arg(long)]
    pub authors: Option<PathBuf>,
    /// Apply `--authors` only to posts of these inputs (files, or directories holding them);
    /// other inputs are kept whole.
    #[arg(long, requires = "authors")]
    pub authors_for: Vec<PathBuf>,
}

/// An input format forced instead of sniffed.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Json,
    Archive,
    Csv,
    Text,
}

/// Runs `starling synth` (a stream, or with `--archive` one author's yearly arrays).
pub fn synth(a: &SynthArgs) -> Result<()> {
    if a.archive {
        let cfg = starling_corpus::synth::ArchiveConfig {
            days: a.days,
            seed: a.seed,
            ..Default::default()
        };
        let s = starling_corpus::synth::write_archive(&cfg, &a.out)
            .with_context(|| format!("writing {}", a.out.display()))?;
        println!(
            "synth: archive of {} posts ({} retweets, {} bursts) in {} files → {} [SYNTHETIC]",
            s.posts,
            s.retweets,
            s.bursts,
            s.files.len(),
            a.out.display()
        );
        return Ok(());
    }
    let cfg = synth_config(a);
    let t = Instant::now();
    let n = starling_corpus::synth::write_file(&cfg, &a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "synth: {} posts (seed {}, {}) → {} in {:.1}s [SYNTHETIC]",
        n.posts,
        cfg.seed,
        flavor_name(cfg.flavor),
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `starling corpus`.
pub fn corpus(a: &CorpusArgs) -> Result<()> {
    let config = corpus_config(a)?;
    let mut builder = CorpusBuilder::new(config, a.inputs.clone());
    for d in &a.deletions {
        builder = builder.deletion_list(d.clone());
    }
    let m = build_with_progress(&builder, &a.out)?;
    print_summary(&m, &a.out);
    Ok(())
}

/// Runs `starling tokenizer train` (`out`: a tokenizer.json path or a directory for one).
pub fn tokenizer(corpus: &Path, vocab: usize, out: &Path) -> Result<()> {
    let path = if out.is_dir() || out.extension().is_none() {
        out.join("tokenizer.json")
    } else {
        out.to_path_buf()
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    train_tokenizer(corpus, vocab, &path)
}

/// Runs `starling tokens`.
pub fn tokens(a: &TokensArgs) -> Result<()> {
    let tok = if a.tokenizer.is_dir() {
        a.tokenizer.join("tokenizer.json")
    } else {
        a.tokenizer.clone()
    };
    encode_tokens(&a.corpus, &tok, &a.out)
}

/// Trains a tokenizer on a corpus and reports it.
pub fn train_tokenizer(
    corpus: &std::path::Path,
    vocab: usize,
    path: &std::path::Path,
) -> Result<()> {
    let t = Instant::now();
    let tok = starling_tokens::train_tokenizer(corpus, vocab, path)
        .with_context(|| format!("training a tokenizer on {}", corpus.display()))?;
    println!(
        "tokenizer: {} tokens (byte-level BPE) → {} in {:.1}s",
        tok.get_vocab_size(true),
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Encodes a corpus into token shards and reports it.
pub fn encode_tokens(
    corpus: &std::path::Path,
    tokenizer: &std::path::Path,
    out: &std::path::Path,
) -> Result<()> {
    let m = starling_tokens::encode_corpus(
        corpus,
        tokenizer,
        out,
        &starling_tokens::EncodeConfig::default(),
    )
    .with_context(|| format!("encoding {} into {}", corpus.display(), out.display()))?;
    println!(
        "tokens: train {} tokens in {} documents ({} posts), val {} tokens in {} documents; {:.0} tokens/s; {} shards ({:?}) → {}",
        m.tokens["train"], m.documents["train"], m.posts["train"], m.tokens["val"], m.documents["val"], m.tokens_per_s, m.shards.len(), m.dtype, out.display()
    );
    Ok(())
}

fn flavor_name(f: SynthFlavor) -> &'static str {
    match f {
        SynthFlavor::V1 => "v1.1",
        SynthFlavor::V2 => "v2",
    }
}

fn synth_config(a: &SynthArgs) -> SynthConfig {
    SynthConfig {
        posts: a.posts,
        seed: a.seed,
        flavor: match a.flavor {
            FlavorArg::V1 => SynthFlavor::V1,
            FlavorArg::V2 => SynthFlavor::V2,
        },
        malformed: a.malformed,
        ..SynthConfig::default()
    }
}

fn corpus_config(a: &CorpusArgs) -> Result<CorpusConfig> {
    let mut c: CorpusConfig = match &a.config {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => CorpusConfig::default(),
    };
    c.read.format = a.format.map(|f| match f {
        FormatArg::Json => Format::TwitterJson,
        FormatArg::Archive => Format::Archive,
        FormatArg::Csv => Format::Csv,
        FormatArg::Text => Format::Text,
    });
    if !a.lang.is_empty() {
        c.curate.languages = a.lang.clone();
    }
    c.curate.near_dup = (a.near_dup > 0.0).then(|| NearDupConfig {
        threshold: a.near_dup,
        ..NearDupConfig::default()
    });
    c.curate.normalize.anonymize_mentions |= a.anonymize_mentions;
    if let Some(col) = &a.csv_text {
        c.read.csv.text.insert(0, col.clone());
    }
    c.val_fraction = a.val_fraction;
    if let Some(mb) = a.sort_memory_mb {
        c.sort_memory_mb = mb;
    }
    if let Some(m) = &a.bot_model {
        c.curate.bots.model = Some(m.display().to_string());
    }
    c.curate.bots.content &= !a.no_bot_content;
    if let Some(f) = &a.authors {
        c.curate.author_list = Some(f.clone());
        c.curate.author_list_inputs = a.authors_for.clone();
    }
    Ok(c)
}

/// Builds a corpus with a spinner; returns its manifest.
pub fn build_with_progress(builder: &CorpusBuilder, out: &std::path::Path) -> Result<Manifest> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} corpus {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let t = Instant::now();
    let m = builder
        .build(out, &mut |p| {
            let rate = p.posts as f64 / t.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "file {}/{} · {} posts · {:.0} posts/s",
                p.files_done, p.files_total, p.posts, rate
            ));
            bar.tick();
        })
        .with_context(|| format!("building corpus in {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "corpus: {} posts in {:.1}s",
        m.counts.read,
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// Prints the corpus summary (counts that add up, split, automation, PII).
pub fn print_summary(m: &Manifest, out: &std::path::Path) {
    let c = &m.counts;
    println!(
        "  read        {:>10}{}",
        c.read,
        if m.synthetic { "  [SYNTHETIC]" } else { "" }
    );
    println!("  kept        {:>10}", c.kept);
    for (k, v) in &c.filtered {
        println!("  filtered    {:>10}  {k}", v);
    }
    println!("  quarantined {:>10}", c.quarantined);
    println!(
        "  read = kept + filtered + quarantined: {}",
        if c.balanced() { "yes" } else { "NO" }
    );
    if !c.notices.is_empty() {
        println!(
            "  non-post records: {}",
            c.notices
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "  split: {} train {} / val {}",
        m.split.method, m.split.train, m.split.val
    );
    println!(
        "  automation: {} of {} authors judged automated ({} posts){}",
        m.bots.authors_flagged,
        m.bots.authors_profiled,
        m.bots.posts_of_flagged,
        m.bots
            .top
            .first()
            .map(|b| format!("; most posts: {} ({}, {})", b.author, b.posts, b.reason))
            .unwrap_or_default()
    );
    println!(
        "  pii scrubbed: {} emails, {} phones; {} posts deleted",
        m.stats.emails_scrubbed,
        m.stats.phones_scrubbed,
        m.lineage.deleted_posts.len()
    );
    println!(
        "  → {} ({} shards, manifest.json, quarantine.jsonl, data-card.md)",
        out.display(),
        m.shards.len()
    );
}
