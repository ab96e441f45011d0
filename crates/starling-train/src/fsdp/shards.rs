//! FSDP checkpoints: each rank's moments file, and whole moments from the shards of any layout
//! (or from a checkpoint of another strategy).

use super::units_of;
use crate::optim::OptimConfig;
use crate::tp::{Split, TpRank};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// The file name of rank `rank`'s FSDP moments at `world` ranks.
pub fn shard_file(rank: usize, world: usize) -> String {
    crate::checkpoint::shard_name("fsdp-shard", rank, world)
}

/// The world size whose FSDP shards a checkpoint directory holds, if it holds any.
pub fn shard_world(dir: &Path) -> Option<usize> {
    crate::checkpoint::shards_world(dir, "fsdp-shard")
}

/// The tensor-parallel degree a shard file was written at (1 before tensor parallelism).
pub(super) fn tp_of(named: &HashMap<String, Tensor>) -> usize {
    named
        .get("tp")
        .map(|t| t.int64_value(&[0]) as usize)
        .unwrap_or(1)
        .max(1)
}

/// The named tensors of a safetensors file.
pub(super) fn read_named(p: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(p)
        .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?
        .into_iter()
        .collect())
}

/// Whole AdamW moments by parameter name from an FSDP checkpoint of `world` ranks (of any
/// tensor-parallel degree: rank r is part r % tp of data-parallel rank r / tp).
pub fn moments_from_shards(
    dir: &Path,
    vs: &VarStore,
    world: usize,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let files: Vec<HashMap<String, Tensor>> = (0..world)
        .map(|r| read_named(&dir.join(shard_file(r, world))))
        .collect::<Result<_>>()?;
    let tp = files.first().map_or(1, tp_of);
    let dp = world / tp;
    let (mut m, mut v) = (HashMap::new(), HashMap::new());
    // Each tensor-parallel part's tensors, by name, then joined.
    let mut parts: [HashMap<String, Vec<Tensor>>; 2] = [HashMap::new(), HashMap::new()];
    for t in 0..tp {
        let at = TpRank { rank: t, ranks: tp };
        for layout in units_of(vs, at) {
            for (k, which) in ["m", "v"].into_iter().enumerate() {
                let key = format!("{}.{which}", layout.key);
                let pieces: Vec<&Tensor> = (0..dp)
                    .map(|j| {
                        files[j * tp + t]
                            .get(&key)
                            .ok_or_else(|| Error::Format(format!("{}: no `{key}`", dir.display())))
                    })
                    .collect::<Result<_>>()?;
                let flat = Tensor::cat(&pieces, 0);
                if (flat.numel() as i64) < layout.total {
                    return Err(Error::Format(format!(
                        "{}: `{key}` holds {} elements, the model {}",
                        dir.display(),
                        flat.numel(),
                        layout.total
                    )));
                }
                for (i, (_, x)) in layout.views(&flat).into_iter().enumerate() {
                    parts[k]
                        .entry(layout.names[i].clone())
                        .or_default()
                        .push(x.contiguous());
                }
            }
        }
    }
    let [pm, pv] = parts;
    let shapes = shapes_of(vs);
    for (by_name, out) in [(pm, &mut m), (pv, &mut v)] {
        for (name, ps) in by_name {
            let whole = TpRank::join(&name, &ps, split_len(&name, &shapes));
            out.insert(name, whole);
        }
    }
    Ok((m, v))
}

/// Each variable's shape, by name.
pub(super) fn shapes_of(vs: &VarStore) -> HashMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect()
}

/// The whole length of `name`'s tensor-parallel split dimension (without the padding).
pub(super) fn split_len(name: &str, shapes: &HashMap<String, Vec<i64>>) -> i64 {
    let d = match Split::of(name) {
        Split::Cols => 1,
        _ => 0,
    };
    shapes
        .get(name)
        .and_then(|s| s.get(d))
        .copied()
        .unwrap_or(0)
}

/// Whole AdamW moments by name from a checkpoint of any strategy: FSDP shards, ZeRO-1 shards or
/// whole `adam-m` / `adam-v` files.
pub(super) fn full_moments(
    dir: &Path,
    vs: &VarStore,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    if let Some(w) = shard_world(dir) {
        return moments_from_shards(dir, vs, w);
    }
    let mut opt = crate::optim::AdamW::new(vs, OptimConfig::default());
    crate::parallel::load_full(&mut opt, vs, dir, 0)?;
    Ok((opt.m.variables(), opt.v.variables()))
}
