//! Builds one corpus and prints one JSON line: posts read, wall seconds, posts/s, peak RSS.
//! `scripts/bench-corpus-order` runs it on time-ordered, reversed and shuffled input, for this
//! tree and an earlier revision side by side.
//!
//! `cargo run --release -p starling-corpus --example corpus_run -- INPUT OUT_DIR`
//! (`-- --synth POSTS FILE` writes the synthetic v1.1 input instead).

use starling_corpus::{CorpusBuilder, CorpusConfig};
use std::path::PathBuf;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, posts, file] = args.as_slice() {
        if flag == "--synth" {
            let cfg = starling_corpus::synth::SynthConfig {
                posts: posts.parse()?,
                ..Default::default()
            };
            starling_corpus::synth::write_file(&cfg, &PathBuf::from(file))?;
            return Ok(());
        }
    }
    let [input, out] = args.as_slice() else {
        return Err("usage: corpus_run INPUT OUT_DIR | corpus_run --synth POSTS FILE".into());
    };
    let t = std::time::Instant::now();
    let m = CorpusBuilder::new(CorpusConfig::default(), vec![PathBuf::from(input)])
        .build(&PathBuf::from(out), &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    let bot = m.counts.filtered.get("bot").copied().unwrap_or(0);
    println!(
        "{{\"read\": {}, \"kept\": {}, \"bot\": {bot}, \"secs\": {secs:.3}, \"posts_per_s\": {:.0}, \"peak_rss_mib\": {:.0}}}",
        m.counts.read,
        m.counts.kept,
        m.counts.read as f64 / secs,
        peak_rss_mib()
    );
    Ok(())
}
