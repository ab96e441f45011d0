//! Building a corpus directory: read every input, curate every post, write shards, quarantine,
//! manifest and data card; and reading one back.

use crate::bots::{AuthorProfiles, BotAuthor, BotModel};
use crate::curate::{CurateConfig, CurateStats, Curator, Prepared};
use crate::error::{Error, Result};
use crate::hash::fx64;
use crate::order::{sort_key, spill_dir, Entry, Sorter};
use crate::post::{Post, Verdict};
use crate::read::{
    read_file, Compression, Deletion, Format, Item, Quarantined, ReadOptions, BROKEN_STREAM,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use starling_artifacts::{sha256_file, write_atomic, AtomicFile};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// zstd level of post shards: level 1 compresses several times faster than 3 for ~10% more bytes.
const ZSTD_LEVEL: i32 = 1;

/// Version of the corpus directory format written in `manifest.json`.
pub const FORMAT_VERSION: u32 = 1;

/// Everything that shapes a corpus build (written into the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusConfig {
    /// How inputs are read.
    pub read: ReadOptions,
    /// How posts are curated.
    pub curate: CurateConfig,
    /// Share of kept posts held out for validation: the newest by time, else by id hash. By default 0.02.
    pub val_fraction: f64,
    /// Posts per shard. By default 100,000.
    pub shard_posts: usize,
    /// Memory for sorting posts by time before curation, in MiB; past it, sorted runs go to disk
    /// inside the output directory. By default 2,048.
    pub sort_memory_mb: usize,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            read: ReadOptions::default(),
            curate: CurateConfig::default(),
            val_fraction: 0.02,
            shard_posts: 100_000,
            sort_memory_mb: 2048,
        }
    }
}

impl CorpusConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::Config {
                field: "val_fraction",
                message: format!("{} is not in [0, 1)", self.val_fraction),
            });
        }
        if self.shard_posts == 0 {
            return Err(Error::Config {
                field: "shard_posts",
                message: "must be at least 1".into(),
            });
        }
        if let Some(n) = &self.curate.near_dup {
            if !(0.0..=1.0).contains(&n.threshold) || n.num_perm == 0 || n.shingle == 0 {
                return Err(Error::Config {
                    field: "curate.near_dup",
                    message: "threshold in [0, 1], num_perm and shingle >= 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// One input file as recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputRecord {
    /// Path as given.
    pub path: String,
    /// Size in bytes (compressed, as stored).
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Format read.
    pub format: Format,
    /// Compression undone.
    pub compression: Compression,
    /// Post instances read from it (nested ones included).
    pub posts: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Non-post records (notices, users, count buckets).
    pub notices: u64,
    /// Deletion requests it carried.
    pub deletions: u64,
}

/// Counts that must add up: `read = kept + Σ filtered + quarantined`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Post instances read plus records quarantined.
    pub read: u64,
    /// Posts kept for training.
    pub kept: u64,
    /// Posts kept out of training, by verdict.
    pub filtered: BTreeMap<String, u64>,
    /// Records quarantined.
    pub quarantined: u64,
    /// Posts written to the shards (kept and filtered-but-usable).
    pub written: u64,
    /// Non-post records, by kind (not part of `read`).
    pub notices: BTreeMap<String, u64>,
}

impl Counts {
    /// True when read = kept + filtered + quarantined.
    pub fn balanced(&self) -> bool {
        self.read == self.kept + self.filtered.values().sum::<u64>() + self.quarantined
    }

    fn add(&mut self, v: Verdict, n: i64) {
        let slot = if v == Verdict::Kept {
            &mut self.kept
        } else {
            self.filtered.entry(v.name().to_string()).or_default()
        };
        *slot = (*slot as i64 + n) as u64;
    }
}

/// How posts are split into train and validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Split {
    /// "time" when kept posts carry times, else "hash".
    pub method: String,
    /// Share of kept posts in validation.
    pub val_fraction: f64,
    /// Kept posts created at or after this time are validation.
    pub val_from: Option<DateTime<Utc>>,
    /// Posts without a time are validation when `hash(id) % 10000 < hash_cutoff`.
    pub hash_cutoff: u64,
    /// Kept posts in train.
    pub train: u64,
    /// Kept posts in validation.
    pub val: u64,
}

impl Split {
    /// Whether a kept post belongs to validation.
    pub fn is_val(&self, post: &Post) -> bool {
        match (&self.val_from, post.created_at) {
            (Some(from), Some(t)) => t >= *from,
            _ => fx64(post.id.as_bytes()) % 10_000 < self.hash_cutoff,
        }
    }
}

/// One shard file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRecord {
    /// File name inside the corpus directory.
    pub file: String,
    /// Posts in it.
    pub posts: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
}

