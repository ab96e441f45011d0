//! FSDP / ZeRO-3 (Rajbhandari et al. 2020; Zhao et al. 2023): every parameter lives on the ranks
//! as 1/world of a flat buffer per unit — one unit per transformer block, one for the weights
//! outside the blocks (embedding, final norm, head). A forward all-gathers a unit just before it
//! runs; backward starts the reduce-scatter of its gradient and goes on with the next unit while
//! it travels (starling-torch's `collective::all_gather_deferred`); the optimizer step waits for
//! them and each rank's AdamW updates only its shards. With bf16 matrix products the units are
//! gathered in bf16 and their gradients reduced in fp32 (FSDP2's mixed precision). With `--recompute block` a block's gathered parameters exist only while it runs
//! (forward, and again in backward); without, they stay until backward, like FSDP's
//! `reshard_after_forward=False`.
//!
//! With tensor parallelism (`--tp N`, [`crate::tp`]) the ranks form a mesh: N consecutive ranks
//! split each block's matrices, and FSDP shards each rank's part over the ranks at the same place
//! in the other tensor-parallel groups.
//!
//! Checkpoints: rank 0 writes the whole model (`model.safetensors`, gathered unit by unit, so any
//! strategy and `export` read it) and every rank its moments, `fsdp-shard-RRRRR-of-WWWWW` (with
//! the tensor-parallel degree); a run resumes at any layout, or as one process, from either.

mod shards;

use shards::{full_moments, read_named, shapes_of, split_len, tp_of};
pub use shards::{moments_from_shards, shard_file, shard_world};

use crate::ddp::{sorted_variables, DataParallel};
use crate::optim::{clip_scale, hyper, OptimConfig, StepOutcome};
use crate::tp::{Split, TpRank};
use crate::{Error, Result};
use starling_dist::ProcessGroup;
use starling_model::{BlockTemplate, Runner, TensorParallel};
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

    /// Views of a gathered buffer, by the names the model asks for, in the unit's order (the
    /// same on every rank: collectives follow it).
    fn views(&self, full: &Tensor) -> Vec<(String, Tensor)> {
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

/// The units of a model's variables as tensor-parallel rank `tp` holds them: one per block
/// (`model.layers.N.*`), then the rest.
fn units_of(vs: &VarStore, tp: TpRank) -> Vec<UnitLayout> {
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
        let shape = tp.local_shape(&name, &t.size());
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
        unit.total += shape.iter().product::<i64>();
        unit.names.push(name);
        unit.local.push(local);
        unit.shapes.push(shape);
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
    /// With tensor parallelism: true where the parameter is replicated over the group (counted
    /// once in the global norm).
    replicated: Option<Tensor>,
}

/// This rank's tensor-parallel group.
struct TpGroup {
    group: ProcessGroup,
    at: TpRank,
}

/// Parameters, gradients and AdamW moments sharded over the data-parallel ranks.
pub struct Fsdp<'a> {
    /// Every rank: scalars, agreement, the parameters' first broadcast.
    world: &'a mut DataParallel,
    /// The ranks a unit is sharded over, when not the whole world (tensor parallelism).
    shard_group: Option<ProcessGroup>,
    tp: Option<TpGroup>,
    shards: Vec<Shard>,
    config: OptimConfig,
    /// Optimizer steps taken.
    pub(crate) step: u64,
    step_tensor: Tensor,
    /// Each parameter's whole shape (the VarStore's tensors are emptied once placed).
    shapes: HashMap<String, Vec<i64>>,
}

