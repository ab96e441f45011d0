//! The embedding head: a linear map on the frozen model's pooled vectors, trained contrastively
//! (InfoNCE with in-batch negatives) on platform-native pairs such as hashtag words ↔ the post that
//! carried the tag, and stored in the model directory beside the weights.

use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;
use tch::nn::OptimizerConfig;
use tch::{nn, Kind, Tensor};

/// File of the head inside a model (or run) directory.
pub const HEAD_FILE: &str = "embedding_head.safetensors";
/// What the head was trained on and how it did, beside it.
pub const HEAD_REPORT_FILE: &str = "embedding_head.json";

/// A trained head: `v ↦ normalize(W (v − mean))`.
pub struct EmbeddingHead {
    pub(crate) mean: Tensor,
    pub(crate) weight: Tensor,
}

impl EmbeddingHead {
    /// Loads the head of a model directory, when it has one.
    pub fn load(dir: &Path) -> Result<Option<(Self, String)>> {
        let path = dir.join(HEAD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let (sha, _) = starling_artifacts::sha256_file(&path)?;
        let named = Tensor::read_safetensors(&path)?;
        let get = |name: &str| {
            named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.to_kind(Kind::Float))
                .ok_or_else(|| Error::Format(format!("{}: no tensor `{name}`", path.display())))
        };
        Ok(Some((
            Self {
                mean: get("mean")?,
                weight: get("weight")?,
            },
            sha[..8].to_string(),
        )))
    }

    /// A deep copy (for another model replica).
    pub fn copy(&self) -> Self {
        Self {
            mean: self.mean.copy(),
            weight: self.weight.copy(),
        }
    }

    /// Input dimension.
    pub fn in_dim(&self) -> i64 {
        self.weight.size().get(1).copied().unwrap_or(0)
    }

    /// Output dimension.
    pub fn out_dim(&self) -> i64 {
        self.weight.size().first().copied().unwrap_or(0)
    }

    /// Maps pooled vectors [n, in] to unit vectors [n, out].
    pub fn apply(&self, v: &Tensor) -> Tensor {
        let x = (v - &self.mean).matmul(&self.weight.tr());
        &x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
    }
}

/// How the head is trained.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Pairs per step (distinct groups, so in-batch negatives are true negatives).
    pub batch: usize,
    /// Softmax temperature of InfoNCE.
    pub temperature: f64,
    /// Adam learning rate.
    pub lr: f64,
    /// Share of groups held out to measure the head.
    pub val_fraction: f64,
    /// Seed of batch sampling and the held-out split.
    pub seed: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch: 256,
            temperature: 0.05,
            lr: 1e-2,
            val_fraction: 0.1,
            seed: 0,
        }
    }
}

/// How a trained head did on held-out groups: before (identity map on centred vectors) and after.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadReport {
    /// Pairs used for training.
    pub train_pairs: usize,
    /// Groups (e.g. hashtags) held out.
    pub val_groups: usize,
    /// Held-out InfoNCE loss before training.
    pub val_loss_before: f64,
    /// Held-out InfoNCE loss after training.
    pub val_loss_after: f64,
    /// Held-out top-1 accuracy of matching a query to its post among the batch, before.
    pub val_top1_before: f64,
    /// The same after training.
    pub val_top1_after: f64,
    /// Optimizer steps.
    pub steps: usize,
}

/// A training pair of pooled vectors and the group it belongs to (the hashtag, the thread).
pub struct HeadPair {
    /// Index of the query-side vector.
    pub query: usize,
    /// Index of the document-side vector.
    pub doc: usize,
    /// Group id: pairs of one group are never each other's negatives.
    pub group: usize,
}

fn batch_loss(w: &Tensor, mean: &Tensor, q: &Tensor, d: &Tensor, t: f64) -> (Tensor, Tensor) {
    let map = |x: &Tensor| {
        let y = (x - mean).matmul(&w.tr());
        &y / y.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
    };
    crate::contrastive::info_nce(&(map(q).matmul(&map(d).tr()) / t))
}

