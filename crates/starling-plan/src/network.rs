//! The gradient all-reduce of one optimizer step: ring all-reduce (or ZeRO's reduce-scatter +
//! all-gather, the same bytes) of bf16 gradients over the data-parallel ranks, at NVLink speed
//! inside a node and at the per-GPU NIC speed across nodes. Bandwidth terms only: latency terms
//! (α·log p for trees, α·p for rings) add milliseconds, not seconds, at these message sizes.

use crate::gpu::Gpu;
use crate::memory::Layout;
use crate::model::ModelSpec;
use serde::Serialize;

/// GPUs per node in the NVIDIA reference nodes the catalog's network figures come from.
pub const GPUS_PER_NODE: u64 = 8;

/// Bytes per gradient element in the all-reduce (bf16).
pub const GRAD_BYTES: f64 = 2.0;

/// The communication of one optimizer step under one layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepComm {
    /// What layout: "data parallel" or "tensor T x pipeline P x data D".
    pub layout: String,
    /// Data-parallel degree (ranks in each all-reduce).
    pub dp: u64,
    /// Gradient bytes each rank all-reduces per step.
    pub grad_bytes: f64,
    /// Link the ring is limited by: "NVLink" (inside a node) or "NIC" (across nodes).
    pub link: &'static str,
    /// Seconds of one all-reduce.
    pub allreduce_s: f64,
    /// Seconds of one step's compute at the plan's MFU.
    pub step_s: f64,
    /// All-reduce time over compute time (what must overlap with backward to be hidden).
    pub ratio: f64,
}

/// The step's all-reduce for `tp × pp × dp` GPUs training `m` on `batch_tokens` tokens per step at
/// `achieved` FLOP/s per GPU.
pub fn step_comm(
    m: &ModelSpec,
    gpu: &Gpu,
    gpus: u64,
    (tp, pp): (u64, u64),
    batch_tokens: f64,
    achieved: f64,
) -> StepComm {
    let dp = (gpus / (tp * pp).max(1)).max(1);
    let grad_bytes = GRAD_BYTES * m.params / (tp * pp) as f64;
    // Tensor-parallel groups fill a node first, so data-parallel peers share a node only when
    // tp·dp fits in one; otherwise every ring crosses the network at one NIC per GPU.
    let (link, bw) = if dp == 1 {
        ("none", f64::INFINITY)
    } else if tp * dp <= GPUS_PER_NODE {
        ("NVLink", gpu.nvlink)
    } else {
        ("NIC", gpu.nic)
    };
    let p = dp as f64;
    let allreduce_s = 2.0 * (p - 1.0) / p * grad_bytes / bw;
    let step_s = batch_tokens * m.flops_per_token() / (gpus as f64 * achieved);
    StepComm {
        layout: if tp * pp == 1 {
            "data parallel".into()
        } else {
            format!("tensor {tp} x pipeline {pp} x data {dp}")
        },
        dp,
        grad_bytes,
        link,
        allreduce_s,
        step_s,
        ratio: allreduce_s / step_s,
    }
}

/// The all-reduce under plain data parallelism and under the smallest layout that fits.
pub fn step_comms(
    m: &ModelSpec,
    gpu: &Gpu,
    gpus: u64,
    layout: Option<&Layout>,
    batch_tokens: f64,
    achieved: f64,
) -> Vec<StepComm> {
    let mut v = vec![step_comm(m, gpu, gpus, (1, 1), batch_tokens, achieved)];
    if let Some(l) = layout.filter(|l| l.tp * l.pp > 1) {
        v.push(step_comm(
            m,
            gpu,
            gpus,
            (l.tp, l.pp),
            batch_tokens,
            achieved,
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_allreduce_by_hand() {
        let a100 = *crate::gpu::find("a100-40gb").expect("a100");
        let m = ModelSpec::dense(10e9, 2048);
        // 10 B params, 1,024 GPUs data parallel: 20 GB of bf16 gradients over 25 GB/s NICs.
        let c = step_comm(&m, &a100, 1024, (1, 1), 4e6, 100e12);
        assert_eq!(c.link, "NIC");
        assert!((c.allreduce_s - 2.0 * 1023.0 / 1024.0 * 20e9 / 25e9).abs() < 1e-9);
        // tp 8 x pp 4: each rank holds 1/32 of the gradients; 32 ranks per replica.
        let c = step_comm(&m, &a100, 1024, (8, 4), 4e6, 100e12);
        assert_eq!(c.dp, 32);
        assert!((c.grad_bytes - 20e9 / 32.0).abs() < 1.0);
        // 8 GPUs in one node: NVLink.
        let c = step_comm(&m, &a100, 8, (1, 1), 4e6, 100e12);
        assert_eq!(c.link, "NVLink");
        assert!((c.allreduce_s - 2.0 * 7.0 / 8.0 * 20e9 / 300e9).abs() < 1e-9);
        assert!((c.step_s - 4e6 * m.flops_per_token() / (8.0 * 100e12)).abs() < 1e-9);
    }
}
