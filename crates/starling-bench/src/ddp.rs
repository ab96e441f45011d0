//! `starling bench ddp`: training over 2 processes on this CPU — one process with 2 threads against
//! 2 processes with 1 thread each (Gloo; DDP, ZeRO-1, FSDP, tensor parallel 2) — beside PyTorch on
//! the same model, global batch and token batches: one process (`scripts/bench_train.py`) and DDP,
//! FSDP2 and DTensor tensor parallel under torchrun (`scripts/bench_ddp.py`). Prints tokens/s, the
//! share of the step spent in communication and the peak memory of rank 0.

use anyhow::{bail, Context, Result};
use starling_train::loader::TokenLoader;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `starling bench ddp`.
#[derive(clap::Args)]
pub struct DdpBenchArgs {
    /// Model preset.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Global batch (sequences per step, split over the ranks).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Work directory (token shards, batches, runs).
    #[arg(long, default_value = "out/bench-ddp")]
    dir: PathBuf,
    /// Python with torch (default: $STARLING_PYTHON, then .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// One row of the table.
struct Row {
    name: &'static str,
    tok_s: f64,
    /// Share of the step spent waiting in collectives (the process's own timer).
    comm: Option<f64>,
    /// Share of the step that communication adds: 1 − (step without it) / step.
    exposed: Option<f64>,
    /// Peak memory of rank 0 over the steps, GB.
    peak_gb: Option<f64>,
    note: String,
}

/// The peak memory starling's summary line reports (`peak memory X GB`).
fn peak_of(stdout: &str) -> Option<f64> {
    let rest = stdout.split("peak memory ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Token shards of a synthetic corpus (made once per work directory).
fn tokens(exe: &Path, dir: &Path) -> Result<PathBuf> {
    let tokens = dir.join("tokens");
    if tokens.join("manifest.json").exists() {
        return Ok(tokens);
    }
    let posts = dir.join("posts.jsonl");
    run(
        Command::new(exe)
            .args(["synth", "--posts", "20000", "--out"])
            .arg(&posts),
        "synth",
    )?;
    run(
        Command::new(exe)
            .arg("corpus")
            .arg(&posts)
            .arg("--out")
            .arg(dir.join("corpus")),
        "corpus",
    )?;
    run(
        Command::new(exe)
            .args(["tokenizer", "train", "--vocab", "4096", "--corpus"])
            .arg(dir.join("corpus"))
            .arg("--out")
            .arg(dir.join("tokenizer.json")),
        "tokenizer",
    )?;
    run(
        Command::new(exe)
            .arg("tokens")
            .arg("--corpus")
            .arg(dir.join("corpus"))
            .arg("--tokenizer")
            .arg(dir.join("tokenizer.json"))
            .arg("--out")
            .arg(&tokens),
        "tokens",
    )?;
    Ok(tokens)
}

/// Writes the global batches starling's loader gives steps 0..n as rows of ctx+1 u32 tokens.
fn dump_batches(tokens: &Path, out: &Path, batch: usize, ctx: usize, n: usize) -> Result<()> {
    let (loader, _) = TokenLoader::open(tokens, "train", 1)?;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for k in 0..n as u64 {
        let (x, y) = loader.batch_at(k * batch as u64, batch, ctx)?;
        let x = Vec::<i64>::try_from(x.reshape([-1]))?;
        let y = Vec::<i64>::try_from(y.reshape([-1]))?;
        for r in 0..batch {
            let row = x[r * ctx..(r + 1) * ctx]
                .iter()
                .chain(std::iter::once(&y[(r + 1) * ctx - 1]));
            for &t in row {
                f.write_all(&(t as u32).to_le_bytes())?;
            }
        }
    }
    f.flush()?;
    Ok(())
}

/// Median tokens/s and communication share of a starling run's timed steps (`step_tokens` each).
fn starling_figures(run: &Path, warmup: usize, step_tokens: f64) -> Result<(f64, Option<f64>)> {
    let p = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let timed = lines.get(warmup..).unwrap_or(&[]);
    let tok_s: Vec<f64> = timed
        .iter()
        .filter_map(|m| m["tokens_per_s"].as_f64())
        .collect();
    let shares: Vec<f64> = timed
        .iter()
        .filter_map(|m| {
            let (tps, c) = (m["tokens_per_s"].as_f64()?, m["comm_s"].as_f64()?);
            Some(c / (step_tokens / tps))
        })
        .collect();
    Ok((median(tok_s), (!shares.is_empty()).then(|| median(shares))))
}

/// Runs the benchmark and prints its table.
pub fn ddp(a: &DdpBenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run `cargo run --release -p starling -- bench ddp` for real figures");
    }
    if a.batch < 2 || !a.batch.is_multiple_of(2) {
        bail!(
            "--batch must be even (it is split over 2 ranks), not {}",
            a.batch
        );
    }
    let exe = std::env::current_exe()?;
    let py = crate::measure::python(a.python.as_deref());
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let tokens = tokens(&exe, &a.dir)?;
    let n = a.warmup + a.steps;
    let batches = a.dir.join("batches.u32");
    dump_batches(&tokens, &batches, a.batch, a.ctx, 2 * n)?;
    // The arguments of `starling train` for one run (fresh directory).
    let train = |run: &Path, batch: usize, extra: &[&str]| -> Vec<std::ffi::OsString> {
        let _ = std::fs::remove_dir_all(run);
        let mut v: Vec<std::ffi::OsString> = vec![
            "train".into(),
            "--tokens".into(),
            tokens.clone().into(),
            "--out".into(),
            run.into(),
        ];
        let n_s = n.to_string();
        let (ctx, batch) = (a.ctx.to_string(), batch.to_string());
        let rest = [
            "--preset",
            &a.preset,
            "--ctx",
            &ctx,
            "--batch",
            &batch,
            "--steps",
            &n_s,
            "--warmup",
            "1",
            "--eval-every",
            "1000000",
            "--eval-batches",
            "1",
            "--ckpt-every",
            "1000000",
            "--keep",
            "1",
        ];
        v.extend(
            rest.iter()
                .chain(extra)
                .map(|s| std::ffi::OsString::from(*s)),
        );
        v
    };
    let mut rows = Vec::new();
    eprintln!("bench ddp: starling, 1 process x 2 threads");
    let one = a.dir.join("run-1x2");
    let out = run(
        Command::new(&exe)
            .args(train(&one, a.batch, &["--threads", "2"]))
            .env("OMP_NUM_THREADS", "2"),
        "starling train",
    )?;
    let (base, _) = starling_figures(&one, a.warmup, (a.batch * a.ctx) as f64)?;
    rows.push(Row {
        name: "starling, 1 process x 2 threads",
        tok_s: base,
        comm: None,
        exposed: None,
        peak_gb: peak_of(&out),
        note: format!("batch {}", a.batch),
    });
    // (row, run directory, flags, sequences per rank: tensor-parallel ranks share theirs)
    let half = a.batch / 2;
    for (name, run_dir, extra, per_rank) in [
        (
            "starling, 2 processes x 1 thread (Gloo)",
            "run-2x1",
            &[][..],
            half,
        ),
        (
            "starling, 2 x 1, ZeRO-1",
            "run-2x1-zero1",
            &["--shard-optimizer"][..],
            half,
        ),
        (
            "starling, 2 x 1, FSDP",
            "run-2x1-fsdp",
            &["--fsdp"][..],
            half,
        ),
        (
            "starling, 2 x 1, tensor parallel 2",
            "run-2x1-tp",
            &["--tp", "2"][..],
            a.batch,
        ),
    ] {
        eprintln!("bench ddp: {name}");
        let dir = a.dir.join(run_dir);
        let out = run(
            Command::new(&exe)
                .args(["launch", "--nproc", "2", "--"])
                .args(train(&dir, per_rank, extra))
                .env("OMP_NUM_THREADS", "1"),
            name,
        )?;
        let (tok_s, comm) = starling_figures(&dir, a.warmup, (a.batch * a.ctx) as f64)?;
        // DDP again with the gradient averaging skipped (PyTorch's no_sync): the step it adds.
        let mut exposed = None;
        if extra.is_empty() {
            eprintln!("bench ddp: {name}, gradients not averaged");
            let quiet = a.dir.join("run-2x1-no-sync");
            run(
                Command::new(&exe)
                    .args(["launch", "--nproc", "2", "--"])
                    .args(train(&quiet, per_rank, extra))
                    .env("OMP_NUM_THREADS", "1")
                    .env(starling_train::NO_GRAD_SYNC_ENV, "1"),
                name,
            )?;
            let (alone, _) = starling_figures(&quiet, a.warmup, (a.batch * a.ctx) as f64)?;
            exposed = Some(1.0 - tok_s / alone);
        }
        rows.push(Row {
            name,
            tok_s,
            comm,
            exposed,
            peak_gb: peak_of(&out),
            note: format!("batch {per_rank} per rank"),
        });
    }
    let config = std::fs::read_to_string(one.join("config.json"))?;
    eprintln!("bench ddp: PyTorch, 1 process x 2 threads");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    let out = run(
        Command::new(&py)
            .arg(script.join("bench_train.py"))
            .args(["--arch", "llama", "--config", &config, "--mode", "eager"])
            .arg("--data")
            .arg(&batches)
            .args(["--batch", &a.batch.to_string(), "--ctx", &a.ctx.to_string()])
            .args([
                "--steps",
                &a.steps.to_string(),
                "--warmup",
                &a.warmup.to_string(),
            ])
            .args(["--threads", "2"])
            .env("OMP_NUM_THREADS", "2"),
        "scripts/bench_train.py",
    )?;
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .with_context(|| format!("reading bench_train.py's output: {out}"))?;
    let torch = v["torch"].as_str().unwrap_or("?").to_string();
    rows.push(Row {
        name: "PyTorch eager, 1 process x 2 threads",
        tok_s: v["train_tok_s"].as_f64().unwrap_or(f64::NAN),
        comm: None,
        exposed: None,
        peak_gb: None,
        note: format!("torch {torch}"),
    });
    for (name, mode, per_rank, note) in [
        (
            "PyTorch DDP, 2 x 1 (torchrun, Gloo)",
            "ddp",
            half,
            "exposed = step − no_sync step",
        ),
        (
            "PyTorch FSDP2, 2 x 1 (fully_shard per block)",
            "fsdp",
            half,
            "",
        ),
        ("PyTorch tensor parallel 2 (DTensor)", "tp", a.batch, ""),
    ] {
        eprintln!("bench ddp: {name}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let out = run(
            Command::new(&py)
                .args(["-m", "torch.distributed.run", "--nproc-per-node", "2"])
                .args([
                    "--master-addr",
                    "127.0.0.1",
                    "--master-port",
                    &port.to_string(),
                ])
                .arg(script.join("bench_ddp.py"))
                .arg("--config")
                .arg(one.join("config.json"))
                .arg("--data")
                .arg(&batches)
                .args(["--mode", mode])
                .args([
                    "--batch",
                    &per_rank.to_string(),
                    "--ctx",
                    &a.ctx.to_string(),
                ])
                .args([
                    "--steps",
                    &a.steps.to_string(),
                    "--warmup",
                    &a.warmup.to_string(),
                ])
                .args(["--threads", "1"])
                .env("OMP_NUM_THREADS", "1"),
            "torchrun scripts/bench_ddp.py",
        )?;
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .with_context(|| format!("reading bench_ddp.py's output: {out}"))?;
        rows.push(Row {
            name,
            tok_s: v["train_tok_s"].as_f64().unwrap_or(f64::NAN),
            comm: None,
            exposed: v["comm_share"].as_f64(),
            peak_gb: v["peak_rss_mb"].as_f64().map(|m| m / 1024.0),
            note: format!("batch {per_rank} per rank; {note}"),
        });
    }
    let params = serde_json::from_str::<starling_model::LlamaConfig>(&config)
        .map(|c| c.num_params())
        .unwrap_or(0);
    println!(
        "\nbench ddp: preset {} ({:.1}M params), global batch {} x ctx {}, median of {} steps after {} warm-up, fp32, this CPU ({} cores)\n",
        a.preset,
        params as f64 / 1e6,
        a.batch,
        a.ctx,
        a.steps,
        a.warmup,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("| setup | tokens/s | x starling 1x2 | waited in collectives | exposed communication | peak memory, rank 0 | notes |");
    println!("|---|---|---|---|---|---|---|");
    let share = |c: Option<f64>| {
        c.map(|c| format!("{:.1}%", c * 100.0))
            .unwrap_or_else(|| "—".into())
    };
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {} | {} | {} | {} |",
            r.name,
            r.tok_s,
            r.tok_s / base,
            share(r.comm),
            share(r.exposed),
            r.peak_gb
                .map(|g| format!("{g:.2} GB"))
                .unwrap_or_else(|| "—".into()),
            r.note
        );
    }
    println!(
        "\nWaited: the share of the step a starling rank spends waiting in collectives (its own \
         timer; for DDP the wait for buckets backward did not hide). Exposed: 1 − (step with the \
         gradient averaging skipped, PyTorch's no_sync / starling's {}) / step, the same way on \
         both sides (DDP rows only: FSDP and tensor parallel cannot skip theirs). Peak memory is \
         the steps' (set-up excluded) on both sides; the tensor-parallel rows read the whole \
         batch on both ranks.",
        starling_train::NO_GRAD_SYNC_ENV
    );
    Ok(())
}