impl<'a> Fsdp<'a> {
    /// Shards for this rank of `vs`'s units (filled by [`crate::parallel::Parallelism::place`]),
    /// over all ranks, or with `tp` > 1 over a 2-D mesh (tensor parallel x FSDP).
    pub fn new(
        world: &'a mut DataParallel,
        vs: &VarStore,
        config: OptimConfig,
        tp: usize,
    ) -> Result<Self> {
        let (shard_group, tp) = if tp > 1 {
            let mesh = starling_dist::mesh::Mesh::new(world.world(), tp)?;
            let (tpg, dpg) = mesh.groups(&mut world.group)?;
            let at = TpRank {
                rank: tpg.rank(),
                ranks: tp,
            };
            (Some(dpg), Some(TpGroup { group: tpg, at }))
        } else {
            (None, None)
        };
        let at = tp.as_ref().map_or(TpRank { rank: 0, ranks: 1 }, |t| t.at);
        let (rank, n) = match &shard_group {
            Some(g) => (g.rank(), g.world()),
            None => (world.rank(), world.world()),
        };
        let device = vs.device();
        let shards = units_of(vs, at)
            .into_iter()
            .map(|layout| {
                let len = layout.shard_len(n);
                let zeros = || Tensor::zeros([len], (Kind::Float, device));
                // Per-element masks (kept as bytes) from a per-parameter rule.
                let mask = |rule: &dyn Fn(&str, &[i64]) -> bool| {
                    let by_name: HashMap<String, Tensor> = layout
                        .names
                        .iter()
                        .zip(&layout.shapes)
                        .map(|(name, s)| {
                            let v = if rule(name, s) { 1.0 } else { 0.0 };
                            (
                                name.clone(),
                                Tensor::full(s.as_slice(), v, (Kind::Float, device)),
                            )
                        })
                        .collect();
                    layout
                        .flatten(&by_name, len * n as i64, device)
                        .map(|f| f.narrow(0, rank as i64 * len, len).to_kind(Kind::Bool))
                        .unwrap_or_else(|_| zeros().to_kind(Kind::Bool))
                };
                let decay = mask(&|_, s| s.len() >= 2);
                let replicated =
                    (at.ranks > 1).then(|| mask(&|name, _| Split::of(name) == Split::Replicated));
                Shard {
                    layout: Arc::new(layout),
                    param: zeros().set_requires_grad(true),
                    m: zeros(),
                    v: zeros(),
                    decay,
                    replicated,
                }
            })
            .collect();
        Ok(Self {
            world,
            shard_group,
            tp,
            shards,
            config,
            step: 0,
            step_tensor: Tensor::zeros([], (Kind::Float, device)),
            shapes: shapes_of(vs),
        })
    }

    /// Every rank.
    pub(crate) fn dp(&mut self) -> &mut DataParallel {
        self.world
    }

    pub(crate) fn dp_ref(&self) -> &DataParallel {
        self.world
    }

    /// The ranks each unit is sharded over.
    fn shards_over(&mut self) -> &mut ProcessGroup {
        match &mut self.shard_group {
            Some(g) => g,
            None => &mut self.world.group,
        }
    }

    /// This rank's place among the ranks that read different data (and the count of them).
    pub(crate) fn data_rank(&self) -> (usize, usize) {
        match &self.shard_group {
            Some(g) => (g.rank(), g.world()),
            None => (self.world.rank(), self.world.world()),
        }
    }

    fn tp_rank(&self) -> TpRank {
        self.tp
            .as_ref()
            .map_or(TpRank { rank: 0, ranks: 1 }, |t| t.at)
    }

    /// Elements of parameters, gradients and moments this rank holds, and the whole model's.
    pub fn held_elements(&self) -> (i64, i64) {
        let mine = self.shards.iter().map(|s| s.param.numel() as i64).sum();
        let all = self.shards.iter().map(|s| s.layout.total).sum();
        (mine, all)
    }

