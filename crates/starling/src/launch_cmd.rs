//! `starling launch`: the options of the local launch agent (`starling_dist::launch`), which
//! starts N workers of `starling` the way torchrun does and restarts the group after a failure;
//! SIGINT/SIGTERM are passed on to the workers, which checkpoint and exit.

use anyhow::{bail, Context, Result};
use starling_dist::launch::{launch as run_group, LaunchSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Options of `starling launch`.
#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Worker processes on this machine (one per GPU; on CPU, cores are shared out among them).
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// Times the whole group is restarted from the last good checkpoint after a worker fails.
    #[arg(long, default_value_t = 0)]
    pub max_restarts: u32,
    /// Address of the rendezvous store (rank 0 hosts it).
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous store (0: a free port, new on each attempt).
    #[arg(long, default_value_t = 0)]
    pub master_port: u16,
    /// Seconds stopping workers get between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 30.0)]
    pub grace_s: f64,
    /// The starling command every worker runs, after `--` (e.g. `-- train --tokens t --out run`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs `starling launch`.
pub fn launch(a: &LaunchArgs) -> Result<()> {
    if !(a.grace_s >= 0.0 && a.grace_s < 1e6) {
        bail!("--grace-s must be in [0, 1e6), not {}", a.grace_s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the SIGINT/SIGTERM handler")?;
    let spec = LaunchSpec {
        program: std::env::current_exe().context("locating the starling binary")?,
        args: a.command.clone(),
        nproc: a.nproc,
        max_restarts: a.max_restarts,
        master_addr: a.master_addr.clone(),
        master_port: a.master_port,
        grace: Duration::from_secs_f64(a.grace_s),
        threads: std::env::var("OMP_NUM_THREADS").ok(),
    };
    run_group(&spec, &stop, &mut |line| eprintln!("{line}"))?;
    Ok(())
}
