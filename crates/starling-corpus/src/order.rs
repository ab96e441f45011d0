//! The order curation runs in, whatever the order of the input: prepared posts are sorted by
//! [`sort_key`] (time, then id; content, then id for posts without a time) in memory, spilling
//! sorted runs to disk past a memory budget, and merged back in that order (an external merge sort).

use crate::curate::Prepared;
use crate::error::{Error, Result};
use crate::hash::fx64;
use crate::post::{Post, Verdict};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A prepared post with the key it sorts by.
pub(crate) struct Entry {
    pub key: Vec<u8>,
    pub post: Box<Post>,
    pub prep: Prepared,
}

/// The byte string posts are curated in order of; byte order is tuple order:
/// timed posts first, by (time, id as a number, copy), then untimed ones by (text, id, copy).
/// "copy" orders repeats of one id: top-level before nested, then by text, engagement and origin,
/// so which copy is kept never depends on the order files or records were read in.
pub(crate) fn sort_key(post: &Post) -> Vec<u8> {
    let mut k = Vec::with_capacity(64 + post.id.len() + post.origin.file.len());
    match post.created_at {
        Some(t) => {
            k.push(0);
            k.extend_from_slice(&((t.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes());
        }
        None => {
            k.push(1);
            k.extend_from_slice(&fx64(post.text.as_bytes()).to_be_bytes());
        }
    }
    // Ids compare as numbers when they are digit strings: shorter first, then bytes.
    k.extend_from_slice(&(post.id.len() as u32).to_be_bytes());
    k.extend_from_slice(post.id.as_bytes());
    k.push(u8::from(post.origin.nested));
    k.extend_from_slice(&fx64(post.text.as_bytes()).to_be_bytes());
    let e = post.engagement;
    let engagement = e.likes + e.reposts + e.replies + e.quotes;
    k.extend_from_slice(&(u64::MAX - engagement).to_be_bytes());
    k.extend_from_slice(post.origin.file.as_bytes());
    k.push(0);
    k.extend_from_slice(&post.origin.line.to_be_bytes());
    k
}

/// Rough bytes an entry holds in memory.
fn footprint(e: &Entry) -> usize {
    256 + e.key.len()
        + e.post.text.len() * 2
        + e.post.train_text.len()
        + e.post.id.len()
        + e.post.origin.file.len()
        + (e.post.entities.mentions.len()
            + e.post.entities.hashtags.len()
            + e.post.entities.urls.len()
            + e.post.entities.cashtags.len())
            * 64
        + e.prep.signature.len() * 4
}

/// Collects entries, sorting and spilling runs to `dir` when `budget` bytes are exceeded.
pub(crate) struct Sorter {
    dir: PathBuf,
    budget: usize,
    held: usize,
    buf: Vec<Entry>,
    runs: Vec<PathBuf>,
    /// Entries written to disk.
    pub spilled: u64,
}

impl Sorter {
    pub fn new(dir: PathBuf, budget: usize) -> Self {
        Self {
            dir,
            budget,
            held: 0,
            buf: Vec::new(),
            runs: Vec::new(),
            spilled: 0,
        }
    }

    pub fn push(&mut self, e: Entry) -> Result<()> {
        self.held += footprint(&e);
        self.buf.push(e);
        if self.held > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.buf.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.dir.join(format!("run-{:05}.zst", self.runs.len()));
        let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, f), 1)
            .map_err(|e| Error::io(&path, e))?;
        let mut scratch = Vec::new();
        for e in self.buf.drain(..) {
            scratch.clear();
            encode(&e, &mut scratch).map_err(|err| Error::io(&path, err))?;
            w.write_all(&scratch).map_err(|err| Error::io(&path, err))?;
            self.spilled += 1;
        }
        w.finish()
            .and_then(|mut b| b.flush())
            .map_err(|e| Error::io(&path, e))?;
        self.runs.push(path);
        self.held = 0;
        Ok(())
    }

    /// Every entry pushed, in key order.
    pub fn finish(mut self) -> Result<Merged> {
        // Input already in time order (the common case for one sorted dump) needs no sort.
        if !self.buf.windows(2).all(|w| w[0].key <= w[1].key) {
            self.buf.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        let mut sources = Vec::new();
        for path in &self.runs {
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let dec = zstd::Decoder::new(f).map_err(|e| Error::io(path, e))?;
            sources.push(Source::Run(
                path.clone(),
                BufReader::with_capacity(1 << 20, dec),
            ));
        }
        sources.push(Source::Memory(std::mem::take(&mut self.buf).into_iter()));
        let mut m = Merged {
            heads: Vec::new(),
            heap: BinaryHeap::new(),
            sources,
            dir: self.dir.clone(),
            has_runs: !self.runs.is_empty(),
        };
        if m.has_runs {
            for i in 0..m.sources.len() {
                m.advance(i)?;
            }
        }
        Ok(m)
    }
}

type RunReader = BufReader<zstd::Decoder<'static, BufReader<std::fs::File>>>;

enum Source {
    Run(PathBuf, RunReader),
    Memory(std::vec::IntoIter<Entry>),
}

/// The k-way merge of the sorted runs and the in-memory remainder.
pub(crate) struct Merged {
    heads: Vec<Option<Entry>>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    sources: Vec<Source>,
    dir: PathBuf,
    has_runs: bool,
}

impl Merged {
    fn advance(&mut self, i: usize) -> Result<()> {
        let next = match &mut self.sources[i] {
            Source::Memory(it) => it.next(),
            Source::Run(path, r) => decode(r).map_err(|e| Error::io(path.as_path(), e))?,
        };
        if self.heads.len() <= i {
            self.heads.resize_with(i + 1, || None);
        }
        if let Some(e) = next {
            self.heap.push(Reverse((e.key.clone(), i)));
            self.heads[i] = Some(e);
        }
        Ok(())
    }

    /// The next entry in key order.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        // Nothing spilled: the sorted buffer is the order, no heap needed.
        if !self.has_runs {
            return Ok(match self.sources.last_mut() {
                Some(Source::Memory(it)) => it.next(),
                _ => None,
            });
        }
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let e = self.heads[i].take();
        self.advance(i)?;
        Ok(e)
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        if self.has_runs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Run record: key, post JSON, then the prepared fields in a fixed binary layout.
fn encode(e: &Entry, out: &mut Vec<u8>) -> std::io::Result<()> {
    let json = serde_json::to_vec(&*e.post)?;
    put_u32(out, e.key.len() as u32);
    out.extend_from_slice(&e.key);
    put_u32(out, json.len() as u32);
    out.extend_from_slice(&json);
    let p = &e.prep;
    out.push(match p.verdict {
        None => 255,
        Some(v) => Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0) as u8,
    });
    out.extend_from_slice(&p.text_hash.to_le_bytes());
    put_u32(out, p.signature.len() as u32);
    for s in &p.signature {
        put_u32(out, *s);
    }
    for v in [p.pii.emails, p.pii.phones, p.urls, p.mentions] {
        put_u32(out, v as u32);
    }
    out.push(u8::from(p.lang_detected));
    Ok(())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_vec(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn decode(r: &mut impl Read) -> std::io::Result<Option<Entry>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let key = read_vec(r, u32::from_le_bytes(b) as usize)?;
    let n = read_u32(r)? as usize;
    let post: Post = serde_json::from_slice(&read_vec(r, n)?)?;
    let mut one = [0u8; 1];
    r.read_exact(&mut one)?;
    let verdict = Verdict::ALL.get(one[0] as usize).copied();
    let mut h = [0u8; 8];
    r.read_exact(&mut h)?;
    let sig_len = read_u32(r)? as usize;
    let mut signature = Vec::with_capacity(sig_len);
    for _ in 0..sig_len {
        signature.push(read_u32(r)?);
    }
    let mut prep = Prepared {
        verdict,
        text_hash: u64::from_le_bytes(h),
        signature,
        ..Default::default()
    };
    prep.pii.emails = read_u32(r)? as usize;
    prep.pii.phones = read_u32(r)? as usize;
    prep.urls = read_u32(r)? as usize;
    prep.mentions = read_u32(r)? as usize;
    r.read_exact(&mut one)?;
    prep.lang_detected = one[0] != 0;
    Ok(Some(Entry {
        key,
        post: Box::new(post),
        prep,
    }))
}

/// Where a build's sorted runs go: a hidden folder in the output directory.
pub(crate) fn spill_dir(out: &Path) -> PathBuf {
    out.join(format!(".sort-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::Origin;

    fn post(id: &str, t: Option<i64>, text: &str) -> Post {
        let mut p = Post::new(
            id.into(),
            text.into(),
            Origin {
                file: "f".into(),
                line: 1,
                nested: false,
            },
        );
        p.created_at = t.and_then(chrono::DateTime::from_timestamp_millis);
        p
    }

    #[test]
    fn keys_order_by_time_then_numeric_id_then_untimed() {
        let a = sort_key(&post("99", Some(1000), "x"));
        let b = sort_key(&post("100", Some(1000), "x"));
        let c = sort_key(&post("1", Some(2000), "x"));
        let d = sort_key(&post("h:00", None, "x"));
        let early = sort_key(&post("5", Some(-5000), "x"));
        assert!(early < a && a < b && b < c && c < d);
    }

    #[test]
    fn spilled_runs_merge_in_order_and_round_trip() {
        let dir = std::env::temp_dir().join(format!("starling-order-{}", std::process::id()));
        let mut s = Sorter::new(dir.clone(), 4000);
        let mut ids: Vec<u64> = (0..500).map(|i| (i * 7919) % 500).collect();
        ids.reverse();
        for i in &ids {
            let p = post(&i.to_string(), Some(*i as i64 * 1000), "some text");
            let prep = Prepared {
                text_hash: *i,
                signature: vec![*i as u32; 3],
                verdict: i.is_multiple_of(5).then_some(Verdict::Spam),
                ..Default::default()
            };
            s.push(Entry {
                key: sort_key(&p),
                post: Box::new(p),
                prep,
            })
            .unwrap();
        }
        assert!(s.spilled > 0);
        let mut m = s.finish().unwrap();
        let mut n = 0u64;
        while let Some(e) = m.next_entry().unwrap() {
            assert_eq!(e.post.id, n.to_string());
            assert_eq!(e.prep.text_hash, n);
            assert_eq!(e.prep.signature, vec![n as u32; 3]);
            assert_eq!(e.prep.verdict, n.is_multiple_of(5).then_some(Verdict::Spam));
            n += 1;
        }
        assert_eq!(n, 500);
        drop(m);
        assert!(!dir.exists());
    }
}
