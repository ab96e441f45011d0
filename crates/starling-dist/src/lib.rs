//! Data-parallel collectives on PyTorch's own distributed engine, c10d: a `TCPStore` rendezvous and
//! the Gloo (CPU) or NCCL (CUDA) backend, driven through a thin C++ shim (`csrc/c10d_shim.cpp`).
//!
//! A process joins a group from the torchrun environment ([`DistEnv::from_env`]: `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, or Slurm's `SLURM_PROCID` & co.), so
//! torchrun-style launchers, `srun` and Kubernetes operators start starling unchanged.
//! Collectives work in place on contiguous tch tensors; a collective that times out or loses a peer
//! returns [`Error::Collective`] naming this rank, the operation, and how far each peer got (each
//! collective first records its sequence number in the store, so the rank that is behind is named).
//!
//! [`launch`] is the local launch agent (torchrun's): N workers, signals passed on, the group
//! restarted after a failure.

mod ffi;
pub mod launch;
pub mod mesh;

use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Errors of the distributed stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable is missing or malformed.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// Joining the group failed (store unreachable, backend refused).
    #[error(
        "rank {rank} of {world}: joining the {backend} group at {addr}:{port} failed: {message}"
    )]
    Join {
        /// This rank.
        rank: usize,
        /// World size.
        world: usize,
        /// gloo or nccl.
        backend: String,
        /// Store host.
        addr: String,
        /// Store port.
        port: u16,
        /// The c10d error.
        message: String,
    },
    /// A collective failed or timed out.
    #[error("rank {rank}: {op} failed: {message}{peers}")]
    Collective {
        /// This rank.
        rank: usize,
        /// The operation and the step it belonged to.
        op: String,
        /// The c10d error.
        message: String,
        /// How far each peer got, when the store could tell.
        peers: String,
    },
    /// A tensor that cannot take part in a collective.
    #[error("{0}")]
    Tensor(String),
}

/// Result alias of the distributed stage.
pub type Result<T> = std::result::Result<T, Error>;

/// Where this process sits in the job, as torchrun (or Slurm) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, 0-based.
    pub rank: usize,
    /// Number of processes in the job.
    pub world: usize,
    /// Rank on this node (selects the GPU).
    pub local_rank: usize,
    /// Host of the rendezvous store (rank 0's host).
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// How many times the launcher restarted the group (0 on the first attempt).
    pub restart: u32,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| Error::Env {
        var: name.into(),
        message: format!("`{v}` is not a valid number"),
    })
}

impl DistEnv {
    /// The torchrun variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
    /// else Slurm's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, with `MASTER_ADDR`/`MASTER_PORT`
    /// from the batch script); None when neither `RANK` nor `SLURM_PROCID` is set (a plain run).
    pub fn from_env() -> Result<Option<Self>> {
        let (rank_var, world_var, local_var) = if var("RANK").is_some() {
            ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if var("SLURM_PROCID").is_some() && var("MASTER_ADDR").is_some() {
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let need = |name: &str| {
            var(name).ok_or_else(|| Error::Env {
                var: name.into(),
                message: format!("must be set when {rank_var} is"),
            })
        };
        let rank: usize = parse(rank_var, &need(rank_var)?)?;
        let world: usize = parse(world_var, &need(world_var)?)?;
        let local_rank: usize = match var(local_var) {
            Some(v) => parse(local_var, &v)?,
            None => 0,
        };
        let master_addr = need("MASTER_ADDR")?;
        let master_port: u16 = parse("MASTER_PORT", &need("MASTER_PORT")?)?;
        let restart = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => parse("TORCHELASTIC_RESTART_COUNT", &v)?,
            None => 0,
        };
        if world == 0 || rank >= world {
            return Err(Error::Env {
                var: rank_var.into(),
                message: format!("rank {rank} is outside a world of {world}"),
            });
        }
        Ok(Some(Self {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            restart,
        }))
    }
}

/// The collective engine of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors on this rank's device.
    Nccl,
}

impl Backend {
    /// Gloo for CPU, NCCL for CUDA.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    /// Name as c10d spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// Whether this build carries the NCCL backend.
pub fn has_nccl() -> bool {
    ffi::has_nccl()
}

/// The least time the rendezvous is given (processes of a job start seconds apart), whatever the
/// collective timeout.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// One process's membership of a data-parallel group.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: ffi::RawGroup,
    name: String,
    rank: usize,
    world: usize,
    device: Device,
    backend: Backend,
    timeout: Duration,
    step: u64,
    comm: Duration,
    calls: u64,
}

fn dtype_code(kind: Kind) -> Result<i32> {
    Ok(match kind {
        Kind::Float => 0,
        Kind::Double => 1,
        Kind::BFloat16 => 2,
        Kind::Int64 => 3,
        Kind::Half => 4,
        other => {
            return Err(Error::Tensor(format!(
                "collectives take float, double, bf16, half or int64 tensors, not {other:?}"
            )))
        }
    })
}

