//! A whole optimizer step replayed from a CUDA graph: the warm-up → capture → replay sequence
//! PyTorch's `torch.cuda.graphs` recipe prescribes, with AdamW's step bookkeeping, written once for
//! the trainer and the benchmark.

use crate::cuda::{on_side_stream, Graph};
use crate::optim::{AdamW, StepOutcome};
use tch::Tensor;

/// What a captured step writes into its static tensors, copied out on the device after each replay
/// (the next replay overwrites them).
pub trait StepOutputs {
    /// Copies of the tensors, on their device.
    fn copied(&self) -> Self;
}

impl StepOutputs for Tensor {
    fn copied(&self) -> Self {
        self.copy()
    }
}

impl StepOutputs for StepOutcome {
    fn copied(&self) -> Self {
        StepOutcome {
            grad_norm: self.grad_norm.copy(),
            found_inf: self.found_inf.copy(),
        }
    }
}

impl<A: StepOutputs, B: StepOutputs> StepOutputs for (A, B) {
    fn copied(&self) -> Self {
        (self.0.copied(), self.1.copied())
    }
}

/// One optimizer step run eagerly on a side stream for the first `warmup` calls, captured on the
/// call after them and replayed from then on. The step's device work (forward and backward over
/// static input buffers, clipping, [`AdamW::update_on_device`]) is the caller's closure; nothing
/// in it may read a value on the host.
#[derive(Debug)]
pub struct StepGraph<O> {
    device: usize,
    warmup_left: u32,
    captured: Option<(Graph, O)>,
}

impl<O: StepOutputs> StepGraph<O> {
    /// A step on CUDA device `device` that runs `warmup` eager steps before its capture.
    pub fn new(device: usize, warmup: u32) -> Self {
        Self {
            device,
            warmup_left: warmup,
            captured: None,
        }
    }

    /// Whether the step has been captured (every later call is one replay).
    pub fn is_captured(&self) -> bool {
        self.captured.is_some()
    }

    /// One optimizer step: `run(opt)` eagerly during the warm-up, captured on the first call after
    /// it, replayed from then on; `opt.step` advances by one each call. Returns the step's outputs
    /// (copies of the static ones once captured).
    pub fn step<E: From<crate::Error>>(
        &mut self,
        opt: &mut AdamW,
        run: impl FnOnce(&mut AdamW) -> Result<O, E>,
    ) -> Result<O, E> {
        if self.warmup_left > 0 {
            self.warmup_left -= 1;
            opt.sync_step_tensor();
            let out = on_side_stream(self.device, || run(opt))??;
            opt.step += 1;
            return Ok(out);
        }
        if self.captured.is_none() {
            opt.sync_step_tensor();
            let mut graph = Graph::new(self.device)?;
            let out = graph.capture(|| run(opt))??;
            self.captured = Some((graph, out));
        }
        let Some((graph, out)) = &self.captured else {
            return Err(crate::Error("CUDA graph: not captured".into()).into());
        };
        graph.replay()?;
        opt.step += 1;
        Ok(out.copied())
    }
}
