//! The `starling` command: parses arguments, wires the stage crates together and reports.

mod ads_cmd;
mod embed_cmd;
mod eval_cmd;
mod launch_cmd;
mod model_cmd;
mod plan_cmd;
mod search_cmd;
mod serve_cmd;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use starling_corpus::dedup::NearDupConfig;
use starling_corpus::read::Format;
use starling_corpus::synth::{SynthConfig, SynthFlavor};
use starling_corpus::{CorpusBuilder, CorpusConfig, Manifest};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "starling",
    version,
    about = "Turn a platform's posts into its own language model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a deterministic synthetic post stream (labelled synthetic).
    Synth(SynthArgs),
    /// Read post dumps, curate them and write a corpus directory.
    Corpus(CorpusArgs),
    /// Train a byte-level BPE tokenizer on a corpus's kept training posts.
    Tokenizer {
        #[command(subcommand)]
        which: TokenizerCommand,
    },
    /// Encode a corpus's kept posts into train/val token shards with a manifest.
    Tokens(TokensArgs),
    /// The built-in default job: synth → corpus → tokenizer → tokens → train small → generate → index → search.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Posts to generate.
        #[arg(long, default_value_t = 20_000)]
        posts: u64,
        /// Training steps of the small model.
        #[arg(long, default_value_t = 150)]
        train_steps: u64,
        /// Address the demo serves on at the end.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Answer one request from the server and exit instead of serving until Ctrl-C.
        #[arg(long)]
        smoke: bool,
    },
    /// Serve the model and index: OpenAI-compatible API, search API, metrics and a web page.
    Serve(serve_cmd::ServeArgs),
    /// Train (or resume) a model on token shards.
    Train(model_cmd::TrainArgs),
    /// Start N local data-parallel workers (like torchrun) and restart them after a failure.
    Launch(launch_cmd::LaunchArgs),
    /// Continue a post with a trained model, streaming, and report tokens/s.
    Generate(model_cmd::GenerateArgs),
    /// Write a run's latest good checkpoint as an HF model directory.
    Export {
        /// Run directory.
        #[arg(long)]
        run: PathBuf,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Build a search index of a corpus.
    Index {
        #[command(subcommand)]
        which: search_cmd::IndexCommand,
    },
    /// Search an index with Twitter's advanced-search operators (bm25, dense or hybrid).
    Search(search_cmd::SearchArgs),
    /// Embeddings: train the contrastive head the embedder applies.
    Embed {
        #[command(subcommand)]
        which: embed_cmd::EmbedCommand,
    },
    /// Evaluations.
    Eval {
        #[command(subcommand)]
        which: EvalCommand,
    },
    /// Size a training run: FLOPs, days, cost, memory, layout, failures, data supply.
    Plan(plan_cmd::PlanArgs),
    /// Ads: inventory (advertisers, campaigns, groups, creatives), decisions, reports, simulation, brand safety.
    Ads {
        #[command(flatten)]
        db: ads_cmd::DbArg,
        #[command(subcommand)]
        which: ads_cmd::AdsCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: starling_bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum TokenizerCommand {
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

#[derive(Args)]
struct TokensArgs {
    /// Corpus directory.
    #[arg(long)]
    corpus: PathBuf,
    /// tokenizer.json (or a directory holding one).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Output token directory.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Hashtag recovery: nDCG@10 and recall@100 of bm25, dense and hybrid search.
    Search(eval_cmd::EvalSearchArgs),
    /// The bot rule on PAN 2019's labelled authors: fit on 80%, the corpus verdicts scored on 20%.
    Bots(eval_cmd::EvalBotsArgs),
}

#[derive(Args)]
struct SynthArgs {
    /// Output file (`.gz`/`.zst` compress); with `--archive`, a directory.
    #[arg(long, short)]
    out: PathBuf,
    /// Write one prolific author's archive instead: v1.1 JSON, one array per year, newest first.
    #[arg(long)]
    archive: bool,
    /// Days of the archive (20-30 posts a day, an occasional burst of 5-10 in a few minutes).
    #[arg(long, default_value_t = 1200)]
    days: u32,
    /// Number of posts.
    #[arg(long, default_value_t = 10_000)]
    posts: u64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// API shape to write.
    #[arg(long, value_enum, default_value_t = FlavorArg::V1)]
    flavor: FlavorArg,
    /// Share of lines written malformed (truncated, invalid UTF-8, wrong shape).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FlavorArg {
    V1,
    V2,
}

#[derive(Args)]
struct CorpusArgs {
    /// Input files or directories.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output corpus directory.
    #[arg(long, short)]
    out: PathBuf,
    /// Force an input format instead of sniffing.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// File of post ids (or `user:ID` lines) to remove everywhere.
    #[arg(long)]
    deletions: Vec<PathBuf>,
    /// Keep only these languages for training (comma-separated ISO codes).
    #[arg(long, value_delimiter = ',')]
    lang: Vec<String>,
    /// Near-duplicate Jaccard threshold (0 turns near-dup removal off).
    #[arg(long, default_value_t = 0.8)]
    near_dup: f64,
    /// Replace @mentions with a placeholder in training text.
    #[arg(long)]
    anonymize_mentions: bool,
    /// CSV column holding the text (adds to the defaults).
    #[arg(long)]
    csv_text: Option<String>,
    /// Validation share (newest posts).
    #[arg(long, default_value_t = 0.02)]
    val_fraction: f64,
    /// JSON config file (a full CorpusConfig); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Memory for sorting posts by time before curation, in MiB (sorted runs spill to disk past it).
    #[arg(long)]
    sort_memory_mb: Option<usize>,
    /// A bot model file (`starling eval bots --out`) instead of the built-in one.
    #[arg(long)]
    bot_model: Option<PathBuf>,
    /// Judge authors by timing only (no content model).
    #[arg(long)]
    no_bot_content: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Json,
    Archive,
    Csv,
    Text,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STARLING_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once (library errors often repeat their source's text).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Synth(a) if a.archive => {
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
            Ok(())
        }
        Command::Synth(a) => {
            let cfg = synth_config(&a);
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
        Command::Corpus(a) => {
            let config = corpus_config(&a)?;
            let mut builder = CorpusBuilder::new(config, a.inputs.clone());
            for d in &a.deletions {
                builder = builder.deletion_list(d.clone());
            }
            let m = build_with_progress(&builder, &a.out)?;
            print_summary(&m, &a.out);
            Ok(())
        }
        Command::Demo {
            out,
            posts,
            train_steps,
            addr,
            smoke,
        } => {
            let started = Instant::now();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let stream = out.join("synth-v1.jsonl.zst");
            let cfg = SynthConfig {
                posts,
                malformed: 0.002,
                ..SynthConfig::default()
            };
            let t = Instant::now();
            let n = starling_corpus::synth::write_file(&cfg, &stream)?;
            println!(
                "synth: {} posts (seed {}) → {} in {:.1}s [SYNTHETIC]",
                n.posts,
                cfg.seed,
                stream.display(),
                t.elapsed().as_secs_f64()
            );
            let corpus_dir = out.join("corpus");
            let builder = CorpusBuilder::new(CorpusConfig::default(), vec![stream]);
            let m = build_with_progress(&builder, &corpus_dir)?;
            print_summary(&m, &corpus_dir);
            let tok = out.join("tokenizer.json");
            train_tokenizer(&corpus_dir, 4096, &tok)?;
            encode_tokens(&corpus_dir, &tok, &out.join("tokens"))?;
            let run = out.join("run");
            let _ = std::fs::remove_dir_all(&run);
            model_cmd::train(&model_cmd::TrainArgs {
                tokens: out.join("tokens"),
                out: run.clone(),
                preset: "small".into(),
                steps: train_steps,
                batch: 8,
                accum: 1,
                ctx: Some(256),
                lr: 2e-3,
                warmup: 20,
                eval_every: 50,
                ckpt_every: 100,
                device: "cpu".into(),
                dtype: "auto".into(),
                init: None,
                keep: 2,
                eval_batches: 8,
                peak_flops: None,
                max_minutes: None,
                threads: None,
                seed: 1,
                shard_optimizer: false,
                collective_timeout_s: 300.0,
            })?;
            for prompt in ["the weather today", "just watched the game and"] {
                model_cmd::generate_cmd(&model_cmd::GenerateArgs {
                    model: run.clone(),
                    prompt: prompt.into(),
                    max_tokens: 40,
                    temperature: 0.8,
                    top_k: 50,
                    top_p: 0.95,
                    repetition_penalty: 1.1,
                    stop: Vec::new(),
                    seed: 0,
                })?;
            }
            let index = out.join("index");
            let _ = std::fs::remove_dir_all(&index);
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(out.join(format!("ads.db{ext}")));
            }
            search_cmd::index(&search_cmd::IndexCommand::Build {
                corpus: corpus_dir.clone(),
                out: index.clone(),
                model: None,
                pooling: search_cmd::DEFAULT_POOLING.into(),
            })?;
            search_cmd::search(&search_cmd::SearchArgs {
                index: index.clone(),
                mode: "bm25".into(),
                order: "top".into(),
                limit: 3,
                model: None,
                json: false,
                query: vec!["#nba".into(), "-filter:replies".into()],
            })?;
            println!(
                "demo: done in {:.0}s [SYNTHETIC]: corpus {}, tokens {}, run {} (loss.png, metrics.jsonl, checkpoints), index {}",
                started.elapsed().as_secs_f64(),
                corpus_dir.display(),
                out.join("tokens").display(),
                run.display(),
                index.display()
            );
            serve_cmd::serve(&serve_cmd::ServeArgs {
                model: run.clone(),
                index: Some(index),
                addr,
                api_keys: None,
                device: "cpu".into(),
                max_batch: None,
                max_queue: 256,
                timeout_s: 120.0,
                grounding: 3,
                header_timeout_s: 10.0,
                body_timeout_s: 30.0,
                max_connections: 1024,
                name: Some("starling-demo".into()),
                threads: None,
                smoke,
                ads_db: Some(out.join("ads.db").display().to_string()),
                ads_safety: None,
            })
        }
        Command::Tokenizer {
            which: TokenizerCommand::Train { corpus, vocab, out },
        } => {
            let path = if out.is_dir() || out.extension().is_none() {
                out.join("tokenizer.json")
            } else {
                out
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            train_tokenizer(&corpus, vocab, &path)
        }
        Command::Tokens(a) => {
            let tok = if a.tokenizer.is_dir() {
                a.tokenizer.join("tokenizer.json")
            } else {
                a.tokenizer.clone()
            };
            encode_tokens(&a.corpus, &tok, &a.out)
        }
        Command::Index { which } => search_cmd::index(&which),
        Command::Search(a) => search_cmd::search(&a),
        Command::Serve(a) => serve_cmd::serve(&a),
        Command::Embed { which } => embed_cmd::run(&which),
        Command::Eval {
            which: EvalCommand::Search(a),
        } => eval_cmd::search(&a),
        Command::Eval {
            which: EvalCommand::Bots(a),
        } => eval_cmd::bots(&a),
        Command::Plan(a) => plan_cmd::run(&a),
        Command::Ads { db, which } => ads_cmd::run(&db, &which),
        Command::Train(a) => model_cmd::train(&a),
        Command::Launch(a) => launch_cmd::launch(&a),
        Command::Generate(a) => model_cmd::generate_cmd(&a),
        Command::Export { run, out } => model_cmd::export(&run, &out),
        Command::Bench { which } => starling_bench::run(&which),
    }
}

fn train_tokenizer(corpus: &std::path::Path, vocab: usize, path: &std::path::Path) -> Result<()> {
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

fn encode_tokens(
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
    Ok(c)
}

fn build_with_progress(builder: &CorpusBuilder, out: &std::path::Path) -> Result<Manifest> {
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

fn print_summary(m: &Manifest, out: &std::path::Path) {
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