impl ProcessGroup {
    /// Joins the group described by `env` (rank 0 hosts the store at `MASTER_ADDR:MASTER_PORT`,
    /// waiting up to `timeout` or [`JOIN_TIMEOUT`], whichever is longer, for every rank); every
    /// collective and store wait after that gives up after `timeout`.
    pub fn join(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        let device = match backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(env.local_rank),
        };
        let ms = |d: Duration| d.as_millis().min(i32::MAX as u128) as u64;
        // c10d's registry holds one group per name in a process: a process that joins twice
        // (tests) gets a new name each time.
        static JOINED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = JOINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = if n == 0 {
            "world".to_string()
        } else {
            format!("world.{n}")
        };
        let raw = ffi::RawGroup::new(
            backend.name(),
            &env.master_addr,
            env.master_port,
            env.rank,
            env.world,
            (ms(timeout.max(JOIN_TIMEOUT)), ms(timeout)),
            match device {
                Device::Cuda(i) => i32::try_from(i).unwrap_or(0),
                _ => -1,
            },
            &name,
        )
        .map_err(|message| Error::Join {
            rank: env.rank,
            world: env.world,
            backend: backend.name().into(),
            addr: env.master_addr.clone(),
            port: env.master_port,
            message,
        })?;
        tracing::debug!(
            rank = env.rank,
            world = env.world,
            backend = backend.name(),
            "joined"
        );
        Ok(Self {
            raw,
            name,
            rank: env.rank,
            world: env.world,
            device,
            backend,
            timeout,
            step: 0,
            comm: Duration::ZERO,
            calls: 0,
        })
    }

    /// The name c10d knows this group by (its GroupRegistry): what code that resolves groups by
    /// name, such as `starling_torch::collective`, is given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group of `ranks` (ranks of this group, in the subgroup's rank order), for the ranks in
    /// it; `None` for the others. Every rank of this group calls it, in the same order for every
    /// subgroup (like `torch.distributed.new_group`); the subgroup is registered as
    /// `<this name>/<tag>`.
    pub fn subgroup(&mut self, ranks: &[usize], tag: &str) -> Result<Option<ProcessGroup>> {
        if let Some(&r) = ranks.iter().find(|&&r| r >= self.world) {
            return Err(Error::Tensor(format!(
                "subgroup `{tag}`: rank {r} is not in a group of {}",
                self.world
            )));
        }
        let name = format!("{}/{tag}", self.name);
        let me = ranks.iter().position(|&r| r == self.rank);
        let raw = self.timed(&format!("subgroup `{tag}`"), |g| g.subgroup(ranks, &name))?;
        Ok(raw.zip(me).map(|(raw, sub)| ProcessGroup {
            raw,
            name,
            rank: sub,
            world: ranks.len(),
            device: self.device,
            backend: self.backend,
            timeout: self.timeout,
            step: self.step,
            comm: Duration::ZERO,
            calls: 0,
        }))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The device collectives run on (CPU for Gloo, this rank's GPU for NCCL).
    pub fn device(&self) -> Device {
        self.device
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Wall time spent inside collectives so far, and how many were made.
    pub fn comm_time(&self) -> (Duration, u64) {
        (self.comm, self.calls)
    }

    /// Sets the step that the next collectives belong to (for messages and peers' diagnosis).
    pub fn mark_step(&mut self, step: u64) {
        self.step = step;
    }

    fn buffer(&self, t: &Tensor) -> Result<ffi::Buffer> {
        if !t.is_contiguous() {
            return Err(Error::Tensor("collectives need contiguous tensors".into()));
        }
        if t.device() != self.device {
            return Err(Error::Tensor(format!(
                "a {:?} tensor given to the {} group on {:?}",
                t.device(),
                self.backend.name(),
                self.device
            )));
        }
        Ok(ffi::Buffer {
            ptr: t.data_ptr(),
            n: t.numel() as i64,
            dtype: dtype_code(t.kind())?,
        })
    }

    /// Each peer's last collective, read from the store with a short wait: a peer that has not
    /// reached this rank's collective is the one that hangs (or died).
    fn peers(&mut self) -> String {
        let mut parts = Vec::new();
        let wait = 1000u64.min(self.timeout.as_millis() as u64);
        let mine = self.calls.saturating_sub(1);
        // (rank, collective, step) of each peer that answered.
        let mut seen: Vec<(usize, Option<u64>, Option<u64>)> = Vec::new();
        for r in (0..self.world).filter(|&r| r != self.rank) {
            match self
                .raw
                .store_get_bounded(&format!("progress/{r}"), wait, 64)
            {
                Some(Ok(Some(v))) => {
                    let s = String::from_utf8_lossy(&v).into_owned();
                    let mut it = s.split(' ').map(|x| x.parse::<u64>().ok());
                    seen.push((r, it.next().flatten(), it.next().flatten()));
                }
                Some(Ok(None)) => parts.push(format!("rank {r} never entered a collective")),
                None | Some(Err(_)) => {
                    parts.push(
                        "the store (hosted by rank 0) does not answer: rank 0 is hung or dead"
                            .into(),
                    );
                    break;
                }
            }
        }
        // A peer behind this rank is the one that hangs; when none is (and none is missing), the
        // collective timed out with every peer inside it: those peers stopped in the middle of it.
        let any_behind = seen.iter().any(|(_, n, _)| n.is_some_and(|n| n < mine));
        let stuck_inside = !any_behind && parts.is_empty();
        for (r, n, step) in seen {
            let tag = match n {
                Some(n) if n < mine => " (behind: hung or dead)",
                Some(n) if n == mine && stuck_inside => " (stopped inside it: hung or dead)",
                _ => "",
            };
            parts.push(format!(
                "rank {r} last entered collective #{} (step {}){tag}",
                n.map_or("?".into(), |n| n.to_string()),
                step.map_or("?".into(), |n| n.to_string()),
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(
                "; this rank waits in collective #{mine}; {}",
                parts.join(", ")
            )
        }
    }

    fn error(&mut self, op: &str, message: String, diagnose: bool) -> Error {
        let peers = if diagnose {
            self.peers()
        } else {
            String::new()
        };
        Error::Collective {
            rank: self.rank,
            op: format!(
                "{op} (step {}, timeout {:.0} s)",
                self.step,
                self.timeout.as_secs_f64()
            ),
            message: message.lines().next().unwrap_or_default().to_string(),
            peers,
        }
    }

    fn timed<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&mut ffi::RawGroup) -> ffi::CResult<T>,
    ) -> Result<T> {
        // Peers read this to tell who is behind when a collective never completes.
        let progress = format!("{} {}", self.calls, self.step);
        let key = format!("progress/{}", self.rank);
        if let Err(m) = self.raw.store_set(&key, progress.as_bytes()) {
            return Err(self.error(&format!("{op}: reporting progress to the store"), m, false));
        }
        let t = Instant::now();
        let r = f(&mut self.raw);
        self.comm += t.elapsed();
        self.calls += 1;
        r.map_err(|m| self.error(op, m, true))
    }

    /// Sums `t` over ranks, in place.
    pub fn all_reduce_sum(&mut self, t: &Tensor) -> Result<()> {
        let b = self.buffer(t)?;
        self.timed("all-reduce", |g| g.allreduce(b))
    }

    /// Copies `root`'s `t` into every rank's `t`.
    pub fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<()> {
        let b = self.buffer(t)?;
        self.timed("broadcast", |g| g.broadcast(b, root))
    }

    /// Sums `input` (world × n elements) over ranks and leaves this rank's n-element share in `output`.
    pub fn reduce_scatter_sum(&mut self, output: &Tensor, input: &Tensor) -> Result<()> {
        self.sharded(ffi::Sharded::ReduceScatter, output, input)
    }

    /// Concatenates every rank's `input` (n elements) in rank order into `output` (world × n).
    pub fn all_gather(&mut self, output: &Tensor, input: &Tensor) -> Result<()> {
        self.sharded(ffi::Sharded::AllGather, input, output)
    }

    /// Runs `op` between this rank's `shard` (n elements) and the `whole` (world × n).
    fn sharded(&mut self, op: ffi::Sharded, shard: &Tensor, whole: &Tensor) -> Result<()> {
        let (s, w) = (self.buffer(shard)?, self.buffer(whole)?);
        let name = match op {
            ffi::Sharded::ReduceScatter => "reduce-scatter",
            ffi::Sharded::AllGather => "all-gather",
        };
        if w.n != s.n * self.world as i64 || w.dtype != s.dtype {
            return Err(Error::Tensor(format!(
                "{name}: a shard of {} elements and a whole of {} over {} ranks",
                s.n, w.n, self.world
            )));
        }
        self.timed(name, |g| g.sharded(op, s, w))
    }

    /// Waits until every rank arrives.
    pub fn barrier(&mut self) -> Result<()> {
        self.timed("barrier", |g| g.barrier())
    }

    /// Sets `key` in the rendezvous store.
    pub fn store_set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let r = self.raw.store_set(key, value);
        r.map_err(|m| self.error(&format!("store set `{key}`"), m, false))
    }

    /// Reads `key` from the store, waiting up to the group's timeout; an error when it never comes.
    pub fn store_get(&mut self, key: &str) -> Result<Vec<u8>> {
        let ms = self.timeout.as_millis().min(i32::MAX as u128) as u64;
        match self.raw.store_get(key, ms, 1 << 16) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.error(
                &format!("waiting for store key `{key}`"),
                "timed out".into(),
                true,
            )),
            Err(m) => Err(self.error(&format!("store get `{key}`"), m, true)),
        }
    }
}
