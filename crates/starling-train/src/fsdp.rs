//! FSDP / ZeRO-3 (Rajbhandari et al. 2020; Zhao et al. 2023): every parameter lives on the ranks
//! as 1/world of a flat buffer per unit — one unit per transformer block, one for the weights
//! outside the blocks (embedding, final norm, head). A forward all-gathers a unit just before it
//! runs and autograd reduce-scatters its gradient back into the shard (starling-torch's
//! `collective::all_gather`, whose backward is a reduce-scatter); each rank's AdamW updates only
//! its shards. With `--recompute block` a block's gathered parameters exist only while it runs
//! (forward, and again in backward); without, they stay until backward, like FSDP's
//! `reshard_after_forward=False`.
//!
//! Checkpoints: rank 0 writes the whole model (`model.safetensors`, gathered unit by unit, so any
//! strategy and `export` read it) and every rank its moments, `fsdp-shard-RRRRR-of-WWWWW`; a run
//! resumes at any world size, or as one process, from either.

use crate::ddp::{sorted_variables, DataParallel};
use crate::optim::{clip_scale, hyper, OptimConfig, StepOutcome};
use crate::{Error, Result};
use starling_model::{BlockTemplate, Runner};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Where each parameter of a unit sits in its flat buffer.
#[derive(Debug, Clone)]
struct UnitLayout {
    /// The unit's name in shard files: `layers.N` or `outer`.
    key: String,
    /// Full VarStore (HF) names, sorted.
    names: Vec<String>,
    /// Names as the model asks for them: relative to `model.layers.N.` in a block, full outside.
    local: Vec<String>,
    shapes: Vec<Vec<i64>>,
    offsets: Vec<i64>,
    total: i64,
}

impl UnitLayout {
    /// Elements per rank at `world` ranks (the buffer padded up to `world` equal shares).
    fn shard_len(&self, world: usize) -> i64 {
        (self.total + world as i64 - 1) / world as i64
    }

    /// The tensors of `by_name` in this unit's order as one flat fp32 buffer padded to `len`.
    fn flatten(
        &self,
        by_name: &HashMap<String, Tensor>,
        len: i64,
        device: Device,
    ) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.names.len() + 1);
        for n in &self.names {
            let t = by_name
                .get(n)
                .ok_or_else(|| Error::Format(format!("no tensor `{n}`")))?;
            parts.push(t.reshape([-1]).to_kind(Kind::Float).to_device(device));
        }
        if len > self.total {
            parts.push(Tensor::zeros([len - self.total], (Kind::Float, device)));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    /// Views of a gathered buffer, by the names the model asks for.
    fn views(&self, full: &Tensor) -> HashMap<String, Tensor> {
        (0..self.names.len())
            .map(|i| {
                let n: i64 = self.shapes[i].iter().product();
                let t = full
                    .narrow(0, self.offsets[i], n)
                    .view(self.shapes[i].as_slice());
                (self.local[i].clone(), t)
            })
            .collect()
    }
}

/// The units of a model's variables: one per block (`model.layers.N.*`), then the rest.
fn units_of(vs: &VarStore) -> Vec<UnitLayout> {
    let empty = |key: String| UnitLayout {
        key,
        names: Vec::new(),
        local: Vec::new(),
        shapes: Vec::new(),
        offsets: Vec::new(),
        total: 0,
    };
    let mut blocks: Vec<UnitLayout> = Vec::new();
    let mut outer = empty("outer".into());
    for (name, t) in sorted_variables(vs) {
        let block = name.strip_prefix("model.layers.").and_then(|rest| {
            let (i, local) = rest.split_once('.')?;
            Some((i.parse::<usize>().ok()?, local.to_string()))
        });
        let (unit, local) = match block {
            Some((i, local)) => {
                while blocks.len() <= i {
                    blocks.push(empty(format!("layers.{}", blocks.len())));
                }
                (&mut blocks[i], local)
            }
            None => (&mut outer, name.clone()),
        };
        unit.offsets.push(unit.total);
        unit.total += t.numel() as i64;
        unit.names.push(name);
        unit.local.push(local);
        unit.shapes.push(t.size());
    }
    blocks.push(outer);
    blocks
}

