//! What every benchmark measures with: percentiles, peak memory and CPU time of this process, the
//! Python that runs the reference side, and the model under test as an embedder.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The value at quantile `q` (0..=1) of sorted values, nearest rank; NaN when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident memory of this process in MiB (NaN where /proc is missing).
pub fn peak_rss_mib() -> f64 {
    starling_train::metrics::peak_rss_bytes()
        .map(|b| b as f64 / (1u64 << 20) as f64)
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds of this process so far.
pub fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 ticks/s on Linux.
    (tick(11) + tick(12)) / 100.0
}

/// Resets the peak-RSS high-water mark (Linux >= 4.0: writing 5 to clear_refs).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The Python a benchmark runs: `--python`, else $STARLING_PYTHON, else the project's venv.
pub fn python(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("STARLING_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

/// The model at `model` (a run or an export) as a mean-pooled embedder with `replicas` copies.
pub fn embedder(model: &Path, replicas: usize) -> Result<starling_model::PostEmbedder> {
    starling_train::ModelDir::open(model)?
        .embedder(starling_model::Pooling::Mean, replicas)
        .with_context(|| format!("loading {} as an embedder", model.display()))
}
