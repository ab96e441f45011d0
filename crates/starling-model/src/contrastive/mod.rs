//! Contrastive fine-tuning of the whole model into an embedding model (as SGPT, E5 and GTE do for
//! decoder models): pairs the platform has for free — a post ↔ its hashtag's words, a reply ↔
//! its parent — pooled through every layer, InfoNCE over the batch (symmetric) with in-batch
//! negatives plus one mined hard negative per pair where given, and a learnt temperature. The
//! result is a model directory of its own (HF layout, the source's tokenizer, `embedder.json`)
//! that [`crate::PostEmbedder`] loads like any other. Training checkpoints into
//! `<embedder>/checkpoint/` and resumes from there ([`ContrastConfig::resume`]).

mod checkpoint;

pub use checkpoint::EMBEDDER_CHECKPOINT_DIR;

use crate::embed::{pool, PostEncoding};
use crate::{Error, Llama, LlamaConfig, Pooling, Result};
use checkpoint::{CheckpointState, RunKey, TrainingState};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use starling_torch::optim::{AdamW, OptimConfig};
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// What an embedder directory holds besides the model: how it was trained and how it did.
pub const EMBEDDER_REPORT_FILE: &str = "embedder.json";

/// Folder of a model (or run) directory that holds its trained embedder.
pub const EMBEDDER_DIR: &str = "embedder";

/// The trained embedder beside the model in `dir` (`<dir>/embedder/` with weights and
/// `embedder.json`), when there is one: search, ads and serve embed with it instead of the
/// language model's own pooled states.
pub fn trained_embedder(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let e = dir.join(EMBEDDER_DIR);
    let weights = e.join("model.safetensors");
    (weights.is_file() && e.join(EMBEDDER_REPORT_FILE).is_file()).then_some((e, weights))
}

/// One training pair, as texts.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastPair {
    /// The query side (a hashtag's words, a parent post).
    pub query: String,
    /// The document side (the post without its tags, the reply).
    pub doc: String,
    /// A post that looks relevant to the query but is not (BM25's best without the tag).
    pub hard_negative: Option<String>,
    /// Pairs of one group (one hashtag) are never each other's negatives.
    pub group: usize,
}

/// How the embedder is trained.
#[derive(Debug, Clone)]
pub struct ContrastConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Pairs per step, each from a distinct group.
    pub batch: usize,
    /// AdamW learning rate (warm-up over the first tenth, then constant).
    pub lr: f64,
    /// Starting temperature of InfoNCE (learnt from there, kept within 0.01..1).
    pub temperature: f64,
    /// Share of groups held out to measure top-1.
    pub val_fraction: f64,
    /// Most held-out pairs measured (the first of a seeded order), so measuring stays cheap.
    pub max_val_pairs: usize,
    /// Most tokens per text.
    pub max_tokens: usize,
    /// Pooling of the hidden states.
    pub pooling: Pooling,
    /// Measure on the held-out groups every this many steps.
    pub eval_every: usize,
    /// Seed of the split and of batch order.
    pub seed: u64,
    /// Train only this many top blocks (and the final norm); `None` trains every weight.
    pub train_blocks: Option<usize>,
    /// Train a linear projection of the pooled vectors to this width with the model, saved as the
    /// embedder's head ([`crate::head::HEAD_FILE`]); `None`: the pooled vectors are the embedding.
    pub projection: Option<usize>,
    /// Checkpoint every this many steps, at the last step and when stopped (0: never).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in the output directory when there is one.
    pub resume: bool,
}

impl Default for ContrastConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            batch: 32,
            lr: 1e-4,
            temperature: 0.05,
            val_fraction: 0.1,
            max_val_pairs: 1024,
            max_tokens: 64,
            pooling: Pooling::Mean,
            eval_every: 50,
            seed: 0,
            train_blocks: None,
            projection: None,
            checkpoint_every: 100,
            resume: false,
        }
    }
}

