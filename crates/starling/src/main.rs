//! The `starling` command: parses arguments, wires the stage crates together and reports.

mod ads_cmd;
mod corpus_cmd;
mod demo;
mod embed_cmd;
mod eval_cmd;
mod launch_cmd;
mod model_cmd;
mod plan_cmd;
mod safety_cmd;
mod search_cmd;
mod serve_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Synth(corpus_cmd::SynthArgs),
    /// Read post dumps, curate them and write a corpus directory.
    Corpus(corpus_cmd::CorpusArgs),
    /// Train a byte-level BPE tokenizer on a corpus's kept training posts.
    Tokenizer {
        #[command(subcommand)]
        which: corpus_cmd::TokenizerCommand,
    },
    /// Encode a corpus's kept posts into train/val token shards with a manifest.
    Tokens(corpus_cmd::TokensArgs),
    /// The built-in default job: synth → corpus → tokenizer → tokens → train small → generate → index → search.
    Demo(demo::DemoArgs),
    /// Serve the model and index: OpenAI-compatible API, search API, metrics and a web page.
    Serve(serve_cmd::ServeArgs),
    /// Train (or resume) a model on token shards.
    Train(model_cmd::TrainArgs),
    /// Start N local data-parallel workers (like torchrun) and restart them after a failure.
    Launch(launch_cmd::LaunchArgs),
    /// Continue a post with a trained model, streaming, and report tokens/s.
    Generate(model_cmd::GenerateArgs),
    /// Write a run's latest good checkpoint as an HF model directory or a GGUF file for llama.cpp.
    Export(model_cmd::ExportArgs),
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
enum EvalCommand {
    /// Hashtag recovery: nDCG@10 and recall@100 of bm25, dense and hybrid search.
    Search(eval_cmd::EvalSearchArgs),
    /// The chat's grounding: precision@3 and abstentions on questions about hashtags.
    Grounding(eval_cmd::EvalGroundingArgs),
    /// Linear probes of the model's embeddings on TweetEval's seven tasks, beside TF-IDF + LR.
    Probes(eval_cmd::EvalProbesArgs),
    /// The bot rule on PAN 2019's labelled authors: fit on 80%, the corpus verdicts scored on 20%.
    Bots(eval_cmd::EvalBotsArgs),
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
        Command::Synth(a) => corpus_cmd::synth(&a),
        Command::Corpus(a) => corpus_cmd::corpus(&a),
        Command::Tokenizer {
            which: corpus_cmd::TokenizerCommand::Train { corpus, vocab, out },
        } => corpus_cmd::tokenizer(&corpus, vocab, &out),
        Command::Tokens(a) => corpus_cmd::tokens(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Index { which } => search_cmd::index(&which),
        Command::Search(a) => search_cmd::search(&a),
        Command::Serve(a) => serve_cmd::serve(&a),
        Command::Embed { which } => embed_cmd::run(&which),
        Command::Eval {
            which: EvalCommand::Search(a),
        } => eval_cmd::search(&a),
        Command::Eval {
            which: EvalCommand::Grounding(a),
        } => eval_cmd::grounding(&a),
        Command::Eval {
            which: EvalCommand::Probes(a),
        } => eval_cmd::probes(&a),
        Command::Eval {
            which: EvalCommand::Bots(a),
        } => eval_cmd::bots(&a),
        Command::Plan(a) => plan_cmd::run(&a),
        Command::Ads { db, which } => ads_cmd::run(&db, &which),
        Command::Train(a) => model_cmd::train(&a),
        Command::Launch(a) => launch_cmd::launch(&a),
        Command::Generate(a) => model_cmd::generate_cmd(&a),
        Command::Export(a) => model_cmd::export(&a),
        Command::Bench { which } => starling_bench::run(&which),
    }
}