/// One unit's shard on this rank and its AdamW state.
#[derive(Debug)]
struct Shard {
    layout: Arc<UnitLayout>,
    /// This rank's share of the flat parameters (a leaf: the gradient gathers here).
    param: Tensor,
    m: Tensor,
    v: Tensor,
    /// True where weight decay applies (matrices).
    decay: Tensor,
}

/// The file name of rank `rank`'s FSDP moments at `world` ranks.
pub fn shard_file(rank: usize, world: usize) -> String {
    format!("fsdp-shard-{rank:05}-of-{world:05}.safetensors")
}

/// The world size whose FSDP shards a checkpoint directory holds, if it holds any.
pub fn shard_world(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.strip_prefix("fsdp-shard-")?
            .strip_suffix(".safetensors")?
            .split("-of-")
            .nth(1)?
            .parse()
            .ok()
    })
}

/// Parameters, gradients and AdamW moments sharded over the data-parallel ranks.
pub struct Fsdp<'a> {
    dp: &'a mut DataParallel,
    shards: Vec<Shard>,
    config: OptimConfig,
    /// Optimizer steps taken.
    pub(crate) step: u64,
    step_tensor: Tensor,
}

impl<'a> Fsdp<'a> {
    /// Shards for this rank of `vs`'s units (filled by [`crate::parallel::Parallelism::place`]).
    pub fn new(dp: &'a mut DataParallel, vs: &VarStore, config: OptimConfig) -> Self {
        let (rank, world) = (dp.rank(), dp.world());
        let device = vs.device();
        let shards = units_of(vs)
            .into_iter()
            .map(|layout| {
                let len = layout.shard_len(world);
                let zeros = || Tensor::zeros([len], (Kind::Float, device));
                let mask: HashMap<String, Tensor> = layout
                    .names
                    .iter()
                    .zip(&layout.shapes)
                    .map(|(n, s)| {
                        let v = if s.len() >= 2 { 1.0 } else { 0.0 };
                        (
                            n.clone(),
                            Tensor::full(s.as_slice(), v, (Kind::Float, device)),
                        )
                    })
                    .collect();
                // Kept as bytes: a float mask would add 4 bytes per parameter and rank.
                let decay = layout
                    .flatten(&mask, len * world as i64, device)
                    .map(|f| f.narrow(0, rank as i64 * len, len).to_kind(Kind::Bool))
                    .unwrap_or_else(|_| zeros().to_kind(Kind::Bool));
                Shard {
                    layout: Arc::new(layout),
                    param: zeros().set_requires_grad(true),
                    m: zeros(),
                    v: zeros(),
                    decay,
                }
            })
            .collect();
        Self {
            dp,
            shards,
            config,
            step: 0,
            step_tensor: Tensor::zeros([], (Kind::Float, device)),
        }
    }

    /// The group all of this runs on.
    pub(crate) fn dp(&mut self) -> &mut DataParallel {
        self.dp
    }

    pub(crate) fn dp_ref(&self) -> &DataParallel {
        self.dp
    }

    /// Elements of parameters, gradients and moments this rank holds, and the whole model's.
    pub fn held_elements(&self) -> (i64, i64) {
        let mine = self.shards.iter().map(|s| s.param.numel() as i64).sum();
        let all = self.shards.iter().map(|s| s.layout.total).sum();
        (mine, all)
    }

