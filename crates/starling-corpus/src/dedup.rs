//! Exact and near-duplicate detection: a hash set of training texts, and MinHash-LSH over
//! character shingles, with candidates verified on compact b-bit signatures.

use crate::hash::{fx64, mix64};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Near-duplicate settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NearDupConfig {
    /// Jaccard similarity at or above which a post is a near-duplicate. By default 0.8.
    pub threshold: f64,
    /// MinHash permutations. By default 128.
    pub num_perm: usize,
    /// Shingle width in characters. By default 5.
    pub shingle: usize,
    /// Seed of the hash family. By default 1.
    pub seed: u64,
}

impl Default for NearDupConfig {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            num_perm: 128,
            shingle: 5,
            seed: 1,
        }
    }
}

/// The text that shingling sees: lower-cased, placeholders and a leading `RT @user:` removed,
/// whitespace collapsed (so manual retweets and copypasta with other links or users match).
pub fn shingle_text(train_text: &str) -> String {
    let mut t = train_text.trim_start();
    // Manual retweets: "RT @user: text" is the text.
    if let Some(rest) = t.strip_prefix("RT ").or_else(|| t.strip_prefix("rt ")) {
        if let Some(colon) = rest.find(':') {
            if rest[..colon].trim_start().starts_with('@') || rest[..colon].starts_with("<|user|>")
            {
                t = &rest[colon + 1..];
            }
        }
    }
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    let mut pending_space = false;
    while !rest.is_empty() {
        if rest.starts_with("<|") {
            if let Some(end) = rest.find("|>") {
                rest = &rest[end + 2..];
                pending_space = true;
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        for l in c.to_lowercase() {
            out.push(l);
        }
    }
    out
}

/// Hashes of the character `k`-shingles of `text` (the whole text when shorter than `k`).
pub fn shingles(text: &str, k: usize, out: &mut Vec<u64>) {
    out.clear();
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let n = bounds.len() - 1;
    if n == 0 {
        return;
    }
    if n <= k {
        out.push(fx64(text.as_bytes()));
        return;
    }
    for i in 0..=(n - k) {
        out.push(fx64(&text.as_bytes()[bounds[i]..bounds[i + k]]));
    }
    out.sort_unstable();
    out.dedup();
}

/// A MinHash family: `num_perm` multiply-shift hashes of each shingle hash.
#[derive(Debug, Clone)]
pub struct MinHasher {
    mul: Vec<u64>,
    xor: Vec<u64>,
}

impl MinHasher {
    /// A family of `num_perm` hash functions drawn from `seed`.
    pub fn new(num_perm: usize, seed: u64) -> Self {
        let mut s = mix64(seed ^ 0x5151_5151);
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(s)
        };
        let mul = (0..num_perm).map(|_| next() | 1).collect();
        let xor = (0..num_perm).map(|_| next()).collect();
        Self { mul, xor }
    }

    /// The signature (minimum of each hash over the shingles) of a set of shingle hashes.
    pub fn signature(&self, shingles: &[u64], sig: &mut Vec<u32>) {
        sig.clear();
        sig.resize(self.mul.len(), u32::MAX);
        // Multiply-add-shift hashing of a 32-bit key (Dietzfelbinger 1996): the high half of
        // (a·x + b) mod 2^64 with 64-bit a and b. a·x is split into two 32×32→64 products so the
        // compiler vectorises it (pmuludq) even for baseline x86-64.
        for &h in shingles {
            let key = u64::from((h ^ (h >> 32)) as u32);
            for ((s, &a), &b) in sig.iter_mut().zip(&self.mul).zip(&self.xor) {
                let prod = ((a & 0xffff_ffff) * key).wrapping_add(((a >> 32) * key) << 32);
                let v = prod.wrapping_add(b) >> 32;
                *s = (*s).min(v as u32);
            }
        }
    }
}

/// The (bands, rows) that minimise `fp_weight`·false positives + (1 − `fp_weight`)·false negatives
/// at `threshold` (datasketch's `MinHashLSH` rule; its default weight is 0.5).
pub fn optimal_bands(threshold: f64, num_perm: usize, fp_weight: f64) -> (usize, usize) {
    fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
        let n = 256;
        let h = (b - a) / n as f64;
        let mut s = f(a) + f(b);
        for i in 1..n {
            let x = a + i as f64 * h;
            s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
        }
        s * h / 3.0
    }
    let mut best = (1, num_perm);
    let mut min_err = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=(num_perm / b) {
            let (bf, rf) = (b as f64, r as f64);
            let fp = integrate(|s| 1.0 - (1.0 - s.powf(rf)).powf(bf), 0.0, threshold);
            let fneg = integrate(|s| (1.0 - s.powf(rf)).powf(bf), threshold, 1.0);
            let err = fp_weight * fp + (1.0 - fp_weight) * fneg;
            if err < min_err {
                min_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Tolerance of the candidate check: the 8-bit estimate of Jaccard has a standard deviation of
/// about 0.035 at 0.8 with 128 values, so candidates within 0.02 below the threshold pass.
const VERIFY_SLACK: f64 = 0.02;

/// Weight of false positives when choosing LSH bands (false negatives get the rest).
const LSH_FP_WEIGHT: f64 = 0.3;

/// Near-duplicate index: LSH bands to find candidates, 8-bit signatures to verify them.
#[derive(Debug)]
pub struct NearDupIndex {
    config: NearDupConfig,
    hasher: MinHasher,
    bands: usize,
    rows: usize,
    tables: Vec<HashMap<u64, u32>>,
    /// Further posts of a band bucket already taken (rare: similar but not duplicate posts).
    overflow: HashMap<(u32, u64), Vec<u32>>,
    compact: Vec<u8>,
    ids: Vec<u32>,
    scratch_shingles: Vec<u64>,
    scratch_sig: Vec<u32>,
}

impl NearDupIndex {
    /// An empty index.
    pub fn new(config: NearDupConfig) -> Self {
        // Candidates are verified on signatures, so false positives are cheap: lean to recall.
        let (bands, rows) = optimal_bands(config.threshold, config.num_perm, LSH_FP_WEIGHT);
        Self {
            config,
            hasher: MinHasher::new(config.num_perm, config.seed),
            bands,
            rows,
            tables: (0..bands).map(|_| HashMap::new()).collect(),
            overflow: HashMap::new(),
            compact: Vec::new(),
            ids: Vec::new(),
            scratch_shingles: Vec::new(),
            scratch_sig: Vec::new(),
        }
    }

    /// The (bands, rows) in use.
    pub fn params(&self) -> (usize, usize) {
        (self.bands, self.rows)
    }

    /// Number of posts indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Approximate heap bytes per indexed post.
    pub fn bytes_per_post(&self) -> f64 {
        if self.ids.is_empty() {
            return 0.0;
        }
        let table_entries: usize = self.tables.iter().map(|t| t.capacity()).sum();
        // hashbrown: key + value + 1 control byte per slot.
        let overflow: usize = self
            .overflow
            .values()
            .map(|v| 12 + 1 + 24 + v.capacity() * 4)
            .sum();
        let bytes = table_entries * (8 + 4 + 1)
            + overflow
            + self.compact.capacity()
            + self.ids.capacity() * 4;
        bytes as f64 / self.ids.len() as f64
    }

    /// Checks `text` against the index; returns the earlier post it duplicates (its `key`), or
    /// inserts it under `key` and returns `None`.
    pub fn check_and_insert(&mut self, text: &str, key: u32) -> Option<u32> {
        self.lookup(text, key, false)
    }

    /// Whether `text` near-duplicates an indexed post; inserts it either way (for evaluation).
    pub fn query_then_insert(&mut self, text: &str, key: u32) -> bool {
        self.lookup(text, key, true).is_some()
    }

    fn lookup(&mut self, text: &str, key: u32, always_insert: bool) -> Option<u32> {
        let mut sh = std::mem::take(&mut self.scratch_shingles);
        let mut sig = std::mem::take(&mut self.scratch_sig);
        shingles(text, self.config.shingle, &mut sh);
        self.hasher.signature(&sh, &mut sig);
        let found = self.check_and_insert_signature(&sig, key, always_insert);
        self.scratch_shingles = sh;
        self.scratch_sig = sig;
        found
    }

    /// The MinHash family this index uses (signatures from elsewhere must come from an equal one).
    pub fn hasher(&self) -> &MinHasher {
        &self.hasher
    }

    /// Like [`NearDupIndex::check_and_insert`] for a signature computed by an equal [`MinHasher`];
    /// `always_insert` inserts even a duplicate.
    pub fn check_and_insert_signature(
        &mut self,
        sig: &[u32],
        key: u32,
        always_insert: bool,
    ) -> Option<u32> {
        if sig.len() != self.config.num_perm {
            return None;
        }
        let band_keys: Vec<u64> = (0..self.bands)
            .map(|b| {
                let rows = &sig[b * self.rows..(b + 1) * self.rows];
                let mut h = mix64(b as u64 + 1);
                for &v in rows {
                    h = mix64(h ^ u64::from(v));
                }
                h
            })
            .collect();
        let n = self.config.num_perm;
        let mut found = None;
        let mut tried: Vec<u32> = Vec::new();
        'bands: for (b, k) in band_keys.iter().enumerate() {
            let Some(&first) = self.tables[b].get(k) else {
                continue;
            };
            let more = self.overflow.get(&(b as u32, *k));
            for &slot in std::iter::once(&first).chain(more.into_iter().flatten()) {
                if tried.contains(&slot) {
                    continue;
                }
                tried.push(slot);
                let other = &self.compact[slot as usize * n..(slot as usize + 1) * n];
                let same = sig
                    .iter()
                    .zip(other)
                    .filter(|(a, b)| (**a as u8) == **b)
                    .count();
                // b-bit MinHash (Li & König): 8-bit values also agree by chance 1 time in 256.
                let m = same as f64 / n as f64;
                let j = (m - 1.0 / 256.0) / (1.0 - 1.0 / 256.0);
                if j >= self.config.threshold - VERIFY_SLACK {
                    found = Some(self.ids[slot as usize]);
                    break 'bands;
                }
            }
        }
        if found.is_none() || always_insert {
            let slot = self.ids.len() as u32;
            self.ids.push(key);
            self.compact.extend(sig.iter().map(|v| *v as u8));
            for (b, k) in band_keys.into_iter().enumerate() {
                match self.tables[b].entry(k) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(slot);
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {
                        self.overflow.entry((b as u32, k)).or_default().push(slot)
                    }
                }
            }
        }
        found
    }
}

/// Exact duplicates: 64-bit hashes of training texts seen so far.
#[derive(Debug, Default)]
pub struct ExactDedup {
    seen: HashSet<u64>,
}

impl ExactDedup {
    /// True when `text` was seen before; records it otherwise.
    pub fn check_and_insert(&mut self, text: &str) -> bool {
        self.check_and_insert_hash(fx64(text.as_bytes()))
    }

    /// Like [`ExactDedup::check_and_insert`] for a text hashed with the same hash.
    pub fn check_and_insert_hash(&mut self, hash: u64) -> bool {
        !self.seen.insert(hash)
    }

    /// Texts recorded.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Exact Jaccard similarity of the shingle sets of two texts (for evaluation).
pub fn jaccard(a: &str, b: &str, k: usize) -> f64 {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    shingles(a, k, &mut x);
    shingles(b, k, &mut y);
    jaccard_sorted(&x, &y)
}

/// Exact Jaccard similarity of two sorted, deduplicated hash sets (1 when both are empty).
pub fn jaccard_sorted(x: &[u64], y: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = x.len() + y.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shingle_text_strips_rt_and_placeholders() {
        assert_eq!(
            shingle_text("RT @bob: Hello   <|url|> World"),
            "hello world"
        );
    }

    #[test]
    fn finds_near_duplicates_not_strangers() {
        let mut idx = NearDupIndex::new(NearDupConfig::default());
        let a = "the quick brown fox jumps over the lazy dog near the river bank today";
        assert_eq!(idx.check_and_insert(a, 1), None);
        let b = "the quick brown fox jumps over the lazy dog near the river bank today!";
        assert!(jaccard(a, b, 5) > 0.9);
        assert_eq!(idx.check_and_insert(b, 2), Some(1));
        let c = "completely different words about cooking pasta with garlic and oil";
        assert_eq!(idx.check_and_insert(c, 3), None);
    }

    #[test]
    fn bands_match_datasketch() {
        // datasketch MinHashLSH(threshold=0.8, num_perm=128) picks b=9, r=13.
        assert_eq!(optimal_bands(0.8, 128, 0.5), (9, 13));
    }
}
