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
pub(crate) fn hyper(c: &OptimConfig, lr: f64, wd: f64) -> starling_torch::AdamWHyper {
    starling_torch::AdamWHyper {
        lr,
        beta1: c.beta1,
        beta2: c.beta2,
        weight_decay: wd,
        eps: c.eps,
    }
}

/// The factor `min(1, max_norm / (norm + 1e-6))` that clips gradients of global norm `norm`, as a
/// device tensor (the host never reads the norm), and whether the norm is not finite (1.0/0.0).
pub(crate) fn clip_scale(norm: &Tensor, max_norm: f64) -> (Tensor, Tensor) {
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
    pub fn clip(&self, params: &VarStore) -> starling_torch::Result<StepOutcome> {
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
            starling_torch::global_norm(&refs)?
        };
        let (scale, found_inf) = clip_scale(&norm, self.config.grad_clip);
        if self.config.grad_clip > 0.0 {
            starling_torch::foreach_mul_(&refs, &scale)?;
        }
        Ok(StepOutcome {
            grad_norm: norm,
            found_inf,
        })
    }

    /// One update with learning rate `lr` through ATen's fused AdamW (weight decay on matrices
    /// only); when `found_inf` holds 1 nothing changes. Gradients are then zeroed.
    pub fn update(
        &mut self,
        params: &VarStore,
        lr: f64,
        found_inf: Option<&Tensor>,
    ) -> starling_torch::Result<()> {
        let _g = tch::no_grad_guard();
        self.step += 1;
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
        // A fill on the device: no host-to-device copy (which would wait for the device).
        let step = self.step_tensor.fill_(self.step as f64);
        for (group, wd) in groups.iter().zip([c.weight_decay, 0.0]) {
            let col = |i: usize| group.iter().map(|q| &q[i]).collect::<Vec<_>>();
            let (ps, gs, ms, vs) = (col(0), col(1), col(2), col(3));
            starling_torch::fused_adamw_(
                &ps,
                &gs,
                &ms,
                &vs,
                &step,
                &hyper(c, lr, wd),
                None,
                found_inf,
            )?;
            starling_torch::foreach_zero_(&gs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimizer as it was before the fused kernel (host-side clipping, one chain of
    /// element-wise ops per parameter): the reference the fused one must match.
    struct Reference {
        c: OptimConfig,
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        step: i32,
    }

    impl Reference {
        fn step(&mut self, params: &[Tensor], lr: f64) {
            let _g = tch::no_grad_guard();
            let c = &self.c;
            let sq: f64 = params
                .iter()
                .map(|p| p.grad().square().sum(Kind::Float).double_value(&[]))
                .sum();
            let norm = sq.sqrt();
            if c.grad_clip > 0.0 && norm > c.grad_clip {
                for p in params {
                    let _ = p.grad().g_mul_scalar_(c.grad_clip / (norm + 1e-6));
                }
            }
            self.step += 1;
            let (bc1, bc2) = (1.0 - c.beta1.powi(self.step), 1.0 - c.beta2.powi(self.step));
            for (i, p) in params.iter().enumerate() {
                let mut p = p.shallow_clone();
                let mut g = p.grad();
                if p.dim() >= 2 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let (m, v) = (&mut self.m[i], &mut self.v[i]);
                let _ = m.g_mul_scalar_(c.beta1);
                let _ = m.g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v.g_mul_scalar_(c.beta2);
                let _ = v.g_add_(&(g.square() * (1.0 - c.beta2)));
                let denom = (&*v / bc2).sqrt() + c.eps;
                let _ = p.g_sub_(&((&*m / bc1) / denom * lr));
                let _ = g.zero_();
            }
        }
    }

    #[test]
    fn fused_adamw_equals_the_unfused_optimizer_over_ten_steps() {
        // A tiny Llama twice with the same weights; the same batches; clipping active.
        let config = starling_model::LlamaConfig::preset("tiny", 64).expect("tiny");
        let c = OptimConfig {
            lr: 3e-3,
            grad_clip: 0.5,
            ..Default::default()
        };
        tch::manual_seed(5);
        let fused_vs = VarStore::new(tch::Device::Cpu);
        let fused_model = starling_model::Llama::new(&fused_vs.root(), &config);
        let mut ref_vs = VarStore::new(tch::Device::Cpu);
        let ref_model = starling_model::Llama::new(&ref_vs.root(), &config);
        ref_vs.copy(&fused_vs).expect("copy weights");
        let mut fused = AdamW::new(&fused_vs, c.clone());
        let mut names: Vec<String> = ref_vs.variables().into_keys().collect();
        names.sort();
        let ref_vars = ref_vs.variables();
        let ref_params: Vec<Tensor> = names.iter().map(|n| ref_vars[n].shallow_clone()).collect();
        let mut reference = Reference {
            m: ref_params.iter().map(Tensor::zeros_like).collect(),
            v: ref_params.iter().map(Tensor::zeros_like).collect(),
            c: c.clone(),
            step: 0,
        };
        let mut clipped = 0;
        for step in 0..10u64 {
            let x = Tensor::randint(64, [4, 16], (Kind::Int64, tch::Device::Cpu));
            let y = x.roll([1], [1]);
            let lr = lr_at(&c, step, 10);
            fused_model.loss(&x, &y).backward();
            let o = fused.clip(&fused_vs).expect("clip");
            clipped += usize::from(o.grad_norm.double_value(&[]) > c.grad_clip);
            fused
                .update(&fused_vs, lr, Some(&o.found_inf))
                .expect("update");
            ref_model.loss(&x, &y).backward();
            reference.step(&ref_params, lr);
        }
        assert!(clipped > 0, "clipping happened");
        let max_abs = |t: Tensor| t.abs().max().double_value(&[]);
        let (fm, fv) = (fused.m.variables(), fused.v.variables());
        for (i, n) in names.iter().enumerate() {
            let r = &ref_params[i];
            let diff = max_abs(&fused_vs.variables()[n] - r);
            let scale = max_abs(r.shallow_clone()).max(1.0);
            assert!(
                diff <= 1e-6 * scale,
                "{n}: max |Δp| {diff:e} (scale {scale})"
            );
            // The same moment tensors (what checkpoints hold), to float rounding.
            assert!(
                max_abs(&fm[n] - &reference.m[i]) <= 1e-6,
                "{n}: first moment"
            );
            assert!(
                max_abs(&fv[n] - &reference.v[i]) <= 1e-9,
                "{n}: second moment"
            );
        }
    }

    #[test]
    fn a_non_finite_gradient_changes_nothing() {
        let vs = VarStore::new(tch::Device::Cpu);
        let p = vs.root().var("w", &[2, 2], tch::nn::Init::Const(1.0));
        let mut opt = AdamW::new(&vs, OptimConfig::default());
        (&p * f64::NAN).sum(Kind::Float).backward();
        let o = opt.clip(&vs).expect("clip");
        assert_eq!(o.found_inf.double_value(&[]), 1.0);
        opt.update(&vs, 0.1, Some(&o.found_inf)).expect("update");
        assert_eq!(p.sum(Kind::Float).double_value(&[]), 4.0);
        assert_eq!(
            opt.m.variables()["w"]
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
    }

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
        opt.update(&vs, 0.1, None).unwrap();
        // Step 1: m̂ = g, v̂ = g², so p = (1 − lr·wd)·1 − lr·g/(|g| + eps) = 0.95 − 0.1.
        let got = p.double_value(&[0, 0]);
        assert!((got - 0.85).abs() < 1e-6, "{got}");
        assert_eq!(opt.step, 1);
    }
}
