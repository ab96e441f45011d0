//! The embedder trainer's resumable state: the model, both AdamW states (the model's and the
//! learnt temperature's), the step and the curve so far, kept in `<embedder>/checkpoint/`. Tensor
//! files carry their step in the name and `state.json` — written last, atomically, with each
//! file's sha256 — names the set that belongs together, so a crash while saving leaves the last
//! whole checkpoint in force.

use super::ContrastReport;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use starling_torch::optim::AdamW;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

/// Folder of an embedder directory that holds its trainer's resumable state.
pub const EMBEDDER_CHECKPOINT_DIR: &str = "checkpoint";

/// Version of `state.json`; a different one is refused by name.
const VERSION: u32 = 1;

/// What a checkpoint must share with the run that resumes it (the step count may grow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunKey {
    /// The source model's weights (sha256).
    pub source_sha256: String,
    /// Pairs trained on and held out (the same pairs split the same way).
    pub train_pairs: usize,
    /// Held-out pairs.
    pub val_pairs: usize,
    /// Pairs per step.
    pub batch: usize,
    /// Seed of the split and the batch order.
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Most tokens per text.
    pub max_tokens: usize,
    /// Pooling.
    pub pooling: String,
    /// Blocks trained.
    pub trained_blocks: usize,
    /// Width of the projection trained with them, if any.
    #[serde(default)]
    pub projection: Option<usize>,
}

impl RunKey {
    /// The key of a run of `cfg` on the model of `source_sha256`, with its (train pairs, held-out
    /// pairs, most tokens per text, blocks trained).
    pub fn new(
        source_sha256: String,
        (train_pairs, val_pairs, max_tokens, trained_blocks): (usize, usize, usize, usize),
        cfg: &super::ContrastConfig,
    ) -> Self {
        Self {
            source_sha256,
            train_pairs,
            val_pairs,
            batch: cfg.batch,
            seed: cfg.seed,
            lr: cfg.lr,
            max_tokens,
            pooling: cfg.pooling.name().to_string(),
            trained_blocks,
            projection: cfg.projection,
        }
    }

    /// The first setting in which `self` (the checkpoint's) and `other` (the run's) differ.
    fn first_difference(&self, other: &RunKey) -> Option<(&'static str, String, String)> {
        let s = |v: &dyn std::fmt::Display| v.to_string();
        [
            (
                "source model",
                s(&self.source_sha256),
                s(&other.source_sha256),
            ),
            (
                "training pairs",
                s(&self.train_pairs),
                s(&other.train_pairs),
            ),
            ("held-out pairs", s(&self.val_pairs), s(&other.val_pairs)),
            ("batch", s(&self.batch), s(&other.batch)),
            ("seed", s(&self.seed), s(&other.seed)),
            ("learning rate", s(&self.lr), s(&other.lr)),
            ("max tokens", s(&self.max_tokens), s(&other.max_tokens)),
            ("pooling", s(&self.pooling), s(&other.pooling)),
            (
                "trained blocks",
                s(&self.trained_blocks),
                s(&other.trained_blocks),
            ),
            (
                "projection",
                format!("{:?}", self.projection),
                format!("{:?}", other.projection),
            ),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
    }
}

/// `state.json`: where training stood and which tensor files hold it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    /// Format version.
    pub version: u32,
    /// The settings the checkpoint belongs to.
    pub key: RunKey,
    /// Steps taken.
    pub step: usize,
    /// Training losses since the last measurement.
    pub recent: Vec<f64>,
    /// The report so far (curve included).
    pub report: ContrastReport,
    /// Role (`model`, `adam-m`, `adam-v`, `temperature`, `temperature-m`, `temperature-v`, and
    /// `projection`, `projection-m`, `projection-v` when one trains) → (file name, sha256).
    pub files: BTreeMap<String, (String, String)>,
}

impl CheckpointState {
    /// The state of a run of `key` at `step` (its files are listed when saved).
    pub fn new(key: RunKey, step: usize, recent: &[f64], report: &ContrastReport) -> Self {
        Self {
            version: 0,
            key,
            step,
            recent: recent.to_vec(),
            report: report.clone(),
            files: BTreeMap::new(),
        }
    }
}

