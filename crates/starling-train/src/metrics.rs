//! A run's measurements: one [`StepMetrics`] line per step in `metrics.jsonl`, MFU's peak.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The peak FLOP/s MFU is measured against: 300e9 on CPU (DESIGN.md's measured fp32 matrix ceiling
/// of this 2-core class); on CUDA the dense bf16 peak of the GPU the driver names (the planner's
/// catalog), or H100's 989e12 with a warning when the GPU is not in the catalog.
pub fn default_peak_flops(device: &str) -> f64 {
    if device == "cpu" {
        return 300e9;
    }
    let name = cuda_device_name(0);
    match name
        .as_deref()
        .and_then(starling_arch::gpu::from_device_name)
    {
        Some(g) => g.peak_bf16,
        None => {
            tracing::warn!(
                "GPU {:?} is not in the catalog: MFU is measured against H100's dense bf16 peak (989e12); pass --peak-flops",
                name.unwrap_or_else(|| "(unnamed)".into())
            );
            989e12
        }
    }
}

/// The name the NVIDIA driver gives CUDA device `index` (through the C++ layer, else
/// `nvidia-smi`), if either answers.
pub fn cuda_device_name(index: usize) -> Option<String> {
    if let Ok(Some(name)) = starling_torch::cuda::device_name(index) {
        return Some(name);
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i"])
        .arg(index.to_string())
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// Peak resident memory of this process in bytes (Linux's VmHWM), if /proc answers.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Starts a new peak for [`peak_memory_bytes`] (Linux: `clear_refs` 5 resets VmHWM; CUDA: the
/// allocator's peak statistics).
pub fn reset_peak_memory(device: tch::Device) {
    match device {
        tch::Device::Cuda(i) => {
            let _ = starling_torch::cuda::reset_peak_memory(i);
        }
        _ => {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
    }
}

/// Peak memory of training on `device`: the caching allocator's peak on CUDA
/// (`torch.cuda.max_memory_allocated`), the process's peak RSS on the CPU.
pub fn peak_memory_bytes(device: tch::Device) -> Option<u64> {
    match device {
        tch::Device::Cuda(i) => starling_torch::cuda::max_memory_allocated(i).ok().flatten(),
        _ => peak_rss_bytes(),
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
