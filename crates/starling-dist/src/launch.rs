//! A local launch agent, like torchrun's: starts N worker processes with the torchrun
//! environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, TORCHELASTIC_RESTART_COUNT, ...),
//! passes a stop request on to them as SIGTERM, and when a worker dies tears the whole group down
//! (SIGTERM, then SIGKILL after a grace period) and starts it again, up to `max_restarts` times.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why a launch ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

/// What to launch and how.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The program every worker runs.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Worker processes.
    pub nproc: usize,
    /// Times the whole group is restarted after a worker fails.
    pub max_restarts: u32,
    /// Address of the rendezvous store (rank 0 hosts it).
    pub master_addr: String,
    /// Port of the store (0: a free port, new on each attempt).
    pub master_port: u16,
    /// Time stopping workers get between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// `OMP_NUM_THREADS` of each worker (None: the cores shared out among them, unless set).
    pub threads: Option<String>,
}

/// How a launch ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchEnd {
    /// Every worker exited 0, after this many restarts.
    Done {
        /// Restarts it took.
        restarts: u32,
    },
    /// A stop request was passed on; the workers exited.
    Stopped,
}

/// Runs the group until it finishes, is stopped through `stop`, or fails past its restarts;
/// `report` gets one line per event (attempt started, restart, end).
pub fn launch(
    spec: &LaunchSpec,
    stop: &AtomicBool,
    report: &mut dyn FnMut(&str),
) -> Result<LaunchEnd, LaunchError> {
    if spec.nproc == 0 {
        return Err(LaunchError("--nproc must be at least 1".into()));
    }
    let threads = spec.threads.clone().unwrap_or_else(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (cores / spec.nproc).max(1).to_string()
    });
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let port = if spec.master_port != 0 {
            spec.master_port
        } else {
            free_port(&spec.master_addr)?
        };
        let mut workers = Vec::with_capacity(spec.nproc);
        for rank in 0..spec.nproc {
            let child = Command::new(&spec.program)
                .args(&spec.args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", spec.nproc.to_string())
                .env("LOCAL_WORLD_SIZE", spec.nproc.to_string())
                .env("GROUP_RANK", "0")
                .env("MASTER_ADDR", &spec.master_addr)
                .env("MASTER_PORT", port.to_string())
                .env("TORCHELASTIC_RESTART_COUNT", attempt.to_string())
                .env("TORCHELASTIC_MAX_RESTARTS", spec.max_restarts.to_string())
                .env("OMP_NUM_THREADS", &threads)
                .spawn()
                .map_err(|e| LaunchError(format!("starting rank {rank}: {e}")))?;
            workers.push(child);
        }
        let pids: Vec<String> = workers.iter().map(|c| c.id().to_string()).collect();
        report(&format!(
            "launch: attempt {} of {}: {} workers (pids {}), store {}:{port}, {threads} thread(s) each",
            attempt + 1,
            spec.max_restarts + 1,
            spec.nproc,
            pids.join(", "),
            spec.master_addr
        ));
        match watch(&mut workers, stop, spec.grace) {
            Outcome::Done => {
                report(&format!(
                    "launch: all {} workers finished in {:.1}s after {attempt} restart(s)",
                    spec.nproc,
                    started.elapsed().as_secs_f64()
                ));
                return Ok(LaunchEnd::Done { restarts: attempt });
            }
            Outcome::Stopped => {
                report("launch: stopped by a signal; the workers checkpointed and exited");
                return Ok(LaunchEnd::Stopped);
            }
            Outcome::Failed { rank, status } if attempt < spec.max_restarts => {
                attempt += 1;
                report(&format!(
                    "launch: rank {rank} {status}; the group was stopped; restart {attempt} of {} from the last good checkpoint",
                    spec.max_restarts
                ));
            }
            Outcome::Failed { rank, status } => {
                return Err(LaunchError(format!(
                    "rank {rank} {status}; the group was stopped and no restarts are left (--max-restarts {})",
                    spec.max_restarts
                )));
            }
        }
    }
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

fn free_port(addr: &str) -> Result<u16, LaunchError> {
    let bind = std::net::TcpListener::bind((addr, 0)).and_then(|l| l.local_addr());
    bind.map(|a| a.port())
        .map_err(|e| LaunchError(format!("finding a free port on {addr}: {e}")))
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
