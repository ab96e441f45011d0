//! The `starling` binary end to end: demo, synth → corpus, and clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn starling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling"))
}

#[test]
fn demo_runs_synth_then_corpus_and_reports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = starling()
        .args(["demo", "--posts", "2000", "--train-steps", "6", "--smoke"])
        .args(["--addr", "127.0.0.1:0", "--out"])
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
    // ... and a search index of the corpus, searched once.
    assert!(
        stdout.contains("index: ") && tmp.path().join("index/starling-index.json").exists(),
        "{stdout}"
    );
    // ... and a server of both, which answers one grounded chat request through the network.
    assert!(
        stdout.contains("serve: open http://127.0.0.1:")
            && stdout.contains("serve --smoke: answered")
            && stdout.contains("serve --smoke: ads answered")
            && stdout.contains("grounded on 3 posts"),
        "{stdout}"
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
fn ads_inventory_decisions_reports_and_a_simulated_day_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("ads.db");
    let ads = |args: &[&str]| {
        let mut c = starling();
        c.arg("ads").args(args).arg("--db").arg(&db);
        c
    };
    let out = run_ok(&mut ads(&["advertiser", "create", "--name", "Acme"]));
    assert!(out.contains("api key (shown once): sk-adv-"), "{out}");
    let adv = out.split_whitespace().nth(1).expect("id").to_string();
    let c: serde_json::Value = serde_json::from_str(&run_ok(&mut ads(&[
        "campaign",
        "create",
        "--advertiser",
        &adv,
        "--name",
        "spring",
        "--bid-type",
        "max_cpc",
        "--daily-budget",
        "12.50",
    ])))
    .expect("campaign json");
    assert_eq!(c["daily_budget_micros"], 12_500_000);
    let cid = c["id"].as_str().expect("id").to_string();
    let g: serde_json::Value = serde_json::from_str(&run_ok(&mut ads(&[
        "group",
        "create",
        "--campaign",
        &cid,
        "--name",
        "runners",
        "--bid",
        "0.80",
        "--keywords",
        "marathon,#running",
        "--hours",
        "0-24",
    ])))
    .expect("group json");
    let gid = g["id"].as_str().expect("id").to_string();
    run_ok(&mut ads(&[
        "creative",
        "create",
        "--group",
        &gid,
        "--text",
        "Race-day sneakers",
    ]));
    let d: serde_json::Value = serde_json::from_str(&run_ok(&mut ads(&[
        "decide",
        "--context",
        "my first #running marathon",
        "--slots",
        "2",
    ])))
    .expect("decision json");
    assert_eq!(d["ads"][0]["campaign_id"], cid.as_str());
    // Only bidder: the reserve ($0.50 CPM -> 500 micros per impression) at pCTR 1% is 50,000 + a cent.
    assert_eq!(d["ads"][0]["price_micros"], 60_000);
    run_ok(&mut ads(&["campaign", "pause", &cid]));
    let d: serde_json::Value =
        serde_json::from_str(&run_ok(&mut ads(&["decide", "--context", "#running"])))
            .expect("json");
    assert_eq!(d["ads"], serde_json::json!([]));
    assert!(run_ok(&mut ads(&["report"])).contains("| spring |"));
    // Bad values are refused by name, and nothing is written.
    for (args, says) in [
        (
            vec![
                "campaign",
                "create",
                "--advertiser",
                &adv,
                "--name",
                "x",
                "--daily-budget=-3",
            ],
            "--daily-budget",
        ),
        (
            vec![
                "group",
                "create",
                "--campaign",
                &cid,
                "--name",
                "x",
                "--bid",
                "1",
                "--keywords",
                "a",
                "--hours",
                "9-30",
            ],
            "hour",
        ),
        (
            vec![
                "group",
                "create",
                "--campaign",
                "cmp_nope",
                "--name",
                "x",
                "--bid",
                "1",
                "--keywords",
                "a",
            ],
            "no campaign",
        ),
        (
            vec![
                "campaign",
                "create",
                "--advertiser",
                &adv,
                "--name",
                "x",
                "--daily-budget",
                "1",
                "--bid-type",
                "free",
            ],
            "bid_type",
        ),
    ] {
        let o = ads(&args).output().expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(run_ok(&mut ads(&["campaign", "list"])).lines().count(), 1);

    // A small simulated day: every policy reported, no budget exceeded, semantic beats keyword-only.
    let sim = tmp.path().join("sim");
    let out = run_ok(
        starling()
            .args([
                "ads",
                "simulate",
                "--requests",
                "3000",
                "--campaigns",
                "12",
                "--out",
            ])
            .arg(&sim),
    );
    for row in [
        "| starling |",
        "| keyword-only |",
        "| random pCTR |",
        "no campaign charged past its budget",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sim.join("results.json")).expect("results"))
            .expect("json");
    for r in results.as_array().expect("array") {
        assert!(r["max_spend_share"].as_f64().unwrap_or(2.0) <= 1.0, "{r}");
        assert!(r["impressions"].as_u64().unwrap_or(0) > 1000, "{r}");
    }
    let (s, k) = (&results[0], &results[1]);
    assert!(
        s["impressions"].as_u64() > k["impressions"].as_u64(),
        "semantic targeting reaches contexts keywords miss: {s} vs {k}"
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
        (
            vec!["plan", "--params", "7e9", "--batch-tokens", "0"],
            "invalid `batch_tokens`: must be at least 1",
        ),
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

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// synth → corpus through the binary, into `dir/corpus`.
fn synth_corpus(dir: &Path, posts: u64) {
    let input = dir.join("posts.jsonl");
    run_ok(
        starling()
            .args(["synth", "--posts", &posts.to_string(), "--out"])
            .arg(&input),
    );
    run_ok(
        starling()
            .arg("corpus")
            .arg(&input)
            .arg("--out")
            .arg(dir.join("corpus")),
    );
}

/// synth → corpus → tokenizer → tokens through the binary; returns the token directory.
fn small_tokens(dir: &Path) -> PathBuf {
    synth_corpus(dir, 1500);
    corpus_tokens(dir, 600, "tok", "tokens")
}

/// `dir/corpus` → a tokenizer of `vocab` tokens in `dir/<tok>` → token shards in `dir/<tokens>`,
/// through the binary; returns the token directory.
fn corpus_tokens(dir: &Path, vocab: usize, tok: &str, tokens: &str) -> PathBuf {
    let (corpus, tok, tokens) = (dir.join("corpus"), dir.join(tok), dir.join(tokens));
    let vocab = vocab.to_string();
    run_ok(
        starling()
            .args(["tokenizer", "train", "--vocab", &vocab, "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(&tok),
    );
    run_ok(
        starling()
            .arg("tokens")
            .arg("--corpus")
            .arg(&corpus)
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(&tokens),
    );
    tokens
}

fn train_cmd(tokens: &Path, run: &Path, steps: u64) -> Command {
    let mut c = starling();
    c.arg("train")
        .arg("--tokens")
        .arg(tokens)
        .arg("--out")
        .arg(run)
        .args([
            "--preset", "tiny", "--batch", "8", "--ctx", "64", "--lr", "3e-3",
        ])
        .args(["--warmup", "5", "--eval-every", "10", "--eval-batches", "2"])
        .args(["--ckpt-every", "7", "--keep", "2", "--threads", "1"])
        .args(["--steps", &steps.to_string()]);
    c
}

/// Waits (up to 2 minutes) until a run has logged `steps` steps.
fn wait_for_steps(run: &Path, steps: usize) {
    let t = std::time::Instant::now();
    loop {
        let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        assert!(t.elapsed().as_secs() < 120, "no progress: {lines} steps");
        if lines >= steps {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .map(|v| {
            (
                v["step"].as_u64().unwrap_or(0),
                v["loss"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn sigkilled_training_resumes_with_the_same_losses() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let steps = 150;
    let straight = tmp.path().join("straight");
    run_ok(&mut train_cmd(&tokens, &straight, steps));
    let want = step_losses(&straight);
    assert_eq!(want.len(), steps as usize);
    assert!(straight.join("loss.png").exists());

    // Kill -9 somewhere past the first checkpoints, then run the same command again.
    let killed = tmp.path().join("killed");
    let mut child = train_cmd(&tokens, &killed, steps)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_steps(&killed, 40);
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the run was killed before it finished");
    let at_kill = step_losses(&killed).len();
    assert!(at_kill < steps as usize, "killed at step {at_kill}");
    let out = run_ok(&mut train_cmd(&tokens, &killed, steps));
    assert!(out.contains(&format!("{steps} steps")), "{out}");
    let got = step_losses(&killed);
    assert_eq!(got.len(), want.len(), "one line per step after the rewind");
    for (a, b) in want.iter().zip(&got) {
        assert_eq!(a.0, b.0);
        assert!(
            a.1 == b.1,
            "step {}: {} uninterrupted vs {} resumed (killed near step {at_kill})",
            a.0,
            a.1,
            b.1
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(&killed)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_full_disk_is_reported_and_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let run = tmp.path().join("run");
    // A 200 KiB file-size limit stands in for a full disk (writes fail with EFBIG);
    // SIGXFSZ is ignored so the write fails instead of killing the process.
    let cmd = format!("{:?}", train_cmd(&tokens, &run, 10));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f 200; exec {cmd}"))
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        (err.contains("disk full") || err.contains("is the disk full"))
            && !err.contains("panicked"),
        "{err}"
    );
    let names: Vec<String> = std::fs::read_dir(&run)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("tmp") || n.starts_with("ckpt-")),
        "{names:?}"
    );
}

#[test]
fn the_binary_links_libtorch_cuda() {
    let lib =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/libtorch/lib/libtorch_cuda.so");
    if !lib.exists() {
        eprintln!(
            "skipping: this torch has no libtorch_cuda.so ({})",
            lib.display()
        );
        return;
    }
    let out = Command::new("readelf")
        .arg("-d")
        .arg(env!("CARGO_BIN_EXE_starling"))
        .output()
        .expect("readelf (binutils) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[libtorch_cuda.so]"),
        "NEEDED lacks libtorch_cuda.so: --as-needed dropped it, CUDA would be unavailable\n{text}"
    );
}

#[test]
fn index_and_search_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tmp");
    synth_corpus(tmp.path(), 3000);
    let out = run_ok(
        starling()
            .args(["index", "build", "--corpus"])
            .arg(tmp.path().join("corpus"))
            .arg("--out")
            .arg(tmp.path().join("idx")),
    );
    assert!(out.contains("index: ") && out.contains("posts/s"), "{out}");
    let out = run_ok(
        starling()
            .args([
                "search", "--json", "--order", "latest", "--limit", "5", "--index",
            ])
            .arg(tmp.path().join("idx"))
            .args(["the", "-filter:retweets"]),
    );
    let hits: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json hit"))
        .collect();
    assert!(!hits.is_empty() && hits.len() <= 5, "{out}");
    let times: Vec<&str> = hits
        .iter()
        .filter_map(|h| h["created_at"].as_str())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "latest first: {times:?}"
    );
    let bad = starling()
        .args(["search", "--index"])
        .arg(tmp.path().join("idx"))
        .arg("min_faves:lots")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("column 10") && err.contains('^'),
        "{err}"
    );
}

#[test]
fn dense_hybrid_and_live_updates_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let run = tmp.path().join("run");
    run_ok(&mut train_cmd(&tokens, &run, 8));
    let idx = tmp.path().join("idx");
    let out = run_ok(
        starling()
            .args(["index", "build", "--corpus"])
            .arg(tmp.path().join("corpus"))
            .arg("--model")
            .arg(&run)
            .arg("--out")
            .arg(&idx),
    );
    assert!(out.contains("64-d vectors"), "{out}");
    for mode in ["dense", "hybrid"] {
        let out = run_ok(
            starling()
                .args([
                    "search", "--json", "--limit", "5", "--mode", mode, "--index",
                ])
                .arg(&idx)
                .args(["good", "morning", "lang:en"]),
        );
        assert_eq!(out.lines().count(), 5, "{mode}: {out}");
    }

    // A new post and a deletion notice in one v1.1 stream file.
    let live = tmp.path().join("live.jsonl");
    let post = serde_json::json!({
        "id_str": "990000000000000001",
        "created_at": "Mon Jan 01 10:00:00 +0000 2024",
        "user": {"id_str": "7", "screen_name": "zed"},
        "text": "a zeppelin over the harbour #skywatch",
        "lang": "en"
    });
    let delete = serde_json::json!({"delete": {"status": {"id_str": "990000000000000001", "user_id_str": "7"}}});
    // A truncated line beside it is quarantined and counted, not lost.
    std::fs::write(&live, format!("{post}\n{{\"id_str\": \"9\", \"text\n")).expect("write");
    let out = run_ok(
        starling()
            .args(["index", "add", "--index"])
            .arg(&idx)
            .arg(&live),
    );
    assert!(out.contains("1 new"), "{out}");
    assert!(
        out.contains("2 records read = 1 posts") && out.contains("1 quarantined"),
        "{out}"
    );
    let found = run_ok(
        starling()
            .args(["search", "--json", "--index"])
            .arg(&idx)
            .arg("#skywatch"),
    );
    assert!(found.contains("990000000000000001"), "{found}");
    let dense = run_ok(
        starling()
            .args([
                "search", "--json", "--mode", "dense", "--limit", "3", "--index",
            ])
            .arg(&idx)
            .args(["zeppelin", "from:zed"]),
    );
    assert!(dense.contains("990000000000000001"), "{dense}");
    std::fs::write(&live, format!("{delete}\n")).expect("write");
    let out = run_ok(
        starling()
            .args(["index", "add", "--index"])
            .arg(&idx)
            .arg(&live),
    );
    assert!(out.contains("(1 were indexed)"), "{out}");
    let gone = run_ok(
        starling()
            .args(["search", "--json", "--index"])
            .arg(&idx)
            .arg("#skywatch"),
    );
    assert!(gone.trim().is_empty(), "{gone}");

    // A deletion list, and an index queried with another model.
    let first: serde_json::Value = serde_json::from_str(
        run_ok(
            starling()
                .args(["search", "--json", "--limit", "1", "--index"])
                .arg(&idx)
                .arg("the"),
        )
        .lines()
        .next()
        .expect("a hit"),
    )
    .expect("json");
    let id = first["id"].as_str().expect("id").to_string();
    let list = tmp.path().join("deletions.txt");
    std::fs::write(&list, format!("# removed on request\n{id}\n")).expect("write");
    let out = run_ok(
        starling()
            .args(["index", "delete", "--index"])
            .arg(&idx)
            .arg("--list")
            .arg(&list),
    );
    assert!(out.contains("1 of 1 ids"), "{out}");
    let other = tmp.path().join("run2");
    run_ok(&mut train_cmd(&tokens, &other, 9));
    let bad = starling()
        .args(["search", "--mode", "hybrid", "--index"])
        .arg(&idx)
        .arg("--model")
        .arg(&other)
        .arg("the")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("another model"),
        "{err}"
    );
}

/// `starling train` on the tiny model, alone or as `starling launch --nproc N` workers.
fn dp_train(
    nproc: Option<(usize, u32)>,
    tokens: &Path,
    run: &Path,
    steps: u64,
    batch: usize,
    extra: &[&str],
) -> Command {
    let mut c = starling();
    if let Some((n, restarts)) = nproc {
        c.args(["launch", "--grace-s", "2", "--nproc", &n.to_string()])
            .args(["--max-restarts", &restarts.to_string(), "--"]);
    }
    c.arg("train")
        .arg("--tokens")
        .arg(tokens)
        .arg("--out")
        .arg(run)
        .args([
            "--preset", "tiny", "--ctx", "64", "--lr", "3e-3", "--warmup", "5",
        ])
        .args([
            "--eval-every",
            "10",
            "--eval-batches",
            "2",
            "--ckpt-every",
            "7",
        ])
        .args(["--keep", "2", "--steps", &steps.to_string()])
        .args(["--batch", &batch.to_string()])
        .args(extra)
        .env("OMP_NUM_THREADS", "1");
    if nproc.is_none() {
        c.args(["--threads", "1"]);
    }
    c
}

/// The file names in a checkpoint directory, sorted.
fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// (step, loss, val_loss) per line of a run's metrics.
fn step_metrics(run: &Path) -> Vec<(u64, f64, Option<f64>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .map(|v| {
            (
                v["step"].as_u64().unwrap_or(0),
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["val_loss"].as_f64(),
            )
        })
        .collect()
}

/// Equal within `tol` at every step: W ranks with batch B/W against 1 rank with batch B sum the
/// same per-token losses in another order (each rank averages 256 tokens instead of 512; the
/// gradient all-reduce adds in ring order), so they agree to fp32 rounding — the ulp of a loss near
/// 6 is 4.8e-7 — and AdamW's normalised steps keep 12-step differences at that scale.
fn assert_same_losses(
    a: &[(u64, f64, Option<f64>)],
    b: &[(u64, f64, Option<f64>)],
    tol: f64,
    what: &str,
) {
    assert_eq!(a.len(), b.len(), "{what}: steps");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}: step numbers");
        assert!(
            (x.1 - y.1).abs() <= tol,
            "{what}: step {}: loss {} vs {}",
            x.0,
            x.1,
            y.1
        );
        match (x.2, y.2) {
            (Some(p), Some(q)) => {
                assert!((p - q).abs() <= tol, "{what}: step {}: val {p} vs {q}", x.0)
            }
            (None, None) => {}
            other => panic!("{what}: step {}: val losses {other:?}", x.0),
        }
    }
}

/// Replaces the newest checkpoint of a copy of `run` so that a resume starts from step 7.
fn copy_back_to_step_7(run: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(run).expect("ls").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "ckpt-00000012" {
            continue;
        }
        if e.path().is_dir() {
            copy_back_to_step_7(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).expect("copy");
        }
    }
}

