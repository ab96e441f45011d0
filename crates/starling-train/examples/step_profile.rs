//! Times the phases of one training step (forward, backward, clip, AdamW) of a preset on the CPU
//! or CUDA, median over steps after warm-up: where a step's time goes, without PyTorch beside it
//! (`starling bench train` is the comparison).
//!
//! `cargo run --release -p starling-train --example step_profile -- small 8 512 [cpu|cuda] [threads] [ops]`
//! (`llama-7m 16 128` is DESIGN.md's Llama as `bench train` runs it)
//!
//! With `ops` last, two more steps run under PyTorch's profiler (starling-torch's `profile`) and
//! the ops that took their time are printed, most self time first (on CUDA, the kernels too, with
//! the kernel count and the GPU's idle share per step).

use starling_model::{Llama, LlamaConfig};
use starling_train::optim::{AdamW, OptimConfig};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let preset = arg(0, "small");
    let batch: i64 = arg(1, "8").parse()?;
    let ctx: i64 = arg(2, "512").parse()?;
    let device = if arg(3, "cpu") == "cuda" {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    tch::set_num_threads(arg(4, "2").parse()?);
    // As `starling train` runs.
    starling_train::retain_freed_memory();
    let config = LlamaConfig::preset(&preset, 8192)?;
    tch::manual_seed(1);
    let vs = VarStore::new(device);
    let model = Llama::new(&vs.root(), &config);
    let mut opt = AdamW::new(&vs, OptimConfig::default());
    let sync = |t: &Tensor| {
        let _ = t.sum(Kind::Float).double_value(&[]);
    };
    let mut phases: [Vec<f64>; 4] = Default::default();
    for step in 0..15 {
        let x = Tensor::randint(8192, [batch, ctx], (Kind::Int64, device));
        let y = x.roll([1], [1]);
        let t0 = Instant::now();
        let loss = model.loss(&x, &y);
        sync(&loss);
        let t1 = Instant::now();
        loss.backward();
        sync(&loss);
        let t2 = Instant::now();
        let o = opt.clip(&vs)?;
        sync(&o.grad_norm);
        let t3 = Instant::now();
        opt.update(&vs, 1e-3, Some(&o.found_inf))?;
        sync(&o.found_inf);
        let t4 = Instant::now();
        if step >= 3 {
            for (p, (a, b)) in phases
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                p.push((b - a).as_secs_f64() * 1e3);
            }
        }
    }
    if arg(5, "") == "ops" {
        let profiler = starling_torch::profile::Profiler::start(device.is_cuda())?;
        for _ in 0..2 {
            let x = Tensor::randint(8192, [batch, ctx], (Kind::Int64, device));
            let loss = model.loss(&x, &x.roll([1], [1]));
            loss.backward();
            let o = opt.clip(&vs)?;
            opt.update(&vs, 1e-3, Some(&o.found_inf))?;
        }
        sync(&Tensor::zeros([1], (Kind::Float, device)));
        let profile = profiler.stop()?;
        println!("two steps under the profiler:\n{}", profile.op_table(30));
        if device.is_cuda() {
            let d = profile.device();
            println!(
                "{} kernels per step, {} copies/fills per step, GPU idle {:.1}% of the window\n{}",
                d.kernels / 2,
                d.memory_ops / 2,
                100.0 * d.idle_share(),
                profile.kernel_table(20)
            );
        }
    }
    let ms: Vec<f64> = phases.into_iter().map(median).collect();
    let total: f64 = ms.iter().sum();
    println!(
        "{preset} {batch}x{ctx} on {device:?}: {:.0} tokens/s",
        (batch * ctx) as f64 / total * 1e3
    );
    println!("| phase | ms | share |\n|---|---|---|");
    for (name, m) in ["forward", "backward", "clip", "AdamW"].iter().zip(&ms) {
        println!("| {name} | {m:.1} | {:.0}% |", m / total * 100.0);
    }
    Ok(())
}
