//! Data parallelism over a c10d group: parameters broadcast from rank 0, gradients averaged in
//! buckets once per optimizer step, small vectors of scalars (loss, stop requests) summed.

use crate::{Error, Result};
use starling_dist::ProcessGroup;
use std::time::Duration;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Elements per gradient bucket: 25 MB of fp32, PyTorch DDP's default `bucket_cap_mb`.
pub const BUCKET_ELEMS: i64 = 25 * 1024 * 1024 / 4;

/// This process's part in a data-parallel run.
#[derive(Debug)]
pub struct DataParallel {
    /// The group it belongs to.
    pub group: ProcessGroup,
}

impl From<starling_dist::Error> for Error {
    fn from(e: starling_dist::Error) -> Self {
        Error::Distributed(e.to_string())
    }
}

/// A VarStore's variables, sorted by name: the one order every rank agrees on.
pub fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl DataParallel {
    /// Wraps a joined group.
    pub fn new(group: ProcessGroup) -> Self {
        Self { group }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.group.world()
    }

    /// Time spent in collectives so far.
    pub fn comm(&self) -> Duration {
        self.group.comm_time().0
    }

    /// Copies rank 0's parameters to every rank.
    pub fn broadcast_params(&mut self, vs: &VarStore) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (_, t) in sorted_variables(vs) {
            self.group.broadcast(&t, 0)?;
        }
        Ok(())
    }

    /// Averages every gradient over the ranks, in buckets of [`BUCKET_ELEMS`].
    pub fn average_grads(&mut self, vs: &VarStore) -> Result<()> {
        let _g = tch::no_grad_guard();
        let world = self.world() as f64;
        let grads: Vec<Tensor> = sorted_variables(vs)
            .into_iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect();
        let mut start = 0;
        while start < grads.len() {
            let mut end = start;
            let mut elems = 0;
            while end < grads.len()
                && (end == start || elems + grads[end].numel() as i64 <= BUCKET_ELEMS)
            {
                elems += grads[end].numel() as i64;
                end += 1;
            }
            let bucket = &grads[start..end];
            let flat = Tensor::cat(
                &bucket.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(),
                0,
            );
            self.group.all_reduce_sum(&flat)?;
            let flat = flat / world;
            let mut off = 0;
            for g in bucket {
                let n = g.numel() as i64;
                let mut g = g.shallow_clone();
                g.copy_(&flat.narrow(0, off, n).view_as(&g));
                off += n;
            }
            start = end;
        }
        Ok(())
    }

    /// Sums a few scalars over the ranks.
    pub fn sum_scalars(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_device(self.group.device());
        self.group.all_reduce_sum(&t)?;
        Vec::<f64>::try_from(&t.to_device(Device::Cpu).to_kind(Kind::Double))
            .map_err(|e| Error::Format(format!("reduced scalars: {e}")))
    }
}
