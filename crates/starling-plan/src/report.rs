//! Human-readable tables of plans and validation.

use crate::memory::Sharding;
use crate::plan::{compute_optimal, plan, Plan, PlanInput, PostVolume, Tokens};
use crate::validate::ValidationRow;
use crate::{gpu, ModelSpec, Result};
use std::fmt::Write;

/// `1.23e9` → "1.23 B" style numbers.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (d, s) = if a >= 1e15 {
        (1e15, " P")
    } else if a >= 1e12 {
        (1e12, " T")
    } else if a >= 1e9 {
        (1e9, " B")
    } else if a >= 1e6 {
        (1e6, " M")
    } else if a >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, "")
    };
    format!("{:.2}{s}", v / d)
}

fn gb(b: f64) -> String {
    format!("{:.1} GB", b / 1e9)
}

/// The plan as a table.
pub fn plan_table(p: &Plan) -> String {
    let i = &p.input;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model        {} params ({} active), context {}",
        si(i.model.params),
        si(i.model.active_params),
        i.model.context
    );
    let _ = writeln!(
        s,
        "hardware     {} x {} ({:?}, MFU {:.1}%: {})",
        i.gpus,
        i.gpu.name,
        i.precision,
        p.mfu * 100.0,
        p.mfu_source
    );
    let _ = writeln!(
        s,
        "tokens       {}  ({} FLOPs/token, total {:.3e} FLOPs)",
        si(p.tokens),
        si(p.flops_per_token),
        p.flops
    );
    let _ = writeln!(
        s,
        "throughput   {:.0} tokens/s per GPU, {} tokens/s in total",
        p.tokens_per_s_per_gpu,
        si(p.tokens_per_s)
    );
    let _ = writeln!(
        s,
        "time         {:.1} days of compute, {:.1} days wall ({:.1}% effective)",
        p.compute_days,
        p.wall_days,
        p.failures.effective_fraction * 100.0
    );
    let _ = writeln!(
        s,
        "GPU-hours    {} ({} compute)",
        si(p.gpu_hours),
        si(p.compute_gpu_hours)
    );
    let _ = writeln!(
        s,
        "cost         rent ${} at ${:.2}/GPU-h; buy ${} ; energy {} kWh = ${} (PUE {}, ${}/kWh)",
        si(p.rent_cost),
        i.rent_per_hour.unwrap_or(i.gpu.rent_per_hour),
        si(p.buy_cost),
        si(p.energy_kwh),
        si(p.energy_cost),
        i.pue,
        i.kwh_price
    );
    let _ = writeln!(s, "failures     job MTBF {:.1} h, ~{:.0} interruptions; checkpoint {:.1} s, interval {:.1} min (Young {:.1} min)",
        p.failures.cluster_mtbf_hours, p.interruptions, p.failures.checkpoint_seconds, p.failures.daly_interval_s / 60.0, p.failures.young_interval_s / 60.0);
    let _ = writeln!(
        s,
        "\nmemory per GPU ({} usable of {}), every GPU data parallel:",
        gb(p.memory.usable_bytes),
        gb(i.gpu.memory)
    );
    let _ = writeln!(s, "| strategy | weights | grads | optimizer | activations | act. recompute | total (recompute) | fits |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for m in &p.memory.strategies {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.sharding.name(),
            gb(m.weights),
            gb(m.gradients),
            gb(m.optimizer),
            gb(m.activations),
            gb(m.activations_recompute),
            gb(m.total_recompute()),
            if m.total_recompute() <= p.memory.usable_bytes {
                "yes"
            } else {
                "no"
            }
        );
    }
    match &p.memory.layout {
        Some(l) => {
            let _ = writeln!(s, "smallest layout that fits: tensor {} x pipeline {} x data {} with {} and recomputation: {} per GPU",
                l.tp, l.pp, l.dp, l.sharding.name(), gb(l.bytes_per_gpu));
        }
        None => {
            let _ = writeln!(s, "DOES NOT FIT: no tensor (<= 8) x pipeline layout with ZeRO-3 and recomputation fits {} per GPU", gb(p.memory.usable_bytes));
        }
    }
    match (&p.memory.starling, &p.starling_comm) {
        (Some(l), Some(c)) => {
            let _ = writeln!(
                s,
                "starling runs: {} with recomputation, {} per GPU (no pipeline parallelism: a pipeline layout above stays on paper); \
                 per step {:.2} s compute + {:.2} s data-parallel + {:.2} s tensor-parallel communication, counted as not overlapped ({:.2}x the compute)",
                c.layout,
                gb(l.bytes_per_gpu),
                c.step_s,
                c.data_s,
                c.tensor_s,
                c.slowdown()
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "starling runs: nothing that fits (data parallel, ZeRO-1, FSDP with tensor parallel <= 8; it has no pipeline parallelism)"
            );
        }
    }
    for c in &p.network {
        let _ = writeln!(
            s,
            "all-reduce   {}: {} of bf16 gradients per rank over {} ranks ({}) = {:.2} s per step of {:.2} s compute ({:.0}%; {} tokens per step)",
            c.layout,
            gb(c.grad_bytes),
            c.dp,
            c.link,
            c.allreduce_s,
            c.step_s,
            c.ratio * 100.0,
            si(p.input.batch_tokens)
        );
    }
    if let Some(d) = &p.data {
        let _ = writeln!(
            s,
            "\ndata: posts supply {} tokens after curation; the plan needs {} ({:.2} epochs): {}",
            si(d.available_tokens),
            si(d.needed_tokens),
            d.epochs,
            if d.suffices {
                "enough"
            } else {
                "NOT enough for one pass"
            }
        );
    }
    let _ = Sharding::ALL;
    s
}