/// How a run is launched: ranks (`None`: one process), batch per rank, extra flags.
type Layout<'a> = (Option<(usize, u32)>, usize, &'a [&'a str]);

/// Resumes a copy of the run `from` at step 7 (into its sibling `name`) with `layout`, and asserts
/// that its steps match `want` within 2e-5.
fn resumes_alike(
    from: &Path,
    name: &str,
    tokens: &Path,
    layout: Layout,
    want: &[(u64, f64, Option<f64>)],
    what: &str,
) {
    let to = from.with_file_name(name);
    copy_back_to_step_7(from, &to);
    let (ranks, batch, args) = layout;
    run_ok(&mut dp_train(ranks, tokens, &to, 12, batch, args));
    assert_same_losses(want, &step_metrics(&to), 2e-5, what);
}

#[test]
fn data_parallel_matches_one_process_with_and_without_zero1_at_any_world_size() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let one = tmp.path().join("one");
    run_ok(&mut dp_train(None, &tokens, &one, 12, 8, &[]));
    let two = tmp.path().join("two");
    let out = run_ok(&mut dp_train(Some((2, 0)), &tokens, &two, 12, 4, &[]));
    assert!(out.contains("12 steps"), "rank 0 reports: {out}");
    let zero = tmp.path().join("zero");
    run_ok(&mut dp_train(
        Some((2, 0)),
        &tokens,
        &zero,
        12,
        4,
        &["--shard-optimizer"],
    ));
    let want = step_metrics(&one);
    assert_eq!(want.len(), 12);
    assert!(want[11].1 < want[0].1 - 0.2, "the loss falls: {want:?}");
    const TOL: f64 = 2e-5;
    assert_same_losses(&want, &step_metrics(&two), TOL, "2 ranks vs 1");
    assert_same_losses(&want, &step_metrics(&zero), TOL, "2 ranks ZeRO-1 vs 1");
    // Accumulation: 2 ranks x 2 micro-batches of 2 see the same 8 sequences per step.
    let accum = tmp.path().join("accum");
    run_ok(&mut dp_train(
        Some((2, 0)),
        &tokens,
        &accum,
        12,
        2,
        &["--accum", "2"],
    ));
    assert_same_losses(&want, &step_metrics(&accum), TOL, "2 ranks x accum 2 vs 1");
    let m: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(two.join("metrics.jsonl"))
            .expect("m")
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json");
    assert!(
        m["comm_s"].as_f64().is_some_and(|c| c > 0.0),
        "communication time is logged: {m}"
    );
    // Only rank 0 writes model files; each ZeRO-1 rank writes its optimizer shard.
    assert_eq!(
        checkpoint_files(&zero.join("ckpt-00000012")),
        [
            "adam-shard-00000-of-00002.safetensors",
            "adam-shard-00001-of-00002.safetensors",
            "model.safetensors",
            "state.json"
        ]
    );

    // A ZeRO-1 checkpoint of 2 ranks resumes in 1 process (whole AdamW), and a 1-process
    // checkpoint resumes as 2 ZeRO-1 ranks: steps 8..12 match the uninterrupted runs.
    let zero_steps = step_metrics(&zero);
    let to_one = (None, 8, &[][..]);
    resumes_alike(
        &zero,
        "z2o",
        &tokens,
        to_one,
        &zero_steps,
        "ZeRO-1 x2 → 1 process",
    );
    let to_zero = (Some((2, 0)), 4, &["--shard-optimizer"][..]);
    resumes_alike(
        &one,
        "o2z",
        &tokens,
        to_zero,
        &want,
        "1 process → ZeRO-1 x2",
    );
}

