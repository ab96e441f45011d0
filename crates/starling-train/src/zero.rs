//! ZeRO-1 (Rajbhandari et al. 2020): the AdamW state split across ranks. Gradients are
//! reduce-scattered over one flat buffer (parameters in name order, padded to a multiple of the
//! world size); each rank clips and updates its contiguous share of the parameters with its share
//! of the moments; the new parameters are all-gathered. Each rank's moments are one checkpoint file
//! (`adam-shard-RRRRR-of-WWWWW.safetensors`); any world size can resume from any other's shards.

use crate::ddp::{sorted_variables, DataParallel};
use crate::optim::{AdamW, OptimConfig, StepOutcome};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Where each parameter sits in the flat buffer.
#[derive(Debug, Clone)]
pub struct FlatLayout {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Their shapes.
    pub shapes: Vec<Vec<i64>>,
    /// Their offsets in the flat buffer.
    pub offsets: Vec<i64>,
    /// Elements in all.
    pub total: i64,
}

impl FlatLayout {
    /// The layout of a VarStore's variables.
    pub fn of(vs: &VarStore) -> Self {
        let vars = sorted_variables(vs);
        let mut offsets = Vec::with_capacity(vars.len());
        let mut total = 0;
        for (_, t) in &vars {
            offsets.push(total);
            total += t.numel() as i64;
        }
        Self {
            names: vars.iter().map(|(n, _)| n.clone()).collect(),
            shapes: vars.iter().map(|(_, t)| t.size()).collect(),
            offsets,
            total,
        }
    }

    /// Elements per rank at `world` ranks (the flat buffer padded up to `world` equal shares).
    pub fn shard_len(&self, world: usize) -> i64 {
        (self.total + world as i64 - 1) / world as i64
    }

    /// The variables of `vs` (or their gradients) as one flat fp32 tensor padded to `len`.
    fn flatten(&self, tensors: &[Tensor], len: i64, device: Device) -> Tensor {
        let mut parts: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.reshape([-1]).to_kind(Kind::Float))
            .collect();
        if len > self.total {
            parts.push(Tensor::zeros([len - self.total], (Kind::Float, device)));
        }
        Tensor::cat(&parts, 0)
    }

    /// Copies a flat buffer back into the variables of `vs`.
    fn scatter_into(&self, flat: &Tensor, vs: &VarStore) {
        let vars = vs.variables();
        for (i, name) in self.names.iter().enumerate() {
            if let Some(t) = vars.get(name) {
                let mut t = t.shallow_clone();
                let n: i64 = self.shapes[i].iter().product();
                t.copy_(
                    &flat
                        .narrow(0, self.offsets[i], n)
                        .view(self.shapes[i].as_slice()),
                );
            }
        }
    }
}

/// The file name of rank `rank`'s moments at `world` ranks.
pub fn shard_file(rank: usize, world: usize) -> String {
    crate::checkpoint::shard_name("adam-shard", rank, world)
}

/// The world size whose shards a checkpoint directory holds, if it holds any.
pub fn shard_world(dir: &Path) -> Option<usize> {
    crate::checkpoint::shards_world(dir, "adam-shard")
}

/// AdamW whose moments are split across the ranks.
#[derive(Debug)]
pub struct ShardedAdamW {
    /// Settings (shared with [`AdamW`]).
    pub config: OptimConfig,
    /// Updates applied.
    pub step: u64,
    layout: FlatLayout,
    rank: usize,
    world: usize,
    shard: i64,
    m: Tensor,
    v: Tensor,
    /// 1 where weight decay applies (matrices), 0 elsewhere, for this rank's share.
    decay: Tensor,
    /// The step number on the device, for the fused kernel's bias corrections.
    step_tensor: Tensor,
}

impl ShardedAdamW {
    /// Zeroed moments for this rank's share of `params`.
    pub fn new(params: &VarStore, config: OptimConfig, rank: usize, world: usize) -> Self {
        let layout = FlatLayout::of(params);
        let shard = layout.shard_len(world);
        let device = params.device();
        let mask: Vec<Tensor> = layout
            .shapes
            .iter()
            .map(|s| {
                let n: i64 = s.iter().product();
                Tensor::full(
                    [n],
                    if s.len() >= 2 { 1.0 } else { 0.0 },
                    (Kind::Float, device),
                )
            })
            .collect();
        let decay = layout
            .flatten(&mask, shard * world as i64, device)
            .narrow(0, rank as i64 * shard, shard)
            .copy();
        Self {
            config,
            step: 0,
            rank,
            world,
            shard,
            m: Tensor::zeros([shard], (Kind::Float, device)),
            v: Tensor::zeros([shard], (Kind::Float, device)),
            decay,
            layout,
            step_tensor: Tensor::zeros([], (Kind::Float, device)),
        }
    }