    /// Makes the parameters equal (rank 0's), cuts this rank's shards out of them and frees the
    /// whole parameters (each VarStore variable keeps its name and becomes empty).
    pub fn place(&mut self, vs: &VarStore) -> Result<()> {
        self.dp.broadcast_params(vs)?;

        let _g = tch::no_grad_guard();
        let (rank, world) = (self.dp.rank(), self.dp.world());
        let vars = vs.variables();
        for s in &mut self.shards {
            let len = s.layout.shard_len(world);
            let flat = s.layout.flatten(&vars, len * world as i64, vs.device())?;
            let mut p = s.param.shallow_clone();
            p.copy_(&flat.narrow(0, rank as i64 * len, len));
        }
        free(vs);
        Ok(())
    }

    /// Fills every VarStore variable with the gathered parameters (for writing the model); free
    /// them again with [`free`].
    fn materialize(&mut self, vs: &VarStore) -> Result<()> {
        let _g = tch::no_grad_guard();
        let world = self.dp.world();
        let vars = vs.variables();
        for s in &self.shards {
            let len = s.layout.shard_len(world);
            let full = Tensor::zeros([len * world as i64], (Kind::Float, vs.device()));
            self.dp.group.all_gather(&full, &s.param.detach())?;
            for (local, t) in s.layout.views(&full) {
                let i = s.layout.local.iter().position(|l| *l == local).unwrap_or(0);
                if let Some(v) = vars.get(&s.layout.names[i]) {
                    let mut v = v.shallow_clone();
                    v.set_data(&t.contiguous().copy());
                }
            }
        }
        Ok(())
    }

    /// Averages the gradients the backward reduce-scattered, clips them by the global norm and
    /// updates this rank's shards, all on the device; a non-finite step changes nothing.
    pub fn optimizer_step(&mut self, lr: f64) -> Result<StepOutcome> {
        let _g = tch::no_grad_guard();
        let world = self.dp.world() as f64;
        let grads: Vec<Tensor> = self
            .shards
            .iter()
            .map(|s| {
                let g = s.param.grad();
                if g.defined() {
                    g
                } else {
                    s.param.zeros_like()
                }
            })
            .collect();
        let refs: Vec<&Tensor> = grads.iter().collect();
        // The backward summed over ranks; the mean is what one process would see.
        starling_torch::foreach_mul_(
            &refs,
            &Tensor::from(1.0 / world as f32).to_device(self.step_tensor.device()),
        )?;
        let sq = grads
            .iter()
            .map(|g| g.square().sum(Kind::Float))
            .fold(
                Tensor::zeros([], (Kind::Float, self.step_tensor.device())),
                |a, b| a + b,
            )
            .view([1]);
        self.dp.group.all_reduce_sum(&sq)?;
        let norm = sq.sqrt().view([]);
        let c = &self.config;
        let (scale, found_inf) = clip_scale(&norm, c.grad_clip);
        if c.grad_clip > 0.0 {
            starling_torch::foreach_mul_(&refs, &scale)?;
        }
        self.step += 1;
        if c.weight_decay > 0.0 {
            // Decoupled decay on matrices only (the mask), skipped with the step when found_inf.
            let keep = (1.0 - &found_inf) * (lr * c.weight_decay);
            for s in &self.shards {
                let mut p = s.param.shallow_clone();
                let _ = p.g_mul_(&(1.0 - s.decay.to_kind(Kind::Float) * &keep));
            }
        }
        let step = self.step_tensor.fill_(self.step as f64);
        let params: Vec<&Tensor> = self.shards.iter().map(|s| &s.param).collect();
        let ms: Vec<&Tensor> = self.shards.iter().map(|s| &s.m).collect();
        let vs: Vec<&Tensor> = self.shards.iter().map(|s| &s.v).collect();
        starling_torch::fused_adamw_(
            &params,
            &refs,
            &ms,
            &vs,
            &step,
            &hyper(c, lr, 0.0),
            None,
            Some(&found_inf),
        )?;
        starling_torch::foreach_zero_(&refs)?;
        Ok(StepOutcome {
            grad_norm: norm,
            found_inf,
        })
    }

