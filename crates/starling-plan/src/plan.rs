//! A training plan: FLOPs, time, cost, energy, memory, layout, failures, data supply.

use crate::error::{Error, Result};
use crate::failures::{self, FailureModel, LLAMA3_FAILURES_PER_GPU_HOUR};
use crate::gpu::{default_mfu, Gpu};
use crate::memory::{breakdown, smallest_layout, Layout, MemoryBreakdown, Sharding};
use crate::model::ModelSpec;
use serde::Serialize;

/// Numeric format of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 (fp16 on V100).
    Bf16,
    /// fp8 (Hopper and later).
    Fp8,
}

/// How many tokens to train on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Tokens {
    /// A fixed count.
    Count(f64),
    /// Chinchilla-optimal: 20 tokens per parameter.
    Chinchilla,
}

/// A platform's own post volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PostVolume {
    /// Posts per day.
    pub posts_per_day: f64,
    /// Tokens per post (after the document template).
    pub tokens_per_post: f64,
    /// Years of history.
    pub years: f64,
    /// Share removed by curation (duplicates, reposts, spam), 0..1.
    pub dedup_ratio: f64,
}

/// Everything a plan depends on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInput {
    /// The model.
    pub model: ModelSpec,
    /// Training tokens.
    pub tokens: Tokens,
    /// The GPU.
    pub gpu: Gpu,
    /// GPUs in the job.
    pub gpus: u64,
    /// Model-FLOPs utilisation; `None` takes the generation's default.
    pub mfu: Option<f64>,
    /// Matrix precision.
    pub precision: Precision,
    /// Failures per GPU-hour. Default: Llama 3's rate.
    pub failure_rate: f64,
    /// Aggregate checkpoint write bandwidth, bytes/s. Default: 0.25 GB/s per GPU up to 2 TB/s.
    pub checkpoint_bw: Option<f64>,
    /// Seconds lost per restart (rescheduling, loading). Default 600.
    pub restart_s: f64,
    /// Data-centre power usage effectiveness. Default 1.2.
    pub pue: f64,
    /// Electricity price, $ per kWh. Default 0.10.
    pub kwh_price: f64,
    /// Rental price override, $ per GPU-hour.
    pub rent_per_hour: Option<f64>,
    /// Purchase price override, $ per GPU.
    pub price: Option<f64>,
    /// The platform's post volume, to check the data supply.
    pub posts: Option<PostVolume>,
    /// Tokens per optimizer step (global batch). Default 4 Mi (Llama 2's batch).
    pub batch_tokens: f64,
}

impl PlanInput {
    /// A plan input with the documented defaults.
    pub fn new(model: ModelSpec, tokens: Tokens, gpu: Gpu, gpus: u64) -> Self {
        Self {
            model,
            tokens,
            gpu,
            gpus,
            mfu: None,
            precision: Precision::Bf16,
            failure_rate: LLAMA3_FAILURES_PER_GPU_HOUR,
            checkpoint_bw: None,
            restart_s: 600.0,
            pue: 1.2,
            kwh_price: 0.10,
            rent_per_hour: None,
            price: None,
            posts: None,
            batch_tokens: 4.0 * 1024.0 * 1024.0,
        }
    }

