//! Fine-tuning the model as a text classifier: a linear head on the pooled hidden states,
//! trained with the model (every weight, or only the top blocks and the final norm) by
//! class-balanced cross-entropy. The step whose validation macro-F1 is best is kept, so the
//! number of steps can be generous without overfitting the result.

use crate::embed::{pool, PostEncoding};
use crate::{Error, Llama, LlamaConfig, Pooling, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;
use tch::nn::OptimizerConfig;
use tch::{nn, Kind, Tensor};

/// How the classifier is fine-tuned.
#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Texts per step.
    pub batch: usize,
    /// AdamW learning rate of the model's weights (warm-up over the first tenth, then constant).
    pub lr: f64,
    /// Adam learning rate of the head.
    pub head_lr: f64,
    /// Most tokens per text.
    pub max_tokens: usize,
    /// Pooling of the hidden states.
    pub pooling: Pooling,
    /// Train only this many top blocks (and the final norm); `None` trains every weight.
    pub train_blocks: Option<usize>,
    /// Measure on validation every this many steps (the best measurement's weights are kept).
    pub eval_every: usize,
    /// Seed of batch order.
    pub seed: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            steps: 600,
            batch: 32,
            lr: 1e-4,
            head_lr: 1e-3,
            max_tokens: 64,
            pooling: Pooling::Mean,
            train_blocks: None,
            eval_every: 100,
            seed: 0,
        }
    }
}

/// One validation measurement.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifyPoint {
    /// Steps taken.
    pub step: usize,
    /// Mean training loss since the last measurement (none before training).
    pub train_loss: Option<f64>,
    /// Validation macro-F1 at the argmax class.
    pub val_macro_f1: f64,
}

/// How fine-tuning went.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClassifyReport {
    /// Training texts.
    pub train_examples: usize,
    /// Validation texts.
    pub val_examples: usize,
    /// Blocks trained (all when every weight trained).
    pub trained_blocks: usize,
    /// Whether every weight trained (else the top blocks and the final norm).
    pub all_weights: bool,
    /// Steps taken.
    pub steps: usize,
    /// The step whose weights were kept (best validation macro-F1).
    pub best_step: usize,
    /// Each measurement (step 0: the untrained head).
    pub curve: Vec<ClassifyPoint>,
}

/// A fine-tuned classifier: the model, its head and the encoding of its texts.
pub struct TextClassifier {
    model: Llama,
    head: nn::Linear,
    enc: PostEncoding,
    max_tokens: usize,
    _vs: (nn::VarStore, nn::VarStore),
}

impl TextClassifier {
    /// Logits [n, classes] of `texts` (with gradients unless under `no_grad`).
    fn logits(&self, texts: &[&str]) -> Result<Tensor> {
        let (ids, w) = self.enc.truncated_batch(texts, self.max_tokens)?;
        Ok(pool(&self.model.hidden(&ids), &w).apply(&self.head))
    }

    /// Class probabilities of `texts`, in order (batched by length, no gradients).
    pub fn probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let _g = tch::no_grad_guard();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(64) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let p = self.logits(&batch)?.softmax(-1, Kind::Float);
            let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&p)
                .map_err(|e| Error::Format(format!("probabilities: {e}")))?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}

/// Macro-F1 of argmax predictions over `classes` classes (a class absent from both sides counts 0).
fn macro_f1(pred: &[usize], gold: &[usize], classes: usize) -> f64 {
    let mut f = 0.0;
    for c in 0..classes {
        let tp = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p == c && **g == c)
            .count() as f64;
        let fp = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p == c && **g != c)
            .count() as f64;
        let fn_ = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p != c && **g == c)
            .count() as f64;
        if tp > 0.0 {
            f += 2.0 * tp / (2.0 * tp + fp + fn_);
        }
    }
    f / classes.max(1) as f64
}