#[test]
fn fsdp_tensor_parallel_and_recompute_match_one_process_and_resume_at_another_layout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    // A clipping threshold low enough that every step clips: the sharded global norm matters.
    let clip = ["--grad-clip", "0.05"];
    let run = |name: &str, ranks: Option<(usize, u32)>, batch: usize, extra: &[&str]| {
        let dir = tmp.path().join(name);
        let args: Vec<&str> = clip.iter().chain(extra).copied().collect();
        run_ok(&mut dp_train(ranks, &tokens, &dir, 12, batch, &args));
        dir
    };
    let one = run("one", None, 8, &[]);
    let want = step_metrics(&one);
    const TOL: f64 = 2e-5;
    // (run, ranks, batch per rank, flags)
    type Case<'a> = (&'a str, Option<(usize, u32)>, usize, &'a [&'a str]);
    let cases: [Case; 7] = [
        ("one-recompute", None, 8, &["--recompute", "block"]),
        ("fsdp", Some((2, 0)), 4, &["--fsdp"]),
        (
            "fsdp-recompute",
            Some((2, 0)),
            4,
            &["--fsdp", "--recompute", "block"],
        ),
        // Tensor parallel: both ranks of a group read the same 8 sequences.
        ("tp", Some((2, 0)), 8, &["--tp", "2"]),
        (
            "tp-recompute",
            Some((2, 0)),
            8,
            &["--tp", "2", "--recompute", "block"],
        ),
        // A 2 x 2 mesh: tensor parallel 2 inside, FSDP 2 across.
        ("tp-fsdp", Some((4, 0)), 4, &["--tp", "2", "--fsdp"]),
        (
            "tp-fsdp-recompute",
            Some((4, 0)),
            4,
            &["--tp", "2", "--fsdp", "--recompute", "block"],
        ),
    ];
    for (name, ranks, batch, extra) in cases {
        let dir = run(name, ranks, batch, extra);
        assert_same_losses(&want, &step_metrics(&dir), TOL, name);
    }
    // Mixed precision as FSDP2 does it: parameters gathered in bf16, gradients reduced in fp32.
    // Two ranks equal one FSDP rank (the same bf16 parameters; only the gradient sum's order
    // differs), and differ from a bf16 process that keeps fp32 norms and embedding: the
    // gathers did move bf16.
    let bf16 = ["--fsdp", "--dtype", "bf16"];
    let alone = step_metrics(&run("fsdp1-bf16", Some((1, 0)), 8, &bf16));
    let fsdp_bf16 = step_metrics(&run("fsdp-bf16", Some((2, 0)), 4, &bf16));
    // bf16 parameters turn the sum order's fp32 differences into flipped bf16 roundings (2^-8
    // relative), which 12 AdamW steps carry to ~1e-3 in the loss (1.16e-3 seen on a Xeon).
    assert_same_losses(&alone, &fsdp_bf16, 2e-3, "FSDP bf16, 2 ranks vs 1");
    let one_bf16 = step_metrics(&run("one-bf16", None, 8, &["--dtype", "bf16"]));
    let moved = one_bf16
        .iter()
        .zip(&alone)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-4, "FSDP bf16 equals fp32 gathers ({moved})");
    // Every FSDP rank writes its moments; rank 0 the whole model (gathered).
    let fsdp = tmp.path().join("fsdp");
    assert_eq!(
        checkpoint_files(&fsdp.join("ckpt-00000012")),
        [
            "fsdp-shard-00000-of-00002.safetensors",
            "fsdp-shard-00001-of-00002.safetensors",
            "model.safetensors",
            "state.json"
        ]
    );
    // FSDP x2 → one process, and one process → FSDP x2: steps 8..12 match.
    let fsdp_args: Vec<&str> = clip.iter().chain(&["--fsdp"]).copied().collect();
    let (to_one, to_fsdp) = ((None, 8, &clip[..]), (Some((2, 0)), 4, &fsdp_args[..]));
    resumes_alike(&fsdp, "f2o", &tokens, to_one, &want, "FSDP x2 → 1 process");
    resumes_alike(&one, "o2f", &tokens, to_fsdp, &want, "1 process → FSDP x2");
    // A tensor parallel 2 x FSDP 2 checkpoint resumes as one process and as 2 FSDP ranks.
    let mesh = tmp.path().join("tp-fsdp");
    resumes_alike(
        &mesh,
        "m2o",
        &tokens,
        to_one,
        &want,
        "TP 2 x FSDP 2 → 1 process",
    );
    resumes_alike(
        &mesh,
        "m2f",
        &tokens,
        to_fsdp,
        &want,
        "TP 2 x FSDP 2 → FSDP x2",
    );
    // A vocabulary the group does not divide (301 over 2) is padded: same losses, and the
    // checkpoint's model keeps 301 rows.
    let odd = corpus_tokens(tmp.path(), 301, "tok-301", "tokens-301");
    let odd_run = |name: &str, ranks, extra: &[&str]| {
        let dir = tmp.path().join(name);
        let args: Vec<&str> = clip.iter().chain(extra).copied().collect();
        run_ok(&mut dp_train(ranks, &odd, &dir, 12, 8, &args));
        dir
    };
    let whole = odd_run("odd-one", None, &[]);
    let split = odd_run("odd-tp", Some((2, 0)), &["--tp", "2"]);
    assert_same_losses(
        &step_metrics(&whole),
        &step_metrics(&split),
        TOL,
        "TP 2, vocabulary 301",
    );
    let config = std::fs::read_to_string(split.join("config.json")).expect("config");
    assert!(config.contains("\"vocab_size\": 301"), "{config}");
    let model = split.join("ckpt-00000012").join("model.safetensors");
    // A safetensors file opens with its header's length and the JSON header.
    let bytes = std::fs::read(&model).expect("model");
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).expect("header");
    let shape = &header["model.embed_tokens.weight"]["shape"];
    assert_eq!(shape[0], 301, "the padding is not saved: {shape}");
    // Layouts that cannot work are refused by name.
    let refused: [(usize, &[&str], &str); 3] = [
        (
            3,
            &["--tp", "3"],
            "attention heads (4) is not divisible by 3",
        ),
        (2, &["--tp", "4"], "larger than the 2 ranks of a node"),
        (
            2,
            &["--tp", "2", "--shard-optimizer"],
            "--shard-optimizer (ZeRO-1) does not combine with it",
        ),
    ];
    for (n, flags, want) in refused {
        let dir = tmp.path().join(format!("refused-{n}-{}", flags[1]));
        let out = dp_train(Some((n, 0)), &tokens, &dir, 2, 4, flags)
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(want),
            "{flags:?}: {text}"
        );
    }
}

