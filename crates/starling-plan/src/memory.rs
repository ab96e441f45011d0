//! Memory per GPU under data parallelism and ZeRO stages, activations with and without
//! recomputation, and the smallest tensor/pipeline layout that fits.
//!
//! Mixed-precision Adam keeps 16 bytes per parameter (ZeRO paper): fp16/bf16 weights (2) and
//! gradients (2), fp32 master weights, momentum and variance (12). Activations per layer follow
//! Korthikanti et al. 2022: s·b·h·(34 + 5·a·s/h) bytes without recomputation, split by the tensor
//! degree with sequence parallelism; with full recomputation a layer keeps only its 2·s·b·h-byte input.

use crate::model::ModelSpec;
use serde::Serialize;

/// Data-parallel sharding strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sharding {
    /// Plain data parallel: everything replicated.
    DataParallel,
    /// ZeRO-1: optimizer state sharded.
    Zero1,
    /// ZeRO-2: optimizer state and gradients sharded.
    Zero2,
    /// ZeRO-3 / FSDP: weights too.
    Zero3,
}

impl Sharding {
    /// All strategies, least sharded first.
    pub const ALL: [Sharding; 4] = [
        Sharding::DataParallel,
        Sharding::Zero1,
        Sharding::Zero2,
        Sharding::Zero3,
    ];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Sharding::DataParallel => "data parallel",
            Sharding::Zero1 => "ZeRO-1",
            Sharding::Zero2 => "ZeRO-2",
            Sharding::Zero3 => "ZeRO-3/FSDP",
        }
    }
}

/// Bytes per GPU of one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryBreakdown {
    /// Sharding strategy.
    pub sharding: Sharding,
    /// Weights (2 bytes/param).
    pub weights: f64,
    /// Gradients (2 bytes/param).
    pub gradients: f64,
    /// Optimizer state (12 bytes/param).
    pub optimizer: f64,
    /// Activations of one micro-batch kept for backward, no recomputation.
    pub activations: f64,
    /// Activations with full recomputation.
    pub activations_recompute: f64,
}

impl MemoryBreakdown {
    /// Model states (weights + gradients + optimizer).
    pub fn states(&self) -> f64 {
        self.weights + self.gradients + self.optimizer
    }

    /// Model states plus activations with recomputation.
    pub fn total_recompute(&self) -> f64 {
        self.states() + self.activations_recompute
    }

    /// Model states plus activations without recomputation.
    pub fn total(&self) -> f64 {
        self.states() + self.activations
    }
}

/// Shape assumed when the model gives none: Llama-like width and depth for its size.
pub(crate) fn shape(m: &ModelSpec) -> (f64, f64, f64) {
    let d = m.d_model.map(f64::from).unwrap_or_else(|| {
        // 12·L·d² ≈ N with L ≈ d/128 (Llama/GPT-3 aspect ratios).
        (m.params * 128.0 / 12.0).cbrt()
    });
    let l = m
        .layers
        .map(f64::from)
        .unwrap_or_else(|| (m.params / (12.0 * d * d)).max(1.0).round());
    let heads = (d / 128.0).max(1.0);
    (l, d, heads)
}

/// Memory per GPU for `params` parameters sharded over `dp` data-parallel ranks, after tensor
/// degree `tp` and pipeline degree `pp` split the model, one micro-batch of one sequence.
pub fn breakdown(m: &ModelSpec, sharding: Sharding, dp: u64, tp: u64, pp: u64) -> MemoryBreakdown {
    let psi = m.params / (tp * pp) as f64;
    let n = dp.max(1) as f64;
    let (w, g, o) = match sharding {
        Sharding::DataParallel => (2.0 * psi, 2.0 * psi, 12.0 * psi),
        Sharding::Zero1 => (2.0 * psi, 2.0 * psi, 12.0 * psi / n),
        Sharding::Zero2 => (2.0 * psi, 2.0 * psi / n, 12.0 * psi / n),
        Sharding::Zero3 => (2.0 * psi / n, 2.0 * psi / n, 12.0 * psi / n),
    };
    let (layers, d, heads) = shape(m);
    let s = f64::from(m.context);
    let t = tp as f64;
    let per_layer = starling_arch::config::activation_bytes_16bit(1.0, s, d, heads) / t;
    // With 1F1B the first stage holds `pp` micro-batches of its L/pp layers: L layers' worth.
    let activations = layers * per_layer;
    let activations_recompute = layers * 2.0 * s * d / t + per_layer;
    MemoryBreakdown {
        sharding,
        weights: w,
        gradients: g,
        optimizer: o,
        activations,
        activations_recompute,
    }
}

/// A tensor × pipeline × data layout and its memory per GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Layout {
    /// Tensor-parallel degree (within a node, at most 8).
    pub tp: u64,
    /// Pipeline-parallel degree.
    pub pp: u64,
    /// Data-parallel degree.
    pub dp: u64,
    /// Sharding over the data-parallel ranks.
    pub sharding: Sharding,
    /// Bytes per GPU with full recomputation.
    pub bytes_per_gpu: f64,
}

