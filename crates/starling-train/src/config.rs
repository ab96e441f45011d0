//! What to train and how: [`TrainConfig`], saved as a run's `train.json`.

use crate::optim::OptimConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What to train and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Model preset (`tiny`, `small`, `gpt2-124m`, `llama-1b`). By default `small`.
    pub preset: String,
    /// Sequences per micro-batch. By default 16.
    pub batch: usize,
    /// Micro-batches per optimizer step. By default 1.
    pub accum: usize,
    /// Context length (≤ the preset's). By default the preset's.
    pub ctx: Option<usize>,
    /// Optimizer steps. By default 1,000.
    pub steps: u64,
    /// Evaluate every N steps. By default 100.
    pub eval_every: u64,
    /// Validation batches per evaluation, each one step's worth of sequences (batch × accum × ranks). By default 8.
    pub eval_batches: usize,
    /// Read the loss and gradient norm on the host every N steps (one device sync per interval;
    /// `metrics.jsonl` still gets a line per step). Evaluations, checkpoints and the end also
    /// read. By default 10.
    pub log_every: u64,
    /// Checkpoint every N steps. By default 200.
    pub ckpt_every: u64,
    /// Checkpoints kept. By default 3.
    pub keep: usize,
    /// Seed of weights and data order. By default 1.
    pub seed: u64,
    /// "cpu" or "cuda". By default "cpu".
    pub device: String,
    /// Device peak FLOP/s for MFU; by default 300e9 on CPU (DESIGN.md's measured fp32 ceiling here) and
    /// the GPU's dense bf16 peak from the planner's catalog (by the name the driver reports) on CUDA.
    pub peak_flops: Option<f64>,
    /// Matrix-product precision: "auto" (bf16 on CUDA, fp32 on CPU, where bf16 is slower), "fp32"
    /// or "bf16". Weights, optimizer state, norms and the loss stay fp32 either way.
    pub dtype: String,
    /// Start from this HF Llama directory's weights (its `config.json` replaces the preset).
    pub init: Option<PathBuf>,
    /// Draw `loss.png` at every evaluation and at the end. By default true.
    pub plot: bool,
    /// Wall-clock budget of this invocation in seconds: past it, checkpoint and stop (resumable).
    pub max_seconds: Option<f64>,
    /// ZeRO-1: split the AdamW state across the ranks of a data-parallel run. By default false.
    pub shard_optimizer: bool,
    /// FSDP (ZeRO-3): split parameters, gradients and AdamW state across the ranks of a
    /// data-parallel run. By default false.
    pub fsdp: bool,
    /// Tensor-parallel degree: blocks split over groups of this many consecutive ranks, FSDP
    /// over the rest. By default 1.
    pub tp: usize,
    /// Activation recomputation: `none`, or `block` (each block keeps only its input for backward
    /// and runs its forward again there). By default none.
    pub recompute: Recompute,
    /// Record this step (1-based) under PyTorch's profiler and write the run's `profile.md`:
    /// host ops, device kernels, host synchronisations, the GPU's idle share. By default none.
    pub profile_step: Option<u64>,
    /// CUDA graphs: capture a whole step (forward, backward, clipping, AdamW) once and replay it,
    /// one launch per step. `auto` is on for single-process CUDA runs without recomputation. By
    /// default auto.
    pub cuda_graphs: CudaGraphs,
    /// Optimizer and schedule.
    pub optim: OptimConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            preset: "small".into(),
            batch: 16,
            accum: 1,
            ctx: None,
            steps: 1000,
            eval_every: 100,
            eval_batches: 8,
            log_every: 10,
            ckpt_every: 200,
            keep: 3,
            seed: 1,
            device: "cpu".into(),
            peak_flops: None,
            dtype: "auto".into(),
            init: None,
            plot: true,
            max_seconds: None,
            shard_optimizer: false,
            fsdp: false,
            tp: 1,
            recompute: Recompute::None,
            profile_step: None,
            cuda_graphs: CudaGraphs::Auto,
            optim: OptimConfig::default(),
        }
    }
}

/// What the forward keeps for backward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Every activation (fastest, most memory).
    #[default]
    None,
    /// Only each block's input: the block runs again in backward (about one more forward of
    /// compute; activation memory of one block plus one tensor per block).
    Block,
}

impl std::str::FromStr for Recompute {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "block" => Ok(Self::Block),
            other => Err(format!("unknown recompute `{other}` (none or block)")),
        }
    }
}

/// Whether steps run from a captured CUDA graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CudaGraphs {
    /// On where a step can be captured: CUDA, one process, no recomputation.
    #[default]
    Auto,
    /// On; a run that cannot capture its step fails at the start, saying why.
    On,
    /// Every step launches its kernels one by one.
    Off,
}

impl CudaGraphs {
    /// Whether a run uses graphs: `why_not` is the reason its step cannot be captured, if any.
    pub fn resolve(self, why_not: Option<&str>) -> Result<bool, String> {
        match (self, why_not) {
            (Self::Off, _) | (Self::Auto, Some(_)) => Ok(false),
            (Self::On | Self::Auto, None) => Ok(true),
            (Self::On, Some(why)) => Err(format!("--cuda-graphs on: {why}")),
        }
    }
}

impl std::str::FromStr for CudaGraphs {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown cuda-graphs `{other}` (auto, on or off)")),
        }
    }
}