/// What was removed because it was deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// Post ids requested for deletion (notices, compliance records, lists).
    pub requested_posts: u64,
    /// User ids requested for deletion.
    pub requested_users: u64,
    /// Ids of posts that were read and removed, sorted.
    pub deleted_posts: Vec<String>,
    /// User ids whose posts were removed, sorted.
    pub deleted_users: Vec<String>,
}

/// `manifest.json`: what went in, how, and what came out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Corpus directory format version.
    pub format_version: u32,
    /// Whether any input was synthetic (generated by `starling synth`).
    pub synthetic: bool,
    /// Inputs with checksums.
    pub inputs: Vec<InputRecord>,
    /// User-supplied deletion lists with checksums.
    pub deletion_lists: Vec<InputRecord>,
    /// The configuration.
    pub config: CorpusConfig,
    /// The counts.
    pub counts: Counts,
    /// Normalisation and language totals.
    pub stats: CurateStats,
    /// Dedup index size.
    pub dedup: DedupSummary,
    /// Train/validation split.
    pub split: Split,
    /// Post shards.
    pub shards: Vec<ShardRecord>,
    /// The quarantine file.
    pub quarantine: ShardRecord,
    /// Deletions applied.
    pub lineage: Lineage,
    /// Authors judged automated.
    #[serde(default)]
    pub bots: BotSummary,
    /// Things an operator should look at (also logged as warnings).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What the author-level automation rule did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BotSummary {
    /// Authors profiled.
    pub authors_profiled: u64,
    /// Authors judged automated.
    pub authors_flagged: u64,
    /// Posts read of those authors.
    pub posts_of_flagged: u64,
    /// The flagged authors with the most posts (up to 25), with the reason.
    pub top: Vec<BotAuthor>,
}

/// Size of the dedup state at the end of the build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DedupSummary {
    /// Posts in the near-duplicate index.
    pub near_indexed: u64,
    /// LSH bands and rows.
    pub bands_rows: (usize, usize),
    /// Approximate bytes of index per indexed post.
    pub near_bytes_per_post: f64,
}

/// Progress reported while building.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Files finished.
    pub files_done: usize,
    /// Files in all.
    pub files_total: usize,
    /// Posts read so far.
    pub posts: u64,
}

/// Builds a corpus directory from input files.
#[derive(Debug)]
pub struct CorpusBuilder {
    config: CorpusConfig,
    inputs: Vec<PathBuf>,
    deletion_lists: Vec<PathBuf>,
}

struct ShardSink {
    dir: PathBuf,
    per_shard: usize,
    current: Option<(zstd::Encoder<'static, AtomicFile>, u64)>,
    done: Vec<ShardRecord>,
    pending: Vec<u8>,
}

impl ShardSink {
    fn name(i: usize) -> String {
        format!("posts-{i:05}.jsonl.zst")
    }

