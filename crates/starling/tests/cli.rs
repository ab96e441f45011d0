//! The `starling` binary end to end: demo, synth → corpus, and clear errors.

use std::process::Command;

fn starling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling"))
}

#[test]
fn demo_runs_synth_then_corpus_and_reports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = starling()
        .args(["demo", "--posts", "2000", "--train-steps", "6", "--out"])
        .arg(tmp.path())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[SYNTHETIC]"));
    assert!(
        stdout.contains("read = kept + filtered + quarantined: yes"),
        "{stdout}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("corpus/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["synthetic"], true);
    assert!(manifest["counts"]["kept"].as_u64().unwrap_or(0) > 1000);
    let card = std::fs::read_to_string(tmp.path().join("corpus/data-card.md")).expect("card");
    assert!(card.contains("SYNTHETIC DATA"));
    // The path goes on: tokenizer and token shards.
    assert!(
        stdout.contains("tokenizer:") && stdout.contains("tokens: train"),
        "{stdout}"
    );
    let tokens: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("tokens/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert!(tokens["tokens"]["train"].as_u64().unwrap_or(0) > 10_000);
    assert!(tmp.path().join("tokens/tokenizer.json").exists());
    // ... training, with a checkpoint, and generation from it.
    assert!(
        stdout.contains("train: ") && stdout.contains("6 steps"),
        "{stdout}"
    );
    assert!(
        tmp.path().join("run/latest").exists() && tmp.path().join("run/metrics.jsonl").exists()
    );
    // Export writes an HF directory that `generate --model` reads back.
    let out = starling()
        .arg("export")
        .arg("--run")
        .arg(tmp.path().join("run"))
        .arg("--out")
        .arg(tmp.path().join("hf"))
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(tmp.path().join("hf").join(f).exists(), "{f}");
    }
    let out = starling()
        .args([
            "generate",
            "--prompt",
            "hello",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--model",
        ])
        .arg(tmp.path().join("hf"))
        .output()
        .expect("generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens/s"));
}

#[test]
fn corpus_names_a_missing_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = starling()
        .args(["corpus", "does-not-exist.jsonl", "--out"])
        .arg(tmp.path().join("c"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does-not-exist.jsonl"), "{err}");
}

#[test]
fn csv_without_text_column_says_how_to_map_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("posts.csv");
    std::fs::write(&csv, "id,message\n1,hello there friends\n").expect("write");
    let out = starling()
        .arg("corpus")
        .arg(&csv)
        .arg("--out")
        .arg(tmp.path().join("c"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("posts.csv:1") && err.contains("text column"),
        "{err}"
    );
    let ok = starling()
        .arg("corpus")
        .arg(&csv)
        .args(["--csv-text", "message", "--out"])
        .arg(tmp.path().join("c2"))
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn plan_validates_and_rejects_bad_input() {
    let out = starling()
        .args(["plan", "--validate", "--json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 9);
    let pass = rows.iter().filter(|r| r["pass"] == true).count();
    assert!(pass >= 6, "{pass} of 9 within 20%");

    for (args, needle) in [
        (
            vec!["plan", "--params", "7e9", "--gpu", "tpu9"],
            "unknown GPU",
        ),
        (vec!["plan", "--params", "7e9", "--gpus", "0"], "gpus"),
        (vec!["plan", "--params=-7e9"], "params"),
        (
            vec!["plan", "--params", "7e9", "--tokens", "lots"],
            "--tokens",
        ),
        (
            vec!["plan", "--params", "7e9", "--gpu", "a100-80gb", "--fp8"],
            "fp8",
        ),
        (
            vec!["plan", "--params", "7e9", "--experts", "8"],
            "--experts",
        ),
        (vec!["plan"], "--params"),
    ] {
        let out = starling().args(&args).output().expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let out = starling()
        .args([
            "plan", "--params", "20e12", "--gpus", "8", "--tokens", "1e12",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DOES NOT FIT") && !text.contains("NaN"),
        "{text}"
    );
}
