//! A whole training step (forward and backward over the micro-batches, clipping, AdamW) captured
//! once as a CUDA graph and replayed every step: one launch instead of thousands, so the GPU
//! never waits for the host to issue the next kernel. The step reads its batch from static device
//! buffers the host fills before each replay, its learning rate from a device tensor, and writes
//! the loss, norm and non-finite flag to static tensors copied out after each replay. The first
//! steps run eagerly on a side stream (warm-up: allocator, autograd and kernel caches), as
//! PyTorch's `torch.cuda.graphs` recipe does.

use crate::loader::TokenLoader;
use crate::optim::{AdamW, StepOutcome};
use crate::parallel::Parallelism;
use crate::{upload, Batch, Error, Result, TrainConfig};
use starling_model::Llama;
use starling_torch::cuda::StepGraph;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Eager steps before the capture.
const WARMUP_STEPS: u32 = 3;

/// Why a run's step cannot be captured (None: it can).
pub(crate) fn why_not(
    device: Device,
    cfg: &TrainConfig,
    par: &mut dyn Parallelism,
) -> Option<&'static str> {
    if !device.is_cuda() {
        Some("the device is not CUDA")
    } else if !starling_torch::cuda::available() {
        Some("this starling was built without CUDA")
    } else if cfg.recompute != crate::config::Recompute::None {
        Some("--recompute runs Rust inside backward, which a graph cannot replay")
    } else if par.capturable().is_none() {
        Some("a step with collectives (data parallel, ZeRO, FSDP, tensor parallel) is not captured yet")
    } else {
        None
    }
}

/// A step captured on its first call after the warm-up and replayed from then on.
pub(crate) struct CapturedStep {
    device: Device,
    /// Inputs and targets of the step's micro-batches, `[accum, batch, ctx]`.
    x: Tensor,
    y: Tensor,
    /// The learning rate the captured AdamW reads.
    lr: Tensor,
    /// Warm-up, capture and replay; its outputs: summed loss, gradient norm, non-finite flag.
    graph: Option<StepGraph<(Tensor, StepOutcome)>>,
}

impl CapturedStep {
    /// Static buffers for steps of `cfg.accum` micro-batches of `cfg.batch` x `ctx` on `device`.
    pub(crate) fn new(device: Device, cfg: &TrainConfig, ctx: usize) -> Self {
        let shape = [cfg.accum as i64, cfg.batch as i64, ctx as i64];
        Self {
            device,
            x: Tensor::zeros(shape, (Kind::Int64, device)),
            y: Tensor::zeros(shape, (Kind::Int64, device)),
            lr: Tensor::zeros([], (Kind::Float, device)),
            graph: match device {
                Device::Cuda(i) => Some(StepGraph::new(i, WARMUP_STEPS)),
                _ => None,
            },
        }
    }

    /// One optimizer step on `batch` at learning rate `lr`: eager during the warm-up, captured on
    /// the first call after it, replayed from then on. Nothing is read on the host.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &mut self,
        model: &Llama,
        data: &TokenLoader,
        cfg: &TrainConfig,
        batch: &Batch,
        ctx: usize,
        vs: &VarStore,
        opt: &mut AdamW,
        lr: f64,
    ) -> Result<(Tensor, StepOutcome)> {
        for micro in 0..cfg.accum as u64 {
            let (x, y) = data.batch_at(batch.first + micro * batch.stride, cfg.batch, ctx)?;
            self.x.get(micro as i64).copy_(&upload(&x, self.device));
            self.y.get(micro as i64).copy_(&upload(&y, self.device));
        }
        let _ = self.lr.fill_(lr);
        let Some(mut graph) = self.graph.take() else {
            return Err(Error::Format("CUDA graphs need a CUDA device".into()));
        };
        let was_captured = graph.is_captured();
        let out = graph.step(opt, |opt| self.run(model, cfg, vs, opt));
        if !was_captured && graph.is_captured() {
            tracing::info!("CUDA graph captured: one launch per step from now on");
        }
        self.graph = Some(graph);
        out
    }

    /// The step's device work over the static buffers (what the graph records).
    fn run(
        &self,
        model: &Llama,
        cfg: &TrainConfig,
        vs: &VarStore,
        opt: &mut AdamW,
    ) -> Result<(Tensor, StepOutcome)> {
        let mut loss_sum = Tensor::zeros([], (Kind::Float, self.device));
        for micro in 0..cfg.accum as i64 {
            let loss = model.loss(&self.x.get(micro), &self.y.get(micro)) / cfg.accum as f64;
            loss.backward();
            loss_sum += loss.detach();
        }
        let o = opt.clip(vs)?;
        opt.update_on_device(vs, &self.lr, Some(&o.found_inf))?;
        Ok((loss_sum, o))
    }
}
