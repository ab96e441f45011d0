//! AdamW with decoupled weight decay, its state held (and checkpointed) by us, plus the warmup +
//! cosine schedule and global-norm gradient clipping.

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

/// Updates the moments `m`, `v` with gradient `g` and takes Adam's step on `p` in place (weight
/// decay is the caller's); `bc` are the bias corrections 1 − β^t. Shared by [`AdamW`] and ZeRO-1.
pub(crate) fn adam_step(
    p: &mut Tensor,
    g: &Tensor,
    (m, v): (&mut Tensor, &mut Tensor),
    c: &OptimConfig,
    lr: f64,
    (bc1, bc2): (f64, f64),
) {
    let _ = m.g_mul_scalar_(c.beta1);
    let _ = m.g_add_(&(g * (1.0 - c.beta1)));
    let _ = v.g_mul_scalar_(c.beta2);
    let _ = v.g_add_(&(g.square() * (1.0 - c.beta2)));
    let denom = (&*v / bc2).sqrt() + c.eps;
    let _ = p.g_sub_(&((&*m / bc1) / denom * lr));
}

/// AdamW moments per variable, named like the variables.
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
        }
    }

    /// Clips gradients to the configured global norm; returns the norm before clipping.
    pub fn clip(&self, params: &VarStore) -> f64 {
        let _g = tch::no_grad_guard();
        let mut sq = 0.0;
        for t in params.trainable_variables() {
            let g = t.grad();
            if g.defined() {
                sq += g
                    .to_kind(Kind::Float)
                    .pow_tensor_scalar(2)
                    .sum(Kind::Float)
                    .double_value(&[]);
            }
        }
        let norm = sq.sqrt();
        if self.config.grad_clip > 0.0 && norm > self.config.grad_clip {
            let scale = self.config.grad_clip / (norm + 1e-6);
            for t in params.trainable_variables() {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        }
        norm
    }

    /// One update with learning rate `lr`; gradients are then zeroed.
    pub fn update(&mut self, params: &VarStore, lr: f64) {
        let _g = tch::no_grad_guard();
        self.step += 1;
        let c = &self.config;
        let (b1, b2) = (c.beta1, c.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let m = self.m.variables();
        let v = self.v.variables();
        for (name, mut p) in params.variables() {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            let (Some(mut mt), Some(mut vt)) = (
                m.get(&name).map(Tensor::shallow_clone),
                v.get(&name).map(Tensor::shallow_clone),
            ) else {
                continue;
            };
            if p.dim() >= 2 && c.weight_decay > 0.0 {
                let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
            }
            adam_step(&mut p, &g, (&mut mt, &mut vt), c, lr, (bc1, bc2));
            let _ = g.zero_();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_by_hand() {
        let c = OptimConfig {
            lr: 1.0,
            min_lr: 0.1,
            warmup: 10,
            ..Default::default()
        };
        assert!((lr_at(&c, 0, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(&c, 9, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&c, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&c, 60, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(&c, 110, 110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn matches_the_adamw_formula_on_one_parameter() {
        let vs = VarStore::new(tch::Device::Cpu);
        let p = vs.root().var("w", &[2, 1], tch::nn::Init::Const(1.0));
        let c = OptimConfig {
            lr: 0.1,
            weight_decay: 0.5,
            grad_clip: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, c.clone());
        (&p * 3.0).sum(Kind::Float).backward();
        opt.update(&vs, 0.1);
        // Step 1: m̂ = g, v̂ = g², so p = (1 − lr·wd)·1 − lr·g/(|g| + eps) = 0.95 − 0.1.
        let got = p.double_value(&[0, 0]);
        assert!((got - 0.85).abs() < 1e-6, "{got}");
        assert_eq!(opt.step, 1);
    }
}