    /// Makes the parameters equal (rank 0's), cuts this rank's shards out of them (its
    /// tensor-parallel part first) and frees the whole parameters (each VarStore variable keeps
    /// its name and becomes empty).
    pub fn place(&mut self, vs: &VarStore) -> Result<()> {
        self.world.broadcast_params(vs)?;
        let _g = tch::no_grad_guard();
        let tp = self.tp_rank();
        let (rank, n) = self.data_rank();
        let local: HashMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let part = tp.local(&name, &t);
                (name, part)
            })
            .collect();
        for s in &mut self.shards {
            let len = s.layout.shard_len(n);
            let flat = s.layout.flatten(&local, len * n as i64, vs.device())?;
            let mut p = s.param.shallow_clone();
            p.copy_(&flat.narrow(0, rank as i64 * len, len));
        }
        drop(local);
        free(vs);
        Ok(())
    }

    /// Fills every VarStore variable of rank 0 with the gathered parameters (for writing the
    /// model): each unit gathered over its shard group, then each tensor-parallel part over the
    /// tensor-parallel group. Free them again with [`free`].
    fn materialize(&mut self, vs: &VarStore) -> Result<()> {
        let _g = tch::no_grad_guard();
        let root = self.world.rank() == 0;
        let (_, n) = self.data_rank();
        let device = vs.device();
        let vars = vs.variables();
        for i in 0..self.shards.len() {
            let (layout, param) = {
                let s = &self.shards[i];
                (s.layout.clone(), s.param.detach())
            };
            let len = layout.shard_len(n);
            let full = Tensor::zeros([len * n as i64], (Kind::Float, device));
            self.shards_over().all_gather(&full, &param)?;
            for (j, (_, t)) in layout.views(&full).into_iter().enumerate() {
                let name = &layout.names[j];
                let whole = match &mut self.tp {
                    Some(tp) if Split::of(name) != Split::Replicated => {
                        let part = t.contiguous();
                        let all = Tensor::zeros(
                            [part.numel() as i64 * tp.at.ranks as i64],
                            (Kind::Float, device),
                        );
                        tp.group.all_gather(&all, &part.view([-1]))?;
                        let parts: Vec<Tensor> = all
                            .chunk(tp.at.ranks as i64, 0)
                            .iter()
                            .map(|c| c.view(part.size().as_slice()))
                            .collect();
                        TpRank::join(name, &parts, split_len(name, &self.shapes))
                    }
                    _ => t,
                };
                // Only rank 0 writes the model: the others take part in the collectives and
                // keep nothing.
                if let (true, Some(v)) = (root, vars.get(name)) {
                    let mut v = v.shallow_clone();
                    v.set_data(&whole.contiguous().copy());
                }
            }
        }
        Ok(())
    }

    /// Averages the gradients the backward reduce-scattered, clips them by the global norm and
    /// updates this rank's shards, all on the device; a non-finite step changes nothing.
    pub fn optimizer_step(&mut self, lr: f64) -> Result<StepOutcome> {
        // The gradients' reduce-scatters, started during backward, land in the shards' grads.
        starling_torch::collective::finish_reductions()?;
        let _g = tch::no_grad_guard();
        let (_, n) = self.data_rank();
        let device = self.step_tensor.device();
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
        // The backward summed over the shard group; the mean is what one process would see.
        starling_torch::foreach_mul_(&refs, &Tensor::from(1.0 / n as f32).to_device(device))?;
        // Squares summed over every rank: a tensor-parallel part lives on one rank of its group,
        // a replicated parameter on all of them, so it counts 1/tp each.
        let tp = self.tp_rank().ranks as f64;
        let sq = grads
            .iter()
            .zip(&self.shards)
            .map(|(g, s)| match &s.replicated {
                Some(r) => {
                    let w: Tensor = r.to_kind(Kind::Float) * (1.0 / tp - 1.0) + 1.0;
                    (g.square() * w).sum(Kind::Float)
                }
                None => g.square().sum(Kind::Float),
            })
            .fold(Tensor::zeros([], (Kind::Float, device)), |a, b| a + b)
            .view([1]);
        self.world.group.all_reduce_sum(&sq)?;
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
        let r = if self.world.rank() == 0 {
            crate::checkpoint::write_model_files(tmp, vs, None)
        } else {
            Ok(())
        };
        free(vs);
        crate::parallel::agree_in(self.world, r)?;
        let r = self.save_shard(tmp).map(|_| ());
        crate::parallel::agree_in(self.world, r)
    }

    fn save_shard(&self, dir: &Path) -> Result<PathBuf> {
        let p = dir.join(shard_file(self.world.rank(), self.world.world()));
        let tp = Tensor::from_slice(&[self.tp_rank().ranks as i64]);
        let mut named: Vec<(String, &Tensor)> = vec![("tp".into(), &tp)];
        for s in &self.shards {
            named.push((format!("{}.m", s.layout.key), &s.m));
            named.push((format!("{}.v", s.layout.key), &s.v));
        }
        crate::checkpoint::write_shard(&p, &named)?;
        Ok(p)
    }

    /// Loads this rank's moments from a checkpoint written at any layout by any strategy.
    pub fn load(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        let (rank, world) = (self.world.rank(), self.world.world());
        let (data_rank, n) = self.data_rank();
        let tp = self.tp_rank();
        let device = vs.device();
        let mine = dir.join(shard_file(rank, world));
        let own = match shard_world(dir) {
            Some(w) if w == world => {
                // This rank's own file, used as it is when written at the same layout.
                let named = read_named(&mine)?;
                (tp_of(&named) == tp.ranks).then_some(named)
            }
            _ => None,
        };
        let full = match own {
            Some(_) => None,
            None => {
                let (m, v) = full_moments(dir, vs)?;
                let part = |by_name: HashMap<String, Tensor>| -> HashMap<String, Tensor> {
                    by_name
                        .into_iter()
                        .map(|(name, t)| {
                            let p = tp.local(&name, &t);
                            (name, p)
                        })
                        .collect()
                };
                Some((part(m), part(v)))
            }
        };
        for s in &mut self.shards {
            let len = s.layout.shard_len(n);
            for (which, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let t = match (&own, &full) {
                    (Some(named), _) => named
                        .get(&format!("{}.{which}", s.layout.key))
                        .map(|t| t.to_device(device))
                        .ok_or_else(|| {
                            Error::Format(format!(
                                "{}: no `{}.{which}`",
                                mine.display(),
                                s.layout.key
                            ))
                        })?,
                    (None, Some((m, v))) => {
                        let by_name = if which == "m" { m } else { v };
                        s.layout
                            .flatten(by_name, len * n as i64, device)
                            .map_err(|e| Error::Format(format!("{}: {e}", dir.display())))?
                            .narrow(0, data_rank as i64 * len, len)
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

    /// The runner that gathers each unit for the model's forward (and, with tensor parallelism,
    /// runs each block split over the tensor-parallel group). With bf16 matrix products the
    /// parameters are gathered in bf16 and their gradients reduced in fp32 (FSDP2's mixed
    /// precision); the norms and the embedding are used in fp32 as the model keeps them.
    pub fn runner(&self, recompute: bool, kind: Kind) -> Box<dyn Runner> {
        let unit = |s: &Shard| GatheredUnit {
            layout: s.layout.clone(),
            param: s.param.shallow_clone(),
            bf16: kind == Kind::BFloat16,
        };
        let n = self.shards.len();
        let group = match &self.shard_group {
            Some(g) => g.name(),
            None => self.world.group.name(),
        };
        Box::new(FsdpRunner {
            blocks: self.shards[..n - 1].iter().map(unit).collect(),
            outer: unit(&self.shards[n - 1]),
            group: group.to_string(),
            tp: self.tp.as_ref().map(|t| TpOps {
                group: t.group.name().to_string(),
                at: t.at,
            }),
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

/// A unit as the runner sees it: its layout and a handle to this rank's shard.
#[derive(Debug)]
struct GatheredUnit {
    layout: Arc<UnitLayout>,
    param: Tensor,
    /// Gathered in bf16 (gradients reduced in fp32).
    bf16: bool,
}

impl GatheredUnit {
    fn handle(&self) -> Self {
        Self {
            layout: self.layout.clone(),
            param: self.param.shallow_clone(),
            bf16: self.bf16,
        }
    }

    /// The unit's whole parameters, gathered with autograd: backward starts the gradient's
    /// reduce-scatter and goes on; [`Fsdp::optimizer_step`] waits for it.
    fn gather(&self, group: &str) -> HashMap<String, Tensor> {
        let full = starling_torch::collective::all_gather_deferred(&self.param, group, self.bf16)
            .unwrap_or_else(|e| panic!("FSDP all-gather of {}: {e}", self.layout.key));
        self.layout
            .views(&full.narrow(0, 0, self.layout.total))
            .into_iter()
            .map(|(name, t)| {
                // The model keeps norms, the embedding (the residual stream) in fp32.
                let fp32 = name.ends_with("norm.weight") || name.ends_with("embed_tokens.weight");
                match self.bf16 && fp32 {
                    true => (name, t.to_kind(Kind::Float)),
                    false => (name, t),
                }
            })
            .collect()
    }
}

/// Gathers each unit just before the model uses it.
#[derive(Debug)]
struct FsdpRunner {
    blocks: Vec<GatheredUnit>,
    outer: GatheredUnit,
    group: String,
    tp: Option<TpOps>,
    recompute: bool,
}

impl Runner for FsdpRunner {
    fn outer_weights(&self) -> Option<HashMap<String, Tensor>> {
        Some(self.outer.gather(&self.group))
    }

    fn run(&self, x: &Tensor, block: BlockTemplate) -> Tensor {
        let unit = self.blocks[block.layer].handle();
        let group = self.group.clone();
        let tp = self.tp.clone();
        let forward = move |x: &Tensor| {
            let w = unit.gather(&group);
            let sub = |n: &str| w.get(n).map(Tensor::shallow_clone);
            match &tp {
                None => block.forward_with(x, &sub),
                Some(tp) => block.forward_split(x, &sub, tp),
            }
        };
        if self.recompute {
            starling_torch::recompute(x, forward).unwrap_or_else(|e| panic!("{e}"))
        } else {
            forward(x)
        }
    }

    fn tensor_parallel(&self) -> Option<&dyn TensorParallel> {
        self.tp.as_ref().map(|t| t as &dyn TensorParallel)
    }
}

/// The tensor-parallel group's collectives (starling-torch's, with autograd) for the model.
#[derive(Debug, Clone)]
struct TpOps {
    /// The group's registered name.
    group: String,
    at: TpRank,
}

impl TpOps {
    fn expect(&self, what: &str, r: starling_torch::Result<Tensor>) -> Tensor {
        r.unwrap_or_else(|e| panic!("tensor-parallel {what} over {}: {e}", self.group))
    }
}

impl TensorParallel for TpOps {
    fn rank(&self) -> usize {
        self.at.rank
    }

    fn ranks(&self) -> usize {
        self.at.ranks
    }

    fn gather_tokens(&self, x: &Tensor) -> Tensor {
        use starling_torch::collective::all_gather;
        self.expect("all-gather", all_gather(x, &self.group))
    }

    fn scatter_tokens(&self, x: &Tensor) -> Tensor {
        use starling_torch::collective::reduce_scatter;
        self.expect("reduce-scatter", reduce_scatter(x, &self.group))
    }

    fn sum(&self, x: &Tensor) -> Tensor {
        use starling_torch::collective::reduce_from_group;
        self.expect("sum", reduce_from_group(x, &self.group))
    }

    fn shared(&self, w: &Tensor) -> Tensor {
        use starling_torch::collective::copy_to_group;
        self.expect("shared weight", copy_to_group(w, &self.group))
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
        let units = units_of(&vs, TpRank { rank: 0, ranks: 1 });
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