    /// Writes the whole model (rank 0) and this rank's moments into `tmp`; all ranks agree.
    pub fn save(&mut self, tmp: &Path, vs: &VarStore) -> Result<()> {
        self.materialize(vs)?;
        let r = if self.dp.rank() == 0 {
            crate::checkpoint::write_model_files(tmp, vs, None)
        } else {
            Ok(())
        };
        free(vs);
        crate::parallel::agree_in(self.dp, r)?;
        let r = self.save_shard(tmp).map(|_| ());
        crate::parallel::agree_in(self.dp, r)
    }

    fn save_shard(&self, dir: &Path) -> Result<PathBuf> {
        let p = dir.join(shard_file(self.dp.rank(), self.dp.world()));
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for s in &self.shards {
            named.push((format!("{}.m", s.layout.key), &s.m));
            named.push((format!("{}.v", s.layout.key), &s.v));
        }
        Tensor::write_safetensors(&named, &p).map_err(|e| {
            Error::Format(format!(
                "{}: writing the optimizer shard failed ({e}); is the disk full?",
                p.display()
            ))
        })?;
        crate::checkpoint::sync_file(&p)?;
        Ok(p)
    }

    /// Loads this rank's moments from a checkpoint written at any world size by any strategy.
    pub fn load(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        let (rank, world) = (self.dp.rank(), self.dp.world());
        let device = vs.device();
        let same = shard_world(dir) == Some(world);
        let own = if same {
            Some(read_named(&dir.join(shard_file(rank, world)))?)
        } else {
            None
        };
        let full = if same {
            None
        } else {
            Some(full_moments(dir, vs)?)
        };
        for s in &mut self.shards {
            let len = s.layout.shard_len(world);
            for (which, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let t = match (&own, &full) {
                    (Some(named), _) => named
                        .get(&format!("{}.{which}", s.layout.key))
                        .map(|t| t.to_device(device))
                        .ok_or_else(|| {
                            Error::Format(format!(
                                "{}: no `{}.{which}`",
                                dir.display(),
                                s.layout.key
                            ))
                        })?,
                    (None, Some((m, v))) => {
                        let by_name = if which == "m" { m } else { v };
                        s.layout
                            .flatten(by_name, len * world as i64, device)
                            .map_err(|e| Error::Format(format!("{}: {e}", dir.display())))?
                            .narrow(0, rank as i64 * len, len)
                            .copy()
                    }
                    (None, None) => unreachable!("one of the two is read"),
                };
                if t.size() != [len] {
                    return Err(Error::Format(format!(
                        "{}: `{}.{which}` has {:?} elements, want {len}",
                        dir.display(),
                        s.layout.key,
                        t.size()
                    )));
                }
                *slot = t;
            }
        }
        self.step = step;
        Ok(())
    }

    /// The runner that gathers each unit for the model's forward.
    pub fn runner(&self, recompute: bool) -> Box<dyn Runner> {
        let unit = |s: &Shard| GatheredUnit {
            layout: s.layout.clone(),
            param: s.param.shallow_clone(),
        };
        let n = self.shards.len();
        Box::new(FsdpRunner {
            blocks: self.shards[..n - 1].iter().map(unit).collect(),
            outer: unit(&self.shards[n - 1]),
            group: self.dp.group.name().to_string(),
            recompute,
        })
    }
}

/// Frees the whole parameters of `vs` (names and autograd identity stay; data becomes empty).
fn free(vs: &VarStore) {
    let _g = tch::no_grad_guard();
    for (_, mut v) in vs.variables() {
        let empty = Tensor::empty([0], (v.kind(), v.device()));
        v.set_data(&empty);
    }
}

fn read_named(p: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(p)
        .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?
        .into_iter()
        .collect())
}