/// The tensor stores a checkpoint holds, by role.
pub(crate) struct TrainingState<'a> {
    /// The model's weights.
    pub model: &'a mut VarStore,
    /// The model's AdamW.
    pub opt: &'a mut AdamW,
    /// The learnt temperature (log scale).
    pub temperature: &'a mut VarStore,
    /// The temperature's Adam.
    pub topt: &'a mut AdamW,
    /// The projection and its AdamW, when one trains.
    pub projection: Option<(&'a mut VarStore, &'a mut AdamW)>,
}

impl TrainingState<'_> {
    /// Each store by role.
    fn roles(&mut self) -> Vec<(&'static str, &mut VarStore)> {
        let mut roles = vec![
            ("model", &mut *self.model),
            ("adam-m", &mut self.opt.m),
            ("adam-v", &mut self.opt.v),
            ("temperature", &mut *self.temperature),
            ("temperature-m", &mut self.topt.m),
            ("temperature-v", &mut self.topt.v),
        ];
        if let Some((p, o)) = &mut self.projection {
            roles.push(("projection", &mut **p));
            roles.push(("projection-m", &mut o.m));
            roles.push(("projection-v", &mut o.v));
        }
        roles
    }
}

/// Writes the checkpoint of `state` at `meta.step` into `dir`, then drops the files of older steps.
pub(crate) fn save(
    dir: &Path,
    mut state: TrainingState<'_>,
    meta: &mut CheckpointState,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    meta.version = VERSION;
    meta.files.clear();
    let prefix = format!("step-{:08}", meta.step);
    for (role, store) in state.roles() {
        let name = format!("{prefix}.{role}.safetensors");
        let path = dir.join(&name);
        starling_artifacts::write_atomic_with(&path, |tmp| store.save(tmp).map_err(Error::from))?;
        let (sha, _) = starling_artifacts::sha256_file(&path)?;
        meta.files.insert(role.to_string(), (name, sha));
    }
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::Format(e.to_string()))?;
    starling_artifacts::write_atomic(&dir.join("state.json"), &json)?;
    // Only now are older steps' files unneeded.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("step-") && !n.starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The checkpoint in `dir`, if there is one, after checking it belongs to a run of `key`.
pub(crate) fn read(dir: &Path, key: &RunKey) -> Result<Option<CheckpointState>> {
    let path = dir.join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let meta: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Format(format!(
            "{}: not an embedder checkpoint: {e}",
            path.display()
        ))
    })?;
    starling_artifacts::check_version(
        &path,
        "embedder checkpoint",
        meta.version,
        VERSION,
        "start afresh without --resume",
    )
    .map_err(|e| Error::Format(e.to_string()))?;
    if let Some((what, had, asked)) = meta.key.first_difference(key) {
        return Err(Error::Format(format!(
            "{}: the checkpoint was trained with {what} {had}, this run asks for {asked}; resume with the same settings or start afresh without --resume",
            path.display()
        )));
    }
    Ok(Some(meta))
}

/// Loads the tensors `meta` names from `dir` into `state`, each checked against its sha256.
pub(crate) fn load(dir: &Path, meta: &CheckpointState, mut state: TrainingState<'_>) -> Result<()> {
    for (role, store) in state.roles() {
        let (name, sha) = meta.files.get(role).ok_or_else(|| {
            Error::Format(format!(
                "{}: names no `{role}` file",
                dir.join("state.json").display()
            ))
        })?;
        // Only a plain file name inside the checkpoint folder.
        if Path::new(name)
            .file_name()
            .map(|f| f != name.as_str())
            .unwrap_or(true)
        {
            return Err(Error::Format(format!(
                "{}: `{role}` names {name:?}, not a file of the checkpoint",
                dir.join("state.json").display()
            )));
        }
        let path: PathBuf = dir.join(name);
        let (found, _) = starling_artifacts::sha256_file(&path)?;
        if &found != sha {
            return Err(Error::Format(format!(
                "{}: sha256 {found} is not the {sha} state.json recorded; the checkpoint is damaged — start afresh without --resume",
                path.display()
            )));
        }
        store
            .load(&path)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
