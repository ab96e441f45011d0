//! `starling bench corpus`: throughput, memory and near-duplicate quality, side by side with
//! the raw JSON parse speed (sonic-rs) and Python datasketch on the same posts.

use anyhow::{bail, Context, Result};
use starling_corpus::dedup::{
    jaccard_sorted, optimal_bands, shingle_text, shingles, NearDupConfig, NearDupIndex,
};
use starling_corpus::synth::{SynthConfig, SynthFlavor};
use starling_corpus::{CorpusBuilder, CorpusConfig, Post};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::measure::{cpu_secs, peak_rss_mib, python, reset_peak_rss};

/// Options of `starling bench corpus`.
#[derive(clap::Args)]
pub struct CorpusBenchArgs {
    /// Synthetic v1.1 posts for the throughput runs.
    #[arg(long, default_value_t = 1_000_000)]
    posts: u64,
    /// Posts in the quality sample (exact Jaccard ground truth).
    #[arg(long, default_value_t = 20_000)]
    sample: u64,
    /// Texts in the near-dup speed comparison (datasketch is slow).
    #[arg(long, default_value_t = 50_000)]
    speed_sample: usize,
    /// Work directory (kept, so runs can be inspected).
    #[arg(long, default_value = "out/bench-corpus")]
    dir: PathBuf,
    /// Python with datasketch (default: $STARLING_PYTHON, then .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

struct Row {
    name: String,
    posts: u64,
    secs: f64,
    cpu: f64,
    bytes: u64,
    rss: f64,
}

/// Runs the corpus benchmark and prints its tables.
pub fn corpus(a: &CorpusBenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run `cargo run --release -p starling -- bench corpus` for real figures");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let input = a.dir.join(format!("synth-v1-{}.jsonl", a.posts));
    if !input.exists() {
        let t = Instant::now();
        starling_corpus::synth::write_file(
            &SynthConfig {
                posts: a.posts,
                flavor: SynthFlavor::V1,
                ..SynthConfig::default()
            },
            &input,
        )?;
        eprintln!(
            "generated {} in {:.1}s",
            input.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&input)?.len();
    let mut rows = Vec::new();

    // 1. Raw parse speed of the same bytes: sonic-rs DOM parse of every line.
    reset_peak_rss();
    let (t, c0) = (Instant::now(), cpu_secs());
    let mut lines = 0u64;
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&input)?);
    for line in f.split(b'\n') {
        let line = line?;
        let v: sonic_rs::Value = sonic_rs::from_slice(&line).context("sonic-rs parse")?;
        std::hint::black_box(&v);
        lines += 1;
    }
    rows.push(Row {
        name: "raw parse (sonic-rs DOM, lines)".into(),
        posts: lines,
        secs: t.elapsed().as_secs_f64(),
        cpu: cpu_secs() - c0,
        bytes,
        rss: peak_rss_mib(),
    });

