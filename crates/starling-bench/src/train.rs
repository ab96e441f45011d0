//! `starling bench train`: starling's training step against a PyTorch reference of the same
//! architecture and config (`scripts/bench_train.py`), eager and under `torch.compile`, on the
//! same token batches and threads; plus generation tokens/s against HF transformers `generate`.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use starling_model::{generate, Llama, LlamaConfig, SamplingConfig};
use starling_train::optim::{AdamW, OptimConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, Tensor};

mod gpt2;
use gpt2::Gpt2;

/// Options of `starling bench train`.
#[derive(clap::Args)]
pub struct TrainBenchArgs {
    /// Rows: small (the CPU default preset), llama-7m (DESIGN.md's Llama), gpt2-fixed (DESIGN.md's
    /// fixed comparison model); on CUDA gpt2-124m (16 x 1024) and llama-1b (8 x 1024). Default:
    /// the first three on CPU, the last two on CUDA.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// cpu, or cuda (bf16 matrix products on both sides: starling's compute kind, PyTorch's autocast).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 12)]
    steps: usize,
    /// Warm-up steps (torch.compile compiles during these).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The timed steps run in this many rounds, starling and the references taking turns each
    /// round (so a slow minute of the machine falls on every side alike).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Threads for both sides.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Skip the torch.compile column (it compiles for a minute or more per row).
    #[arg(long)]
    no_compile: bool,
    /// Skip the generation table.
    #[arg(long)]
    no_generate: bool,
    /// On CUDA, launch starling's steps one kernel at a time instead of replaying a captured
    /// CUDA graph (the trainer's `--cuda-graphs off`).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Work directory for the token batches.
    #[arg(long, default_value = "out/bench-train")]
    dir: PathBuf,
    /// Python with torch and transformers (default: $STARLING_PYTHON, then .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// One benchmark row: a model shape and its batch.
struct Row {
    name: &'static str,
    arch: &'static str,
    batch: usize,
    ctx: usize,
    vocab: usize,
    llama: Option<LlamaConfig>,
    /// GPT-2: (d, layers, heads, ff).
    gpt2: Option<(i64, i64, i64, i64)>,
}

fn row(name: &str) -> Result<Row> {
    Ok(match name {
        "small" => Row {
            name: "small (CPU default)",
            arch: "llama",
            batch: 8,
            ctx: 512,
            vocab: 8192,
            llama: Some(LlamaConfig::preset("small", 8192)?),
            gpt2: None,
        },
        "llama-7m" => Row {
            name: "llama-7m (DESIGN.md)",
            arch: "llama",
            batch: 16,
            ctx: 128,
            vocab: 8192,
            llama: Some(LlamaConfig::preset("llama-7m", 8192)?),
            gpt2: None,
        },
        "gpt2-fixed" => Row {
            name: "gpt2-fixed (DESIGN.md)",
            arch: "gpt2",
            batch: 16,
            ctx: 128,
            vocab: 8192,
            llama: None,
            gpt2: Some((256, 4, 4, 1024)),
        },
        "gpt2-124m" => Row {
            name: "gpt2-124m",
            arch: "llama",
            batch: 16,
            ctx: 1024,
            vocab: 50257,
            llama: Some(LlamaConfig::preset("gpt2-124m", 50257)?),
            gpt2: None,
        },
        "llama-1b" => Row {
            name: "llama-1b",
            arch: "llama",
            batch: 8,
            ctx: 1024,
            vocab: 32000,
            llama: Some(LlamaConfig::preset("llama-1b", 32000)?),
            gpt2: None,
        },
        other => bail!("unknown row `{other}` (small, llama-7m, gpt2-fixed, gpt2-124m, llama-1b)"),
    })
}

/// A model's loss of (inputs, targets).
type LossFn = Box<dyn Fn(&Tensor, &Tensor) -> Tensor>;

/// Median of a sample.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One side of a row, stepped a few steps at a time so that the sides can take turns.
trait BenchSide {
    /// Runs the next `n` training steps; their seconds.
    fn train(&mut self, n: usize) -> Result<Vec<f64>>;
    /// Runs the next `n` forward passes (no gradients); their seconds.
    fn forward(&mut self, n: usize) -> Result<Vec<f64>>;
    /// Loss of the last training step.
    fn last_loss(&self) -> f64;
    /// Peak bytes allocated on the GPU so far (None on CPU).
    fn peak_mem(&self) -> Result<Option<u64>>;
}

/// What one side of a row measured.
struct Side {
    train_tok_s: f64,
    forward_tok_s: f64,
    last_loss: f64,
    /// Peak bytes allocated on the GPU (None on CPU).
    peak_mem: Option<u64>,
}

/// Runs every side's warm-up, then their timed steps in `rounds` turns (side order rotating each
/// round), training first and then forward passes; each side's median.
fn interleaved(
    sides: &mut [&mut dyn BenchSide],
    tokens: f64,
    steps: usize,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<Side>> {
    let n = sides.len();
    let per_round = steps.div_ceil(rounds.max(1)).max(1);
    let mut timed = |forward: bool| -> Result<Vec<f64>> {
        let mut times = vec![Vec::new(); n];
        for s in sides.iter_mut() {
            if forward {
                s.forward(warmup)?;
            } else {
                s.train(warmup)?;
            }
        }
        let mut left = steps;
        let mut round = 0;
        while left > 0 {
            let k = per_round.min(left);
            for i in 0..n {
                let j = (i + round) % n;
                let t = if forward {
                    sides[j].forward(k)?
                } else {
                    sides[j].train(k)?
                };
                times[j].extend(t);
            }
            left -= k;
            round += 1;
        }
        Ok(times.into_iter().map(|t| tokens / median(t)).collect())
    };
    let train = timed(false)?;
    let forward = timed(true)?;
    sides
        .iter()
        .zip(train.into_iter().zip(forward))
        .map(|(s, (train_tok_s, forward_tok_s))| {
            Ok(Side {
                train_tok_s,
                forward_tok_s,
                last_loss: s.last_loss(),
                peak_mem: s.peak_mem()?,
            })
        })
        .collect()
}

/// starling's step as the trainer runs it on CUDA: three eager warm-up steps on a side stream,
/// then the whole step (forward, backward, clipping, AdamW) captured once and replayed, its batch
/// copied into static buffers first.
struct GraphedStep {
    x: Tensor,
    y: Tensor,
    lr: Tensor,
    graph: starling_torch::cuda::StepGraph<Tensor>,
}

impl GraphedStep {
    fn new(device: usize, (x, y): (Tensor, Tensor), on: Device) -> Self {
        Self {
            x,
            y,
            lr: Tensor::full([], 1e-3, (Kind::Float, on)),
            graph: starling_torch::cuda::StepGraph::new(device, 3),
        }
    }

    /// One step on `(x, y)`; its loss as a device tensor.
    fn step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        loss_fn: &LossFn,
        opt: &mut AdamW,
        vs: &nn::VarStore,
    ) -> Result<Tensor> {
        self.x.copy_(x);
        self.y.copy_(y);
        let (sx, sy, lr) = (&self.x, &self.y, &self.lr);
        self.graph.step(opt, |opt| -> Result<Tensor> {
            let loss = loss_fn(sx, sy);
            loss.backward();
            let o = opt.clip(vs)?;
            opt.update_on_device(vs, lr, Some(&o.found_inf))?;
            Ok(loss.detach())
        })
    }
}

/// starling's model, optimizer and batches for one row.
struct StarlingSide<'a> {
    row: &'a Row,
    data: &'a [u32],
    device: Device,
    vs: nn::VarStore,
    loss_fn: LossFn,
    opt: AdamW,
    graphed: Option<GraphedStep>,
    /// Batches used so far (training, forward); both wrap around the data.
    done: (usize, usize),
    last_loss: f64,
}