/// The pid of `launcher`'s worker of rank `rank` (read from /proc).
fn worker_pid(launcher: u32, rank: usize) -> Option<i32> {
    let kids =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    kids.split_whitespace().find_map(|pid| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let want = format!("RANK={rank}");
        env.split(|&b| b == 0)
            .any(|kv| kv == want.as_bytes())
            .then(|| pid.parse().ok())
            .flatten()
    })
}

/// Starts `cmd`, waits until `run` has logged `steps` steps, and sends `sig` to `rank`.
fn signal_rank_at(
    cmd: &mut Command,
    run: &Path,
    steps: usize,
    (rank, sig): (usize, nix::sys::signal::Signal),
) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_steps(run, steps);
    let pid = worker_pid(child.id(), rank).expect("the rank's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
    child.wait_with_output().expect("wait")
}

#[test]
fn launch_restarts_after_a_killed_worker_and_names_a_hung_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let steps = 80;
    // Data parallel, then FSDP (every rank's shards written, rank 0's gathered model).
    for flags in [&[][..], &["--fsdp"][..]] {
        let tag = flags.join("");
        let straight = tmp.path().join(format!("straight{tag}"));
        run_ok(&mut dp_train(
            Some((2, 0)),
            &tokens,
            &straight,
            steps,
            4,
            flags,
        ));
        let want = step_metrics(&straight);
        assert_eq!(want.len(), steps as usize);

        // SIGKILL rank 1 mid-run: the group is torn down and restarted from the last checkpoint.
        let killed = tmp.path().join(format!("killed{tag}"));
        let out = signal_rank_at(
            &mut dp_train(Some((2, 1)), &tokens, &killed, steps, 4, flags),
            &killed,
            25,
            (1, nix::sys::signal::Signal::SIGKILL),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("rank 1 was killed by signal 9 (SIGKILL)"),
            "{err}"
        );
        assert!(
            err.contains("restart 1 of 1 from the last good checkpoint"),
            "{err}"
        );
        assert!(err.contains("after 1 restart(s)"), "{err}");
        let got = step_metrics(&killed);
        assert_eq!(got.len(), want.len(), "one line per step after the rewind");
        for (a, b) in want.iter().zip(&got) {
            assert!(
                a.0 == b.0 && a.1 == b.1,
                "{flags:?} step {}: {} uninterrupted vs {} restarted",
                a.0,
                a.1,
                b.1
            );
        }
    }

    // SIGSTOP one rank (alive, silent) with a 3 s collective timeout; no restarts left.
    let hang = |rank: usize| {
        let run = tmp.path().join(format!("hung{rank}"));
        let t = std::time::Instant::now();
        let out = signal_rank_at(
            &mut dp_train(
                Some((2, 0)),
                &tokens,
                &run,
                10_000,
                4,
                &["--collective-timeout-s", "3"],
            ),
            &run,
            25,
            (rank, nix::sys::signal::Signal::SIGSTOP),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        (err, t.elapsed())
    };
    // Rank 1 stopped: rank 0's collective times out naming it.
    let (err, took) = hang(1);
    assert!(took.as_secs() < 60, "the hang was detected by the timeout");
    assert!(err.contains("rank 0: all-reduce (step"), "{err}");
    assert!(err.contains("timeout 3 s) failed"), "{err}");
    // Behind rank 0, or (stopped in the middle of a collective) inside the one rank 0 waits in.
    assert!(
        err.contains(": hung or dead)") && err.contains("rank 1 last entered collective"),
        "{err}"
    );
    assert!(
        err.contains("no restarts are left (--max-restarts 0)"),
        "{err}"
    );
    // Rank 0, which hosts the store, stopped: rank 1 says the store does not answer.
    let (err, _) = hang(0);
    assert!(err.contains("rank 1: all-reduce (step"), "{err}");
    assert!(
        err.contains("the store (hosted by rank 0) does not answer: rank 0 is hung or dead"),
        "{err}"
    );
}

