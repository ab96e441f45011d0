//! Dense vectors of posts in an approximate-nearest-neighbour graph (usearch's HNSW, cosine),
//! keyed by a stable 64-bit hash of the post id, and reciprocal rank fusion with BM25.

use crate::index::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// File of the ANN graph inside an index directory.
pub const DENSE_FILE: &str = "dense.usearch";
/// HNSW links per node (usearch's "connectivity", HNSW's M).
pub const CONNECTIVITY: usize = 16;
/// Candidate list while inserting (efConstruction).
pub const EXPANSION_ADD: usize = 128;
/// Candidate list while searching (ef).
pub const EXPANSION_SEARCH: usize = 128;
/// The constant of reciprocal rank fusion: `score = Σ 1 / (RRF_K + rank)` (Cormack et al., 2009).
pub const RRF_K: f64 = 60.0;

/// The ANN key of a post: FNV-1a of its id (stable across runs and processes).
pub fn key(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Format(format!("ANN index: {what}: {e}"))
}

/// The ANN graph of an index's post vectors.
pub struct DenseIndex {
    ann: Index,
    dim: usize,
}

impl DenseIndex {
    fn options(dim: usize) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            metric: MetricKind::Cos,
            quantization: ScalarKind::F32,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        }
    }

    /// An empty graph for vectors of `dim` dimensions.
    pub fn new(dim: usize) -> Result<Self> {
        let ann = Index::new(&Self::options(dim)).map_err(|e| err("create", e))?;
        Ok(Self { ann, dim })
    }

    /// Loads a saved graph, checking its dimension.
    pub fn load(path: &Path, dim: usize) -> Result<Self> {
        let s = path.to_str().ok_or_else(|| err("path", path.display()))?;
        if !path.exists() {
            return Err(Error::Format(format!(
                "{}: missing; the index says it has dense vectors: rebuild it",
                path.display()
            )));
        }
        let me = Self::new(dim)?;
        me.ann
            .load(s)
            .map_err(|e| err(&path.display().to_string(), e))?;
        if me.ann.dimensions() != dim {
            return Err(Error::Format(format!(
                "{}: vectors of {} dimensions, the index says {dim}",
                path.display(),
                me.ann.dimensions()
            )));
        }
        Ok(me)
    }

    /// Writes the graph through a temporary file renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        starling_artifacts::write_atomic_with(path, |tmp| {
            let s = tmp.to_str().ok_or_else(|| err("path", tmp.display()))?;
            self.ann.save(s).map_err(|e| err("save", e))
        })
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Vectors in the graph.
    pub fn len(&self) -> usize {
        self.ann.size()
    }

    /// True when the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or replaces) vectors under their keys.
    pub fn add(&mut self, items: &[(u64, Vec<f32>)]) -> Result<()> {
        let need = self.ann.size() + items.len();
        if need > self.ann.capacity() {
            self.ann
                .reserve(need.max(2 * self.ann.capacity()).max(1024))
                .map_err(|e| err("reserve", e))?;
        }
        if let Some((_, v)) = items.iter().find(|(_, v)| v.len() != self.dim) {
            return Err(Error::Format(format!(
                "a vector of {} dimensions for an index of {}",
                v.len(),
                self.dim
            )));
        }
        // A key given twice keeps its last vector, as two adds in a row would.
        let mut last: HashMap<u64, usize> = HashMap::with_capacity(items.len());
        for (i, (k, _)) in items.iter().enumerate() {
            last.insert(*k, i);
        }
        let deduped: Vec<&(u64, Vec<f32>)>;
        let items: Vec<&(u64, Vec<f32>)> = if last.len() == items.len() {
            items.iter().collect()
        } else {
            deduped = items
                .iter()
                .enumerate()
                .filter(|(i, (k, _))| last.get(k) == Some(i))
                .map(|(_, x)| x)
                .collect();
            deduped
        };
        for (k, _) in &items {
            if self.ann.contains(*k) {
                self.ann.remove(*k).map_err(|e| err("remove", e))?;
            }
        }
        // usearch inserts concurrently from several threads; small batches are not worth it.
        let threads = if items.len() < 1024 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let ann = &self.ann;
        let chunk = items.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<()> {
                        for (k, v) in part.iter().copied() {
                            ann.add(*k, v).map_err(|e| err("add", e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(err("add", "a thread panicked")))
                })
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(())
    }

    /// Removes the vector of `key`; true when it was there.
    pub fn remove(&mut self, key: u64) -> Result<bool> {
        Ok(self.ann.remove(key).map_err(|e| err("remove", e))? > 0)
    }

    /// The `k` nearest keys with their cosine similarity, best first; only keys in `allowed` when given.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        if self.ann.size() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let m = match allowed {
            None => self.ann.search(query, k),
            Some(set) => self.ann.filtered_search(query, k, |key| set.contains(&key)),
        }
        .map_err(|e| err("search", e))?;
        Ok(m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(k, d)| (k, 1.0 - d))
            .collect())
    }

    /// The exact `k` nearest keys (brute force), for measuring the graph's recall.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        if self.ann.size() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let m = self
            .ann
            .exact_search(query, k)
            .map_err(|e| err("exact search", e))?;
        Ok(m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(k, d)| (k, 1.0 - d))
            .collect())
    }

    /// The stored vector of `key`, if there is one.
    pub fn vector(&self, key: u64) -> Result<Option<Vec<f32>>> {
        if !self.ann.contains(key) {
            return Ok(None);
        }
        let mut v = vec![0f32; self.dim];
        let n = self.ann.get(key, &mut v).map_err(|e| err("get", e))?;
        Ok((n > 0).then_some(v))
    }

    /// Bytes the graph and its vectors take in memory.
    pub fn memory_bytes(&self) -> usize {
        self.ann.memory_usage()
    }
}

