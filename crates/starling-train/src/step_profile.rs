//! One training step under PyTorch's profiler (`--profile-step N`): where the step's time goes,
//! written to the run directory as `profile.md` — host ops by self time, device kernels by time,
//! how many kernels and copies the step launched, the share of the step the GPU sat idle, and the
//! host synchronisations the step made (none, when the step is as it should be).

use crate::Result;
use starling_torch::profile::{Profile, Profiler};
use starling_torch::SyncCounter;
use std::path::Path;
use std::time::Instant;

/// The file a profiled step is written to, in the run directory.
pub const PROFILE_FILE: &str = "profile.md";

/// A step being recorded.
pub(crate) struct StepProfile {
    profiler: Profiler,
    syncs: SyncCounter,
    /// Whether the sync observer was there before (then it stays when the step is recorded).
    observer_before: bool,
    started: Instant,
    step: u64,
    device: tch::Device,
}

/// What a recorded step came to (the headline of `profile.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProfileSummary {
    /// The step recorded (1-based).
    pub step: u64,
    /// Its wall time under the profiler, in seconds (the profiler adds some).
    pub seconds: f64,
    /// Host synchronisations made inside the step.
    pub host_syncs: u64,
    /// Kernels the device ran (0 on the CPU).
    pub kernels: usize,
    /// Copies and fills the device ran.
    pub memory_ops: usize,
    /// Share of the step's window with nothing running on the device (CUDA only).
    pub device_idle_share: Option<f64>,
}

impl StepProfile {
    /// Starts recording step `step` on `device` (from the training loop's thread).
    pub(crate) fn start(step: u64, device: tch::Device) -> Result<Self> {
        let observer_before = SyncCounter::is_installed();
        let syncs = SyncCounter::install()?;
        let profiler = Profiler::start(device.is_cuda())?;
        Ok(Self {
            profiler,
            syncs,
            observer_before,
            started: Instant::now(),
            step,
            device,
        })
    }

    /// Ends the recording after the step's optimizer update and writes `run/profile.md`.
    pub(crate) fn finish(self, run: &Path) -> Result<StepProfileSummary> {
        let host_syncs = self.syncs.count();
        if let tch::Device::Cuda(i) = self.device {
            // Every kernel the step launched finishes inside the recording.
            tch::Cuda::synchronize(i as i64);
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let profile = self.profiler.stop()?;
        if !self.observer_before {
            // Its cost per op should not outlive the recorded step.
            SyncCounter::remove();
        }
        let d = profile.device();
        let summary = StepProfileSummary {
            step: self.step,
            seconds,
            host_syncs,
            kernels: d.kernels,
            memory_ops: d.memory_ops,
            device_idle_share: self.device.is_cuda().then(|| d.idle_share()),
        };
        let path = run.join(PROFILE_FILE);
        starling_artifacts::write_atomic(&path, report(&summary, &profile).as_bytes())?;
        tracing::info!(
            "step {} profiled ({:.2}s, {} host syncs, {} kernels): {}",
            summary.step,
            seconds,
            host_syncs,
            d.kernels,
            path.display()
        );
        Ok(summary)
    }
}

fn report(s: &StepProfileSummary, profile: &Profile) -> String {
    let mut out = format!(
        "# Step {} under PyTorch's profiler\n\n\
         | what | value |\n|---|---|\n\
         | wall time (profiler on) | {:.3} s |\n\
         | host synchronisations in the step | {} |\n\
         | device kernels | {} |\n\
         | device copies and fills | {} |\n",
        s.step, s.seconds, s.host_syncs, s.kernels, s.memory_ops
    );
    if let Some(idle) = s.device_idle_share {
        out.push_str(&format!(
            "| device idle share of the step | {:.1}% |\n",
            100.0 * idle
        ));
    }
    out.push_str("\n## Host ops, most self time first\n\n");
    out.push_str(&profile.op_table(30));
    if s.kernels > 0 {
        out.push_str("\n## Device kernels, most time first\n\n");
        out.push_str(&profile.kernel_table(25));
    }
    out
}