#[test]
fn launch_and_data_parallel_train_refuse_bad_values_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = tmp.path().join("run");
    // (arguments, environment, what the error must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["launch", "--nproc", "0", "--", "train"],
            vec![],
            "--nproc must be at least 1",
        ),
        (
            vec!["launch", "--grace-s=-1", "--", "train"],
            vec![],
            "--grace-s must be in [0, 1e6)",
        ),
        (
            vec!["train", "--tokens", "nowhere", "--grad-clip=-1"],
            vec![],
            "--grad-clip must be a finite number >= 0 (0: no clipping), not -1",
        ),
        (
            vec!["train", "--tokens", "nowhere", "--grad-clip", "NaN"],
            vec![],
            "--grad-clip must be a finite number >= 0 (0: no clipping), not NaN",
        ),
        (
            vec![
                "train",
                "--tokens",
                "nowhere",
                "--collective-timeout-s",
                "0",
            ],
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "1"),
            ],
            "--collective-timeout-s must be in (0, 1e6)",
        ),
        (
            vec!["train", "--tokens", "nowhere"],
            vec![
                ("RANK", "2"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "1"),
            ],
            "RANK: rank 2 is outside a world of 2",
        ),
        (
            vec!["train", "--tokens", "nowhere"],
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "x"),
            ],
            "MASTER_PORT: `x` is not a valid number",
        ),
        (
            vec!["train", "--tokens", "nowhere", "--log-every", "0"],
            vec![],
            "invalid value '0' for '--log-every",
        ),
    ];
    for (args, env, needle) in cases {
        let out = starling()
            .args(&args)
            .arg("--out")
            .arg(&run)
            .envs(env.iter().copied())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!run.exists(), "nothing was written for refused runs");
}