/// Batches of pairs from distinct groups, in a seeded order.
fn batches(
    pairs: &[&HeadPair],
    batch: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let groups: Vec<usize> = pairs.iter().map(|p| p.group).collect();
    crate::contrastive::group_batches(&groups, batch, rng)
}

/// Trains a head on pooled vectors `vectors` [n, d] (unit length) and `pairs` of rows of it.
pub fn train_head(
    vectors: &Tensor,
    pairs: &[HeadPair],
    cfg: &HeadConfig,
) -> Result<(EmbeddingHead, HeadReport)> {
    let d = vectors.size().get(1).copied().unwrap_or(0);
    if pairs.len() < 4 || d == 0 {
        return Err(Error::Format(format!(
            "{} training pairs: too few to train an embedding head",
            pairs.len()
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut groups: Vec<usize> = pairs.iter().map(|p| p.group).collect();
    groups.sort_unstable();
    groups.dedup();
    groups.shuffle(&mut rng);
    let n_val = ((groups.len() as f64 * cfg.val_fraction) as usize).clamp(2, groups.len() / 2);
    let val_groups: std::collections::HashSet<usize> = groups[..n_val].iter().copied().collect();
    let (val, train): (Vec<&HeadPair>, Vec<&HeadPair>) =
        pairs.iter().partition(|p| val_groups.contains(&p.group));
    let mean = vectors.mean_dim(0, false, Kind::Float).detach();
    let rows = |ps: &[&HeadPair], idx: &[usize]| {
        let q: Vec<i64> = idx.iter().map(|&i| ps[i].query as i64).collect();
        let dd: Vec<i64> = idx.iter().map(|&i| ps[i].doc as i64).collect();
        (
            vectors.index_select(0, &Tensor::from_slice(&q)),
            vectors.index_select(0, &Tensor::from_slice(&dd)),
        )
    };
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let w = vs
        .root()
        .var_copy("weight", &Tensor::eye(d, (Kind::Float, tch::Device::Cpu)));
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let mut val_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let val_batches = batches(&val, cfg.batch, &mut val_rng);
    let measure = |w: &Tensor| -> (f64, f64) {
        let _g = tch::no_grad_guard();
        let (mut l, mut a, mut n) = (0f64, 0f64, 0f64);
        for b in &val_batches {
            let (q, dd) = rows(&val, b);
            let (loss, top1) = batch_loss(w, &mean, &q, &dd, cfg.temperature);
            l += loss.double_value(&[]);
            a += top1.double_value(&[]);
            n += 1.0;
        }
        (l / n.max(1.0), a / n.max(1.0))
    };
    let (loss_before, top1_before) = measure(&w);
    let mut step = 0;
    while step < cfg.steps {
        let epoch = batches(&train, cfg.batch, &mut rng);
        if epoch.is_empty() {
            break;
        }
        for b in epoch {
            if step >= cfg.steps {
                break;
            }
            let (q, dd) = rows(&train, &b);
            let (loss, _) = batch_loss(&w, &mean, &q, &dd, cfg.temperature);
            opt.backward_step(&loss);
            step += 1;
        }
    }
    let (loss_after, top1_after) = measure(&w);
    let head = EmbeddingHead {
        mean,
        weight: w.detach().copy(),
    };
    Ok((
        head,
        HeadReport {
            train_pairs: train.len(),
            val_groups: n_val,
            val_loss_before: loss_before,
            val_loss_after: loss_after,
            val_top1_before: top1_before,
            val_top1_after: top1_after,
            steps: step,
        },
    ))
}

/// Writes the head and its report into a model directory (temp file, fsync, rename).
pub fn save_head(dir: &Path, head: &EmbeddingHead, report: &HeadReport) -> Result<()> {
    starling_artifacts::write_atomic_with(&dir.join(HEAD_FILE), |tmp| {
        Tensor::write_safetensors(&[("mean", &head.mean), ("weight", &head.weight)], tmp)
            .map_err(Error::from)
    })?;
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Format(e.to_string()))?;
    Ok(starling_artifacts::write_atomic(
        &dir.join(HEAD_REPORT_FILE),
        &json,
    )?)
}