    /// Checks every input; contradictions and out-of-range values are errors.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |field, message: String| Err(Error::Invalid { field, message });
        if self.gpus == 0 {
            return bad("gpus", "must be at least 1".into());
        }
        if let Tokens::Count(t) = self.tokens {
            if !(t.is_finite() && t > 0.0) {
                return bad("tokens", format!("must be positive, got {t}"));
            }
        }
        if let Some(m) = self.mfu {
            if !(m > 0.0 && m <= 1.0) {
                return bad("mfu", format!("must be in (0, 1], got {m}"));
            }
        }
        if self.precision == Precision::Fp8 && self.gpu.peak_fp8.is_none() {
            return bad(
                "precision",
                format!("{} has no fp8 tensor cores", self.gpu.name),
            );
        }
        for (v, f) in [
            (self.failure_rate, "failure_rate"),
            (self.restart_s, "restart_s"),
            (self.kwh_price, "kwh_price"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(f, format!("must be zero or positive, got {v}"));
            }
        }
        if !(self.pue.is_finite() && self.pue >= 1.0) {
            return bad("pue", format!("must be at least 1, got {}", self.pue));
        }
        if !(self.batch_tokens.is_finite() && self.batch_tokens >= 1.0) {
            return bad(
                "batch_tokens",
                format!("must be at least 1, got {}", self.batch_tokens),
            );
        }
        if let Some(bw) = self.checkpoint_bw {
            if !(bw.is_finite() && bw > 0.0) {
                return bad("checkpoint_bw", format!("must be positive, got {bw}"));
            }
        }
        for (v, f) in [(self.rent_per_hour, "rent_per_hour"), (self.price, "price")] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return bad(f, "must be zero or positive".into());
            }
        }
        if let Some(p) = &self.posts {
            if !(p.posts_per_day > 0.0 && p.tokens_per_post > 0.0 && p.years > 0.0) {
                return bad(
                    "posts",
                    "posts per day, tokens per post and years must be positive".into(),
                );
            }
            if !(0.0..1.0).contains(&p.dedup_ratio) {
                return bad(
                    "dedup_ratio",
                    format!("must be in [0, 1), got {}", p.dedup_ratio),
                );
            }
        }
        Ok(())
    }

    fn peak(&self) -> f64 {
        match self.precision {
            Precision::Bf16 => self.gpu.peak_bf16,
            Precision::Fp8 => self.gpu.peak_fp8.unwrap_or(self.gpu.peak_bf16),
        }
    }

    fn mfu_value(&self) -> f64 {
        self.mfu
            .unwrap_or_else(|| default_mfu(self.gpu.generation).0)
    }

    fn checkpoint_seconds(&self) -> f64 {
        let bytes = 14.0 * self.model.params; // bf16 weights + fp32 master, momentum, variance
        let bw = self
            .checkpoint_bw
            .unwrap_or_else(|| (0.25e9 * self.gpus as f64).min(2e12));
        bytes / bw
    }
}

/// Memory report: each sharding strategy with every rank data parallel, and the smallest layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    /// Usable bytes per GPU (90% of its memory).
    pub usable_bytes: f64,
    /// Plain DP, ZeRO-1, ZeRO-2, ZeRO-3 over all GPUs, no model parallelism.
    pub strategies: Vec<MemoryBreakdown>,
    /// The smallest tensor × pipeline layout that fits (with recomputation), if any.
    pub layout: Option<Layout>,
    /// The layout starling's trainer runs (no pipeline) that fits with the shortest step, if any.
    pub starling: Option<Layout>,
}

/// Whether the platform's posts cover the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DataSupply {
    /// Tokens the posts provide after curation.
    pub available_tokens: f64,
    /// Tokens the plan trains on.
    pub needed_tokens: f64,
    /// Passes over the posts the plan implies.
    pub epochs: f64,
    /// Whether one pass (or less) suffices.
    pub suffices: bool,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The inputs, defaults resolved.
    pub input: PlanInput,
    /// MFU used.
    pub mfu: f64,
    /// Where the MFU comes from.
    pub mfu_source: String,
    /// Training tokens.
    pub tokens: f64,
    /// FLOPs per token (6·N + attention).
    pub flops_per_token: f64,
    /// Total training FLOPs.
    pub flops: f64,
    /// Tokens per second per GPU.
    pub tokens_per_s_per_gpu: f64,
    /// Tokens per second for the job.
    pub tokens_per_s: f64,
    /// Days of pure compute at the MFU.
    pub compute_days: f64,
    /// Wall-clock days including failures and checkpoints.
    pub wall_days: f64,
    /// GPU-hours of pure compute.
    pub compute_gpu_hours: f64,
    /// GPU-hours of wall time.
    pub gpu_hours: f64,
    /// Rental cost for the wall time, $.
    pub rent_cost: f64,
    /// Purchase cost of the GPUs, $.
    pub buy_cost: f64,
    /// Energy, kWh (GPU board power × PUE).
    pub energy_kwh: f64,
    /// Energy cost, $.
    pub energy_cost: f64,
    /// Expected interruptions over the run.
    pub interruptions: f64,
    /// Failure and checkpoint model.
    pub failures: FailureModel,
    /// Memory per GPU.
    pub memory: MemoryReport,
    /// Data supply from the platform's posts, when a volume is given.
    pub data: Option<DataSupply>,
    /// The gradient all-reduce per step: plain data parallel, and the smallest layout that fits.
    pub network: Vec<crate::network::StepComm>,
    /// One step's communication under starling's layout, counted as if none of it overlapped.
    pub starling_comm: Option<crate::network::StarlingComm>,
}