/// How hybrid search fuses BM25's list with the dense one: reciprocal rank fusion with a weight
/// on the dense list and the constant `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// Weight of the dense list (BM25's is 1; 0 leaves BM25's order).
    pub dense_weight: f64,
    /// The RRF constant.
    pub k: f64,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            dense_weight: 1.0,
            k: RRF_K,
        }
    }
}

/// Reciprocal rank fusion of ranked lists of keys: `Σ 1 / (RRF_K + rank)`, best first.
pub fn rrf(lists: &[Vec<u64>]) -> Vec<(u64, f64)> {
    rrf_weighted(lists, &[], RRF_K)
}

/// [`rrf`] with a weight per list (missing weights are 1) and constant `k`:
/// `Σ w_list / (k + rank)`, best first (ties: first seen first).
pub fn rrf_weighted(lists: &[Vec<u64>], weights: &[f64], k: f64) -> Vec<(u64, f64)> {
    let mut score: HashMap<u64, f64> = HashMap::new();
    let mut first_seen: HashMap<u64, usize> = HashMap::new();
    let mut n = 0;
    for (l, list) in lists.iter().enumerate() {
        let w = weights.get(l).copied().unwrap_or(1.0);
        for (rank, key) in list.iter().enumerate() {
            *score.entry(*key).or_default() += w / (k + rank as f64 + 1.0);
            first_seen.entry(*key).or_insert_with(|| {
                n += 1;
                n
            });
        }
    }
    let mut out: Vec<(u64, f64)> = score.into_iter().collect();
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| first_seen[&a.0].cmp(&first_seen[&b.0]))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_graph_finds_neighbours_filters_removes_and_survives_a_reload() {
        let mut d = DenseIndex::new(3).unwrap();
        d.add(&[
            (1, unit(&[1.0, 0.0, 0.0])),
            (2, unit(&[0.9, 0.1, 0.0])),
            (3, unit(&[0.0, 1.0, 0.0])),
        ])
        .unwrap();
        let q = unit(&[1.0, 0.05, 0.0]);
        let r = d.search(&q, 2, None).unwrap();
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(r[0].1 > 0.99);
        let only3: HashSet<u64> = [3].into();
        assert_eq!(d.search(&q, 2, Some(&only3)).unwrap()[0].0, 3);
        assert!(d.remove(1).unwrap());
        assert_eq!(d.search(&q, 1, None).unwrap()[0].0, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DENSE_FILE);
        d.save(&p).unwrap();
        let back = DenseIndex::load(&p, 3).unwrap();
        assert_eq!(back.len(), 2);
        assert!(DenseIndex::load(&p, 4).is_err());
        assert!(d.add(&[(9, vec![1.0; 4])]).is_err());
        // A key twice in one batch keeps the last vector.
        d.add(&[(7, unit(&[0.0, 1.0, 0.0])), (7, unit(&[0.0, 0.0, 1.0]))])
            .unwrap();
        assert_eq!(d.search(&unit(&[0.0, 0.0, 1.0]), 1, None).unwrap()[0].0, 7);
    }

    #[test]
    fn rrf_rewards_agreement() {
        let f = rrf(&[vec![1, 2, 3], vec![3, 1, 4]]);
        assert_eq!(f[0].0, 1);
        assert_eq!(f[1].0, 3);
        assert!((f[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert_eq!(f.len(), 4);
        // A dense weight of 0 keeps the first list's order; a heavy one follows the second.
        let order = |w: f64| -> Vec<u64> {
            rrf_weighted(&[vec![1, 2, 3], vec![3, 1, 4]], &[1.0, w], 10.0)
                .iter()
                .map(|p| p.0)
                .collect()
        };
        assert_eq!(order(0.0)[..3], [1, 2, 3]);
        assert_eq!(order(10.0)[..3], [3, 1, 4]);
    }

    #[test]
    fn keys_are_stable() {
        assert_eq!(key(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(key("1"), key("2"));
    }
}