/// The project's Python with llama-cpp-python and gguf (scripts/setup.sh installs them); required
/// in CI, skipped with a reason elsewhere.
fn llama_cpp_python() -> Option<PathBuf> {
    starling_testkit::python_with(&["llama_cpp", "gguf"])
}

/// Runs scripts/llama_cpp_check.py on `model` and returns its JSON answer.
fn llama_cpp(py: &Path, model: &Path, tokenize: &[&str], generate: &[String]) -> serde_json::Value {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/llama_cpp_check.py");
    let mut child = Command::new(py)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let req = serde_json::json!({"model": model, "tokenize": tokenize, "generate": generate,
        "max_tokens": 32, "threads": 1, "chat": chat_messages()});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "llama_cpp_check.py ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A conversation whose texts need no normalising (the server normalises; a Jinja template cannot).
fn chat_messages() -> serde_json::Value {
    serde_json::json!([
        {"role": "user", "content": "who won the #nba finals?"},
        {"role": "assistant", "content": "the home team did"},
        {"role": "user", "content": "  and the score?  "},
    ])
}

fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
        .unwrap_or_default()
}

/// Steps where two greedy runs agree before the first difference, and the margin (ours) where
/// they first differ (None: identical).
fn greedy_agreement(ours: &[i64], margins: &[f64], theirs: &[i64]) -> (usize, Option<f64>) {
    let n = ours.iter().zip(theirs).take_while(|(a, b)| a == b).count();
    if n == ours.len() && n == theirs.len() {
        return (n, None);
    }
    (n, Some(margins.get(n).copied().unwrap_or(0.0)))
}