/// Plans a run.
pub fn plan(input: &PlanInput) -> Result<Plan> {
    input.validate()?;
    let m = &input.model;
    let tokens = match input.tokens {
        Tokens::Count(t) => t,
        Tokens::Chinchilla => 20.0 * m.params,
    };
    let mfu = input.mfu_value();
    let mfu_source = match input.mfu {
        Some(_) => "given".to_string(),
        None => default_mfu(input.gpu.generation).1.to_string(),
    };
    let fpt = m.flops_per_token();
    let flops = fpt * tokens;
    let achieved = mfu * input.peak();
    let tokens_per_s_per_gpu = achieved / fpt;
    let tokens_per_s = tokens_per_s_per_gpu * input.gpus as f64;
    let compute_s = tokens / tokens_per_s;
    let failures = failures::model(
        input.gpus,
        input.failure_rate,
        input.checkpoint_seconds(),
        input.restart_s,
    );
    let wall_s = compute_s / failures.effective_fraction.max(1e-9);
    let g = input.gpus as f64;
    let gpu_hours = wall_s / 3600.0 * g;
    let energy_kwh = g * input.gpu.power_w * wall_s / 3600.0 * input.pue / 1000.0;
    let usable = 0.9 * input.gpu.memory;
    let strategies = Sharding::ALL
        .iter()
        .map(|&s| breakdown(m, s, input.gpus, 1, 1))
        .collect();
    let data = input.posts.map(|p| {
        let available =
            p.posts_per_day * 365.25 * p.years * p.tokens_per_post * (1.0 - p.dedup_ratio);
        DataSupply {
            available_tokens: available,
            needed_tokens: tokens,
            epochs: tokens / available,
            suffices: tokens <= available,
        }
    });
    let layout = smallest_layout(m, input.gpus, usable);
    // Of the layouts starling runs that fit, the one whose step (compute + communication, not
    // overlapped) is shortest.
    let (starling, starling_comm) = crate::memory::starling_layouts(m, input.gpus, usable)
        .into_iter()
        .map(|l| {
            let c = crate::network::starling_comm(m, &input.gpu, &l, input.batch_tokens, achieved);
            (l, c)
        })
        .min_by(|a, b| a.1.slowdown().total_cmp(&b.1.slowdown()))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)));
    let network = crate::network::step_comms(
        m,
        &input.gpu,
        input.gpus,
        layout.as_ref(),
        input.batch_tokens,
        achieved,
    );
    Ok(Plan {
        network,
        starling_comm,
        mfu,
        mfu_source,
        tokens,
        flops_per_token: fpt,
        flops,
        tokens_per_s_per_gpu,
        tokens_per_s,
        compute_days: compute_s / 86400.0,
        wall_days: wall_s / 86400.0,
        compute_gpu_hours: compute_s / 3600.0 * g,
        gpu_hours,
        rent_cost: gpu_hours * input.rent_per_hour.unwrap_or(input.gpu.rent_per_hour),
        buy_cost: g * input.price.unwrap_or(input.gpu.price),
        energy_kwh,
        energy_cost: energy_kwh * input.kwh_price,
        interruptions: wall_s / 3600.0 / failures.cluster_mtbf_hours,
        failures,
        memory: MemoryReport {
            usable_bytes: usable,
            strategies,
            layout,
            starling,
        },
        data,
        input: input.clone(),
    })
}

/// The largest Chinchilla-optimal model (N, D = 20·N) starling's own trainer trains on `gpus`
/// GPUs in `days` of wall time: its layout must fit (no pipeline parallelism) and every step
/// pays its communication on top of compute (counted as if nothing overlapped: an upper bound).
/// `None` when not even 100 M parameters fit.
pub fn starling_largest(gpu: Gpu, gpus: u64, days: f64, base: &PlanInput) -> Result<Option<Plan>> {
    let wall = |n: f64| -> Result<Option<Plan>> {
        let mut i = base.clone();
        i.gpu = gpu;
        i.gpus = gpus;
        i.model = ModelSpec::dense(n, base.model.context);
        i.tokens = Tokens::Chinchilla;
        let p = plan(&i)?;
        Ok(p.starling_comm.is_some().then_some(p))
    };
    let days_of = |p: &Plan| p.wall_days * p.starling_comm.as_ref().map_or(1.0, |c| c.slowdown());
    let (mut lo, mut hi) = (1e8f64, 1e13f64);
    if !wall(lo)?.is_some_and(|p| days_of(&p) <= days) {
        return Ok(None);
    }
    // Bisect on log N: it fits and finishes in time below the answer, not above.
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if wall(mid)?.is_some_and(|p| days_of(&p) <= days) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    wall(lo)
}

