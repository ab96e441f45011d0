//! Fits the bot rule's content model on 80% of PAN 2019's labelled authors and scores the corpus
//! stage's `bot` verdicts on the other 20%, English and Spanish apart.
//!
//! `cargo run --release -p starling-corpus --example pan_bots -- [DATA_DIR] [--out model.json]`
//! (DATA_DIR defaults to ../shared/data/pan19-bots; `starling corpus-bots` runs the same.)

use starling_corpus::bots_eval::{evaluate, fit, read_truth};
use starling_corpus::CorpusConfig;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("../shared/data/pan19-bots");
    let mut out = None;
    while let Some(a) = args.next() {
        if a == "--out" {
            out = args.next().map(PathBuf::from);
        } else {
            dir = PathBuf::from(a);
        }
    }
    let sets = ["en", "es"]
        .iter()
        .map(|l| {
            let truth = read_truth(&dir.join(format!("truth-train-{l}.tsv")))?;
            Ok((dir.join(format!("train-{l}.csv.gz")), truth))
        })
        .collect::<starling_corpus::Result<Vec<_>>>()?;
    let mut config = CorpusConfig::default();
    let t = std::time::Instant::now();
    let degree: u8 = std::env::var("DEG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let l2: f64 = std::env::var("L2")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let fpr: f64 = std::env::var("FPR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.002);
    let model = fit(&sets, &config, degree, l2, fpr)?;
    eprintln!(
        "fitted in {:.1}s: threshold {:.3}",
        t.elapsed().as_secs_f64(),
        model.threshold
    );
    let work = std::env::temp_dir().join(format!("starling-pan-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let model_path = out.clone().unwrap_or_else(|| work.join("bot-model.json"));
    std::fs::write(&model_path, serde_json::to_vec_pretty(&model)?)?;
    config.curate.bots.model = Some(model_path.display().to_string());
    println!("| file | held-out bots / humans | precision | recall | F1 | accuracy | human posts removed | read | quarantined |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (file, truth) in &sets {
        let s = evaluate(file, truth, &config, &work.join("corpus"))?;
        println!(
            "| {} | {} / {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}% | {} | {} |",
            s.lang,
            s.bots,
            s.humans,
            s.precision,
            s.recall,
            s.f1,
            s.accuracy,
            100.0 * s.human_posts_removed,
            s.read,
            s.quarantined
        );
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