/// How training went: held-out top-1 and loss before, during and after.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ContrastReport {
    /// Pairs trained on.
    pub train_pairs: usize,
    /// Of them, with a hard negative.
    pub hard_negatives: usize,
    /// Groups held out.
    pub val_groups: usize,
    /// Held-out pairs.
    pub val_pairs: usize,
    /// Each measurement (step 0: before training).
    pub curve: Vec<CurvePoint>,
    /// Held-out top-1 of the untrained model.
    pub val_top1_before: f64,
    /// Held-out top-1 after training.
    pub val_top1_after: f64,
    /// Learnt temperature.
    pub temperature: f64,
    /// Steps taken.
    pub steps: usize,
    /// Pooling used.
    pub pooling: String,
    /// The source model's weights (sha256).
    pub source_sha256: String,
    /// Blocks trained (all of them unless `train_blocks` was given; the final norm trains too).
    #[serde(default)]
    pub trained_blocks: usize,
    /// Steps asked for (more than `steps` when the run was stopped early).
    #[serde(default)]
    pub target_steps: usize,
    /// The checkpoint step this run resumed from, if it did.
    #[serde(default)]
    pub resumed_from: Option<usize>,
    /// Width of the projection trained with the model (saved as the embedder's head), if any.
    #[serde(default)]
    pub projection: Option<usize>,
}

/// One measurement of training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    /// Steps taken.
    pub step: usize,
    /// Mean training loss since the last measurement (none before training).
    pub train_loss: Option<f64>,
    /// Held-out InfoNCE.
    pub val_loss: f64,
    /// Held-out top-1: share of queries whose own document ranks first in their batch.
    pub val_top1: f64,
}

/// Splits `pairs` by group: the held-out groups (a `val_fraction` share, at least 2) and the rest.
pub fn split_by_group(
    pairs: &[ContrastPair],
    val_fraction: f64,
    seed: u64,
) -> (Vec<&ContrastPair>, Vec<&ContrastPair>) {
    let mut groups: Vec<usize> = pairs.iter().map(|p| p.group).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    groups.shuffle(&mut rng);
    // At least two groups held out, at most half of them.
    let n_val = ((groups.len() as f64 * val_fraction) as usize)
        .max(2)
        .min(groups.len() / 2);
    let held: HashSet<usize> = groups[..n_val].iter().copied().collect();
    pairs.iter().partition(|p| held.contains(&p.group))
}

/// Batches of pairs from distinct groups, in a seeded order.
fn batches(
    pairs: &[&ContrastPair],
    batch: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let groups: Vec<usize> = pairs.iter().map(|p| p.group).collect();
    group_batches(&groups, batch, rng)
}

/// Batches of indices into a list whose item `i` belongs to group `groups[i]`: each batch takes
/// one item of each of up to `batch` groups (so in-batch negatives are true negatives), groups
/// shuffled by `rng`; batches of fewer than two are dropped.
pub(crate) fn group_batches(
    groups: &[usize],
    batch: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_group.entry(*g).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = by_group.into_values().collect();
    groups.shuffle(rng);
    groups
        .chunks(batch.max(2))
        .filter(|c| c.len() >= 2)
        .map(|c| c.iter().filter_map(|g| g.choose(rng).copied()).collect())
        .collect()
}

/// The widest projection `embed train` accepts.
const MAX_PROJECTION: usize = 65_536;

/// The projection learns this many times faster than the model (a fresh linear map beside
/// pre-trained weights).
const PROJECTION_LR_FACTOR: f64 = 10.0;

/// The model and what trains with it.
struct Trainee {
    model: Llama,
    enc: PostEncoding,
    max_tokens: usize,
    /// The projection (weight [k, d], a trained variable) applied to the pooled vectors, when
    /// one trains: the embedder's head as `PostEmbedder` will apply it.
    projection: Option<crate::head::EmbeddingHead>,
}

impl Trainee {
    /// Unit vectors [n, d] (or [n, k] through the projection) of `texts`, with gradients unless
    /// under `no_grad`.
    fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let (ids, w) = self.enc.truncated_batch(texts, self.max_tokens)?;
        let pooled = pool(&self.model.hidden(&ids), &w);
        Ok(match &self.projection {
            Some(head) => head.apply(&pooled),
            None => pooled,
        })
    }

    /// Symmetric InfoNCE of a batch (hard negatives widen the query → document side) and top-1
    /// of query → document.
    fn loss(
        &self,
        pairs: &[&ContrastPair],
        idx: &[usize],
        scale: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let q: Vec<&str> = idx.iter().map(|&i| pairs[i].query.as_str()).collect();
        let mut d: Vec<&str> = idx.iter().map(|&i| pairs[i].doc.as_str()).collect();
        d.extend(
            idx.iter()
                .filter_map(|&i| pairs[i].hard_negative.as_deref()),
        );
        let (qv, dv) = (self.embed(&q)?, self.embed(&d)?);
        Ok(info_nce(&(qv.matmul(&dv.tr()) * scale.exp())))
    }
}

