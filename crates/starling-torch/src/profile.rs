//! PyTorch's profiler (Kineto) around a piece of starling's work, as `torch.profiler` gives it to a
//! Python user: every ATen op the calling thread runs (and the ops autograd runs for it) with its
//! start and duration, and on CUDA every kernel, copy and fill the GPU ran. [`Profile`] turns the
//! recording into what one looks at: ops by self time, kernels by time, how many kernels a step
//! launches and what share of the window the GPU sat idle.
//!
//! ```no_run
//! use tch::{Device, Kind, Tensor};
//! let a = Tensor::randn([256, 256], (Kind::Float, Device::Cpu));
//! let profiler = starling_torch::profile::Profiler::start(false).unwrap();
//! let _ = a.matmul(&a).relu();
//! let profile = profiler.stop().unwrap();
//! println!("{}", profile.op_table(10));
//! ```

use crate::{ffi, Error, Result};
use std::collections::HashMap;

/// What an event of a recording is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An op on the host (an ATen operator, an autograd node, a user range).
    HostOp,
    /// A kernel that ran on a device.
    Kernel,
    /// A copy or fill that ran on a device.
    DeviceMemory,
    /// A host-side call into the device runtime (kernel launch, stream synchronisation).
    Runtime,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its name (`aten::mm`, a kernel's symbol, `cudaLaunchKernel`).
    pub name: String,
    /// What it is.
    pub kind: EventKind,
    /// Start, in nanoseconds on the profiler's clock.
    pub start_ns: u64,
    /// Duration in nanoseconds.
    pub dur_ns: u64,
    /// The host thread it started on.
    pub thread: u64,
}

impl Event {
    fn end_ns(&self) -> u64 {
        self.start_ns + self.dur_ns
    }
}

/// A recording in progress on the calling thread; [`Profiler::stop`] ends it (dropping it
/// unstopped ends it too, discarding what it recorded).
#[derive(Debug)]
pub struct Profiler {
    stopped: bool,
}

impl Profiler {
    /// Starts recording the calling thread's ops (and, with `cuda`, the GPU's activity). One
    /// recording at a time per thread.
    pub fn start(cuda: bool) -> Result<Self> {
        ffi::profiler_start(cuda).map_err(Error)?;
        Ok(Self { stopped: false })
    }

    /// Ends the recording and returns what it holds.
    pub fn stop(mut self) -> Result<Profile> {
        self.stopped = true;
        let raw = ffi::profiler_stop().map_err(Error)?;
        let events = raw
            .into_iter()
            .map(|e| Event {
                name: e.name,
                kind: match e.kind {
                    1 => EventKind::Kernel,
                    2 => EventKind::DeviceMemory,
                    3 => EventKind::Runtime,
                    _ => EventKind::HostOp,
                },
                start_ns: e.start_ns,
                dur_ns: e.dur_ns,
                thread: e.thread,
            })
            .collect();
        Ok(Profile { events })
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = ffi::profiler_stop();
        }
    }
}

/// The time spent in events of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct OpStat {
    /// The events' name.
    pub name: String,
    /// How many there were.
    pub calls: usize,
    /// Their time minus the time of the host ops they called (for device events, their time).
    pub self_ns: u64,
    /// Their time, the ops they called included.
    pub total_ns: u64,
}

/// What the devices did during a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceActivity {
    /// Kernels run.
    pub kernels: usize,
    /// Copies and fills run.
    pub memory_ops: usize,
    /// Time at least one kernel, copy or fill was running, in nanoseconds.
    pub busy_ns: u64,
    /// The recording's window: first event's start to last event's end, host and device.
    pub window_ns: u64,
}

impl DeviceActivity {
    /// The share of the window with nothing running on the device (1 when nothing ran at all).
    pub fn idle_share(&self) -> f64 {
        if self.window_ns == 0 {
            return 1.0;
        }
        1.0 - self.busy_ns as f64 / self.window_ns as f64
    }
}

/// What one recording holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Every event, in the profiler's order.
    pub events: Vec<Event>,
}

impl Profile {
    /// Host ops by name, most self time first.
    pub fn ops(&self) -> Vec<OpStat> {
        let mut host: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::HostOp)
            .collect();
        // Parents before their children: by thread, then start, then the longer first.
        host.sort_by(|a, b| {
            (a.thread, a.start_ns, std::cmp::Reverse(a.dur_ns)).cmp(&(
                b.thread,
                b.start_ns,
                std::cmp::Reverse(b.dur_ns),
            ))
        });
        let mut children = vec![0u64; host.len()];
        let mut stack: Vec<usize> = Vec::new();
        for (i, e) in host.iter().enumerate() {
            while let Some(&top) = stack.last() {
                let t = host[top];
                if t.thread != e.thread || t.end_ns() <= e.start_ns {
                    stack.pop();
                } else {
                    break;
                }
            }
            if let Some(&parent) = stack.last() {
                children[parent] += e.dur_ns;
            }
            stack.push(i);
        }
        by_name(
            host.iter()
                .zip(children)
                .map(|(e, child)| (*e, e.dur_ns.saturating_sub(child))),
        )
    }

    /// Device kernels by name, most time first.
    pub fn kernels(&self) -> Vec<OpStat> {
        by_name(
            self.events
                .iter()
                .filter(|e| e.kind == EventKind::Kernel)
                .map(|e| (e, e.dur_ns)),
        )
    }

    /// Kernel and copy counts, and the time the device was busy within the window.
    pub fn device(&self) -> DeviceActivity {
        let mut spans: Vec<(u64, u64)> = self
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Kernel | EventKind::DeviceMemory))
            .map(|e| (e.start_ns, e.end_ns()))
            .collect();
        spans.sort_unstable();
        let mut busy = 0u64;
        let mut current: Option<(u64, u64)> = None;
        for (s, e) in spans.iter().copied() {
            current = match current {
                Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
                Some((cs, ce)) => {
                    busy += ce - cs;
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((cs, ce)) = current {
            busy += ce - cs;
        }
        let start = self.events.iter().map(|e| e.start_ns).min().unwrap_or(0);
        let end = self.events.iter().map(Event::end_ns).max().unwrap_or(0);
        DeviceActivity {
            kernels: self
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Kernel)
                .count(),
            memory_ops: self
                .events
                .iter()
                .filter(|e| e.kind == EventKind::DeviceMemory)
                .count(),
            busy_ns: busy,
            window_ns: end.saturating_sub(start),
        }
    }

    /// The `top` host ops by self time as a markdown table, with each one's share of all self time.
    pub fn op_table(&self, top: usize) -> String {
        table("host op", &self.ops(), top)
    }

    /// The `top` device kernels by time as a markdown table.
    pub fn kernel_table(&self, top: usize) -> String {
        table("kernel", &self.kernels(), top)
    }
}