/// The Chinchilla-optimal model (N, D = 20·N) that `gpus` GPUs train in `days` of wall time.
pub fn compute_optimal(gpu: Gpu, gpus: u64, days: f64, base: &PlanInput) -> Result<(f64, f64)> {
    if !(days.is_finite() && days > 0.0) {
        return Err(Error::Invalid {
            field: "days",
            message: format!("must be positive, got {days}"),
        });
    }
    // Effective fraction depends on N through the checkpoint size: iterate.
    let mut n = 1e9;
    for _ in 0..20 {
        let mut probe = base.clone();
        probe.gpu = gpu;
        probe.gpus = gpus;
        probe.model = ModelSpec::dense(n, base.model.context);
        probe.validate()?;
        let f = failures::model(
            gpus,
            probe.failure_rate,
            probe.checkpoint_seconds(),
            probe.restart_s,
        );
        let c =
            probe.mfu_value() * probe.peak() * gpus as f64 * days * 86400.0 * f.effective_fraction;
        n = (c / 120.0).sqrt();
    }
    Ok((n, 20.0 * n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::find;

    fn a100() -> Gpu {
        *find("a100-80gb").expect("catalog")
    }

    #[test]
    fn hand_computed_plan() {
        // 1B dense (no shape), 20B tokens, 8 A100 at 50% MFU, no failures.
        let mut i = PlanInput::new(ModelSpec::dense(1e9, 2048), Tokens::Count(20e9), a100(), 8);
        i.mfu = Some(0.5);
        i.failure_rate = 0.0;
        let p = plan(&i).expect("plan");
        assert_eq!(p.flops, 6.0 * 1e9 * 20e9);
        assert!((p.tokens_per_s_per_gpu - 0.5 * 312e12 / 6e9).abs() < 1e-6);
        let hours = 1.2e20 / (0.5 * 312e12 * 8.0) / 3600.0;
        assert!((p.wall_days - hours / 24.0).abs() < 1e-9);
        assert!((p.gpu_hours - hours * 8.0).abs() < 1e-6);
        assert!((p.rent_cost - hours * 8.0 * 1.79).abs() < 1e-6);
        assert_eq!(p.buy_cost, 8.0 * 15_000.0);
        assert!((p.energy_kwh - 8.0 * 400.0 * hours * 1.2 / 1000.0).abs() < 1e-9);
    }

    #[test]
    fn chinchilla_tokens_and_posts() {
        let mut i = PlanInput::new(ModelSpec::dense(10e9, 2048), Tokens::Chinchilla, a100(), 64);
        i.posts = Some(PostVolume {
            posts_per_day: 1e6,
            tokens_per_post: 20.0,
            years: 1.0,
            dedup_ratio: 0.5,
        });
        let p = plan(&i).expect("plan");
        assert_eq!(p.tokens, 200e9);
        let d = p.data.expect("data");
        assert!((d.available_tokens - 1e6 * 365.25 * 20.0 * 0.5).abs() < 1.0);
        assert!(!d.suffices && (d.epochs - 200e9 / 3.6525e9).abs() < 1e-6);
    }

    #[test]
    fn compute_optimal_by_hand() {
        // No failures: C = 0.4 · 312e12 · 1000 · 10 days; N = √(C/120).
        let mut base = PlanInput::new(ModelSpec::dense(1e9, 2048), Tokens::Chinchilla, a100(), 1);
        base.mfu = Some(0.4);
        base.failure_rate = 0.0;
        let (n, d) = compute_optimal(a100(), 1000, 10.0, &base).expect("optimal");
        let c: f64 = 0.4 * 312e12 * 1000.0 * 10.0 * 86400.0;
        assert!((n - (c / 120.0).sqrt()).abs() / n < 1e-9);
        assert!((d - 20.0 * n).abs() < 1.0);
    }

    #[test]
    fn bad_inputs_are_errors_not_nan() {
        let ok = PlanInput::new(ModelSpec::dense(1e9, 2048), Tokens::Count(1e9), a100(), 8);
        let mut z = ok.clone();
        z.gpus = 0;
        assert!(plan(&z).is_err());
        let mut t = ok.clone();
        t.tokens = Tokens::Count(-5.0);
        assert!(plan(&t).is_err());
        let mut f = ok.clone();
        f.precision = Precision::Fp8;
        assert!(matches!(
            plan(&f),
            Err(Error::Invalid {
                field: "precision",
                ..
            })
        ));
        let mut m = ok.clone();
        m.mfu = Some(1.5);
        assert!(plan(&m).is_err());
        let p = plan(&ok).expect("plan");
        assert!(p.wall_days.is_finite() && p.gpu_hours.is_finite() && p.interruptions.is_finite());
    }

    #[test]
    fn too_big_reports_does_not_fit() {
        let i = PlanInput::new(
            ModelSpec::dense(10e12, 2048),
            Tokens::Count(1e12),
            a100(),
            8,
        );
        let p = plan(&i).expect("plan");
        assert!(p.memory.layout.is_none());
    }
}
