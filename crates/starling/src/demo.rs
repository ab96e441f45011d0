//! `starling demo`: the built-in default job, each step the command a user would type, with its
//! defaults: synth → corpus → tokenizer → tokens → train small → generate → index → search → serve.

use crate::{corpus_cmd, model_cmd, search_cmd, serve_cmd};
use anyhow::{Context, Result};
use clap::Parser;
use starling_corpus::synth::SynthConfig;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `starling demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Posts to generate.
    #[arg(long, default_value_t = 20_000)]
    pub posts: u64,
    /// Training steps of the small model.
    #[arg(long, default_value_t = 150)]
    pub train_steps: u64,
    /// Address the demo serves on at the end.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Answer one request from the server and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub smoke: bool,
}

/// A subcommand's options as its command line would give them (its defaults for the rest).
fn args<T: clap::Args>(argv: &[&str]) -> Result<T> {
    #[derive(Parser)]
    struct Line<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    let line = Line::<T>::try_parse_from(std::iter::once("starling").chain(argv.iter().copied()))
        .with_context(|| format!("demo step arguments {argv:?}"))?;
    Ok(line.inner)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs the demo.
pub fn run(a: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stream = out.join("synth-v1.jsonl.zst");
    let cfg = SynthConfig {
        posts: a.posts,
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
    let corpus = out.join("corpus");
    let m = corpus_cmd::build_with_progress(
        &CorpusBuilder::new(CorpusConfig::default(), vec![stream]),
        &corpus,
    )?;
    corpus_cmd::print_summary(&m, &corpus);
    let (tok, tokens, run, index) = (
        out.join("tokenizer.json"),
        out.join("tokens"),
        out.join("run"),
        out.join("index"),
    );
    corpus_cmd::train_tokenizer(&corpus, 4096, &tok)?;
    corpus_cmd::encode_tokens(&corpus, &tok, &tokens)?;
    let _ = std::fs::remove_dir_all(&run);
    let steps = a.train_steps.to_string();
    model_cmd::train(&args(&[
        "--tokens",
        &s(&tokens),
        "--out",
        &s(&run),
        "--preset",
        "small",
        "--steps",
        &steps,
        "--batch",
        "8",
        "--ctx",
        "256",
        "--lr",
        "2e-3",
        "--warmup",
        "20",
        "--eval-every",
        "50",
        "--ckpt-every",
        "100",
        "--keep",
        "2",
    ])?)?;
    for prompt in ["the weather today", "just watched the game and"] {
        model_cmd::generate_cmd(&args(&[
            "--model",
            &s(&run),
            "--prompt",
            prompt,
            "--max-tokens",
            "40",
            "--seed",
            "0",
        ])?)?;
    }
    let _ = std::fs::remove_dir_all(&index);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(out.join(format!("ads.db{ext}")));
    }
    search_cmd::index(&search_cmd::IndexCommand::Build {
        corpus: corpus.clone(),
        out: index.clone(),
        model: None,
        pooling: search_cmd::DEFAULT_POOLING.into(),
    })?;
    search_cmd::search(&args(&[
        "--index",
        &s(&index),
        "--limit",
        "3",
        "--",
        "#nba",
        "-filter:replies",
    ])?)?;
    println!(
        "demo: done in {:.0}s [SYNTHETIC]: corpus {}, tokens {}, run {} (loss.png, metrics.jsonl, checkpoints), index {}",
        started.elapsed().as_secs_f64(),
        corpus.display(),
        tokens.display(),
        run.display(),
        index.display()
    );
    let ads_db = s(&out.join("ads.db"));
    let mut serve: serve_cmd::ServeArgs = args(&[
        "--model",
        &s(&run),
        "--index",
        &s(&index),
        "--addr",
        &a.addr,
        "--name",
        "starling-demo",
        "--ads-db",
        &ads_db,
    ])?;
    serve.smoke = a.smoke;
    serve_cmd::serve(&serve)
}
