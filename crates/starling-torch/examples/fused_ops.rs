//! starling-torch's fused ops against the PyTorch compositions they replace, forward+backward,
//! alternating in one process (median of 10 after 2 warm-up): cross-entropy over logits
//! (`cross_entropy` = log_softmax + nll_loss), SwiGLU over a fused gate|up product (split,
//! silu, product) and the attention's inputs from a fused Q|K|V product (split, heads, rotary
//! embedding), and causal attention with grouped K/V heads (SDPA, which runs ATen's CPU flash
//! attention). The default shapes are `small`'s at 8 x 512 tokens: 4,096 rows, 8,192-token
//! vocabulary, 768 hidden units, 8 query and 4 key/value heads of 36.
//!
//! `cargo run --release -p starling-torch --example fused_ops -- [rows] [vocab] [ff] [threads]`

use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ms of `f` (forward+backward, then a read of the gradient) for each side, alternating.
fn race(x: &mut Tensor, f: impl Fn(&Tensor, bool) -> Tensor) -> (f64, f64) {
    let mut times: [Vec<f64>; 2] = Default::default();
    for round in 0..12 {
        for (side, t) in times.iter_mut().enumerate() {
            x.zero_grad();
            let start = Instant::now();
            f(x, side == 1).backward();
            let _ = x.grad().sum(Kind::Float).double_value(&[]);
            if round >= 2 {
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    (median(times[0].clone()), median(times[1].clone()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: i64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, vocab, ff, threads) = (arg(0, 4096), arg(1, 8192), arg(2, 768), arg(3, 2));
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let targets = Tensor::randint(vocab, [rows], (Kind::Int64, Device::Cpu));
    let mut logits = Tensor::randn([rows, vocab], opts).set_requires_grad(true);
    let ce = race(&mut logits, |x, ours| {
        if ours {
            starling_torch::cross_entropy(x, &targets).expect("cross-entropy")
        } else {
            x.cross_entropy_for_logits(&targets)
        }
    });
    let mut y = Tensor::randn([rows, 2 * ff], opts).set_requires_grad(true);
    let w = Tensor::randn([rows, ff], opts);
    let glu = race(&mut y, |y, ours| {
        let h = if ours {
            starling_torch::swiglu(y).expect("swiglu")
        } else {
            let halves = y.split_with_sizes([ff, ff], -1);
            halves[0].silu() * &halves[1]
        };
        (h * &w).sum(Kind::Float)
    });
    let (b, t, h, kv, d) = (8, rows / 8, 8, 4, 36);
    let mut qkv = Tensor::randn([b, t, (h + 2 * kv) * d], opts).set_requires_grad(true);
    let half = Tensor::arange(t, opts).outer(&Tensor::rand([d / 2], opts));
    let emb = Tensor::cat(&[&half, &half], -1);
    let (cos, sin) = (emb.cos(), emb.sin());
    let rope = race(&mut qkv, |y, ours| {
        let [q, k, v] = if ours {
            starling_torch::qkv_rope(y, &cos, &sin, h, kv, d).expect("qkv_rope")
        } else {
            let p = y.split_with_sizes([h * d, kv * d, kv * d], -1);
            let heads = |z: &Tensor, n: i64| z.view([b, t, n, d]).transpose(1, 2);
            let rot = |x: Tensor| {
                let r = Tensor::cat(&[-x.narrow(3, d / 2, d / 2), x.narrow(3, 0, d / 2)], -1);
                &x * &cos + r * &sin
            };
            [
                rot(heads(&p[0], h)),
                rot(heads(&p[1], kv)),
                heads(&p[2], kv),
            ]
        };
        q.sum(Kind::Float) + k.mean(Kind::Float) + v.sum(Kind::Float)
    });
    // Causal attention with grouped heads, output as [b, t, h·d] on both sides (what the output
    // projection reads).
    let mut heads = Tensor::randn([b, h + 2 * kv, t, d], opts).set_requires_grad(true);
    let wo = Tensor::randn([b, t, h * d], opts);
    let attn = race(&mut heads, |x, ours| {
        let q = x.narrow(1, 0, h).contiguous();
        let k = x.narrow(1, h, kv).contiguous();
        let v = x.narrow(1, h + kv, kv).contiguous();
        let y = if ours {
            starling_torch::causal_attention(&q, &k, &v).expect("attention")
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<&Tensor>, 0.0, true, None, true)
                .transpose(1, 2)
                .contiguous()
                .view([b, t, h * d])
        };
        (y * &wo).sum(Kind::Float)
    });
    // RMSNorm of the residual stream (`small`'s width), weight gradient included.
    let dm = 288;
    let mut res = Tensor::randn([rows, dm], opts).set_requires_grad(true);
    let norm_w = Tensor::ones([dm], opts).set_requires_grad(true);
    let wn = Tensor::randn([rows, dm], opts);
    let norm = race(&mut res, |x, ours| {
        let y = if ours {
            starling_torch::rms_norm(x, &norm_w, 1e-5).expect("rms_norm")
        } else {
            x.rms_norm([dm], Some(&norm_w), 1e-5)
        };
        (y * &wn).sum(Kind::Float)
    });
    println!("forward+backward, fp32, {threads} threads, median of 10 (ms)");
    println!(
        "| op | shape | PyTorch composition | starling-torch | x PyTorch |\n|---|---|---|---|---|"
    );
    for (name, shape, (theirs, ours)) in [
        (
            "cross-entropy (log_softmax + nll_loss)",
            format!("{rows} x {vocab}"),
            ce,
        ),
        (
            "SwiGLU (split, silu, product)",
            format!("{rows} x 2·{ff}"),
            glu,
        ),
        (
            "Q, K, V with RoPE (split, heads, rotation)",
            format!("{b} x {t} x (8+2·4)·36"),
            rope,
        ),
        (
            "causal attention, grouped heads (SDPA: CPU flash)",
            format!("{b} x {t}, 8 heads / 4 K/V heads of 36"),
            attn,
        ),
        (
            "RMSNorm (ATen's rms_norm, a composition)",
            format!("{rows} x {dm}"),
            norm,
        ),
    ] {
        println!(
            "| {name} | {shape} | {theirs:.1} | {ours:.1} | {:.2} |",
            theirs / ours
        );
    }
    Ok(())
}
