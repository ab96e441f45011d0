//! A 2-D device mesh: `tp` consecutive ranks form a tensor-parallel group (inside a node, where
//! the links are fastest), and the ranks at the same place in every tensor-parallel group form a
//! data-parallel group (FSDP or DDP across nodes), as torchtitan and Megatron lay them out.

use crate::{Error, ProcessGroup, Result};

/// The shape of a mesh over `world` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mesh {
    /// Tensor-parallel degree (ranks per tensor-parallel group).
    pub tp: usize,
    /// Data-parallel degree (ranks per data-parallel group).
    pub dp: usize,
}

impl Mesh {
    /// `world` ranks as `world / tp` data-parallel replicas of `tp`-way tensor parallelism.
    pub fn new(world: usize, tp: usize) -> Result<Self> {
        if tp == 0 || world == 0 || !world.is_multiple_of(tp) {
            return Err(Error::Tensor(format!(
                "a tensor-parallel degree of {tp} does not divide a world of {world} ranks"
            )));
        }
        Ok(Self { tp, dp: world / tp })
    }

    /// The ranks of `rank`'s tensor-parallel group, in its order.
    pub fn tp_ranks(&self, rank: usize) -> Vec<usize> {
        let first = rank / self.tp * self.tp;
        (first..first + self.tp).collect()
    }

    /// The ranks of `rank`'s data-parallel group, in its order.
    pub fn dp_ranks(&self, rank: usize) -> Vec<usize> {
        (0..self.dp).map(|i| i * self.tp + rank % self.tp).collect()
    }

    /// This rank's tensor-parallel and data-parallel groups, made from `world` (both registered
    /// with c10d by name: `<world>/tp<i>` and `<world>/dp<j>`).
    pub fn groups(&self, world: &mut ProcessGroup) -> Result<(ProcessGroup, ProcessGroup)> {
        let rank = world.rank();
        let missing = |what: &str| Error::Tensor(format!("rank {rank} is in no {what} group"));
        let tp = world
            .subgroup(&self.tp_ranks(rank), &format!("tp{}", rank / self.tp))?
            .ok_or_else(|| missing("tensor-parallel"))?;
        let dp = world
            .subgroup(&self.dp_ranks(rank), &format!("dp{}", rank % self.tp))?
            .ok_or_else(|| missing("data-parallel"))?;
        Ok((tp, dp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tp_groups_are_consecutive_and_dp_groups_strided() {
        let m = Mesh::new(8, 2).unwrap();
        assert_eq!(m, Mesh { tp: 2, dp: 4 });
        assert_eq!(m.tp_ranks(5), vec![4, 5]);
        assert_eq!(m.dp_ranks(5), vec![1, 3, 5, 7]);
        assert_eq!(m.dp_ranks(0), vec![0, 2, 4, 6]);
        // Every rank is in exactly one group of each kind.
        for r in 0..8 {
            assert!(m.tp_ranks(r).contains(&r) && m.dp_ranks(r).contains(&r));
        }
        assert!(Mesh::new(6, 4)
            .unwrap_err()
            .to_string()
            .contains("does not divide"));
        assert!(Mesh::new(4, 0).is_err());
    }
}