    /// Appends one serialised post (a JSON line with its newline); compressor input goes in
    /// 256 KiB blocks (small writes cost).
    fn write_line(&mut self, line: &[u8]) -> Result<()> {
        if self.current.is_none() {
            let path = self.dir.join(Self::name(self.done.len()));
            let f = AtomicFile::create(&path)?;
            let enc = zstd::Encoder::new(f, ZSTD_LEVEL).map_err(|e| Error::io(&path, e))?;
            self.current = Some((enc, 0));
        }
        let Some((_, n)) = self.current.as_mut() else {
            return Ok(());
        };
        self.pending.extend_from_slice(line);
        *n += 1;
        let full = *n as usize >= self.per_shard;
        if self.pending.len() >= 256 << 10 {
            self.flush_pending()?;
        }
        if full {
            self.close()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if let Some((enc, _)) = self.current.as_mut() {
            enc.write_all(&self.pending)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        self.pending.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.flush_pending()?;
        if let Some((enc, n)) = self.current.take() {
            let file = Self::name(self.done.len());
            let f = enc
                .finish()
                .map_err(|e| Error::io(self.dir.join(&file), e))?;
            let (sha256, bytes) = f.finish()?;
            self.done.push(ShardRecord {
                file,
                posts: n,
                bytes,
                sha256,
            });
        }
        Ok(())
    }
}

/// Streaming tallies for the data card.
#[derive(Default)]
struct CardStats {
    langs: HashMap<String, u64>,
    hashtags: HashMap<String, u64>,
    sources: HashMap<String, u64>,
    lengths: [u64; 16],
}

impl CorpusBuilder {
    /// A builder over `inputs` (files, or directories read recursively in name order).
    pub fn new(config: CorpusConfig, inputs: Vec<PathBuf>) -> Self {
        Self {
            config,
            inputs,
            deletion_lists: Vec::new(),
        }
    }

    /// Adds a file of post ids and/or `user:ID` lines whose posts must be removed everywhere.
    pub fn deletion_list(mut self, path: PathBuf) -> Self {
        self.deletion_lists.push(path);
        self
    }

    /// Reads, curates and writes everything into `out`; returns the manifest (also written there).
    ///
    /// Three threads in a pipeline, each in input order (so output bytes are deterministic):
    /// reading and parsing; curation and dedup; serialising and compressing shards.
    pub fn build(&self, out: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Manifest> {
        self.config.validate()?;
        let build_start = std::time::Instant::now();
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let files = expand_inputs(&self.inputs)?;
        let mut deleted_posts: HashSet<String> = HashSet::new();
        let mut deleted_users: HashSet<String> = HashSet::new();
        let mut deletion_records = Vec::new();
        for list in &self.deletion_lists {
            let (posts, users) = read_deletion_list(list)?;
            let (sha256, bytes) = sha256_file(list)?;
            deletion_records.push(InputRecord {
                path: list.display().to_string(),
                bytes,
                sha256,
                format: Format::Text,
                compression: Compression::None,
                posts: 0,
                quarantined: 0,
                notices: 0,
                deletions: (posts.len() + users.len()) as u64,
            });
            deleted_posts.extend(posts);
            deleted_users.extend(users);
        }
        // Deletions may come after the posts they delete (stream notices, compliance files):
        // find them all first, so a deleted post is never written.
        for file in &files {
            crate::read::scan_deletions(file, &self.config.read, &mut |d| match d {
                Deletion::Post(id) => {
                    deleted_posts.insert(id);
                }
                Deletion::User(id) => {
                    deleted_users.insert(id);
                }
            })?;
        }

        let mut st = BuildState {
            curator: Curator::new(self.config.curate.clone()),
            counts: Counts::default(),
            seen_ids: HashSet::new(),
            removed_posts: Vec::new(),
            removed_users: HashSet::new(),
            kept_times: Vec::new(),
            kept_untimed: Vec::new(),
            card: CardStats::default(),
            synthetic: false,
            by_file: HashMap::new(),
        };
        let qpath = out.join("quarantine.jsonl");
        let mut quarantine = AtomicFile::create(&qpath)?;
        let mut inputs = Vec::new();
        let mut prog = Progress {
            files_done: 0,
            files_total: files.len(),
            posts: 0,
        };
        let read_opts = &self.config.read;
        let shard_posts = self.config.shard_posts;
        let mut sorter = Sorter::new(spill_dir(out), self.config.sort_memory_mb << 20);
        let mut profiles = AuthorProfiles::default();
        // Compressed inputs that broke off part-way (their records before the break are read).
        let mut broken_streams: Vec<String> = Vec::new();
        // Phase 1: read, prepare (W threads), profile authors and sort by (time, id): no verdict
        // that depends on other posts is decided before every post is in.
        std::thread::scope(|scope| -> Result<()> {
            // reader → W preparers (batch k to preparer k % W) → this thread, reading the
            // preparers' outputs round-robin, so order is restored exactly.
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8);
            let mut to_workers = Vec::new();
            let mut from_workers = Vec::new();
            for _ in 0..workers {
                let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<RawMsg>(4);
                let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<ReadMsg>(4);
                let preparer = st.curator.preparer();
                scope.spawn(move || {
                    for msg in in_rx {
                        let out = match msg {
                            RawMsg::Items(items) => ReadMsg::Items(
                                items
                                    .into_iter()
                                    .map(|item| match item {
                                        Item::Post(mut post) => {
                                            match preparer.try_prepare(&mut post) {
                                                Ok(prep) => Work::Post(post, prep),
                                                Err(panic) => Work::Other(panicked(&post, &panic)),
                                            }
                                        }
                                        other => Work::Other(other),
                                    })
                                    .collect(),
                            ),
                            RawMsg::FileDone(h, r) => ReadMsg::FileDone(h, r),
                        };
                        if out_tx.send(out).is_err() {
                            return;
                        }
                    }
                });
                to_workers.push(in_tx);
                from_workers.push(out_rx);
            }
            let files_ref = &files;
            let reader = scope.spawn(move || {
                let mut k = 0usize;
                let mut send = |msg: RawMsg| {
                    let ok = to_workers[k % to_workers.len()].send(msg).is_ok();
                    k += 1;
                    ok
                };
                for file in files_ref {
                    let hashed = sha256_file(file).map_err(Error::from);
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut alive = true;
                    let mut sink = |item: Item| {
                        batch.push(item);
                        if batch.len() >= BATCH && alive {
                            alive = send(RawMsg::Items(std::mem::replace(
                                &mut batch,
                                Vec::with_capacity(BATCH),
                            )));
                        }
                    };
                    // A reader that panics costs its file, not the run: the error names it.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        read_file(file, read_opts, &mut sink)
                    }))
                    .unwrap_or_else(|p| {
                        Err(Error::Format {
                            path: file.clone(),
                            line: 0,
                            message: format!(
                                "reader failed: {}",
                                starling_text::panic_message(p.as_ref())
                            ),
                        })
                    });
                    if !send(RawMsg::Items(batch)) || !send(RawMsg::FileDone(hashed, result)) {
                        return;
                    }
                }
            });
            // Owning the receivers: leaving the loop early drops them, which unblocks the
            // preparers and then the reader, so joining it cannot hang.
            let item_rx =
                (0..).map_while(move |k: usize| from_workers[k % from_workers.len()].recv().ok());
            let mut file_iter = files.iter();
            let mut rec = new_input(file_iter.next());
            let mut outcome: Result<()> = Ok(());
            let mut profiled: HashSet<u64> = HashSet::new();
            for msg in item_rx {
                match msg {
                    ReadMsg::Items(items) => {
                        for item in items {
                            match item {
                                Work::Post(post, mut prep) => {
                                    rec.posts += 1;
                                    prog.posts += 1;
                                    let signal = prep.signal.take();
                                    let deleted = deleted_posts.contains(&post.id)
                                        || post
                                            .author_id
                                            .as_ref()
                                            .is_some_and(|a| deleted_users.contains(a));
                                    // An author is judged on its own timeline: copies nested
                                    // in others' reposts and quotes are what others chose, and
                                    // which copy of a post comes first must not matter.
                                    let own = !post.origin.nested && !deleted;
                                    if let (Some(author), Some(signal), true) =
                                        (AuthorProfiles::author_of(&post), signal, own)
                                    {
                                        if profiled.insert(fx64(post.id.as_bytes())) {
                                            let t = post.created_at.map(|t| t.timestamp_millis());
                                            profiles.observe(author, &signal, t);
                                        }
                                    }
                                    if let Err(e) = sorter.push(Entry {
                                        key: sort_key(&post),
                                        post,
                                        prep,
                                    }) {
                                        outcome = Err(e);
                                    }
                                }
                                Work::Other(Item::Post(_)) => {}
                                Work::Other(Item::Deletion(_)) => rec.deletions += 1,
                                Work::Other(Item::Notice(kind)) => {
                                    rec.notices += 1;
                                    *st.counts.notices.entry(kind.to_string()).or_default() += 1;
                                }
                                Work::Other(Item::Quarantined(q)) => {
                                    if q.line == 0 && q.reason.starts_with(BROKEN_STREAM) {
                                        broken_streams.push(format!("{}: {}", q.file, q.reason));
                                    }
                                    rec.quarantined += 1;
                                    st.counts.read += 1;
                                    st.counts.quarantined += 1;
                                    let line = serde_json::to_vec(&q).unwrap_or_default();
                                    if let Err(e) = quarantine
                                        .write_all(&line)
                                        .and_then(|_| quarantine.write_all(b"\n"))
                                    {
                                        outcome = Err(Error::io(&qpath, e));
                                    }
                                }
                            }
                        }
                        progress(prog);
                    }
                    ReadMsg::FileDone(hashed, result) => {
                        let step =
                            hashed.and_then(|(sha256, bytes)| result.map(|sn| (sha256, bytes, sn)));
                        match step {
                            Ok((sha256, bytes, sniffed)) => {
                                rec.sha256 = sha256;
                                rec.bytes = bytes;
                                rec.format = sniffed.format;
                                rec.compression = sniffed.compression;
                                if rec.posts + rec.quarantined + rec.notices + rec.deletions == 0 {
                                    tracing::warn!(file = %rec.path, "no records in file");
                                }
                                inputs
                                    .push(std::mem::replace(&mut rec, new_input(file_iter.next())));
                                prog.files_done += 1;
                                progress(prog);
                            }
                            Err(e) => outcome = Err(e),
                        }
                    }
                }
                if outcome.is_err() {
                    break;
                }
            }
            let _ = reader.join();
            outcome
        })?;