fn argmax(rows: &[Vec<f32>]) -> Vec<usize> {
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

/// Leaves only the top `blocks` blocks and the final norm trainable (every weight when `None`);
/// returns how many blocks train.
pub(crate) fn train_top_blocks(
    vs: &nn::VarStore,
    config: &LlamaConfig,
    blocks: Option<usize>,
) -> usize {
    let layers = config.num_hidden_layers;
    let Some(n) = blocks else {
        return layers;
    };
    let first = layers - n.min(layers);
    for (name, t) in vs.variables() {
        let block = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let trains = block.is_some_and(|b| b >= first) || name == "model.norm.weight";
        let _ = t.set_requires_grad(trains);
    }
    layers - first
}

/// Refuses too few texts or a label not below `classes`.
fn check_labels(train: &[(&str, usize)], val: &[(&str, usize)], classes: usize) -> Result<()> {
    if classes < 2 || train.len() < 2 || val.is_empty() {
        return Err(Error::Format(format!(
            "{} training and {} validation texts over {classes} classes: too few to fine-tune",
            train.len(),
            val.len()
        )));
    }
    if let Some((t, l)) = train.iter().chain(val).find(|(_, l)| *l >= classes) {
        return Err(Error::Format(format!(
            "label {l} of {t:?} is not below {classes} classes"
        )));
    }
    Ok(())
}

/// Class weights n / (classes · count), as balanced logistic regression uses.
fn balanced_class_weights(train: &[(&str, usize)], classes: usize) -> Tensor {
    let mut counts = vec![0usize; classes];
    for (_, l) in train {
        counts[*l] += 1;
    }
    let weights: Vec<f32> = counts
        .iter()
        .map(|&n| train.len() as f32 / (classes as f32 * n.max(1) as f32))
        .collect();
    Tensor::from_slice(&weights)
}

/// The trainable variables of `stores`, each store's in name order.
fn trainable(stores: &[&nn::VarStore]) -> Vec<Tensor> {
    let mut out = Vec::new();
    for vs in stores {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(v.into_iter().map(|(_, t)| t));
    }
    out
}

/// Fine-tunes the model of `src_dir` (weights `weights`) on labelled `train` texts (labels below
/// `classes`), keeping the weights of the step with the best macro-F1 on `val`. `progress` hears
/// each step and its loss.
pub fn fine_tune(
    src_dir: &Path,
    weights: &Path,
    train: &[(&str, usize)],
    val: &[(&str, usize)],
    classes: usize,
    cfg: &ClassifyConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(TextClassifier, ClassifyReport)> {
    check_labels(train, val, classes)?;
    let config = LlamaConfig::load(&src_dir.join("config.json"))?;
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    crate::load_weights(&mut vs, weights)?;
    let trained_blocks = train_top_blocks(&vs, &config, cfg.train_blocks);
    let hvs = nn::VarStore::new(tch::Device::Cpu);
    let head = nn::linear(
        hvs.root() / "classifier",
        config.hidden_size as i64,
        classes as i64,
        Default::default(),
    );
    let c = TextClassifier {
        model,
        head,
        enc: PostEncoding::new(src_dir, &config, cfg.pooling)?,
        max_tokens: cfg.max_tokens.max(2),
        _vs: (vs, hvs),
    };
    let (vs, hvs) = (&c._vs.0, &c._vs.1);
    let class_weights = balanced_class_weights(train, classes);
    let mut opt = nn::AdamW::default().build(vs, cfg.lr)?;
    let mut hopt = nn::Adam::default().build(hvs, cfg.head_lr)?;
    let val_texts: Vec<&str> = val.iter().map(|(t, _)| *t).collect();
    let val_gold: Vec<usize> = val.iter().map(|(_, l)| *l).collect();
    let measure = |c: &TextClassifier| -> Result<f64> {
        Ok(macro_f1(
            &argmax(&c.probabilities(&val_texts)?),
            &val_gold,
            classes,
        ))
    };
    let snapshot = || -> Vec<Tensor> {
        trainable(&[vs, hvs])
            .iter()
            .map(|t| t.detach().copy())
            .collect()
    };
    let mut report = ClassifyReport {
        train_examples: train.len(),
        val_examples: val.len(),
        trained_blocks,
        all_weights: cfg.train_blocks.is_none(),
        ..Default::default()
    };
    let f0 = measure(&c)?;
    report.curve.push(ClassifyPoint {
        step: 0,
        train_loss: None,
        val_macro_f1: f0,
    });
    let (mut best, mut best_f, mut best_step) = (snapshot(), f0, 0usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let warmup = (cfg.steps / 10).max(1);
    let (mut step, mut recent) = (0usize, Vec::new());
    let mut order: Vec<usize> = (0..train.len()).collect();
    while step < cfg.steps {
        order.shuffle(&mut rng);
        for b in order.chunks(cfg.batch.max(2)) {
            if step >= cfg.steps {
                break;
            }
            opt.set_lr(cfg.lr * ((step + 1) as f64 / warmup as f64).min(1.0));
            let texts: Vec<&str> = b.iter().map(|&i| train[i].0).collect();
            let labels: Vec<i64> = b.iter().map(|&i| train[i].1 as i64).collect();
            let loss = c.logits(&texts)?.cross_entropy_loss(
                &Tensor::from_slice(&labels),
                Some(&class_weights),
                tch::Reduction::Mean,
                -100,
                0.0,
            );
            opt.zero_grad();
            hopt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(1.0);
            opt.step();
            hopt.step();
            step += 1;
            let l = loss.double_value(&[]);
            recent.push(l);
            progress(step, l);
            if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
                let f = measure(&c)?;
                report.curve.push(ClassifyPoint {
                    step,
                    train_loss: Some(recent.iter().sum::<f64>() / recent.len().max(1) as f64),
                    val_macro_f1: f,
                });
                recent.clear();
                if f > best_f {
                    (best, best_f, best_step) = (snapshot(), f, step);
                }
            }
        }
    }
    // Back to the best measurement's weights.
    tch::no_grad(|| {
        for (mut t, b) in trainable(&[vs, hvs]).into_iter().zip(&best) {
            t.copy_(b);
        }
    });
    report.steps = step;
    report.best_step = best_step;
    Ok((c, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_matches_a_hand_count() {
        // Class 0: tp 2, fp 1, fn 0 → 0.8; class 1: tp 1, fp 0, fn 1 → 2/3.
        let f = macro_f1(&[0, 0, 0, 1], &[0, 0, 1, 1], 2);
        assert!((f - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{f}");
        assert_eq!(argmax(&[vec![0.1, 0.9], vec![0.7, 0.3]]), vec![1, 0]);
    }
}