/// Symmetric InfoNCE of similarity logits [n, n + k] (row i's positive is column i; the k extra
/// columns are negatives for the query → document side only) and query → document top-1.
pub(crate) fn info_nce(logits: &Tensor) -> (Tensor, Tensor) {
    let n = logits.size()[0];
    let target = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu));
    let square = logits.narrow(1, 0, n);
    let loss = (logits.cross_entropy_for_logits(&target)
        + square.tr().cross_entropy_for_logits(&target))
        / 2.0;
    let top1 = logits
        .argmax(1, false)
        .eq_tensor(&target)
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    (loss, top1)
}

/// What trains, each store with its optimizer: the model, the projection (when one trains) and
/// the temperature (a log-scale beside the model, not saved with it).
struct Learners {
    model: (nn::VarStore, AdamW),
    projection: Option<(nn::VarStore, AdamW)>,
    temperature: (nn::VarStore, AdamW),
}

impl Learners {
    /// AdamW at `lr` for the model (weight decay 0.01, clipping at 1), the projection without
    /// decay, and Adam at 1e-2 for the temperature.
    fn new(
        model: nn::VarStore,
        projection: Option<nn::VarStore>,
        temperature: nn::VarStore,
        lr: f64,
    ) -> Self {
        let adam = OptimConfig {
            lr,
            beta2: 0.999,
            weight_decay: 0.01,
            grad_clip: 1.0,
            ..OptimConfig::default()
        };
        let plain = |lr: f64, grad_clip: f64| OptimConfig {
            lr,
            weight_decay: 0.0,
            grad_clip,
            ..adam.clone()
        };
        Self {
            projection: projection.map(|p| {
                let o = AdamW::new(&p, plain(lr, adam.grad_clip));
                (p, o)
            }),
            temperature: {
                let o = AdamW::new(&temperature, plain(1e-2, 0.0));
                (temperature, o)
            },
            model: {
                let o = AdamW::new(&model, adam);
                (model, o)
            },
        }
    }

    /// Every store a checkpoint holds, borrowed for one save or load.
    fn state(&mut self) -> TrainingState<'_> {
        TrainingState {
            model: &mut self.model.0,
            opt: &mut self.model.1,
            temperature: &mut self.temperature.0,
            topt: &mut self.temperature.1,
            projection: self.projection.as_mut().map(|(v, o)| (v, o)),
        }
    }

    /// Sets every optimizer's step count (after a resume).
    fn set_step(&mut self, step: usize) {
        self.model.1.step = step as u64;
        self.temperature.1.step = step as u64;
        if let Some((_, o)) = &mut self.projection {
            o.step = step as u64;
        }
    }

    /// One update after a backward pass: the model's gradients clipped, the projection at
    /// [`PROJECTION_LR_FACTOR`] times `lr`; a non-finite gradient changes nothing.
    fn update(&mut self, lr: f64, scale: &Tensor) -> Result<()> {
        let (vs, opt) = &mut self.model;
        let outcome = opt.clip(vs)?;
        opt.update(vs, lr, Some(&outcome.found_inf))?;
        if let Some((pvs, popt)) = &mut self.projection {
            popt.update(pvs, lr * PROJECTION_LR_FACTOR, Some(&outcome.found_inf))?;
        }
        let (svs, topt) = &mut self.temperature;
        topt.update(svs, 1e-2, Some(&outcome.found_inf))?;
        tch::no_grad(|| {
            let _ = scale.shallow_clone().clamp_(0.0, 100f64.ln());
        });
        Ok(())
    }
}

/// The held-out and training pairs of `pairs`, refused when too few or the projection's width is
/// out of range.
fn checked_split<'p>(
    pairs: &'p [ContrastPair],
    cfg: &ContrastConfig,
) -> Result<(Vec<&'p ContrastPair>, Vec<&'p ContrastPair>)> {
    let (mut val, train) = split_by_group(pairs, cfg.val_fraction, cfg.seed);
    val.truncate(cfg.max_val_pairs.max(2));
    if train.len() < 4 || val.len() < 2 {
        return Err(Error::Format(format!(
            "{} pairs ({} of them held out): too few to train an embedder",
            pairs.len(),
            val.len()
        )));
    }
    if let Some(k) = cfg.projection.filter(|&k| k == 0 || k > MAX_PROJECTION) {
        return Err(Error::Config(format!(
            "a projection to {k} dimensions: give its width, 1 to {MAX_PROJECTION} (e.g. the hidden size)"
        )));
    }
    Ok((val, train))
}