        let phase1 = build_start.elapsed();
        // Between the phases: every author's posts are in, so automation is judged by author.
        let bot_model = match (
            &self.config.curate.bots.model,
            self.config.curate.bots.content,
        ) {
            (_, false) => None,
            (Some(path), true) => Some(BotModel::load(Path::new(path))?),
            (None, true) => Some(BotModel::builtin()),
        };
        let (bot_authors, bot_keys) = profiles.judge(&self.config.curate.bots, bot_model.as_ref());
        let authors_profiled = profiles.len() as u64;
        drop(profiles);
        st.curator.set_bot_authors(bot_keys);

        let judged = build_start.elapsed();
        // Phase 2: decide in (time, id) order and write.
        let spilled = sorter.spilled;
        let mut merged = sorter.finish()?;
        let (shard_records, (qsha, qbytes)) =
            std::thread::scope(|scope| -> Result<(Vec<ShardRecord>, (String, u64))> {
                // this thread → W serialisers (batch k to k % W; posts are freed there, in
                // parallel) → the writer (reads them round-robin, so order is kept) → zstd shards.
                let workers = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .clamp(1, 8);
                let mut to_serialisers = Vec::new();
                let mut from_serialisers = Vec::new();
                for _ in 0..workers {
                    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Vec<Box<Post>>>(4);
                    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Lines>(4);
                    scope.spawn(move || {
                        for batch in in_rx {
                            let mut lines = Lines::default();
                            for post in batch {
                                let ok = serde_json::to_writer(&mut lines.buf, &*post).is_ok();
                                lines.buf.push(b'\n');
                                lines.ends.push((lines.buf.len(), ok));
                            }
                            if out_tx.send(lines).is_err() {
                                return;
                            }
                        }
                    });
                    to_serialisers.push(in_tx);
                    from_serialisers.push(out_rx);
                }
                let out_dir = out.to_path_buf();
                let writer = scope.spawn(move || -> Result<Vec<ShardRecord>> {
                    let mut shards = ShardSink {
                        dir: out_dir.clone(),
                        per_shard: shard_posts,
                        current: None,
                        done: Vec::new(),
                        pending: Vec::new(),
                    };
                    let batches = (0..).map_while(move |k: usize| {
                        from_serialisers[k % from_serialisers.len()].recv().ok()
                    });
                    for lines in batches {
                        let mut from = 0;
                        for (end, ok) in lines.ends {
                            if !ok {
                                return Err(Error::Format {
                                    path: out_dir,
                                    line: 0,
                                    message: "a post could not be serialised".into(),
                                });
                            }
                            shards.write_line(&lines.buf[from..end])?;
                            from = end;
                        }
                    }
                    shards.close()?;
                    Ok(shards.done)
                });
                // Owns the senders: dropping it lets the serialisers, then the writer, finish.
                let mut k = 0usize;
                let mut post_tx = move |batch: Vec<Box<Post>>| -> std::result::Result<(), ()> {
                    let r = to_serialisers[k % to_serialisers.len()].send(batch);
                    k += 1;
                    r.map_err(|_| ())
                };
                let mut outcome: Result<()> = Ok(());
                let mut written = Vec::with_capacity(BATCH);
                loop {
                    let entry = match merged.next_entry() {
                        Ok(Some(e)) => e,
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    };
                    let Entry { mut post, prep, .. } = entry;
                    if st.accept(&mut post, prep, &deleted_posts, &deleted_users) {
                        written.push(post);
                        if written.len() >= BATCH
                            && post_tx(std::mem::replace(&mut written, Vec::with_capacity(BATCH)))
                                .is_err()
                        {
                            break;
                        }
                    }
                }
                if !written.is_empty() {
                    let _ = post_tx(written);
                }
                drop(post_tx);
                let shards = writer.join().map_err(|_| Error::Config {
                    field: "writer",
                    message: "shard writer thread panicked".into(),
                })?;
                outcome?;
                let shards = shards?;
                Ok((shards, quarantine.finish()?))
            })?;
        drop(merged);
        tracing::info!(
            phase1_s = phase1.as_secs_f64(),
            judge_s = (judged - phase1).as_secs_f64(),
            phase2_s = (build_start.elapsed() - judged).as_secs_f64(),
            spilled,
            "corpus phases"
        );
        remove_stale_shards(out, &shard_records)?;
        let BuildState {
            curator,
            counts,
            mut removed_posts,
            removed_users,
            mut kept_times,
            kept_untimed,
            card,
            synthetic,
            by_file,
            ..
        } = st;
        let mut warnings = broken_streams;
        warnings.extend(rule_warnings(&by_file, &bot_authors));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let bots = BotSummary {
            authors_profiled,
            authors_flagged: bot_authors.len() as u64,
            posts_of_flagged: bot_authors.iter().map(|b| b.posts).sum(),
            top: bot_authors.iter().take(25).cloned().collect(),
        };
        let split = make_split(self.config.val_fraction, &mut kept_times, &kept_untimed);
        removed_posts.sort();
        removed_posts.dedup();
        let mut removed_users: Vec<String> = removed_users.into_iter().collect();
        removed_users.sort();
        let near = curator.near_index();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            synthetic,
            inputs,
            deletion_lists: deletion_records,
            config: self.config.clone(),
            quarantine: ShardRecord {
                file: "quarantine.jsonl".into(),
                posts: counts.quarantined,
                bytes: qbytes,
                sha256: qsha,
            },
            counts,
            stats: curator.stats.clone(),
            dedup: DedupSummary {
                near_indexed: near.map(|n| n.len() as u64).unwrap_or(0),
                bands_rows: near.map(|n| n.params()).unwrap_or((0, 0)),
                near_bytes_per_post: near.map(|n| n.bytes_per_post()).unwrap_or(0.0),
            },
            split,
            shards: shard_records,
            lineage: Lineage {
                requested_posts: deleted_posts.len() as u64,
                requested_users: deleted_users.len() as u64,
                deleted_posts: removed_posts,
                deleted_users: removed_users,
            },
            bots,
            warnings,
        };
        write_atomic(
            &out.join("data-card.md"),
            data_card(&manifest, &card).as_bytes(),
        )?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::io(out, e.into()))?;
        write_atomic(&out.join("manifest.json"), &json)?;
        Ok(manifest)
    }
}