/// Whole AdamW moments by parameter name from an FSDP checkpoint of any world size.
pub fn moments_from_shards(
    dir: &Path,
    vs: &VarStore,
    world: usize,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let files: Vec<HashMap<String, Tensor>> = (0..world)
        .map(|r| read_named(&dir.join(shard_file(r, world))))
        .collect::<Result<_>>()?;
    let (mut m, mut v) = (HashMap::new(), HashMap::new());
    for layout in units_of(vs) {
        for (which, out) in [("m", &mut m), ("v", &mut v)] {
            let key = format!("{}.{which}", layout.key);
            let parts: Vec<&Tensor> = files
                .iter()
                .map(|f| {
                    f.get(&key)
                        .ok_or_else(|| Error::Format(format!("{}: no `{key}`", dir.display())))
                })
                .collect::<Result<_>>()?;
            let flat = Tensor::cat(&parts, 0);
            if (flat.numel() as i64) < layout.total {
                return Err(Error::Format(format!(
                    "{}: `{key}` holds {} elements, the model {}",
                    dir.display(),
                    flat.numel(),
                    layout.total
                )));
            }
            for (local, t) in layout.views(&flat) {
                let i = layout.local.iter().position(|l| *l == local).unwrap_or(0);
                out.insert(layout.names[i].clone(), t.contiguous());
            }
        }
    }
    Ok((m, v))
}

/// Whole AdamW moments by name from a checkpoint of any strategy: FSDP shards, ZeRO-1 shards or
/// whole `adam-m` / `adam-v` files.
fn full_moments(
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

/// A unit as the runner sees it: its layout and a handle to this rank's shard.
#[derive(Debug)]
struct GatheredUnit {
    layout: Arc<UnitLayout>,
    param: Tensor,
}

impl GatheredUnit {
    fn handle(&self) -> Self {
        Self {
            layout: self.layout.clone(),
            param: self.param.shallow_clone(),
        }
    }

    /// The unit's whole parameters, gathered with autograd (backward reduce-scatters).
    fn gather(&self, group: &str) -> HashMap<String, Tensor> {
        let full = starling_torch::collective::all_gather(&self.param, group)
            .unwrap_or_else(|e| panic!("FSDP all-gather of {}: {e}", self.layout.key));
        self.layout.views(&full.narrow(0, 0, self.layout.total))
    }
}

/// Gathers each unit just before the model uses it.
#[derive(Debug)]
struct FsdpRunner {
    blocks: Vec<GatheredUnit>,
    outer: GatheredUnit,
    group: String,
    recompute: bool,
}

impl Runner for FsdpRunner {
    fn outer_weights(&self) -> Option<HashMap<String, Tensor>> {
        Some(self.outer.gather(&self.group))
    }

    fn run(&self, x: &Tensor, block: BlockTemplate) -> Tensor {
        let unit = self.blocks[block.layer].handle();
        let group = self.group.clone();
        let forward = move |x: &Tensor| {
            let w = unit.gather(&group);
            block.forward_with(x, &|n| w.get(n).map(Tensor::shallow_clone))
        };
        if self.recompute {
            starling_torch::recompute(x, forward).unwrap_or_else(|e| panic!("{e}"))
        } else {
            forward(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_in_exactly_one_unit() {
        let vs = VarStore::new(Device::Cpu);
        let c = starling_arch::LlamaConfig::preset("tiny", 300).expect("tiny");
        let _m = starling_model::Llama::new(&vs.root(), &c);
        let units = units_of(&vs);
        assert_eq!(units.len(), c.num_hidden_layers + 1);
        assert_eq!(units.last().map(|u| u.key.as_str()), Some("outer"));
        let mut names: Vec<&String> = units.iter().flat_map(|u| &u.names).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "no parameter twice");
        assert_eq!(n, vs.variables().len(), "none left out");
        let total: i64 = units.iter().map(|u| u.total).sum();
        assert_eq!(total as usize, c.num_params());
        // A block's names are relative, the rest full.
        assert_eq!(units[1].local[0], "input_layernorm.weight");
        assert_eq!(units[1].names[0], "model.layers.1.input_layernorm.weight");
        assert!(units
            .last()
            .is_some_and(|u| u.local.contains(&"model.norm.weight".into())));
    }
}