/// A trained projection from `d` to `k` dimensions in `vs`, starting as the identity (or, of
/// another width, orthonormal rows): training begins from the model's own pooled vectors.
fn new_projection(vs: &nn::VarStore, d: i64, k: i64, seed: u64) -> crate::head::EmbeddingHead {
    let init = if k == d {
        Tensor::eye(d, (Kind::Float, tch::Device::Cpu))
    } else {
        tch::manual_seed(seed as i64);
        let (q, _) = Tensor::randn([d.max(k), d.min(k)], (Kind::Float, tch::Device::Cpu)).qr(true);
        if k < d {
            q.tr().contiguous()
        } else {
            q
        }
    };
    crate::head::EmbeddingHead {
        mean: Tensor::zeros([d], (Kind::Float, tch::Device::Cpu)),
        weight: vs.root().var_copy("weight", &init),
    }
}

/// The held-out pairs and their fixed batches.
struct HeldOut<'p> {
    pairs: Vec<&'p ContrastPair>,
    batches: Vec<Vec<usize>>,
}

impl HeldOut<'_> {
    /// A measurement at `step`: held-out InfoNCE and top-1, without gradients.
    fn point(
        &self,
        t: &Trainee,
        scale: &Tensor,
        step: usize,
        train_loss: Option<f64>,
    ) -> Result<CurvePoint> {
        let _g = tch::no_grad_guard();
        let (mut l, mut a) = (0f64, 0f64);
        for b in &self.batches {
            let (loss, top1) = t.loss(&self.pairs, b, scale)?;
            l += loss.double_value(&[]);
            a += top1.double_value(&[]);
        }
        let n = self.batches.len().max(1) as f64;
        Ok(CurvePoint {
            step,
            train_loss,
            val_loss: l / n,
            val_top1: a / n,
        })
    }
}

/// The report of a run before its first step: its data, settings and the untrained model's
/// measurement `first`.
fn fresh_report(
    train: &[&ContrastPair],
    val: &[&ContrastPair],
    cfg: &ContrastConfig,
    source_sha256: String,
    trained_blocks: usize,
    first: CurvePoint,
) -> ContrastReport {
    ContrastReport {
        train_pairs: train.len(),
        hard_negatives: train.iter().filter(|p| p.hard_negative.is_some()).count(),
        val_groups: val.iter().map(|p| p.group).collect::<HashSet<_>>().len(),
        val_pairs: val.len(),
        pooling: cfg.pooling.name().to_string(),
        source_sha256,
        trained_blocks,
        projection: cfg.projection,
        val_top1_before: first.val_top1,
        curve: vec![first],
        ..Default::default()
    }
}

/// Writes the embedder directory: the model, the projection as its head (or no head: one left by
/// an earlier run is removed), the source's tokenizer and the report.
fn write_embedder(
    src_dir: &Path,
    out_dir: &Path,
    vs: &nn::VarStore,
    config: &LlamaConfig,
    projection: Option<&crate::head::EmbeddingHead>,
    report: &ContrastReport,
) -> Result<()> {
    crate::save_dir(vs, config, out_dir)?;
    match projection {
        Some(head) => crate::head::save_head(
            out_dir,
            head,
            &crate::head::HeadReport {
                train_pairs: report.train_pairs,
                val_groups: report.val_groups,
                val_loss_before: report.curve.first().map_or(0.0, |c| c.val_loss),
                val_loss_after: report.curve.last().map_or(0.0, |c| c.val_loss),
                val_top1_before: report.val_top1_before,
                val_top1_after: report.val_top1_after,
                steps: report.steps,
            },
        )?,
        None => {
            for f in [crate::head::HEAD_FILE, crate::head::HEAD_REPORT_FILE] {
                let _ = std::fs::remove_file(out_dir.join(f));
            }
        }
    }
    let tok = std::fs::read(src_dir.join("tokenizer.json"))
        .map_err(|e| Error::io(src_dir.join("tokenizer.json"), e))?;
    starling_artifacts::write_atomic(&out_dir.join("tokenizer.json"), &tok)?;
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Format(e.to_string()))?;
    starling_artifacts::write_atomic(&out_dir.join(EMBEDDER_REPORT_FILE), &json)?;
    Ok(())
}