/// A record whose preparation panicked (a parser bug it tripped), as a quarantine entry.
fn panicked(post: &Post, message: &str) -> Item {
    let raw: String = post.text.chars().take(16 << 10).collect();
    Item::Quarantined(Quarantined {
        file: post.origin.file.clone(),
        line: post.origin.line,
        reason: format!("preparing the post failed (a parser bug): {message}"),
        raw_bytes: post.text.len() as u64,
        raw,
    })
}

/// Share of one input's posts above which one rule's verdict is worth a warning.
const RULE_WARN_SHARE: f64 = 0.2;

/// Warnings for inputs where one rule removed more than [`RULE_WARN_SHARE`] of the posts
/// (reposts, held-out and same-id aside), and for the authors the bot rule removed.
fn rule_warnings(
    by_file: &HashMap<String, BTreeMap<Verdict, u64>>,
    bots: &[BotAuthor],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<_> = by_file.iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    for (file, verdicts) in files {
        let total: u64 = verdicts.values().sum();
        for (v, n) in verdicts {
            let judged = !matches!(
                v,
                Verdict::Kept | Verdict::Repost | Verdict::HeldOut | Verdict::SameId
            );
            if judged && total >= 20 && *n as f64 > RULE_WARN_SHARE * total as f64 {
                out.push(format!(
                    "{file}: rule `{}` removed {n} of its {total} posts ({:.0}%)",
                    v.name(),
                    100.0 * *n as f64 / total as f64
                ));
            }
        }
    }
    if let Some(b) = bots.first() {
        out.push(format!(
            "bot rule: {} authors judged automated ({} posts); most posts: {} ({}, {})",
            bots.len(),
            bots.iter().map(|b| b.posts).sum::<u64>(),
            b.author,
            b.posts,
            b.reason
        ));
    }
    out
}