/// The validation table.
pub fn validation_table(rows: &[ValidationRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| run | GPUs | MFU default | predicted GPU-h | +failures | published GPU-h | error | within 20% |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} x {} | {:.1}% | {} | {} | {} | {:+.1}% | {} |",
            r.run.name,
            r.run.gpus,
            r.run.gpu,
            r.mfu * 100.0,
            si(r.predicted),
            si(r.predicted_with_failures),
            si(r.run.gpu_hours),
            r.error * 100.0,
            if r.pass { "yes" } else { "no" }
        );
    }
    let passed = rows.iter().filter(|r| r.pass).count();
    let _ = writeln!(s, "\n{passed} of {} within ±20% (compute GPU-hours at each generation's default MFU; no per-run constants).", rows.len());
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(s, "- {}: {}", r.run.name, r.note);
    }
    let mut gens: Vec<(gpu::Generation, f64, &str)> = Vec::new();
    for r in rows {
        if let Some(g) = gpu::find(r.run.gpu) {
            if !gens.iter().any(|x| x.0 == g.generation) {
                let (m, src) = gpu::default_mfu(g.generation);
                gens.push((g.generation, m, src));
            }
        }
    }
    let _ = writeln!(s, "\nMFU defaults:");
    for (g, m, src) in gens {
        let _ = writeln!(s, "- {g:?} {:.1}%: {src}", m * 100.0);
    }
    s
}

/// The seed's question: 10,000 A100s at $10k each — what to train in 30 and 90 days.
pub fn twitter_2023() -> Result<String> {
    let a100 =
        *gpu::find("a100-40gb").ok_or_else(|| crate::Error::UnknownGpu("a100-40gb".into()))?;
    let gpus = 10_000;
    // Post volume assumptions: ~500M posts/day (Twitter's 2013-2023 public figure), ~30 tokens per
    // post with the document template, 10 years kept, 60% removed by curation (reposts, duplicates, spam).
    let posts = PostVolume {
        posts_per_day: 500e6,
        tokens_per_post: 30.0,
        years: 10.0,
        dedup_ratio: 0.6,
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "twitter-2023: {gpus} x {} bought at ${:.0} each = ${}",
        a100.name,
        a100.price,
        si(gpus as f64 * a100.price)
    );
    let _ = writeln!(
        s,
        "posts: {} per day x {} tokens x {} years, {:.0}% removed by curation\n",
        si(posts.posts_per_day),
        posts.tokens_per_post,
        posts.years,
        posts.dedup_ratio * 100.0
    );
    for days in [30.0, 90.0] {
        let mut base = PlanInput::new(ModelSpec::dense(1e9, 4096), Tokens::Chinchilla, a100, gpus);
        base.posts = Some(posts);
        let (n, d) = compute_optimal(a100, gpus, days, &base)?;
        base.model = ModelSpec::dense(n, 4096);
        base.tokens = Tokens::Count(d);
        let p = plan(&base)?;
        let _ = writeln!(
            s,
            "## {days:.0} days: compute-optimal {} parameters on {} tokens\n",
            si(n),
            si(d)
        );
        s.push_str(&plan_table(&p));
        let _ = writeln!(
            s,
            "rent vs buy: renting {:.0} days costs ${} ({:.0}% of the ${} purchase)",
            p.wall_days,
            si(p.rent_cost),
            p.rent_cost / p.buy_cost * 100.0,
            si(p.buy_cost)
        );
        let base = PlanInput::new(ModelSpec::dense(1e9, 4096), Tokens::Chinchilla, a100, gpus);
        match crate::plan::starling_largest(a100, gpus, days, &base)? {
            Some(q) => {
                let c = q.starling_comm.as_ref();
                let _ = writeln!(
                    s,
                    "starling itself: the largest compute-optimal model its trainer runs here in {days:.0} days is {} parameters on {} tokens ({}, {:.2}x the compute per step without overlap)\n",
                    si(q.input.model.params),
                    si(q.tokens),
                    c.map_or(String::new(), |c| c.layout.clone()),
                    c.map_or(1.0, |c| c.slowdown())
                );
            }
            None => {
                let _ = writeln!(s, "starling itself: no model of 100 M parameters or more\n");
            }
        }
    }
    Ok(s)
}
