//! Building a corpus directory: read every input, curate every post, write shards, quarantine,
//! manifest and data card; and reading one back.
//!
//! Here: the configuration and the build pipeline; [`manifest`]: what a corpus directory records;
//! [`card`]: the data card and the warnings an operator should see; [`files`]: inputs, deletion
//! lists and reading a corpus back ([`Corpus`]); [`sink`]: writing the post shards.

use crate::bots::{AuthorProfiles, BotModel};
use crate::curate::{CurateConfig, Curator, Prepared};
use crate::error::{Error, Result};
use crate::hash::fx64;
use crate::order::{sort_key, spill_dir, Entry, Sorter};
use crate::post::{Post, Verdict};
use crate::read::{
    read_file, Compression, Deletion, Format, Item, Quarantined, ReadOptions, BROKEN_STREAM,
};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use starling_artifacts::{sha256_file, write_atomic, AtomicFile};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

mod card;
mod files;
mod manifest;
mod sink;

use card::*;
use files::remove_stale_shards;
pub use files::{expand_inputs, for_each_post, read_deletion_list, Corpus};
pub use manifest::{
    BotSummary, Counts, DedupSummary, InputRecord, Lineage, Manifest, Progress, ShardRecord, Split,
    FORMAT_VERSION,
};
use sink::ShardSink;

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

/// Builds a corpus directory from input files.
#[derive(Debug)]
pub struct CorpusBuilder {
    config: CorpusConfig,
    inputs: Vec<PathBuf>,
    deletion_lists: Vec<PathBuf>,
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
        let Deletions {
            posts: deleted_posts,
            users: deleted_users,
            records: deletion_records,
        } = self.collect_deletions(&files)?;

        let authors = self
            .config
            .curate
            .author_list
            .as_deref()
            .map(crate::authors::AuthorList::read)
            .transpose()?
            .map(|l| l.scoped(&self.config.curate.author_list_inputs));
        let author_list = authors.as_ref().map(|a| a.source.clone());
        let mut st = BuildState {
            curator: Curator::new(self.config.curate.clone()).with_authors(authors),
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
                        if out_tx.send(prepare(&preparer, msg)).is_err() {
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
                read_inputs(files_ref, read_opts, &mut |msg: RawMsg| {
                    let ok = to_workers[k % to_workers.len()].send(msg).is_ok();
                    k += 1;
                    ok
                });
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
            author_list,
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

/// What the deletion lists and the inputs' deletion notices remove, and the lists' records.
struct Deletions {
    posts: HashSet<String>,
    users: HashSet<String>,
    records: Vec<InputRecord>,
}

impl CorpusBuilder {
    /// Reads the deletion lists, then scans every input for deletion notices (they may come after
    /// the posts they delete: stream notices, compliance files), so a deleted post is never written.
    fn collect_deletions(&self, files: &[PathBuf]) -> Result<Deletions> {
        let mut d = Deletions {
            posts: HashSet::new(),
            users: HashSet::new(),
            records: Vec::new(),
        };
        for list in &self.deletion_lists {
            let (posts, users) = read_deletion_list(list)?;
            let (sha256, bytes) = sha256_file(list)?;
            d.records.push(InputRecord {
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
            d.posts.extend(posts);
            d.users.extend(users);
        }
        for file in files {
            crate::read::scan_deletions(file, &self.config.read, &mut |del| match del {
                Deletion::Post(id) => {
                    d.posts.insert(id);
                }
                Deletion::User(id) => {
                    d.users.insert(id);
                }
            })?;
        }
        Ok(d)
    }
}

/// A preparer's work on one message: each post prepared (a panic quarantines that post).
fn prepare(preparer: &crate::curate::Preparer, msg: RawMsg) -> ReadMsg {
    match msg {
        RawMsg::Items(items) => ReadMsg::Items(
            items
                .into_iter()
                .map(|item| match item {
                    Item::Post(mut post) => match preparer.try_prepare(&mut post) {
                        Ok(prep) => Work::Post(post, prep),
                        Err(panic) => Work::Other(panicked(&post, &panic)),
                    },
                    other => Work::Other(other),
                })
                .collect(),
        ),
        RawMsg::FileDone(h, r) => ReadMsg::FileDone(h, r),
    }
}

/// The reader thread: every file's items in batches, then its hash and read result; stops when
/// `send` says the receiver is gone. A reader that panics costs its file, not the run.
fn read_inputs(files: &[PathBuf], read_opts: &ReadOptions, send: &mut dyn FnMut(RawMsg) -> bool) {
    for file in files {
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