/// Serialised posts: JSON lines in one buffer, each line's end (and whether it serialised).
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    ends: Vec<(usize, bool)>,
}

/// Items per batch passed between the build threads.
const BATCH: usize = 512;

/// An item read, with the post's per-post curation already done on the reading thread.
enum Work {
    Post(Box<Post>, Prepared),
    Other(Item),
}

enum RawMsg {
    Items(Vec<Item>),
    FileDone(Result<(String, u64)>, Result<crate::read::Sniffed>),
}

enum ReadMsg {
    Items(Vec<Work>),
    FileDone(Result<(String, u64)>, Result<crate::read::Sniffed>),
}

fn new_input(path: Option<&PathBuf>) -> InputRecord {
    InputRecord {
        path: path.map(|p| p.display().to_string()).unwrap_or_default(),
        bytes: 0,
        sha256: String::new(),
        format: Format::Text,
        compression: Compression::None,
        posts: 0,
        quarantined: 0,
        notices: 0,
        deletions: 0,
    }
}

/// The curation thread's state.
struct BuildState {
    curator: Curator,
    counts: Counts,
    seen_ids: HashSet<u64>,
    removed_posts: Vec<String>,
    removed_users: HashSet<String>,
    kept_times: Vec<i64>,
    kept_untimed: Vec<u64>,
    card: CardStats,
    synthetic: bool,
    /// Verdicts by input file (for the "one rule removed most of a file" warning).
    by_file: HashMap<String, BTreeMap<Verdict, u64>>,
}

impl BuildState {
    /// Counts and curates one post; true when it is to be written.
    fn accept(
        &mut self,
        post: &mut Post,
        prep: Prepared,
        deleted_posts: &HashSet<String>,
        deleted_users: &HashSet<String>,
    ) -> bool {
        self.counts.read += 1;
        if !self.seen_ids.insert(fx64(post.id.as_bytes())) {
            self.counts.add(Verdict::SameId, 1);
            return false;
        }
        let deleted_user = post
            .author_id
            .as_ref()
            .filter(|a| deleted_users.contains(*a));
        if deleted_posts.contains(&post.id) || deleted_user.is_some() {
            self.counts.add(Verdict::Deleted, 1);
            if let Some(a) = deleted_user {
                self.removed_users.insert(a.clone());
            }
            self.removed_posts.push(post.id.clone());
            return false;
        }
        self.curator.decide(post, prep);
        *self
            .by_file
            .entry(post.origin.file.clone())
            .or_default()
            .entry(post.verdict)
            .or_default() += 1;
        self.synthetic |= post.synthetic;
        self.counts.add(post.verdict, 1);
        self.counts.written += 1;
        tally(&mut self.card, post);
        if post.verdict == Verdict::Kept {
            match post.created_at {
                Some(t) => self.kept_times.push(t.timestamp_millis()),
                None => self.kept_untimed.push(fx64(post.id.as_bytes()) % 10_000),
            }
        }
        true
    }
}

