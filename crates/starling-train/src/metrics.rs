//! A run's measurements: one [`StepMetrics`] line per step in `metrics.jsonl`, MFU's peak.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The peak FLOP/s MFU is measured against: 300e9 on CPU (DESIGN.md's measured fp32 matrix ceiling
/// of this 2-core class), 989e12 (H100 dense bf16) on CUDA.
pub fn default_peak_flops(device: &str) -> f64 {
    if device == "cpu" {
        300e9
    } else {
        starling_arch::gpu::find("h100").map_or(989e12, |g| g.peak_bf16)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps done.
    pub step: u64,
    /// Mean training loss of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens seen so far.
    pub tokens: u64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation of this step.
    pub mfu: f64,
    /// Validation loss, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation perplexity, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ppl: Option<f64>,
    /// Seconds of this step spent in collectives (data-parallel runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_s: Option<f64>,
}

/// Keeps the metrics of steps up to `step` (a resumed run re-does the later ones) and returns them.
pub(crate) fn rewind_metrics(path: &Path, step: u64) -> Result<Vec<StepMetrics>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let kept: Vec<StepMetrics> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
        .filter(|m| m.step <= step)
        .collect();
    let mut out = String::new();
    for m in &kept {
        out.push_str(&serde_json::to_string(m).map_err(|e| Error::Format(e.to_string()))?);
        out.push('\n');
    }
    starling_artifacts::write_atomic(path, out.as_bytes())?;
    Ok(kept)
}

/// `metrics.jsonl`, appended to by rank 0 (other ranks hold a log that writes nothing).
pub struct MetricsLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl MetricsLog {
    /// Opens `run/metrics.jsonl` for appending when `write` (rank 0).
    pub fn open(run: &Path, write: bool) -> Result<Self> {
        let path = run.join("metrics.jsonl");
        let file = if write {
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?,
            )
        } else {
            None
        };
        Ok(Self { path, file })
    }

    /// Appends one step's line.
    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            let line = serde_json::to_string(m).map_err(|e| Error::Format(e.to_string()))?;
            writeln!(f, "{line}").map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Flushes what was appended (before a checkpoint records the step).
    pub fn flush(&mut self) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}
