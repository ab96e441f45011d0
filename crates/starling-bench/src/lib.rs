//! `starling bench ...`: every benchmark of the system, each a program that prints a table, with
//! the reference it is measured against run side by side in the same process or run.
//!
//! The `starling` binary only dispatches to [`run`].

pub mod ads;
pub mod corpus;
pub mod ddp;
pub mod measure;
pub mod search;
pub mod serve;
pub mod train;

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Corpus throughput, memory and near-dup quality against datasketch.
    Corpus(corpus::CorpusBenchArgs),
    /// Training step and generation speed against PyTorch eager, torch.compile and HF generate.
    Train(train::TrainBenchArgs),
    /// Index build speed and size, query latency of bm25, dense and hybrid, ANN recall.
    Search(search::SearchBenchArgs),
    /// Streaming chat clients at 1..64 concurrency: aggregate tokens/s, time to first token, inter-token latency.
    Serve(serve::ServeBenchArgs),
    /// Data parallel on this CPU: 1 process x 2 threads vs 2 x 1 (Gloo, ZeRO-1) vs PyTorch DDP.
    Ddp(ddp::DdpBenchArgs),
    /// Ad decisions: p50/p99 latency and decisions/s over 1,000 campaigns and 10,000 ad groups on 2 threads.
    Ads(ads::AdsBenchArgs),
}

/// Runs one benchmark.
pub fn run(which: &BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Corpus(a) => corpus::corpus(a),
        BenchCommand::Train(a) => train::train(a),
        BenchCommand::Search(a) => search::search(a),
        BenchCommand::Serve(a) => serve::serve(a),
        BenchCommand::Ddp(a) => ddp::ddp(a),
        BenchCommand::Ads(a) => ads::ads(a),
    }
}