impl<'a> StarlingSide<'a> {
    fn new(row: &'a Row, data: &'a [u32], device: Device, graphs: bool) -> Result<Self> {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(device);
        let loss_fn: LossFn = match (&row.llama, row.gpt2) {
            (Some(c), _) => {
                let mut m = Llama::new(&vs.root(), c);
                if device.is_cuda() {
                    m.set_compute_kind(Kind::BFloat16);
                }
                Box::new(move |x, y| m.loss(x, y))
            }
            (None, Some((d, l, h, ff))) => {
                let m = Gpt2::new(&vs.root(), row.vocab as i64, row.ctx as i64, d, l, h, ff);
                Box::new(move |x, y| m.loss(x, y))
            }
            _ => bail!("row {} has no model", row.name),
        };
        let opt = AdamW::new(
            &vs,
            OptimConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        if let Device::Cuda(i) = device {
            starling_torch::cuda::reset_peak_memory(i)?;
        }
        let mut side = Self {
            row,
            data,
            device,
            vs,
            loss_fn,
            opt,
            graphed: None,
            done: (0, 0),
            last_loss: f64::NAN,
        };
        if let (Device::Cuda(i), true) = (device, graphs) {
            side.graphed = Some(GraphedStep::new(i, side.batch(0), device));
        }
        Ok(side)
    }

    /// Inputs and targets of batch `k` (wrapping around the data).
    fn batch(&self, k: usize) -> (Tensor, Tensor) {
        let r = self.row;
        let per = r.batch * (r.ctx + 1);
        let k = k % (self.data.len() / per).max(1);
        let w: Vec<i64> = self.data[k * per..(k + 1) * per]
            .iter()
            .map(|&t| i64::from(t))
            .collect();
        let w = Tensor::from_slice(&w)
            .view([r.batch as i64, r.ctx as i64 + 1])
            .to_device(self.device);
        (
            w.narrow(1, 0, r.ctx as i64).contiguous(),
            w.narrow(1, 1, r.ctx as i64).contiguous(),
        )
    }
}

impl BenchSide for StarlingSide<'_> {
    fn train(&mut self, n: usize) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let (x, y) = self.batch(self.done.0);
            self.done.0 += 1;
            let t = Instant::now();
            let loss = match self.graphed.as_mut() {
                Some(g) => g.step(&x, &y, &self.loss_fn, &mut self.opt, &self.vs)?,
                None => {
                    let loss = (self.loss_fn)(&x, &y);
                    loss.backward();
                    let o = self.opt.clip(&self.vs)?;
                    self.opt.update(&self.vs, 1e-3, Some(&o.found_inf))?;
                    loss
                }
            };
            self.last_loss = loss.double_value(&[]);
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    fn forward(&mut self, n: usize) -> Result<Vec<f64>> {
        let _g = tch::no_grad_guard();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let (x, y) = self.batch(self.done.1);
            self.done.1 += 1;
            let t = Instant::now();
            (self.loss_fn)(&x, &y).double_value(&[]);
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    fn last_loss(&self) -> f64 {
        self.last_loss
    }

    fn peak_mem(&self) -> Result<Option<u64>> {
        Ok(match self.device {
            Device::Cuda(i) => starling_torch::cuda::max_memory_allocated(i)?,
            _ => None,
        })
    }
}

/// The PyTorch reference (`scripts/bench_train.py --serve`) of one row and mode, a child process
/// answering `train N` / `forward N` one JSON line at a time.
struct TorchSide {
    mode: &'static str,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: PathBuf,
    /// The `ready` line: params, device, torch version.
    info: serde_json::Value,
    last_loss: f64,
    peak_mem: Option<u64>,
}

impl TorchSide {
    /// Starts the reference for row `r` in `mode` (eager or compile); `same_heap`: with the heap
    /// settings starling's process runs with ([`starling_torch::retain_freed_memory`]), else
    /// glibc's defaults.
    fn spawn(
        py: &Path,
        r: &Row,
        data: &Path,
        a: &TrainBenchArgs,
        mode: &'static str,
        same_heap: bool,
    ) -> Result<Self> {
        let config = match (&r.llama, r.gpt2) {
            (Some(c), _) => serde_json::to_string(c)?,
            (None, Some((d, l, h, ff))) => serde_json::json!({
                "vocab": r.vocab, "ctx": r.ctx, "d": d, "layers": l, "heads": h, "ff": ff
            })
            .to_string(),
            _ => bail!("row {} has no model", r.name),
        };
        // The checkout the binary runs in (a carried binary on a device machine), else the one it was built in.
        let local = Path::new("scripts/bench_train.py");
        let script = if local.exists() {
            local.to_path_buf()
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_train.py")
        };
        let heap = if same_heap { "" } else { "-default-heap" };
        let stderr = a.dir.join(format!("reference-{mode}{heap}.stderr"));
        let log = std::fs::File::create(&stderr)
            .with_context(|| format!("creating {}", stderr.display()))?;
        let mut cmd = Command::new(py);
        if same_heap {
            let (k, v) = starling_torch::RETAIN_FREED_MEMORY_ENV;
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg(&script)
            .args(["--arch", r.arch, "--config", &config, "--mode", mode])
            .arg("--data")
            .arg(data)
            .args(["--batch", &r.batch.to_string(), "--ctx", &r.ctx.to_string()])
            .args(["--steps", &a.steps.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--threads", &a.threads.to_string()])
            .args(["--device", &a.device, "--serve"])
            .env("OMP_NUM_THREADS", a.threads.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {} {}", py.display(), script.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{}: no pipes to the reference", script.display());
        };
        let mut side = Self {
            mode,
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
            stderr,
            info: serde_json::Value::Null,
            last_loss: f64::NAN,
            peak_mem: None,
        };
        side.info = side.reply()?;
        Ok(side)
    }

    /// The reference's next JSON line; its stderr when it ended or answered an error.
    fn reply(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let v: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        match v {
            Some(v) if v.get("error").is_none() => Ok(v),
            _ => {
                let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                let tail = tail.lines().rev().collect::<Vec<_>>().join("\n");
                bail!(
                    "the PyTorch reference ({}) answered {:?}; its stderr ({}) ends:\n{tail}",
                    self.mode,
                    line.trim(),
                    self.stderr.display()
                )
            }
        }
    }

    fn command(&mut self, what: &str, n: usize) -> Result<Vec<f64>> {
        writeln!(self.stdin, "{what} {n}")?;
        self.stdin.flush()?;
        let v = self.reply()?;
        if what == "train" {
            self.last_loss = v["loss"].as_f64().unwrap_or(f64::NAN);
        }
        self.peak_mem = v["peak_mem"].as_u64();
        Ok(v["times"]
            .as_array()
            .map(|t| t.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default())
    }
}

impl BenchSide for TorchSide {
    fn train(&mut self, n: usize) -> Result<Vec<f64>> {
        self.command("train", n)
    }

    fn forward(&mut self, n: usize) -> Result<Vec<f64>> {
        self.command("forward", n)
    }

    fn last_loss(&self) -> f64 {
        self.last_loss
    }

    fn peak_mem(&self) -> Result<Option<u64>> {
        Ok(self.peak_mem)
    }
}

impl Drop for TorchSide {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The processor or GPU the table was measured on.
fn processor(device: Device) -> String {
    if let Device::Cuda(i) = device {
        return starling_train::metrics::cuda_device_name(i)
            .unwrap_or_else(|| "CUDA device".into());
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Runs the training benchmark and prints its tables.
pub fn train(a: &TrainBenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: debug build; run `cargo run --release -p starling -- bench train` for real figures"
        );
    }
    let device = match a.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda: CUDA is not available to libtorch here"),
        other => bail!("unknown --device `{other}` (cpu or cuda)"),
    };
    tch::set_num_threads(a.threads);
    // As `starling train` runs; the references get the same heap settings (and one eager column
    // glibc's defaults).
    let heap = if starling_torch::retain_freed_memory() {
        "; heap: freed memory retained (starling and the references; the default-heap column: glibc's defaults)"
    } else {
        ""
    };
    let py = crate::measure::python(a.python.as_deref());
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let default_rows: &[&str] = if device.is_cuda() {
        &["gpt2-124m", "llama-1b"]
    } else {
        &["small", "llama-7m", "gpt2-fixed"]
    };
    let names: Vec<String> = if a.rows.is_empty() {
        default_rows.iter().map(|s| s.to_string()).collect()
    } else {
        a.rows.clone()
    };
    let rows = names.iter().map(|n| row(n)).collect::<Result<Vec<_>>>()?;
    let peak = starling_train::default_peak_flops(if device.is_cuda() { "cuda" } else { "cpu" });
    let (precision, threads) = if device.is_cuda() && !a.no_cuda_graphs {
        (
            "bf16 matrix products (PyTorch: autocast); starling's step replayed from a CUDA graph",
            String::new(),
        )
    } else if device.is_cuda() {
        ("bf16 matrix products (PyTorch: autocast)", String::new())
    } else {
        ("fp32", format!("; {} threads", a.threads))
    };
    println!(
        "train step = forward + backward + clip + AdamW; median of {} steps after {} warm-up, the sides taking turns in {} rounds{threads}; {precision}{heap}; {}; torch {}; MFU against {:.3e} FLOP/s",
        a.steps,
        a.warmup,
        a.rounds,
        processor(device),
        torch_version(&py),
        peak
    );
    println!(
        "| model | params | batch x ctx | starling train tok/s | PyTorch eager | torch.compile | starling / eager | starling / compile | eager, glibc heap defaults | starling / that | MFU starling / eager / compile | peak mem GiB starling / eager / compile | starling fwd tok/s | eager fwd | fwd / eager | last loss starling / eager |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let total = (a.warmup + a.steps) * r.batch * (r.ctx + 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let data: Vec<u32> = (0..total)
            .map(|_| rng.gen_range(0..r.vocab as u32))
            .collect();
        let path = a.dir.join(format!("{}.u32", r.arch));
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        for t in &data {
            f.write_all(&t.to_le_bytes())?;
        }
        drop(f);
        if device.is_cuda() && r.gpt2.is_some() {
            bail!(
                "row {}: the GPT-2 comparison model runs on the CPU only",
                r.name
            );
        }
        let mut st = StarlingSide::new(r, &data, device, !a.no_cuda_graphs)?;
        let mut eager = TorchSide::spawn(&py, r, &path, a, "eager", true)?;
        // PyTorch as it runs by default (glibc's heap settings), on the CPU.
        let mut plain = match device {
            Device::Cpu => Some(TorchSide::spawn(&py, r, &path, a, "eager", false)?),
            _ => None,
        };
        let mut compiled = if a.no_compile {
            None
        } else {
            Some(TorchSide::spawn(&py, r, &path, a, "compile", true)?)
        };
        let mut sides: Vec<&mut dyn BenchSide> = vec![&mut st, &mut eager];
        let with_plain = plain.is_some();
        if let Some(p) = plain.as_mut() {
            sides.push(p);
        }
        if let Some(c) = compiled.as_mut() {
            sides.push(c);
        }
        let tokens = (r.batch * r.ctx) as f64;
        let measured = interleaved(&mut sides, tokens, a.steps, a.warmup, a.rounds)?;
        let [st, eager_side, rest @ ..] = measured.as_slice() else {
            bail!("row {}: a side did not report", r.name);
        };
        let (plain_side, rest) = match rest {
            [p, rest @ ..] if with_plain => (Some(p), rest),
            _ => (None, rest),
        };
        let (et, ef) = (eager_side.train_tok_s, eager_side.forward_tok_s);
        let ct = rest.first().map_or(f64::NAN, |c| c.train_tok_s);
        let pt = plain_side.map_or(f64::NAN, |p| p.train_tok_s);
        let params = eager.info["params"].as_f64().unwrap_or(f64::NAN);
        let flops = match (&r.llama, r.gpt2) {
            (Some(c), _) => c.flops_per_token(r.ctx),
            // GPT-2: 6 N (matrix parameters) + attention, as for Llama.
            (None, Some((d, l, _, ff))) => {
                let n = (l * (4 * d * d + 2 * d * ff)) as f64 + (r.vocab as i64 * d) as f64;
                6.0 * n + 12.0 * (l * d) as f64 * r.ctx as f64
            }
            _ => f64::NAN,
        };
        let mfu = |t: f64| format!("{:.1}%", t * flops / peak * 100.0);
        let gib = |b: Option<f64>| {
            b.map_or("-".to_string(), |b| {
                format!("{:.2}", b / (1u64 << 30) as f64)
            })
        };
        let mem_of = |v: Option<&Side>| v.and_then(|v| v.peak_mem.map(|b| b as f64));
        println!(
            "| {} | {:.2}M | {}x{} | {:.0} | {et:.0} | {ct:.0} | {:.2}x | {:.2}x | {pt:.0} | {:.2}x | {} / {} / {} | {} / {} / {} | {:.0} | {ef:.0} | {:.2}x | {:.3} / {:.3} |",
            r.name,
            params / 1e6,
            r.batch,
            r.ctx,
            st.train_tok_s,
            st.train_tok_s / et,
            st.train_tok_s / ct,
            st.train_tok_s / pt,
            mfu(st.train_tok_s),
            mfu(et),
            mfu(ct),
            gib(st.peak_mem.map(|b| b as f64)),
            gib(mem_of(Some(eager_side))),
            gib(mem_of(rest.first())),
            st.forward_tok_s,
            st.forward_tok_s / ef,
            st.last_loss,
            eager_side.last_loss
        );
    }
    if !a.no_generate && !device.is_cuda() {
        generation(&py, a)?;
    }
    Ok(())
}

/// The torch version the reference runs (the wheel tch links).
fn torch_version(py: &Path) -> String {
    Command::new(py)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

/// Greedy generation of the `small` preset: starling's KV cache against HF `generate`.
fn generation(py: &Path, a: &TrainBenchArgs) -> Result<()> {
    let (prompt_len, new) = (32usize, 128usize);
    tch::manual_seed(3);
    let mut c = LlamaConfig::preset("small", 8192)?;
    c.eos_token_id = None;
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Llama::new(&vs.root(), &c);
    let dir = a.dir.join("gen-model");
    starling_model::save_dir(&vs, &c, &dir)?;
    let prompt: Vec<i64> = (0..prompt_len as i64)
        .map(|i| (i * 37 + 11) % 8192)
        .collect();
    let cfg = SamplingConfig {
        temperature: 0.0,
        repetition_penalty: 1.0,
        max_tokens: new,
        stop: Vec::new(),
        ..Default::default()
    };
    let none = |_: &[i64]| String::new();
    let mut best = 0.0f64;
    let mut ids = Vec::new();
    for _ in 0..3 {
        // Wall time of the whole call, prefill included, as for HF below.
        let t = Instant::now();
        let g = generate(&m, &prompt, &cfg, &none, &mut |_| {});
        best = best.max(g.ids.len() as f64 / t.elapsed().as_secs_f64());
        ids = g.ids;
    }
    let script = r#"
import sys, json, time, torch
from transformers import LlamaForCausalLM
torch.set_num_threads(int(sys.argv[3]))
m = LlamaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
ids = torch.tensor([json.loads(sys.argv[2])])
n = int(sys.argv[4])
best, out = 0.0, None
for _ in range(3):
    t = time.perf_counter()
    with torch.no_grad():
        out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    best = max(best, n / (time.perf_counter() - t))
print(json.dumps({"tok_s": best, "ids": out[0, ids.shape[1]:].tolist()}))
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(&dir)
        .arg(serde_json::to_string(&prompt)?)
        .arg(a.threads.to_string())
        .arg(new.to_string())
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .context("running transformers generate")?;
    if !out.status.success() {
        bail!(
            "transformers generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let hf = v["tok_s"].as_f64().unwrap_or(f64::NAN);
    let theirs: Vec<i64> = v["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
        .unwrap_or_default();
    let same = theirs.iter().zip(&ids).take_while(|(a, b)| a == b).count();
    println!();
    println!(
        "generation: `small` ({:.1}M params, random weights), greedy, prompt {prompt_len} tokens, {new} new, batch 1, {} threads, best of 3",
        c.num_params() as f64 / 1e6,
        a.threads
    );
    println!("| engine | tokens/s | x HF |");
    println!("|---|---|---|");
    println!("| starling (KV cache) | {best:.1} | {:.2}x |", best / hf);
    println!("| HF transformers generate | {hf:.1} | 1.00x |");
    println!("greedy tokens identical to HF for the first {same} of {new}");
    Ok(())
}