fn tally(card: &mut CardStats, post: &Post) {
    *card.langs.entry(post.lang.clone()).or_default() += 1;
    if let Some(s) = &post.source {
        *card.sources.entry(s.clone()).or_default() += 1;
    }
    if post.verdict == Verdict::Kept {
        for h in &post.entities.hashtags {
            *card.hashtags.entry(h.text.to_lowercase()).or_default() += 1;
        }
        let len = post.train_text.chars().count();
        card.lengths[(len / 20).min(15)] += 1;
    }
}

fn make_split(val_fraction: f64, times: &mut [i64], untimed: &[u64]) -> Split {
    let hash_cutoff = (val_fraction * 10_000.0).round() as u64;
    let untimed_val = untimed.iter().filter(|h| **h < hash_cutoff).count() as u64;
    if times.is_empty() {
        return Split {
            method: "hash".into(),
            val_fraction,
            val_from: None,
            hash_cutoff,
            train: untimed.len() as u64 - untimed_val,
            val: untimed_val,
        };
    }
    times.sort_unstable();
    let n_val = ((times.len() as f64) * val_fraction).round() as usize;
    let (val_from, timed_val) = if n_val == 0 {
        (times[times.len() - 1] + 1, 0)
    } else {
        let from = times[times.len() - n_val];
        (from, times.iter().filter(|t| **t >= from).count() as u64)
    };
    let val = timed_val + untimed_val;
    let total = (times.len() + untimed.len()) as u64;
    Split {
        method: "time".into(),
        val_fraction,
        val_from: DateTime::from_timestamp_millis(val_from),
        hash_cutoff,
        train: total - val,
        val,
    }
}

/// Expands directories (recursively, sorted by name) and checks that each file exists.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            entries.sort();
            let mut files = Vec::new();
            for e in entries {
                if e.is_dir() {
                    files.extend(expand_inputs(&[e])?);
                } else if !is_documentation(&e) {
                    files.push(e);
                }
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// README/SOURCE/LICENSE files that sit beside data in a directory are not posts.
fn is_documentation(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_uppercase())
        .unwrap_or_default();
    name.ends_with(".MD") || name.starts_with("LICENSE") || name.starts_with("README")
}

/// Reads a deletion list: one post id per line, or `user:ID` for all posts of a user; `#` comments.
pub fn read_deletion_list(path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (mut posts, mut users) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (target, id) = match l.split_once(':') {
            Some(("user", id)) => (&mut users, id.trim()),
            Some(("post", id)) => (&mut posts, id.trim()),
            None => (&mut posts, l),
            Some(_) => {
                return Err(Error::Format {
                    path: path.into(),
                    line: i as u64 + 1,
                    message: format!("expected an id, `post:ID` or `user:ID`, got {l:?}"),
                })
            }
        };
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(Error::Format {
                path: path.into(),
                line: i as u64 + 1,
                message: format!("not an id: {id:?}"),
            });
        }
        target.push(id.to_string());
    }
    Ok((posts, users))
}

/// Calls `f` for each post of a shard file.
pub fn for_each_post(path: &Path, f: &mut dyn FnMut(Post)) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let dec = zstd::Decoder::new(file).map_err(|e| Error::io(path, e))?;
    for (i, line) in std::io::BufReader::new(dec).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let post: Post = serde_json::from_str(&line).map_err(|e| Error::Format {
            path: path.into(),
            line: i as u64 + 1,
            message: e.to_string(),
        })?;
        f(post);
    }
    Ok(())
}

