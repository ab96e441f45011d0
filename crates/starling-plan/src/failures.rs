//! Interruptions, checkpoint interval (Young/Daly) and the share of time that does useful work.

use serde::Serialize;

/// Per-GPU failure rate per GPU-hour from Llama 3 (Dubey et al. 2024): 419 unexpected
/// interruptions in 54 days on 16,384 H100s.
pub const LLAMA3_FAILURES_PER_GPU_HOUR: f64 = 419.0 / (16_384.0 * 54.0 * 24.0);

/// What failures do to a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FailureModel {
    /// Mean time between failures of the whole job, hours.
    pub cluster_mtbf_hours: f64,
    /// Seconds to write one checkpoint.
    pub checkpoint_seconds: f64,
    /// Young's interval √(2·δ·M), seconds.
    pub young_interval_s: f64,
    /// Daly's higher-order interval, seconds (used).
    pub daly_interval_s: f64,
    /// Expected share of wall time doing useful training.
    pub effective_fraction: f64,
}

/// The failure model for `gpus` GPUs failing at `rate` per GPU-hour, checkpoints taking
/// `checkpoint_s` seconds and each restart costing `restart_s` seconds.
pub fn model(gpus: u64, rate: f64, checkpoint_s: f64, restart_s: f64) -> FailureModel {
    let m = if rate > 0.0 {
        3600.0 / (rate * gpus as f64)
    } else {
        f64::INFINITY
    };
    let d = checkpoint_s.max(0.0);
    let young = (2.0 * d * m).sqrt();
    // Daly (2006): τ = √(2δM)·[1 + ⅓√(δ/2M) + δ/(18M)] − δ for δ < 2M, else M.
    let daly = if !m.is_finite() {
        f64::INFINITY
    } else if d < 2.0 * m {
        young * (1.0 + (d / (2.0 * m)).sqrt() / 3.0 + d / (18.0 * m)) - d
    } else {
        m
    };
    // Per interval τ of work: δ writing; per failure: half an interval of lost work and a restart.
    let effective = if !m.is_finite() || d == 0.0 && restart_s == 0.0 {
        1.0
    } else if daly.is_finite() && daly > 0.0 {
        let waste = d / (daly + d) + (restart_s + (daly + d) / 2.0) / m;
        (1.0 - waste).clamp(0.0, 1.0)
    } else {
        (1.0 - restart_s / m).clamp(0.0, 1.0)
    };
    FailureModel {
        cluster_mtbf_hours: m / 3600.0,
        checkpoint_seconds: d,
        young_interval_s: young,
        daly_interval_s: daly,
        effective_fraction: effective,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_by_hand() {
        // 1,000 GPUs at 1e-4 per GPU-hour: M = 10 h = 36,000 s; δ = 60 s: √(2·60·36000) = 2078.5 s.
        let f = model(1000, 1e-4, 60.0, 0.0);
        assert!((f.cluster_mtbf_hours - 10.0).abs() < 1e-9);
        assert!((f.young_interval_s - 2078.46).abs() < 0.01);
        assert!(f.daly_interval_s > 0.0 && (f.daly_interval_s - f.young_interval_s).abs() < 60.0);
        assert!(f.effective_fraction > 0.9 && f.effective_fraction < 1.0);
    }

    #[test]
    fn llama3_scale_keeps_over_90_percent() {
        // 16,384 GPUs: ~3 h MTBF; fast sharded checkpoints and 10-minute restarts: > 90% effective.
        let f = model(16_384, LLAMA3_FAILURES_PER_GPU_HOUR, 5.0, 600.0);
        assert!((f.cluster_mtbf_hours - 3.09).abs() < 0.05);
        assert!(f.effective_fraction > 0.9, "{f:?}");
    }

    #[test]
    fn no_failures_means_no_waste() {
        let f = model(8, 0.0, 60.0, 600.0);
        assert_eq!(f.effective_fraction, 1.0);
    }
}