    /// Reduce-scatters the gradients, clips by the global norm, updates this rank's share and
    /// all-gathers the parameters; returns the gradient norm before clipping and whether it was
    /// non-finite (the step then changed nothing), on the device. Gradients are zeroed.
    pub fn step(
        &mut self,
        params: &VarStore,
        dp: &mut DataParallel,
        lr: f64,
    ) -> Result<StepOutcome> {
        let _g = tch::no_grad_guard();
        let device = params.device();
        let padded = self.shard * self.world as i64;
        let vars = sorted_variables(params);
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|(_, p)| {
                let g = p.grad();
                if g.defined() {
                    g
                } else {
                    p.zeros_like()
                }
            })
            .collect();
        let flat = self.layout.flatten(&grads, padded, device);
        let g = Tensor::zeros([self.shard], (Kind::Float, device));
        dp.group.reduce_scatter_sum(&g, &flat)?;
        let g = g / self.world as f64;
        // The global norm stays on the device: each rank's share of the squares, summed.
        let sq = g.square().sum(Kind::Float).view([1]);
        dp.group.all_reduce_sum(&sq)?;
        let norm = sq.sqrt().view([]);
        let c = &self.config;
        let (scale, found_inf) = crate::optim::clip_scale(&norm, c.grad_clip);
        let g = if c.grad_clip > 0.0 { g * &scale } else { g };
        self.step += 1;
        let params_flat: Vec<Tensor> = vars.iter().map(|(_, p)| p.shallow_clone()).collect();
        let mut p = self
            .layout
            .flatten(&params_flat, padded, device)
            .narrow(0, self.rank as i64 * self.shard, self.shard)
            .contiguous();
        if c.weight_decay > 0.0 {
            // Decoupled decay on matrices only (the mask), skipped with the step when found_inf.
            let keep = (1.0 - &found_inf) * (lr * c.weight_decay);
            let _ = p.g_mul_(&(1.0 - &self.decay * keep));
        }
        let step = self.step_tensor.fill_(self.step as f64);
        starling_torch::fused_adamw_(
            &[&p],
            &[&g],
            &[&self.m],
            &[&self.v],
            &step,
            &crate::optim::hyper(c, lr, 0.0),
            None,
            Some(&found_inf),
        )?;
        let full = Tensor::zeros([padded], (Kind::Float, device));
        dp.group.all_gather(&full, &p)?;
        self.layout.scatter_into(&full, params);
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect();
        starling_torch::foreach_zero_(&grads.iter().collect::<Vec<_>>())?;
        Ok(StepOutcome {
            grad_norm: norm,
            found_inf,
        })
    }

    /// Writes this rank's moments to `dir`; returns the file.
    pub fn save_shard(&self, dir: &Path) -> Result<PathBuf> {
        let p = dir.join(shard_file(self.rank, self.world));
        crate::checkpoint::write_shard(&p, &[("m", &self.m), ("v", &self.v)])?;
        Ok(p)
    }

    /// Loads this rank's moments from a checkpoint directory written at any world size, sharded
    /// (`adam-shard-*`) or not (`adam-m` / `adam-v`).
    pub fn load(&mut self, dir: &Path, vs: &VarStore, step: u64) -> Result<()> {
        let device = self.m.device();
        let padded = self.shard * self.world as i64;
        let (m, v) = match shard_world(dir) {
            Some(w) if w == self.world => {
                let (m, v) = read_shard(&dir.join(shard_file(self.rank, w)))?;
                (m.to_device(device), v.to_device(device))
            }
            Some(w) => {
                let (m, v) = read_all_shards(dir, w)?;
                let cut =
                    |t: Tensor| self.pad_cut(t.narrow(0, 0, self.layout.total), padded, device);
                (cut(m), cut(v))
            }
            None if crate::fsdp::shard_world(dir).is_some() => {
                // An FSDP checkpoint: its moments by name, laid out flat as ZeRO-1 keeps them.
                let mut opt = AdamW::new(vs, self.config.clone());
                crate::parallel::load_full(&mut opt, vs, dir, step)?;
                let flat = |store: &VarStore| {
                    let vars = sorted_variables(store);
                    let ts: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
                    self.layout.flatten(&ts, self.layout.total, device)
                };
                (
                    self.pad_cut(flat(&opt.m), padded, device),
                    self.pad_cut(flat(&opt.v), padded, device),
                )
            }
            None => {
                let (m, v) = read_full(dir, &self.layout)?;
                (
                    self.pad_cut(m, padded, device),
                    self.pad_cut(v, padded, device),
                )
            }
        };
        if m.size() != [self.shard] || v.size() != [self.shard] {
            return Err(Error::Format(format!(
                "{}: optimizer shard has {:?} elements, want {}",
                dir.display(),
                m.size(),
                self.shard
            )));
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }

    fn pad_cut(&self, flat: Tensor, padded: i64, device: Device) -> Tensor {
        let flat = flat.to_device(device);
        let flat = if padded > flat.numel() as i64 {
            Tensor::cat(
                &[
                    flat.shallow_clone(),
                    Tensor::zeros([padded - flat.numel() as i64], (Kind::Float, device)),
                ],
                0,
            )
        } else {
            flat
        };
        flat.narrow(0, self.rank as i64 * self.shard, self.shard)
            .copy()
    }
}