fn remove_stale_shards(out: &Path, keep: &[ShardRecord]) -> Result<()> {
    let names: HashSet<&str> = keep.iter().map(|s| s.file.as_str()).collect();
    for e in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("posts-")
            && name.ends_with(".jsonl.zst")
            && !names.contains(name.as_str())
        {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

fn top(map: &HashMap<String, u64>, n: usize) -> Vec<(&String, u64)> {
    let mut v: Vec<(&String, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(n);
    v
}

fn data_card(m: &Manifest, card: &CardStats) -> String {
    let c = &m.counts;
    let mut s = String::new();
    s.push_str("# Data card\n\n");
    if m.synthetic {
        s.push_str(
            "> **SYNTHETIC DATA**: posts generated by `starling synth`, not real people.\n\n",
        );
    }
    s.push_str(&format!(
        "Inputs: {} files, {} bytes. Corpus format v{}.\n\n",
        m.inputs.len(),
        m.inputs.iter().map(|i| i.bytes).sum::<u64>(),
        m.format_version
    ));
    s.push_str("## Counts\n\n| outcome | posts |\n|---|---|\n");
    s.push_str(&format!("| read | {} |\n| kept | {} |\n", c.read, c.kept));
    for (k, v) in &c.filtered {
        s.push_str(&format!("| filtered: {k} | {v} |\n"));
    }
    s.push_str(&format!(
        "| quarantined | {} |\n| written to shards | {} |\n\n",
        c.quarantined, c.written
    ));
    s.push_str(&format!(
        "read = kept + filtered + quarantined: {}\n\n",
        if c.balanced() {
            "holds"
        } else {
            "DOES NOT HOLD"
        }
    ));
    if !c.notices.is_empty() {
        s.push_str("Non-post records: ");
        s.push_str(
            &c.notices
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("\n\n");
    }
    s.push_str(&format!(
        "Split: {} (val fraction {}), train {} / val {}{}.\n\n",
        m.split.method,
        m.split.val_fraction,
        m.split.train,
        m.split.val,
        m.split
            .val_from
            .map(|t| format!(", val from {}", t.to_rfc3339()))
            .unwrap_or_default()
    ));
    s.push_str(&format!(
        "Scrubbed: {} URLs → placeholder, {} mentions anonymised, {} emails, {} phone numbers. Languages detected for {} posts.\n\n",
        m.stats.urls_replaced, m.stats.mentions_replaced, m.stats.emails_scrubbed, m.stats.phones_scrubbed, m.stats.lang_detected
    ));
    s.push_str(&format!(
        "Deletions: {} posts removed, {} users' posts removed.\n\n",
        m.lineage.deleted_posts.len(),
        m.lineage.deleted_users.len()
    ));
    s.push_str(&format!(
        "Automation: {} of {} authors judged automated ({} posts).\n\n",
        m.bots.authors_flagged, m.bots.authors_profiled, m.bots.posts_of_flagged
    ));
    if !m.bots.top.is_empty() {
        s.push_str("| author | posts | reason |\n|---|---|---|\n");
        for b in m.bots.top.iter().take(10) {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                b.author.replace('|', "\\|"),
                b.posts,
                b.reason
            ));
        }
        s.push('\n');
    }
    if !m.warnings.is_empty() {
        s.push_str("## Warnings\n\n");
        for w in &m.warnings {
            s.push_str(&format!("- {w}\n"));
        }
        s.push('\n');
    }
    s.push_str("## Languages (written posts)\n\n| lang | posts |\n|---|---|\n");
    for (k, v) in top(&card.langs, 15) {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str("\n## Top hashtags (kept posts)\n\n| hashtag | posts |\n|---|---|\n");
    for (k, v) in top(&card.hashtags, 20) {
        s.push_str(&format!("| #{k} | {v} |\n"));
    }
    if !card.sources.is_empty() {
        s.push_str("\n## Clients\n\n| source | posts |\n|---|---|\n");
        for (k, v) in top(&card.sources, 10) {
            s.push_str(&format!("| {} | {v} |\n", k.replace('|', "\\|")));
        }
    }
    s.push_str("\n## Training-text length (kept posts, characters)\n\n```\n");
    let max = card.lengths.iter().copied().max().unwrap_or(0).max(1);
    for (i, n) in card.lengths.iter().enumerate() {
        let label = if i == 15 {
            "300+   ".to_string()
        } else {
            format!("{:>3}-{:<3}", i * 20, i * 20 + 19)
        };
        s.push_str(&format!(
            "{label} {:>8} {}\n",
            n,
            "#".repeat((*n * 50 / max) as usize)
        ));
    }
    s.push_str("```\n");
    s
}

/// A corpus directory opened for reading.
#[derive(Debug)]
pub struct Corpus {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Corpus {
    /// Opens a corpus directory and checks its format version.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Format {
            path: path.clone(),
            line: e.line() as u64,
            message: e.to_string(),
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::Format {
                path,
                line: 0,
                message: format!(
                    "corpus format v{} (this build reads v{FORMAT_VERSION})",
                    manifest.format_version
                ),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Calls `f` for every written post, in shard order.
    pub fn for_each_post(&self, f: &mut dyn FnMut(Post)) -> Result<()> {
        for s in &self.manifest.shards {
            for_each_post(&self.dir.join(&s.file), f)?;
        }
        Ok(())
    }

    /// Recomputes each shard's SHA-256 and compares it with the manifest.
    pub fn verify(&self) -> Result<()> {
        for s in &self.manifest.shards {
            let path = self.dir.join(&s.file);
            let (sha, _) = sha256_file(&path)?;
            if sha != s.sha256 {
                return Err(Error::Format {
                    path,
                    line: 0,
                    message: format!("sha256 {sha} does not match the manifest's {}", s.sha256),
                });
            }
        }
        Ok(())
    }
}
