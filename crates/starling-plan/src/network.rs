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

/// Bytes per gradient element starling reduces: fp32, the precision of its master weights (as
/// PyTorch DDP does, and FSDP2 with `reduce_dtype=float32`); parameters are gathered in bf16.
pub const STARLING_REDUCE_BYTES: f64 = 4.0;

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

/// What one step of starling's own layout moves and how long it takes, counted as if none of it
/// overlapped compute (an upper bound: FSDP's gathers and the tensor-parallel collectives are
/// synchronous, while DDP's all-reduce and FSDP's reduce-scatter run beside backward, hiding as
/// much as the link allows): with FSDP each rank all-gathers its bf16 parameters twice (forward,
/// and the recomputation in backward) and reduce-scatters its fp32 gradients, each (dp − 1)/dp of
/// the bytes; with tensor
/// parallelism each layer all-reduces its b·s·d activations six times a micro-batch (two in
/// forward, two in the recomputation, two in backward) inside the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StarlingComm {
    /// The layout, e.g. "tensor 8 x FSDP 1250".
    pub layout: String,
    /// Seconds per step of data-parallel communication (all-reduce, or FSDP's gathers and
    /// reduce-scatter) over the NIC (or NVLink inside one node).
    pub data_s: f64,
    /// Seconds per step of tensor-parallel activation all-reduces over NVLink.
    pub tensor_s: f64,
    /// Seconds of one step's compute at the plan's MFU.
    pub step_s: f64,
}

impl StarlingComm {
    /// Step time over compute time: what starling's lack of overlap costs.
    pub fn slowdown(&self) -> f64 {
        (self.step_s + self.data_s + self.tensor_s) / self.step_s
    }
}

/// The communication of starling's layout `l` for one step of `batch_tokens` tokens.
pub fn starling_comm(
    m: &ModelSpec,
    gpu: &Gpu,
    l: &Layout,
    batch_tokens: f64,
    achieved: f64,
) -> StarlingComm {
    use crate::memory::Sharding;
    let (tp, dp) = (l.tp, l.dp.max(1));
    let gpus = tp * dp;
    let local = m.params / tp as f64;
    let frac = (dp as f64 - 1.0) / dp as f64;
    let bw = if dp == 1 {
        f64::INFINITY
    } else if tp * dp <= GPUS_PER_NODE {
        gpu.nvlink
    } else {
        gpu.nic
    };
    let data_bytes = match l.sharding {
        // Two all-gathers of the bf16 parameters (forward, and backward's recomputation) and
        // one reduce-scatter of the fp32 gradients.
        Sharding::Zero3 => frac * local * (2.0 * GRAD_BYTES + STARLING_REDUCE_BYTES),
        // A ring all-reduce of fp32 gradients (or ZeRO-1's reduce-scatter + all-gather).
        _ => 2.0 * frac * local * STARLING_REDUCE_BYTES,
    };
    let (layers, d, _) = crate::memory::shape(m);
    let tensor_s = if tp > 1 {
        let per_group_tokens = batch_tokens / dp as f64;
        let bytes = 6.0 * layers * per_group_tokens * d * GRAD_BYTES;
        2.0 * (tp as f64 - 1.0) / tp as f64 * bytes / gpu.nvlink
    } else {
        0.0
    };
    StarlingComm {
        layout: match (tp, l.sharding) {
            (1, s) => format!("{} over {dp}", s.name()),
            (t, _) => format!("tensor {t} x FSDP {dp}"),
        },
        data_s: data_bytes / bw,
        tensor_s,
        step_s: batch_tokens * m.flops_per_token() / (gpus as f64 * achieved),
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

    #[test]
    fn starling_fsdp_and_tensor_parallel_by_hand() {
        use crate::memory::{Layout, Sharding};
        let a100 = *crate::gpu::find("a100-40gb").expect("a100");
        let mut m = ModelSpec::dense(10e9, 2048);
        m.layers = Some(40);
        m.d_model = Some(5120);
        let l = Layout {
            tp: 8,
            pp: 1,
            dp: 128,
            sharding: Sharding::Zero3,
            bytes_per_gpu: 0.0,
        };
        let c = starling_comm(&m, &a100, &l, 4e6, 100e12);
        assert_eq!(c.layout, "tensor 8 x FSDP 128");
        // Two gathers of 1/8 of 20 GB of bf16 parameters and a reduce-scatter of their fp32
        // gradients (40 GB / 8), over the NIC.
        let local = 20e9 / 8.0;
        assert!((c.data_s - (2.0 + 2.0) * 127.0 / 128.0 * local / 25e9).abs() < 1e-9);
        // Six all-reduces per layer of (4e6 / 128) tokens x 5120 x 2 bytes, over NVLink.
        let bytes = 6.0 * 40.0 * (4e6 / 128.0) * 5120.0 * 2.0;
        assert!((c.tensor_s - 2.0 * 7.0 / 8.0 * bytes / 300e9).abs() < 1e-9);
        assert!((c.slowdown() - (c.step_s + c.data_s + c.tensor_s) / c.step_s).abs() < 1e-12);
    }
}