/// `starling export --run RUN --out OUT` with `extra` arguments.
fn export(run: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = starling();
    c.arg("export")
        .arg("--run")
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

#[test]
fn gguf_export_runs_in_llama_cpp_with_our_tokens_and_greedy_output() {
    let Some(py) = llama_cpp_python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = small_tokens(tmp.path());
    let run = tmp.path().join("run");
    run_ok(&mut train_cmd(&tokens, &run, 60));
    let hf = tmp.path().join("hf");
    run_ok(
        starling()
            .arg("export")
            .arg("--run")
            .arg(&run)
            .arg("--out")
            .arg(&hf),
    );
    let tok = starling_tokens::tokenizer::load(&hf.join("tokenizer.json")).expect("tokenizer");
    let texts = [
        "<|user|>: I'm sure they've said it's fine 😭😭 #NBA finals!!!  @espn <|url|><|endofpost|><|endoftext|>",
        "Ça va? 東京で 123,456.78  \n\n  spaces\tand   tabs at the end   ",
        "<|user|>: don't   STOP me now<|endofpost|><|user|>:",
    ];
    let prompts = ["the weather today", "thanks for the", "I love #NBA"];
    let generate_prompts: Vec<String> = prompts.iter().map(|p| format!("<|user|>: {p}")).collect();
    let mut report = Vec::new();
    for dtype in ["f32", "f16", "q8_0"] {
        let gguf = tmp.path().join(format!("model-{dtype}.gguf"));
        let out = run_ok(&mut export(
            &run,
            &gguf,
            &["--format", "gguf", "--dtype", dtype],
        ));
        assert!(out.contains("GGUF v3") && gguf.exists(), "{out}");
        let sidecar =
            std::fs::read_to_string(tmp.path().join(format!("model-{dtype}.gguf.sha256")))
                .expect("sha256 file");
        assert!(
            sidecar.ends_with(&format!("  model-{dtype}.gguf\n")),
            "{sidecar}"
        );
        let theirs = llama_cpp(&py, &gguf, &texts, &generate_prompts);
        // What PyPI's gguf reader finds is what starling's writer wrote.
        let ours = starling_gguf::GgufFile::read(&gguf).expect("read back");
        let py_tensors: Vec<String> = theirs["gguf_py"]["tensors"]
            .as_array()
            .expect("tensors")
            .iter()
            .map(|t| t[0].as_str().unwrap_or_default().to_string())
            .collect();
        let rs_tensors: Vec<String> = ours.header.tensors.iter().map(|t| t.name.clone()).collect();
        assert_eq!(py_tensors, rs_tensors);
        assert_eq!(theirs["n_vocab"], tok.get_vocab_size(true));
        // llama.cpp ends generation at the end of a post as well as at the end of the text.
        let eog = ids_of(&theirs["eog"]);
        assert!(eog.contains(&0) && eog.contains(&1), "{eog:?}");
        // The embedded chat template renders the server's thread layout.
        let messages: Vec<String> = chat_messages()
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect();
        let thread = starling_serve::chat::ThreadLayout::default().thread(&messages);
        assert_eq!(theirs["chat"].as_str(), Some(thread.as_str()));
        for (i, text) in texts.iter().enumerate() {
            let ours: Vec<i64> = starling_tokens::tokenizer::encode(&tok, text)
                .expect("encode")
                .into_iter()
                .map(i64::from)
                .collect();
            assert_eq!(ids_of(&theirs["tokenize"][i]), ours, "tokens of {text:?}");
            assert_eq!(
                theirs["detokenize"][i], *text,
                "llama.cpp detokenizes {text:?}"
            );
        }
        for (i, p) in prompts.iter().enumerate() {
            let g: serde_json::Value = serde_json::from_str(&run_ok(
                starling()
                    .args(["generate", "--temperature", "0", "--top-k", "0"])
                    .args(["--repetition-penalty", "1", "--max-tokens", "32", "--json"])
                    .args(["--prompt", p, "--model"])
                    .arg(&run),
            ))
            .expect("generate --json");
            let t = &theirs["generate"][i];
            assert_eq!(ids_of(&t["prompt_ids"]), ids_of(&g["prompt_ids"]), "{p}");
            let margins: Vec<f64> = g["margins"]
                .as_array()
                .expect("margins")
                .iter()
                .filter_map(|m| m.as_f64())
                .collect();
            let (ours, theirs) = (ids_of(&g["ids"]), ids_of(&t["ids"]));
            let (agree, at) = greedy_agreement(&ours, &margins, &theirs);
            if dtype == "f32" {
                // Identical wherever greedy was not a near tie (top-2 margin over 1e-4).
                assert!(
                    at.is_none_or(|m| m <= 1e-4),
                    "{p:?}: llama.cpp {theirs:?} vs starling {ours:?} differ at step {agree} (margin {at:?})"
                );
            }
            let closest = margins.iter().copied().fold(f64::INFINITY, f64::min);
            report.push(format!(
                "{dtype:5} {p:20} {agree:>2}/{:<2} tokens agree (closest top-2 margin {closest:.4}){}",
                ours.len(),
                at.map(|m| format!(", first difference at margin {m:.4}"))
                    .unwrap_or_default()
            ));
        }
    }
    eprintln!("greedy agreement with llama.cpp:\n{}", report.join("\n"));
    // A tokenizer llama.cpp cannot reproduce is refused by name, and nothing is written.
    let edited = tmp.path().join("edited");
    run_ok(&mut export(&run, &edited, &[]));
    let path = edited.join("tokenizer.json");
    let mut j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    j["normalizer"] = serde_json::json!({"type": "NFKC"});
    std::fs::write(&path, j.to_string()).expect("write");
    let refused = tmp.path().join("refused.gguf");
    let out = export(&edited, &refused, &["--format", "gguf"])
        .output()
        .expect("export");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tokenizer.json: normalizer: a NFKC normalizer"),
        "{err}"
    );
    assert!(!refused.exists());
    // --dtype belongs to GGUF: an HF export with one is refused rather than silently ignored.
    let out = export(&run, &tmp.path().join("hf2"), &["--dtype", "q8_0"])
        .output()
        .expect("export");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--dtype applies to --format gguf"),
        "{err}"
    );
}
