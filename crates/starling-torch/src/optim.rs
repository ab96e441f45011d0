//! AdamW with decoupled weight decay, its state held (and checkpointed) by us and stepped by
//! ATen's fused kernel, plus the warmup + cosine schedule and global-norm gradient clipping on the
//! device (no value reaches the host inside a step).

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

/// Optimizer and schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    /// Peak learning rate. By default 1e-3.
    pub lr: f64,
    /// Final learning rate of the cosine. By default 1e-4.
    pub min_lr: f64,
    /// Linear warm-up steps. By default 100.
    pub warmup: u64,
    /// Adam beta1. By default 0.9.
    pub beta1: f64,
    /// Adam beta2. By default 0.95.
    pub beta2: f64,
    /// Adam epsilon. By default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay on matrices (not norms). By default 0.1.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; 0 disables. By default 1.0.
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 100,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
        }
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then cosine to `min_lr`.
pub fn lr_at(c: &OptimConfig, step: u64, total: u64) -> f64 {
    if step < c.warmup {
        return c.lr * (step + 1) as f64 / c.warmup as f64;
    }
    let span = total.saturating_sub(c.warmup).max(1) as f64;
    let progress = ((step - c.warmup) as f64 / span).min(1.0);
    c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The Adam hyper-parameters of a fused step at learning rate `lr` and weight decay `wd`.
pub fn hyper(c: &OptimConfig, lr: f64, wd: f64) -> crate::AdamWHyper {
    crate::AdamWHyper {
        lr,
        beta1: c.beta1,
        beta2: c.beta2,
        weight_decay: wd,
        eps: c.eps,
    }
}

/// The factor `min(1, max_norm / (norm + 1e-6))` that clips gradients of global norm `norm`, as a
/// device tensor (the host never reads the norm), and whether the norm is not finite (1.0/0.0).
pub fn clip_scale(norm: &Tensor, max_norm: f64) -> (Tensor, Tensor) {
    let found_inf = norm.isfinite().logical_not().to_kind(Kind::Float);
    let scale = (norm + 1e-6).reciprocal() * max_norm;
    (scale.clamp_max(1.0), found_inf)
}

/// What one optimizer step leaves on the device for the host to read later.
#[derive(Debug)]
pub struct StepOutcome {
    /// Global gradient norm before clipping (0-d).
    pub grad_norm: Tensor,
    /// 1.0 when the gradients were not finite and the step changed nothing, else 0.0 (0-d).
    pub found_inf: Tensor,
}

/// AdamW moments per variable, named like the variables; updates through ATen's fused kernel.
#[derive(Debug)]
pub struct AdamW {
    /// Settings.
    pub config: OptimConfig,
    /// First moments.
    pub m: VarStore,
    /// Second moments.
    pub v: VarStore,
    /// Updates applied.
    pub step: u64,
    /// The step number on the device, for the fused kernel's bias corrections.
    step_tensor: Tensor,
}

impl AdamW {
    /// Zeroed moments shaped like `params`.
    pub fn new(params: &VarStore, config: OptimConfig) -> Self {
        let make = || {
            let vs = VarStore::new(params.device());
            for (name, t) in params.variables() {
                // Same dotted name as the parameter: walk the path, then create the leaf.
                let mut parts: Vec<&str> = name.split('.').collect();
                let leaf = parts.pop().unwrap_or_default();
                let path = parts.iter().fold(vs.root(), |p, part| p / *part);
                let _ = path.zeros_no_train(leaf, &t.size());
            }
            vs
        };
        Self {
            m: make(),
            v: make(),
            config,
            step: 0,
            step_tensor: Tensor::zeros([], (Kind::Float, params.device())),
        }
    }

    /// Clips the gradients to the configured global norm on the device; returns the norm before
    /// clipping and whether it is non-finite, both still on the device.
    pub fn clip(&self, params: &VarStore) -> crate::Result<StepOutcome> {
        let _g = tch::no_grad_guard();
        let grads: Vec<Tensor> = params
            .trainable_variables()
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let refs: Vec<&Tensor> = grads.iter().collect();
        let norm = if refs.is_empty() {
            Tensor::zeros([], (Kind::Float, params.device()))
        } else {
            crate::global_norm(&refs)?
        };
        let (scale, found_inf) = clip_scale(&norm, self.config.grad_clip);
        if self.config.grad_clip > 0.0 {
            crate::foreach_mul_(&refs, &scale)?;
        }
        Ok(StepOutcome {
            grad_norm: norm,
            found_inf,
        })
    }

    /// One update with learning rate `lr` through ATen's fused AdamW (weight decay on matrices
    /// only); when `found_inf` holds 1 nothing changes. Gradients are then dropped (as PyTorch's
    /// `zero_grad()` does).
    pub fn update(
        &mut self,
        params: &VarStore,
        lr: f64,
        found_inf: Option<&Tensor>,
    ) -> crate::Result<()> {
        self.step += 1;
        // A fill on the device: no host-to-device copy (which would wait for the device).
        let _ = self.step_tensor.fill_(self.step as f64);
        self.apply(params, lr, None, found_inf)
    }

    /// The update a CUDA graph captures: the learning rate is read from the 0-d device tensor
    /// `lr` (fill it before each replay) and the step number advances on the device; the host's
    /// [`AdamW::step`] is the caller's to advance once per update run (capturing runs nothing).
    /// Call [`AdamW::sync_step_tensor`] before running or capturing it after other updates.
    pub fn update_on_device(
        &mut self,
        params: &VarStore,
        lr: &Tensor,
        found_inf: Option<&Tensor>,
    ) -> crate::Result<()> {
        let _ = self.step_tensor.g_add_scalar_(1.0);
        self.apply(params, 0.0, Some(lr), found_inf)
    }

    /// Sets the device's step number to the host's (before a captured update first runs).
    pub fn sync_step_tensor(&mut self) {
        let _ = self.step_tensor.fill_(self.step as f64);
    }

    /// The fused kernel over the [decay, no decay] groups, then the gradients dropped (host
    /// step) or zeroed (captured step).
    fn apply(
        &mut self,
        params: &VarStore,
        lr: f64,
        lr_tensor: Option<&Tensor>,
        found_inf: Option<&Tensor>,
    ) -> crate::Result<()> {
        let _g = tch::no_grad_guard();
        let c = &self.config;
        let m = self.m.variables();
        let v = self.v.variables();
        // [decay, no decay] groups of (parameter, gradient, m, v).
        let mut groups: [Vec<[Tensor; 4]>; 2] = [Vec::new(), Vec::new()];
        for (name, p) in params.variables() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let (Some(mt), Some(vt)) = (m.get(&name), v.get(&name)) else {
                continue;
            };
            let decays = p.dim() >= 2 && c.weight_decay > 0.0;
            let quad = [p, g, mt.shallow_clone(), vt.shallow_clone()];
            groups[usize::from(!decays)].push(quad);
        }
        for (group, wd) in groups.iter().zip([c.weight_decay, 0.0]) {
            let col = |i: usize| group.iter().map(|q| &q[i]).collect::<Vec<_>>();
            let (ps, gs, ms, vs) = (col(0), col(1), col(2), col(3));
            crate::fused_adamw_(
                &ps,
                &gs,
                &ms,
                &vs,
                &self.step_tensor,
                &hyper(c, lr, wd),
                lr_tensor,
                found_inf,
            )?;
            // The host's step drops the gradients, as PyTorch's `zero_grad()` does: the next
            // backward hands its gradients over (no fill, no add). A captured step keeps them,
            // zeroed: its graph reads and writes the same gradient tensors on every replay.
            if lr_tensor.is_some() {
                crate::foreach_zero_(&gs)?;
            } else {
                crate::clear_grads(&ps)?;
            }
        }
        Ok(())
    }
}
