//! The optimizer (AdamW stepped by ATen's fused kernel, its schedule and clipping) lives in the C++
//! layer's crate, where the embedder's trainer reaches it too; this module keeps the training
//! paths' names and the tests against the unfused reference.

pub use starling_torch::optim::*;

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Kind, Tensor};

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
    fn the_update_a_graph_captures_equals_the_eager_one() {
        // update_on_device (learning rate as a device tensor, step number advanced on the device)
        // against update, over steps whose learning rate changes, after a resume-like jump of
        // the host step count.
        let c = OptimConfig::default();
        let make = || {
            let vs = VarStore::new(tch::Device::Cpu);
            tch::manual_seed(3);
            let w = vs.root().var(
                "w",
                &[3, 4],
                tch::nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
            let b = vs.root().var("b", &[4], tch::nn::Init::Const(0.5));
            (vs, w, b)
        };
        let (eager_vs, ew, eb) = make();
        let (dev_vs, dw, db) = make();
        let mut eager = AdamW::new(&eager_vs, c.clone());
        let mut dev = AdamW::new(&dev_vs, c.clone());
        eager.step = 40;
        dev.step = 40;
        dev.sync_step_tensor();
        let mut lr_t = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        for step in 0..6u64 {
            let x = Tensor::randn([5, 3], (Kind::Float, tch::Device::Cpu));
            let lr = lr_at(&c, 40 + step, 100);
            (x.matmul(&ew) + &eb).square().sum(Kind::Float).backward();
            eager.update(&eager_vs, lr, None).expect("eager update");
            (x.matmul(&dw) + &db).square().sum(Kind::Float).backward();
            let _ = lr_t.fill_(lr);
            dev.update_on_device(&dev_vs, &lr_t, None)
                .expect("device update");
            dev.step += 1;
        }
        assert_eq!(dev.step, eager.step);
        for (a, b) in [(&ew, &dw), (&eb, &db)] {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 1e-7, "max |Δp| {diff:e}");
        }
        let moved = (&ew - make().1).abs().max().double_value(&[]);
        assert!(moved > 1e-4, "the updates changed the weights ({moved:e})");
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