    // 2. Parse + normalise + exact dedup (near-dup off), and 3. the full pipeline.
    let mut dedup_bpp = 0.0;
    let mut bands_rows = (0, 0);
    for (name, near) in [
        ("parse+normalise+exact dedup", None),
        (
            "full pipeline with MinHash-LSH",
            Some(NearDupConfig::default()),
        ),
    ] {
        let mut cfg = CorpusConfig::default();
        cfg.curate.near_dup = near;
        let out = a.dir.join(if near.is_some() {
            "corpus-full"
        } else {
            "corpus-exact"
        });
        reset_peak_rss();
        let (t, c0) = (Instant::now(), cpu_secs());
        let m = CorpusBuilder::new(cfg, vec![input.clone()]).build(&out, &mut |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        if !m.counts.balanced() {
            bail!("counts do not add up: {:?}", m.counts);
        }
        if near.is_some() {
            dedup_bpp = m.dedup.near_bytes_per_post;
            bands_rows = m.dedup.bands_rows;
        }
        rows.push(Row {
            name: name.into(),
            posts: m.counts.read,
            secs,
            cpu: cpu_secs() - c0,
            bytes,
            rss: peak_rss_mib(),
        });
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("\n## corpus throughput ({} synthetic v1.1 posts, {:.1} MB, {cores} cores; raw parse is one thread)\n", a.posts, bytes as f64 / 1e6);
    println!("| stage | posts | wall s | CPU s | posts/s | posts/s per CPU-s | MB/s | peak RSS MiB | MB/s vs raw parse |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let raw_mbs = rows[0].bytes as f64 / 1e6 / rows[0].secs;
    for r in &rows {
        let mbs = r.bytes as f64 / 1e6 / r.secs;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} |",
            r.name,
            r.posts,
            r.secs,
            r.cpu,
            r.posts as f64 / r.secs,
            r.posts as f64 / r.cpu.max(1e-9),
            mbs,
            r.rss,
            mbs / raw_mbs
        );
    }
    println!("\nnear-dup index: {dedup_bpp:.0} bytes/post (LSH {} bands x {} rows + 128 8-bit signature values)", bands_rows.0, bands_rows.1);

    // 4. Near-dup step alone, starling vs datasketch, on the texts the full pipeline deduplicated.
    // datasketch runs ~1.4k posts/s: both engines get the same first `speed_sample` texts.
    let texts_path = a.dir.join("near-dup-texts.jsonl");
    let mut texts = dedup_texts(&a.dir.join("corpus-exact"), &texts_path)?;
    if texts.len() > a.speed_sample {
        texts.truncate(a.speed_sample);
        write_texts(&texts, &texts_path)?;
    }
    let t = Instant::now();
    let mut idx = NearDupIndex::new(NearDupConfig::default());
    let mut dups = 0;
    for (i, s) in texts.iter().enumerate() {
        dups += idx.check_and_insert(s, i as u32).is_some() as u64;
    }
    let ours = texts.len() as f64 / t.elapsed().as_secs_f64();
    let (b, r) = idx.params();
    // datasketch as its users run it: its own default band choice.
    let (db, dr) = optimal_bands(0.8, 128, 0.5);
    let py = python(a.python.as_deref());
    let ds = run_datasketch(&py, &texts_path, db, dr, false)?;
    let theirs = ds["posts_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n## near-duplicate step alone ({} texts, threshold 0.8, 128 perms, 5-char shingles)\n",
        texts.len()
    );
    println!("| engine | LSH bands x rows | posts/s | ratio |\n|---|---|---|---|");
    println!(
        "| starling NearDupIndex | {b}x{r} + 8-bit verify | {ours:.0} | {:.1}x |",
        ours / theirs
    );
    println!("| datasketch 1.6.5 MinHashLSH | {db}x{dr} | {theirs:.0} | 1.0x |");
    println!("\nstarling flagged {dups} near-duplicates");

    // 5. Quality against exact Jaccard on a sample with planted pairs.
    quality(a, &py)?;
    Ok(())
}

/// Writes the shingle texts of the posts that reach dedup (kept + near/exact duplicates) and returns them.
fn dedup_texts(corpus: &Path, out: &Path) -> Result<Vec<String>> {
    let c = starling_corpus::Corpus::open(corpus)?;
    let mut texts = Vec::new();
    c.for_each_post(&mut |p: Post| {
        if matches!(p.verdict, starling_corpus::Verdict::Kept) {
            texts.push(shingle_text(&p.train_text));
        }
    })?;
    write_texts(&texts, out)?;
    Ok(texts)
}

fn write_texts(texts: &[String], out: &Path) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for t in texts {
        serde_json::to_writer(&mut w, t)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

fn run_datasketch(
    py: &Path,
    texts: &Path,
    bands: usize,
    rows: usize,
    eval: bool,
) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_datasketch.py");
    let mut cmd = Command::new(py);
    cmd.arg(&script)
        .arg(texts)
        .args(["--bands", &bands.to_string(), "--rows", &rows.to_string()]);
    if eval {
        cmd.arg("--eval");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} (set up with scripts/setup.sh)", py.display()))?;
    if !out.status.success() {
        bail!(
            "datasketch run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn quality(a: &CorpusBenchArgs, py: &Path) -> Result<()> {
    let input = a.dir.join(format!("synth-quality-{}.jsonl", a.sample));
    starling_corpus::synth::write_file(
        &SynthConfig {
            posts: a.sample,
            seed: 7,
            near_dup: 0.15,
            ..SynthConfig::default()
        },
        &input,
    )?;
    let out = a.dir.join("corpus-quality");
    let mut cfg = CorpusConfig::default();
    cfg.curate.near_dup = None;
    cfg.curate.exact_dedup = false;
    CorpusBuilder::new(cfg, vec![input]).build(&out, &mut |_| {})?;
    let texts_path = a.dir.join("quality-texts.jsonl");
    let texts = dedup_texts(&out, &texts_path)?;
    let threshold = NearDupConfig::default().threshold;
    // Ground truth: does an earlier post have exact Jaccard >= threshold? (prefix-filtered all pairs)
    let t = Instant::now();
    let (truth, hist) = exact_truth(&texts, threshold);
    let truth_secs = t.elapsed().as_secs_f64();
    // starling: query before insert, insert every post.
    let mut idx = NearDupIndex::new(NearDupConfig::default());
    let ours: Vec<bool> = texts
        .iter()
        .enumerate()
        .map(|(i, s)| idx.query_then_insert(s, i as u32))
        .collect();
    let (b, r) = optimal_bands(threshold, 128, 0.5);
    let ds = run_datasketch(py, &texts_path, b, r, true)?;
    let theirs: Vec<bool> = ds["flags"]
        .as_array()
        .map(|v| v.iter().map(|x| x.as_bool().unwrap_or(false)).collect())
        .unwrap_or_default();
    println!("\n## near-duplicate quality ({} posts, exact Jaccard by brute force in {truth_secs:.1}s, threshold {threshold})\n", texts.len());
    println!(
        "best-match Jaccard of posts with a planted/real earlier match: {}",
        hist.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\n| engine | true dups | flagged | precision | recall |\n|---|---|---|---|---|");
    for (name, pred) in [("starling", &ours), ("datasketch", &theirs)] {
        let tp = pred.iter().zip(&truth).filter(|(p, t)| **p && **t).count() as f64;
        let flagged = pred.iter().filter(|p| **p).count() as f64;
        let positives = truth.iter().filter(|t| **t).count() as f64;
        println!(
            "| {name} | {positives} | {flagged} | {:.3} | {:.3} |",
            tp / flagged.max(1.0),
            tp / positives.max(1.0)
        );
    }
    Ok(())
}

/// For each text, whether an earlier text has exact Jaccard >= t; plus a histogram of best matches.
fn exact_truth(texts: &[String], t: f64) -> (Vec<bool>, Vec<(String, u64)>) {
    let sets: Vec<Vec<u64>> = texts
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            shingles(s, 5, &mut v);
            v
        })
        .collect();
    // Prefix filtering (exact): order shingles rare-first; two sets with J >= 0.5 share a shingle
    // within their first |x| - ceil(0.5 |x|) + 1 shingles. 0.5 bounds the histogram we print.
    let mut df: HashMap<u64, u32> = HashMap::new();
    for s in &sets {
        for h in s {
            *df.entry(*h).or_default() += 1;
        }
    }
    let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut truth = vec![false; texts.len()];
    let mut buckets = [0u64; 5];
    for (i, s) in sets.iter().enumerate() {
        let mut ordered = s.clone();
        ordered.sort_by_key(|h| (df[h], *h));
        let prefix = ordered.len() - ((0.5 * ordered.len() as f64).ceil() as usize) + 1;
        let mut cands: Vec<u32> = Vec::new();
        for h in ordered.iter().take(prefix.min(ordered.len())) {
            if let Some(v) = index.get(h) {
                cands.extend(v);
            }
        }
        cands.sort_unstable();
        cands.dedup();
        let best = cands
            .iter()
            .map(|&j| jaccard_sorted(s, &sets[j as usize]))
            .fold(0.0f64, f64::max);
        truth[i] = best >= t;
        if best >= 0.5 {
            buckets[(((best - 0.5) / 0.1) as usize).min(4)] += 1;
        }
        for h in ordered.iter().take(prefix.min(ordered.len())) {
            index.entry(*h).or_default().push(i as u32);
        }
    }
    let labels = ["0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1.0"];
    (
        truth,
        labels
            .iter()
            .zip(buckets)
            .map(|(l, n)| (l.to_string(), n))
            .collect(),
    )
}
