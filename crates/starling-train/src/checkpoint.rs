//! Checkpoints: `ckpt-STEP/` written through a temp directory with the sha256 of every file in
//! its `state.json`, `latest`, the last K kept; verification, and finding the newest good one.

use crate::optim::AdamW;
use crate::parallel::Parallelism;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

fn sha256(path: &Path) -> Result<String> {
    Ok(starling_artifacts::sha256_file(path)?.0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(starling_artifacts::write_atomic(path, bytes)?)
}

/// Version of `state.json` in checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub(crate) version: u32,
    pub(crate) step: u64,
    pub(crate) tokens: u64,
    /// Training sequences consumed (the data cursor); older checkpoints lack it.
    #[serde(default)]
    pub(crate) sequences: Option<u64>,
    /// Ranks of the run that wrote it.
    #[serde(default)]
    pub(crate) world: Option<usize>,
    pub(crate) sha256: Vec<(String, String)>,
}

/// Writes `ckpt-STEP/` through a temp directory, then `latest`; removes all but the last `keep`.
/// Each rank writes its part (`Parallelism::save`); rank 0 records the checksums and renames.
/// On failure the temp directory is removed: the previous checkpoints stay as they were.
pub(crate) fn save_checkpoint(
    run: &Path,
    vs: &VarStore,
    par: &mut dyn Parallelism,
    tokens: u64,
    sequences: u64,
    keep: usize,
) -> Result<PathBuf> {
    let (rank, world) = (par.rank(), par.world());
    let name = format!("ckpt-{:08}", par.steps());
    let tmp = run.join(format!(".{name}.tmp"));
    let dir = run.join(&name);
    let step = par.steps();
    let mut write = || -> Result<()> {
        par.save(&tmp, vs)?;
        let r = if rank == 0 {
            let state = CheckpointState {
                version: CHECKPOINT_VERSION,
                step,
                tokens,
                sequences: Some(sequences),
                world: Some(world),
                sha256: Vec::new(),
            };
            finish_checkpoint(&tmp, state).and_then(|()| {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                write_atomic(&run.join("latest"), name.as_bytes())
            })
        } else {
            Ok(())
        };
        par.agree(r)
    };
    if let Err(e) = write() {
        if rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        return Err(e);
    }
    if rank == 0 {
        let mut all = checkpoints(run);
        while all.len() > keep.max(1) {
            let old = all.remove(0);
            let _ = std::fs::remove_dir_all(run.join(old));
        }
    }
    Ok(dir)
}

/// Writes the model (and whole AdamW moments, when given) into a fresh `tmp`.
pub(crate) fn write_model_files(tmp: &Path, vs: &VarStore, moments: Option<&AdamW>) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut files = vec![("model.safetensors", vs)];
    if let Some(o) = moments {
        files.push(("adam-m.safetensors", &o.m));
        files.push(("adam-v.safetensors", &o.v));
    }
    for (file, store) in files {
        let p = tmp.join(file);
        store.save(&p).map_err(|e| {
            // libtorch reports a full disk in its own words; name the file and the likely cause.
            Error::Format(format!(
                "{}: writing the checkpoint failed ({e}); is the disk full? The last good checkpoint is intact",
                p.display()
            ))
        })?;
        sync_file(&p)?;
    }
    Ok(())
}

/// The file name of rank `rank`'s optimizer shard of kind `prefix` (`adam-shard`, `fsdp-shard`)
/// at `world` ranks.
pub(crate) fn shard_name(prefix: &str, rank: usize, world: usize) -> String {
    format!("{prefix}-{rank:05}-of-{world:05}.safetensors")
}

/// The world size whose `prefix` shards a checkpoint directory holds, if it holds any.
pub(crate) fn shards_world(dir: &Path, prefix: &str) -> Option<usize> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.strip_prefix(prefix)?
            .strip_prefix('-')?
            .strip_suffix(".safetensors")?
            .split("-of-")
            .nth(1)?
            .parse()
            .ok()
    })
}

/// Writes one rank's optimizer shard (named tensors) and flushes it to disk.
pub(crate) fn write_shard<S: AsRef<str>>(p: &Path, named: &[(S, &tch::Tensor)]) -> Result<()> {
    tch::Tensor::write_safetensors(named, p).map_err(|e| {
        Error::Format(format!(
            "{}: writing the optimizer shard failed ({e}); is the disk full?",
            p.display()
        ))
    })?;
    sync_file(p)
}

/// Flushes a written file to disk.
pub(crate) fn sync_file(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(p, e))
}

/// Records the sha256 of every file in `tmp` (every rank's included) in its `state.json`.
fn finish_checkpoint(tmp: &Path, mut state: CheckpointState) -> Result<()> {
    let mut files: Vec<String> = std::fs::read_dir(tmp)
        .map_err(|e| Error::io(tmp, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    for f in files {
        let sum = sha256(&tmp.join(&f))?;
        state.sha256.push((f, sum));
    }
    write_atomic(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(&state).map_err(|e| Error::Format(e.to_string()))?,
    )
}

/// Checkpoint directory names of a run, oldest first.
pub fn checkpoints(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ckpt-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Verifies a checkpoint's files against its sha256 list; returns its state.
fn verify(dir: &Path) -> Result<CheckpointState> {
    let state = read_state(dir)?;
    let p = dir.join("state.json");
    starling_artifacts::check_version(
        &p,
        "checkpoint",
        state.version,
        CHECKPOINT_VERSION,
        "resume from a checkpoint this build wrote, or train anew",
    )
    .map_err(|e| Error::Format(e.to_string()))?;
    for (f, sum) in &state.sha256 {
        let got = sha256(&dir.join(f))?;
        if &got != sum {
            return Err(Error::Format(format!(
                "{}: sha256 mismatch",
                dir.join(f).display()
            )));
        }
    }
    Ok(state)
}

/// A checkpoint's `state.json`, unverified.
pub(crate) fn read_state(dir: &Path) -> Result<CheckpointState> {
    let p = dir.join("state.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Format(format!("{}: {e}", p.display())))
}

/// The newest checkpoint that verifies, trying `latest` first; warns about each bad one.
pub fn latest_good(run: &Path) -> Option<PathBuf> {
    latest_verified(run).map(|(dir, _)| dir)
}

/// [`latest_good`] with the state it verified.
pub(crate) fn latest_verified(run: &Path) -> Option<(PathBuf, CheckpointState)> {
    let mut order: Vec<String> = checkpoints(run);
    order.reverse();
    if let Ok(l) = std::fs::read_to_string(run.join("latest")) {
        order.retain(|n| n != l.trim());
        order.insert(0, l.trim().to_string());
    }
    for name in order {
        let dir = run.join(&name);
        match verify(&dir) {
            Ok(state) => return Some((dir, state)),
            Err(e) => tracing::warn!("skipping checkpoint {}: {e}", dir.display()),
        }
    }
    None
}