/// The smallest tp·pp whose memory with recomputation fits in `usable` bytes per GPU on `gpus`
/// GPUs, with ZeRO-1 over the data-parallel ranks (Megatron's distributed optimizer); when none
/// does, the smallest with ZeRO-3. `None` when even tp 8, every pipeline split and ZeRO-3 do not fit.
pub fn smallest_layout(m: &ModelSpec, gpus: u64, usable: f64) -> Option<Layout> {
    let (layers, _, _) = shape(m);
    let layers = (layers as u64).max(1);
    for sharding in [Sharding::Zero1, Sharding::Zero3] {
        let mut best: Option<Layout> = None;
        for tp in [1u64, 2, 4, 8] {
            for pp in 1..=layers {
                let mp = tp * pp;
                // Uneven pipeline stages and a few idle GPUs are allowed (dp = ⌊gpus / mp⌋).
                if mp > gpus || best.is_some_and(|b| b.tp * b.pp <= mp) {
                    continue;
                }
                let dp = gpus / mp;
                let b = breakdown(m, sharding, dp, tp, pp).total_recompute();
                if b <= usable {
                    best = Some(Layout {
                        tp,
                        pp,
                        dp,
                        sharding,
                        bytes_per_gpu: b,
                    });
                }
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

/// The layouts starling's trainer runs that fit in `usable` bytes per GPU, with recomputation:
/// plain data parallel, ZeRO-1, then FSDP (ZeRO-3) with tensor parallel 1, 2, 4, 8 inside a node.
/// starling has no pipeline parallelism (pp is 1), and tensor parallelism shards the
/// data-parallel dimension with FSDP.
pub fn starling_layouts(m: &ModelSpec, gpus: u64, usable: f64) -> Vec<Layout> {
    let candidates = [
        (1, Sharding::DataParallel),
        (1, Sharding::Zero1),
        (1, Sharding::Zero3),
        (2, Sharding::Zero3),
        (4, Sharding::Zero3),
        (8, Sharding::Zero3),
    ];
    candidates
        .into_iter()
        .filter_map(|(tp, sharding)| {
            if tp > gpus {
                return None;
            }
            let dp = gpus / tp;
            let b = breakdown(m, sharding, dp, tp, 1).total_recompute();
            (b <= usable).then_some(Layout {
                tp,
                pp: 1,
                dp,
                sharding,
                bytes_per_gpu: b,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_paper_7_5b_on_64_gpus() {
        // ZeRO paper, Figure 1: 7.5B params, 64 GPUs: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB of model states.
        let m = ModelSpec::dense(7.5e9, 1024);
        let gb = |s| breakdown(&m, s, 64, 1, 1).states() / 1e9;
        assert!((gb(Sharding::DataParallel) - 120.0).abs() < 0.05);
        assert!((gb(Sharding::Zero1) - 31.4).abs() < 0.05);
        assert!((gb(Sharding::Zero2) - 16.6).abs() < 0.05);
        assert!((gb(Sharding::Zero3) - 1.9).abs() < 0.05);
    }

    #[test]
    fn activations_by_hand() {
        // GPT-3 175B shape (96 layers, 12288 wide, 96 heads), s = 2048, no TP:
        // per layer 2048·12288·(34 + 5·96·2048/12288) = 2048·12288·114 bytes = 2.87 GB.
        let mut m = ModelSpec::dense(175e9, 2048);
        m.layers = Some(96);
        m.d_model = Some(12288);
        let b = breakdown(&m, Sharding::Zero1, 1, 1, 1);
        let per_layer = 2048.0 * 12288.0 * 114.0;
        assert!((b.activations - 96.0 * per_layer).abs() / b.activations < 1e-9);
        assert!(b.activations_recompute < b.activations / 20.0);
    }

    #[test]
    fn layouts() {
        // 7B fits on one 80 GB GPU per replica with ZeRO-1 over 64 GPUs.
        let small = ModelSpec::dense(7e9, 2048);
        let l = smallest_layout(&small, 64, 72e9).expect("fits");
        assert_eq!((l.tp, l.pp), (1, 1));
        // 175B on 64 80-GB GPUs: ZeRO-1 without model parallelism does not fit (43.8 GB of
        // optimizer shards plus 700 GB of weights and gradients), so the layout shards further.
        let big = ModelSpec::dense(175e9, 2048);
        assert!(breakdown(&big, Sharding::Zero1, 64, 1, 1).total_recompute() > 72e9);
        let l = smallest_layout(&big, 64, 72e9).expect("fits");
        assert!(l.tp * l.pp > 1 && l.sharding == Sharding::Zero1, "{l:?}");
        let per_gpu = breakdown(&big, Sharding::Zero1, l.dp, l.tp, l.pp).total_recompute();
        assert!(per_gpu <= 72e9 && (per_gpu - l.bytes_per_gpu).abs() < 1.0);
        // On 8 GPUs nothing fits: 16 bytes x 175B / 8 = 350 GB per GPU even fully sharded.
        assert!(smallest_layout(&big, 8, 72e9).is_none());
        // A 10T model on 8 GPUs does not fit at all.
        assert!(smallest_layout(&ModelSpec::dense(10e12, 2048), 8, 72e9).is_none());
        // What starling runs: no pipeline; 175B on 64 GPUs needs FSDP (and TP when the
        // activations of one layer are too large).
        let ls = starling_layouts(&big, 64, 72e9);
        assert!(
            !ls.is_empty()
                && ls
                    .iter()
                    .all(|l| l.pp == 1 && l.sharding == Sharding::Zero3),
            "{ls:?}"
        );
        assert_eq!(
            starling_layouts(&small, 64, 72e9)
                .first()
                .map(|l| l.sharding),
            Some(Sharding::Zero1),
            "7B: 112 GB of states replicated do not fit 72 GB; ZeRO-1's do"
        );
        assert!(starling_layouts(&big, 8, 72e9).is_empty());
    }
}
