//! Training end to end on a tiny model: loss falls, resume is exact, a corrupt checkpoint is skipped.

use starling_corpus::synth::SynthConfig;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use starling_train::{checkpoints, latest_good, train, StepMetrics, TrainConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn tokens_dir(dir: &Path) -> PathBuf {
    let input = dir.join("s.jsonl");
    starling_corpus::synth::write_file(
        &SynthConfig {
            posts: 1500,
            ..SynthConfig::default()
        },
        &input,
    )
    .expect("synth");
    let corpus = dir.join("corpus");
    CorpusBuilder::new(CorpusConfig::default(), vec![input])
        .build(&corpus, &mut |_| {})
        .expect("corpus");
    let tok = dir.join("tokenizer.json");
    starling_tokens::train_tokenizer(&corpus, 600, &tok).expect("tokenizer");
    let out = dir.join("tokens");
    starling_tokens::encode_corpus(&corpus, &tok, &out, &Default::default()).expect("tokens");
    out
}

fn cfg(steps: u64) -> TrainConfig {
    let mut c = TrainConfig {
        preset: "tiny".into(),
        batch: 4,
        ctx: Some(64),
        steps,
        eval_every: 5,
        eval_batches: 2,
        ckpt_every: 3,
        keep: 2,
        ..Default::default()
    };
    c.optim.warmup = 2;
    c.optim.lr = 3e-3;
    c
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str::<StepMetrics>(l).expect("line"))
        .map(|m| (m.step, m.loss))
        .collect()
}

#[test]
fn trains_resumes_exactly_and_skips_a_corrupt_checkpoint() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = tokens_dir(tmp.path());
    let never = AtomicBool::new(false);

    // Uninterrupted: 9 steps.
    let straight = tmp.path().join("straight");
    let s = train(&tokens, &straight, &cfg(9), &never, &mut |_| {}).expect("train");
    assert_eq!(s.steps, 9);
    let full = losses(&straight);
    assert_eq!(full.len(), 9);
    assert!(full[8].1 < full[0].1, "loss falls: {full:?}");
    assert!(s.val_loss.is_some_and(f64::is_finite));
    assert_eq!(checkpoints(&straight).len(), 2, "keeps the last 2");

    // Stopped after step 5 (as SIGTERM would), resumed to 9: the same loss at every later step.
    let resumed = tmp.path().join("resumed");
    let stop = AtomicBool::new(false);
    let first = train(&tokens, &resumed, &cfg(9), &stop, &mut |m| {
        if m.step == 5 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .expect("first leg");
    assert_eq!(first.steps, 5);
    train(&tokens, &resumed, &cfg(9), &never, &mut |_| {}).expect("second leg");
    let r = losses(&resumed);
    assert_eq!(r.len(), 9);
    for (a, b) in full.iter().zip(&r) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-9, "step {}: {} vs {}", a.0, a.1, b.1);
    }

    // A corrupt latest checkpoint is detected and the previous good one is used.
    let latest = latest_good(&resumed).expect("latest");
    let model = latest.join("model.safetensors");
    let mut bytes = std::fs::read(&model).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&model, bytes).expect("write");
    let good = latest_good(&resumed).expect("previous");
    assert_ne!(good, latest);

    // A stop request checkpoints and returns early.
    let stopped = tmp.path().join("stopped");
    let stop = AtomicBool::new(true);
    let s = train(&tokens, &stopped, &cfg(9), &stop, &mut |_| {}).expect("stop");
    assert_eq!(s.steps, 1);
    assert!(latest_good(&stopped).is_some());
}