/// Fine-tunes the model of `src_dir` (weights `weights`) on `pairs` and writes the embedder to
/// `out_dir`. `progress` hears each step and its loss; when it answers `Break` training stops
/// there (checkpointed, so a later run with `resume` continues) and the embedder is written as
/// it stands.
pub fn train_embedder(
    src_dir: &Path,
    weights: &Path,
    pairs: &[ContrastPair],
    cfg: &ContrastConfig,
    out_dir: &Path,
    progress: &mut dyn FnMut(usize, f64) -> ControlFlow<()>,
) -> Result<ContrastReport> {
    let (val, train) = checked_split(pairs, cfg)?;
    let config = LlamaConfig::load(&src_dir.join("config.json"))?;
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    crate::load_weights(&mut vs, weights)?;
    let trained_blocks = crate::classifier::train_top_blocks(&vs, &config, cfg.train_blocks);
    let pvs = cfg.projection.map(|_| nn::VarStore::new(tch::Device::Cpu));
    let t = Trainee {
        model,
        enc: PostEncoding::new(src_dir, &config, cfg.pooling)?,
        max_tokens: cfg.max_tokens.max(2),
        projection: pvs
            .as_ref()
            .zip(cfg.projection)
            .map(|(pvs, k)| new_projection(pvs, config.hidden_size as i64, k as i64, cfg.seed)),
    };
    let svs = nn::VarStore::new(tch::Device::Cpu);
    let scale = svs.root().var_copy(
        "log_scale",
        &Tensor::from((1.0 / cfg.temperature.max(1e-3)).ln() as f32),
    );
    let mut learners = Learners::new(vs, pvs, svs, cfg.lr);
    let mut val_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let held = HeldOut {
        batches: batches(&val, cfg.batch, &mut val_rng),
        pairs: val,
    };
    let (sha, _) = starling_artifacts::sha256_file(weights)?;
    let sizes = (train.len(), held.pairs.len(), t.max_tokens, trained_blocks);
    let key = RunKey::new(sha.clone(), sizes, cfg);
    let ckpt_dir = out_dir.join(EMBEDDER_CHECKPOINT_DIR);
    let resumed = match cfg.resume {
        true => checkpoint::read(&ckpt_dir, &key)?,
        false => None,
    };
    let (mut report, mut step, mut recent) = match resumed {
        Some(meta) => {
            checkpoint::load(&ckpt_dir, &meta, learners.state())?;
            learners.set_step(meta.step);
            let mut report = meta.report;
            report.resumed_from = Some(meta.step);
            (report, meta.step, meta.recent)
        }
        None => {
            let first = held.point(&t, &scale, 0, None)?;
            let report = fresh_report(&train, &held.pairs, cfg, sha, trained_blocks, first);
            (report, 0, Vec::new())
        }
    };
    report.target_steps = cfg.steps;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let warmup = (cfg.steps / 10).max(1);
    // Batches drawn so far: a resumed run replays the seeded order and skips what it took.
    let mut drawn = 0usize;
    'train: while step < cfg.steps {
        let epoch = batches(&train, cfg.batch, &mut rng);
        if epoch.is_empty() {
            break;
        }
        for b in epoch {
            drawn += 1;
            if drawn <= step {
                continue;
            }
            if step >= cfg.steps {
                break 'train;
            }
            let (loss, _) = t.loss(&train, &b, &scale)?;
            loss.backward();
            learners.update(
                cfg.lr * ((step + 1) as f64 / warmup as f64).min(1.0),
                &scale,
            )?;
            step += 1;
            let l = loss.double_value(&[]);
            recent.push(l);
            let stop = progress(step, l).is_break();
            if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
                let tl = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
                recent.clear();
                report.curve.push(held.point(&t, &scale, step, Some(tl))?);
            }
            let every = cfg.checkpoint_every;
            if every > 0 && (step % every == 0 || step == cfg.steps || stop) {
                report.steps = step;
                let mut meta = CheckpointState::new(key.clone(), step, &recent, &report);
                checkpoint::save(&ckpt_dir, learners.state(), &mut meta)?;
            }
            if stop {
                break 'train;
            }
        }
    }
    if report.curve.last().is_none_or(|c| c.step != step) {
        report.curve.push(held.point(&t, &scale, step, None)?);
    }
    report.steps = step;
    report.val_top1_after = report.curve.last().map_or(0.0, |c| c.val_top1);
    report.temperature = 1.0 / scale.double_value(&[]).exp();
    write_embedder(
        src_dir,
        out_dir,
        &learners.model.0,
        &config,
        t.projection.as_ref(),
        &report,
    )?;
    Ok(report)
}