fn read_shard(p: &Path) -> Result<(Tensor, Tensor)> {
    let named =
        Tensor::read_safetensors(p).map_err(|e| Error::Format(format!("{}: {e}", p.display())))?;
    let get = |k: &str| {
        named
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| Error::Format(format!("{}: no tensor `{k}`", p.display())))
    };
    Ok((get("m")?, get("v")?))
}

/// Every shard of a `world`-rank checkpoint, concatenated: the flat moments (padded).
fn read_all_shards(dir: &Path, world: usize) -> Result<(Tensor, Tensor)> {
    let mut ms = Vec::new();
    let mut vs = Vec::new();
    for r in 0..world {
        let (m, v) = read_shard(&dir.join(shard_file(r, world)))?;
        ms.push(m);
        vs.push(v);
    }
    Ok((Tensor::cat(&ms, 0), Tensor::cat(&vs, 0)))
}

/// An unsharded checkpoint's moments (`adam-m` / `adam-v`, named like the parameters), flattened.
fn read_full(dir: &Path, layout: &FlatLayout) -> Result<(Tensor, Tensor)> {
    let mut out = Vec::new();
    for f in ["adam-m.safetensors", "adam-v.safetensors"] {
        let p = dir.join(f);
        let named = Tensor::read_safetensors(&p)
            .map_err(|e| Error::Format(format!("{}: {e}", p.display())))?;
        let map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        let mut parts = Vec::new();
        for n in &layout.names {
            let t = map
                .get(n)
                .ok_or_else(|| Error::Format(format!("{}: no tensor `{n}`", p.display())))?;
            parts.push(t.reshape([-1]).to_kind(Kind::Float));
        }
        out.push(Tensor::cat(&parts, 0));
    }
    let v = out
        .pop()
        .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, Device::Cpu)));
    let m = out
        .pop()
        .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, Device::Cpu)));
    Ok((m, v))
}

/// Fills an unsharded AdamW's moments from a sharded checkpoint of `world` ranks.
pub fn load_full_from_shards(
    opt: &mut AdamW,
    params: &VarStore,
    dir: &Path,
    world: usize,
) -> Result<()> {
    let layout = FlatLayout::of(params);
    let (m, v) = read_all_shards(dir, world)?;
    if (m.numel() as i64) < layout.total {
        return Err(Error::Format(format!(
            "{}: shards hold {} elements, the model has {}",
            dir.display(),
            m.numel(),
            layout.total
        )));
    }
    let _g = tch::no_grad_guard();
    let device = params.device();
    layout.scatter_into(&m.to_device(device), &opt.m);
    layout.scatter_into(&v.to_device(device), &opt.v);
    Ok(())
}
