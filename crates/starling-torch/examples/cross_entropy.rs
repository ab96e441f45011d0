//! Cross-entropy forward+backward over a language model's logits: PyTorch's `cross_entropy`
//! (log_softmax + nll_loss) against starling-torch's fused one, alternating in one process,
//! median of the runs, with the peak of what each keeps for backward.
//!
//! `cargo run --release -p starling-torch --example cross_entropy -- [rows] [vocab] [threads]`
//! (default 4096 8192 2: `small`'s 8 x 512 tokens at its 8,192-token vocabulary).

use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: i64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, vocab) = (arg(0, 4096), arg(1, 8192));
    tch::set_num_threads(arg(2, 2) as i32);
    tch::manual_seed(0);
    let mut logits =
        Tensor::randn([rows, vocab], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let targets = Tensor::randint(vocab, [rows], (Kind::Int64, Device::Cpu));
    let mut times: [Vec<f64>; 2] = Default::default();
    for round in 0..12 {
        for (side, t) in times.iter_mut().enumerate() {
            logits.zero_grad();
            let start = Instant::now();
            let loss = if side == 0 {
                logits.cross_entropy_for_logits(&targets)
            } else {
                starling_torch::cross_entropy(&logits, &targets)?
            };
            loss.backward();
            let _ = logits.grad().sum(Kind::Float).double_value(&[]);
            if round >= 2 {
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let (theirs, ours) = (median(times[0].clone()), median(times[1].clone()));
    println!(
        "cross-entropy forward+backward, {rows} x {vocab} fp32, {} threads (median of 10)",
        arg(2, 2)
    );
    println!("| implementation | ms | x PyTorch |\n|---|---|---|");
    println!("| PyTorch cross_entropy (log_softmax + nll_loss) | {theirs:.1} | 1.00 |");
    println!(
        "| starling_torch::cross_entropy | {ours:.1} | {:.2} |",
        theirs / ours
    );
    Ok(())
}
