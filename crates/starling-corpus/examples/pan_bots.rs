//! Fits the bot rule's content model on 80% of PAN 2019's labelled authors and scores the corpus
//! stage's `bot` verdicts on the other 20%, English and Spanish apart (what `starling eval bots`
//! runs, without building the tensor crates).
//!
//! `cargo run --release -p starling-corpus --example pan_bots -- [DATA_DIR] [--out model.json]`
//! (DATA_DIR defaults to ../shared/data/pan19-bots.)

use starling_corpus::bots_eval::{pan_2019, FitSettings};
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
    let work = std::env::temp_dir().join(format!("starling-pan-{}", std::process::id()));
    let t = std::time::Instant::now();
    let (model, scores) = pan_2019(&dir, &FitSettings::default(), &work)?;
    eprintln!(
        "fitted and scored in {:.1}s: threshold {:.3}",
        t.elapsed().as_secs_f64(),
        model.threshold
    );
    if let Some(out) = out {
        std::fs::write(&out, serde_json::to_vec_pretty(&model)?)?;
    }
    print!("{}", starling_corpus::bots_eval::scores_table(&scores));
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
