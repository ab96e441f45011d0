//! `starling launch`: starts N local workers the way torchrun does (one process per device, the
//! torchrun environment set for each), forwards SIGINT/SIGTERM to them, and when a worker dies
//! tears the whole group down and starts it again, up to `--max-restarts` times; the workers
//! resume from the run's last good checkpoint.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How one attempt ended.
enum Outcome {
    /// Every worker exited 0.
    Done,
    /// A signal asked the launcher to stop; the workers were told and have exited.
    Stopped,
    /// A worker failed; the others were stopped.
    Failed { rank: usize, status: String },
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!(
            "was killed by signal {sig} ({})",
            Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?")
        ),
        _ => "ended".into(),
    }
}

fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

fn free_port(addr: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .with_context(|| format!("finding a free port on {addr}"))?;
    Ok(l.local_addr()?.port())
}

/// Runs `starling launch`.
pub fn launch(a: &LaunchArgs) -> Result<()> {
    if a.nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    if !(a.grace_s >= 0.0 && a.grace_s < 1e6) {
        bail!("--grace-s must be in [0, 1e6), not {}", a.grace_s);
    }
    let exe = std::env::current_exe().context("locating the starling binary")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the SIGINT/SIGTERM handler")?;
    // Like torchrun, give each CPU worker its share of the cores unless the user chose.
    let threads = std::env::var("OMP_NUM_THREADS").ok().unwrap_or_else(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (cores / a.nproc).max(1).to_string()
    });
    let grace = Duration::from_secs_f64(a.grace_s);
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let port = if a.master_port != 0 {
            a.master_port
        } else {
            free_port(&a.master_addr)?
        };
        let mut workers = Vec::with_capacity(a.nproc);
        for rank in 0..a.nproc {
            let child = Command::new(&exe)
                .args(&a.command)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", a.nproc.to_string())
                .env("LOCAL_WORLD_SIZE", a.nproc.to_string())
                .env("GROUP_RANK", "0")
                .env("MASTER_ADDR", &a.master_addr)
                .env("MASTER_PORT", port.to_string())
                .env("TORCHELASTIC_RESTART_COUNT", attempt.to_string())
                .env("TORCHELASTIC_MAX_RESTARTS", a.max_restarts.to_string())
                .env("OMP_NUM_THREADS", &threads)
                .spawn()
                .with_context(|| format!("starting rank {rank}"))?;
            workers.push(child);
        }
        let pids: Vec<String> = workers.iter().map(|c| c.id().to_string()).collect();
        eprintln!(
            "launch: attempt {} of {}: {} workers (pids {}), store {}:{port}, {threads} thread(s) each",
            attempt + 1,
            a.max_restarts + 1,
            a.nproc,
            pids.join(", "),
            a.master_addr
        );
        match watch(&mut workers, &stop, grace) {
            Outcome::Done => {
                eprintln!(
                    "launch: all {} workers finished in {:.1}s after {attempt} restart(s)",
                    a.nproc,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Outcome::Stopped => {
                eprintln!("launch: stopped by a signal; the workers checkpointed and exited");
                return Ok(());
            }
            Outcome::Failed { rank, status } if attempt < a.max_restarts => {
                attempt += 1;
                eprintln!(
                    "launch: rank {rank} {status}; the group was stopped; restart {attempt} of {} from the last good checkpoint",
                    a.max_restarts
                );
            }
            Outcome::Failed { rank, status } => {
                bail!(
                    "rank {rank} {status}; the group was stopped and no restarts are left (--max-restarts {})",
                    a.max_restarts
                );
            }
        }
    }
}

/// Waits for the workers; on the first failure (or a stop request) stops the rest.
fn watch(workers: &mut [Child], stop: &AtomicBool, grace: Duration) -> Outcome {
    let mut done = vec![false; workers.len()];
    loop {
        for (rank, w) in workers.iter_mut().enumerate() {
            if done[rank] {
                continue;
            }
            match w.try_wait() {
                Ok(Some(s)) if s.success() => done[rank] = true,
                Ok(Some(s)) => {
                    done[rank] = true;
                    let status = describe(s);
                    stop_all(workers, &mut done, grace);
                    return Outcome::Failed { rank, status };
                }
                Ok(None) => {}
                Err(e) => {
                    done[rank] = true;
                    stop_all(workers, &mut done, grace);
                    return Outcome::Failed {
                        rank,
                        status: format!("could not be waited for ({e})"),
                    };
                }
            }
        }
        if done.iter().all(|&d| d) {
            return Outcome::Done;
        }
        if stop.load(Ordering::Relaxed) {
            // The workers checkpoint on SIGTERM (agreeing on the step through their all-reduce).
            for (w, _) in workers.iter().zip(&done).filter(|(_, d)| !**d) {
                signal(w, Signal::SIGTERM);
            }
            wait_all(workers, &mut done, Duration::from_secs(3600));
            return Outcome::Stopped;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to every live worker, then SIGKILL to those still alive after `grace`.
fn stop_all(workers: &mut [Child], done: &mut [bool], grace: Duration) {
    for (w, _) in workers.iter().zip(done.iter()).filter(|(_, d)| !**d) {
        signal(w, Signal::SIGTERM);
    }
    wait_all(workers, done, grace);
    for (w, d) in workers.iter_mut().zip(done.iter_mut()) {
        if !*d {
            signal(w, Signal::SIGKILL);
            let _ = w.wait();
            *d = true;
        }
    }
}

/// Reaps workers as they exit, for up to `limit`.
fn wait_all(workers: &mut [Child], done: &mut [bool], limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit && !done.iter().all(|&d| d) {
        for (w, d) in workers.iter_mut().zip(done.iter_mut()) {
            if !*d && matches!(w.try_wait(), Ok(Some(_)) | Err(_)) {
                *d = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