/// Events (each with its self time) summed by name, most self time first.
fn by_name<'a>(events: impl Iterator<Item = (&'a Event, u64)>) -> Vec<OpStat> {
    let mut by_name: HashMap<&str, OpStat> = HashMap::new();
    for (e, self_ns) in events {
        let s = by_name.entry(e.name.as_str()).or_insert_with(|| OpStat {
            name: e.name.clone(),
            calls: 0,
            self_ns: 0,
            total_ns: 0,
        });
        s.calls += 1;
        s.self_ns += self_ns;
        s.total_ns += e.dur_ns;
    }
    let mut v: Vec<OpStat> = by_name.into_values().collect();
    v.sort_by(|a, b| b.self_ns.cmp(&a.self_ns).then_with(|| a.name.cmp(&b.name)));
    v
}

fn table(what: &str, stats: &[OpStat], top: usize) -> String {
    let all: u64 = stats.iter().map(|s| s.self_ns).sum();
    let mut out =
        format!("| {what} | calls | self ms | share | total ms |\n|---|---|---|---|---|\n");
    for s in stats.iter().take(top) {
        let name: String = s.name.chars().take(60).collect();
        out.push_str(&format!(
            "| {name} | {} | {:.2} | {:.1}% | {:.2} |\n",
            s.calls,
            s.self_ns as f64 / 1e6,
            100.0 * s.self_ns as f64 / all.max(1) as f64,
            s.total_ns as f64 / 1e6
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile of events (name, kind, start, duration) on one thread.
    fn profile(events: &[(&str, EventKind, u64, u64)]) -> Profile {
        let events = events.iter().map(|&(name, kind, start_ns, dur_ns)| Event {
            name: name.into(),
            kind,
            start_ns,
            dur_ns,
            thread: 1,
        });
        Profile {
            events: events.collect(),
        }
    }

    #[test]
    fn self_time_excludes_the_ops_an_op_calls() {
        use EventKind::HostOp;
        let p = profile(&[
            ("aten::linear", HostOp, 0, 100),
            ("aten::addmm", HostOp, 10, 80),
            ("aten::relu", HostOp, 100, 5),
        ]);
        let ops = p.ops();
        let get = |n: &str| ops.iter().find(|o| o.name == n).cloned().unwrap();
        assert_eq!(get("aten::linear").self_ns, 20);
        assert_eq!(get("aten::linear").total_ns, 100);
        assert_eq!(get("aten::addmm").self_ns, 80);
        assert_eq!(get("aten::relu").self_ns, 5);
        assert_eq!(ops[0].name, "aten::addmm");
    }

    #[test]
    fn device_busy_time_merges_overlapping_kernels() {
        use EventKind::{DeviceMemory, HostOp, Kernel};
        let p = profile(&[
            ("step", HostOp, 0, 100),
            ("k1", Kernel, 10, 20),
            ("k2", Kernel, 20, 20),
            ("copy", DeviceMemory, 60, 10),
        ]);
        let d = p.device();
        assert_eq!((d.kernels, d.memory_ops), (2, 1));
        assert_eq!(d.busy_ns, 40);
        assert_eq!(d.window_ns, 100);
        assert!((d.idle_share() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn records_the_ops_of_a_forward_and_backward_on_the_cpu() {
        use tch::{Device, Kind, Tensor};
        let a = Tensor::randn([64, 64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let profiler = Profiler::start(false).unwrap();
        let loss = a.matmul(&a).relu().sum(Kind::Float);
        loss.backward();
        let profile = profiler.stop().unwrap();
        let ops = profile.ops();
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        assert!(names.contains(&"aten::mm"), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("MmBackward0")),
            "the backward's nodes are recorded: {names:?}"
        );
        let mm = ops.iter().find(|o| o.name == "aten::mm").unwrap();
        assert!(
            mm.calls >= 3,
            "one forward and two backward products: {}",
            mm.calls
        );
        assert!(mm.self_ns > 0 && mm.self_ns <= mm.total_ns);
        let d = profile.device();
        assert_eq!((d.kernels, d.memory_ops, d.busy_ns), (0, 0, 0));
        assert!(d.window_ns > 0);
        assert!(profile.op_table(5).contains("aten::mm"));
        // A second recording after the first works (the profiler was released).
        let again = Profiler::start(false).unwrap();
        drop(again);
        assert!(Profiler::start(false).unwrap().stop().is_ok());
    }
}
