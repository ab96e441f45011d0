//! [`PostIndex`]: an opened index, its searches (bm25, dense, hybrid; top or latest) and live
//! changes (add, delete).

use super::*;
use crate::dense::{self, DenseIndex, DENSE_FILE};
use crate::query::{self, Query};
use starling_corpus::Post;
use starling_embed::Embedder;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Mutex, RwLock};
use tantivy::collector::DocSetCollector;
use tantivy::collector::TopDocs;
use tantivy::query::TermSetQuery;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query as TQuery, RangeQuery};
use tantivy::schema::{Field, Value};
use tantivy::{
    DateTime, DocAddress, Index, IndexReader, IndexWriter, Order as SortOrder, TantivyDocument,
    Term,
};

/// An opened index: searched by any number of threads while posts are added and deleted.
pub struct PostIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dir: PathBuf,
    dense: Option<RwLock<DenseIndex>>,
    writer: Mutex<Option<IndexWriter>>,
    newest: AtomicI64,
    fusion: RwLock<crate::dense::Fusion>,
    /// What built it.
    pub meta: IndexMeta,
}

/// What [`PostIndex::add`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Posts new to the index.
    pub added: usize,
    /// Posts that were already there and were replaced.
    pub replaced: usize,
    /// Copies of an id that a later copy in the same batch superseded
    /// (`added + replaced + repeated` = posts given; the index grows by `added`).
    pub repeated: usize,
}

impl PostIndex {
    /// Opens an index directory, checking that this build can read it.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Format(format!(
                    "{}: not a starling index (no {META_FILE}); build one with `starling index build`",
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let meta: IndexMeta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        starling_artifacts::check_version(
            &path,
            &format!("search index (built by starling {})", meta.starling),
            meta.version,
            INDEX_VERSION,
            "rebuild it with `starling index build`",
        )
        .map_err(|e| Error::Format(e.to_string()))?;
        let index = Index::open_in_dir(dir)?;
        register(&index);
        let (_, fields) = schema();
        let reader = index.reader()?;
        let dense = match &meta.dense {
            Some(d) => Some(RwLock::new(DenseIndex::load(&dir.join(DENSE_FILE), d.dim)?)),
            None => None,
        };
        Ok(Self {
            index,
            reader,
            fields,
            dir: dir.to_path_buf(),
            dense,
            writer: Mutex::new(None),
            newest: AtomicI64::new(meta.newest.unwrap_or(i64::MIN)),
            fusion: RwLock::new(crate::dense::Fusion::default()),
            meta,
        })
    }

    /// How hybrid search fuses its lists from now on (default: equal weights, k = 60).
    pub fn set_fusion(&self, f: crate::dense::Fusion) {
        if let Ok(mut g) = self.fusion.write() {
            *g = f;
        }
    }

    /// How hybrid search fuses its lists.
    pub fn fusion(&self) -> crate::dense::Fusion {
        self.fusion.read().map(|g| *g).unwrap_or_default()
    }

    /// Posts in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// True when the index holds no posts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the index has dense vectors (dense and hybrid modes work).
    pub fn has_dense(&self) -> bool {
        self.dense.is_some()
    }

    /// The tantivy query for a parsed query.
    pub fn to_tantivy(&self, q: &Query) -> Box<dyn TQuery> {
        let mut post = post_analyzer();
        let mut url = url_analyzer();
        translate(&self.fields, q, &mut post, &mut url).unwrap_or_else(|| Box::new(AllQuery))
    }

    /// Searches with a query in Twitter's language by BM25; `limit` results in `order`.
    pub fn search(&self, text: &str, order: SearchOrder, limit: usize) -> Result<Vec<Hit>> {
        self.search_with(&SearchRequest {
            query: text,
            mode: SearchMode::Bm25,
            order,
            limit,
            embedder: None,
        })
    }

    /// Searches in any mode: BM25, dense (the query's words embedded, its operators filtering)
    /// or hybrid (both fused by reciprocal rank). `latest` orders the mode's best `limit` by time.
    pub fn search_with(&self, r: &SearchRequest) -> Result<Vec<Hit>> {
        let q = query::parse(r.query)?;
        let limit = r.limit.max(1);
        if r.mode == SearchMode::Bm25 {
            return self.bm25(&q, r.order, limit);
        }
        let depth = if r.mode == SearchMode::Hybrid {
            limit.max(FUSION_DEPTH)
        } else {
            limit
        };
        let dense = self.dense_search(&q, r.embedder, depth)?;
        let mut hits = match r.mode {
            SearchMode::Dense => dense,
            _ => {
                let bm25 = self.bm25(&q, SearchOrder::Top, depth)?;
                let lists = [
                    bm25.iter().map(|h| dense::key(&h.id)).collect::<Vec<_>>(),
                    dense.iter().map(|h| dense::key(&h.id)).collect(),
                ];
                let mut by_key: std::collections::HashMap<u64, Hit> = bm25
                    .into_iter()
                    .chain(dense)
                    .map(|h| (dense::key(&h.id), h))
                    .collect();
                let f = self.fusion();
                dense::rrf_weighted(&lists, &[1.0, f.dense_weight], f.k)
                    .into_iter()
                    .take(limit)
                    .filter_map(|(k, score)| {
                        by_key.remove(&k).map(|mut h| {
                            h.score = score;
                            h
                        })
                    })
                    .collect()
            }
        };
        hits.truncate(limit);
        if r.order == SearchOrder::Latest {
            hits.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        }
        Ok(hits)
    }

    fn check_embedder<'e>(&self, e: Option<&'e dyn Embedder>) -> Result<Option<&'e dyn Embedder>> {
        let Some(meta) = &self.meta.dense else {
            return Ok(None);
        };
        let e = e.ok_or_else(|| {
            Error::Format(format!(
                "{}: the index has dense vectors from embedder {}; this needs that model to embed with",
                self.dir.display(),
                meta.embedder
            ))
        })?;
        if e.id() != meta.embedder || e.dim() != meta.dim {
            return Err(Error::Format(format!(
                "{}: the index was built from another model (embedder {}, {} dimensions); the model given is {} ({} dimensions): use the model it was built with, or rebuild",
                self.dir.display(),
                meta.embedder,
                meta.dim,
                e.id(),
                e.dim()
            )));
        }
        Ok(Some(e))
    }

    fn dense_search(
        &self,
        q: &Query,
        embedder: Option<&dyn Embedder>,
        depth: usize,
    ) -> Result<Vec<Hit>> {
        let Some(dense) = &self.dense else {
            return Err(Error::Format(format!(
                "{}: the index has no dense vectors (built without --model): use --mode bm25 or rebuild with --model",
                self.dir.display()
            )));
        };
        let e = self
            .check_embedder(embedder)?
            .ok_or_else(|| Error::Format("dense search needs the index's model".to_string()))?;
        let parts = q.dense_parts();
        if parts.text.trim().is_empty() {
            // Nothing to embed (only operators): BM25 answers exactly the same set.
            return self.bm25(q, SearchOrder::Top, depth);
        }
        let searcher = self.reader.searcher();
        let allowed = match &parts.filter {
            None => None,
            Some(f) => {
                let tq = self.to_tantivy(f);
                let docs = searcher.search(&tq, &DocSetCollector)?;
                let mut keys = HashSet::with_capacity(docs.len());
                let mut cols = std::collections::HashMap::new();
                for a in docs {
                    let col = match cols.entry(a.segment_ord) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => e.insert(
                            searcher
                                .segment_reader(a.segment_ord)
                                .fast_fields()
                                .u64("key")?
                                .first_or_default_col(0),
                        ),
                    };
                    keys.insert(col.get_val(a.doc_id));
                }
                Some(keys)
            }
        };
        let v = e
            .embed(&[parts.text.as_str()])?
            .pop()
            .ok_or_else(|| Error::Format("the embedder returned no vector".into()))?;
        let found = {
            let d = dense
                .read()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
            d.search(&v, depth, allowed.as_ref())?
        };
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let terms: Vec<Term> = found
            .iter()
            .map(|(k, _)| Term::from_field_u64(self.fields.key, *k))
            .collect();
        let addrs = searcher.search(&TermSetQuery::new(terms), &DocSetCollector)?;
        let mut by_key = std::collections::HashMap::with_capacity(addrs.len());
        for a in addrs {
            let d: TantivyDocument = searcher.doc(a)?;
            let h = self.hit(&d, 0.0);
            by_key.insert(dense::key(&h.id), h);
        }
        Ok(found
            .into_iter()
            .filter_map(|(k, sim)| {
                by_key.remove(&k).map(|mut h| {
                    h.score = f64::from(sim);
                    h
                })
            })
            .collect())
    }

    fn bm25(&self, q: &Query, order: SearchOrder, limit: usize) -> Result<Vec<Hit>> {
        let tq = self.to_tantivy(q);
        let searcher = self.reader.searcher();
        let now = self.newest.load(AtomicOrdering::Relaxed);
        let now = (now != i64::MIN).then_some(now);
        let addrs: Vec<(f64, DocAddress)> = match order {
            SearchOrder::Latest => {
                let by_time = |query: &dyn TQuery| -> Result<Vec<(f64, DocAddress)>> {
                    Ok(searcher
                        .search(
                            query,
                            &TopDocs::with_limit(limit)
                                .order_by_fast_field::<DateTime>("created_at", SortOrder::Desc),
                        )?
                        .into_iter()
                        .map(|(t, a)| {
                            (
                                t.map(|t| t.into_timestamp_secs() as f64)
                                    .unwrap_or(f64::NAN),
                                a,
                            )
                        })
                        .collect())
                };
                // The newest matches are found in a recent window first (as Earlybird searches
                // its newest segment first); when a window holds `limit` of them, nothing older
                // can be among the newest `limit`.
                let mut found = None;
                if let Some(now) = now {
                    for window in LATEST_WINDOWS_S {
                        let since = Term::from_field_date_for_search(
                            self.fields.created_at,
                            DateTime::from_timestamp_secs(now - window),
                        );
                        let windowed = BooleanQuery::new(vec![
                            (Occur::Must, tq.box_clone()),
                            (
                                Occur::Must,
                                Box::new(RangeQuery::new(Bound::Included(since), Bound::Unbounded)),
                            ),
                        ]);
                        let r = by_time(&windowed)?;
                        if r.len() >= limit {
                            found = Some(r);
                            break;
                        }
                    }
                }
                match found {
                    Some(r) => r,
                    None => by_time(tq.as_ref())?,
                }
            }
            SearchOrder::Top if !q.dense_parts().text.trim().is_empty() => {
                // Words to score: BM25's best TOP_RERANK_DEPTH (block-max WAND skips the rest)
                // re-ranked by engagement and recency.
                let cands = searcher.search(
                    &tq,
                    &TopDocs::with_limit(TOP_RERANK_DEPTH.max(limit)).order_by_score(),
                )?;
                let mut scorers: std::collections::HashMap<
                    u32,
                    Box<dyn Fn(tantivy::DocId, f32) -> f64>,
                > = std::collections::HashMap::new();
                let mut ranked: Vec<(f64, DocAddress)> = Vec::with_capacity(cands.len());
                for (bm25, a) in cands {
                    let f = scorers.entry(a.segment_ord).or_insert_with(|| {
                        Box::new(top_scorer(searcher.segment_reader(a.segment_ord), now))
                    });
                    ranked.push((f(a.doc_id, bm25), a));
                }
                ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
                ranked.truncate(limit);
                ranked
            }
            SearchOrder::Top => searcher.search(
                &tq,
                &TopDocs::with_limit(limit)
                    .tweak_score(move |seg: &tantivy::SegmentReader| top_scorer(seg, now)),
            )?,
        };
        let mut hits = Vec::with_capacity(addrs.len());
        for (score, addr) in addrs {
            let d: TantivyDocument = searcher.doc(addr)?;
            hits.push(self.hit(&d, score));
        }
        Ok(hits)
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::Format("the index writer lock is poisoned".into()))?;
        if guard.is_none() {
            let w = self
                .index
                .writer::<TantivyDocument>(50_000_000)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => Error::Format(format!(
                        "{}: another process is writing to this index; try again when it is done",
                        self.dir.display()
                    )),
                    e => e.into(),
                })?;
            *guard = Some(w);
        }
        match guard.as_mut() {
            Some(w) => f(w),
            None => Err(Error::Format("no index writer".into())),
        }
    }

    fn contains_id(&self, id: &str) -> Result<bool> {
        let searcher = self.reader.searcher();
        Ok(searcher.doc_freq(&Term::from_field_text(self.fields.id, id))? > 0)
    }

    /// Makes posts searchable now (a post already there is replaced; an id repeated within
    /// `posts` counts once, its last copy kept); `embedder` is required when the index has dense
    /// vectors. Returns when a query would find them.
    pub fn add(&self, posts: &[Post], embedder: Option<&dyn Embedder>) -> Result<AddReport> {
        let embedder = self.check_embedder(embedder)?;
        let given = posts.len();
        // The last copy of each id, in first-seen order.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(posts.len());
        for (i, p) in posts.iter().enumerate() {
            last.insert(p.id.as_str(), i);
        }
        let posts: Vec<&Post> = posts
            .iter()
            .enumerate()
            .filter(|(i, p)| last.get(p.id.as_str()) == Some(i))
            .map(|(_, p)| p)
            .collect();
        let mut report = AddReport {
            repeated: given - posts.len(),
            ..AddReport::default()
        };
        let vectors = match embedder {
            Some(e) => {
                let texts: Vec<&str> = posts.iter().map(|p| p.text.as_str()).collect();
                Some(e.embed(&texts)?)
            }
            None => None,
        };
        self.with_writer(|w| {
            // Counted under the writer lock, so concurrent adds of one id count it new once.
            for p in &posts {
                if self.contains_id(&p.id)? {
                    report.replaced += 1;
                } else {
                    report.added += 1;
                }
            }
            for p in &posts {
                w.delete_term(Term::from_field_text(self.fields.id, &p.id));
                w.add_document(document(&self.fields, p))?;
            }
            w.commit()?;
            self.reader.reload()?;
            Ok(())
        })?;
        if let (Some(dense), Some(vectors)) = (&self.dense, vectors) {
            let items: Vec<(u64, Vec<f32>)> = posts
                .iter()
                .zip(vectors)
                .map(|(p, v)| (dense::key(&p.id), v))
                .collect();
            dense
                .write()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?
                .add(&items)?;
        }
        for t in posts.iter().filter_map(|p| p.created_at) {
            self.newest
                .fetch_max(t.timestamp(), AtomicOrdering::Relaxed);
        }
        Ok(report)
    }

    /// Removes posts by id at once; returns how many were in the index (an id given twice
    /// counts once).
    pub fn delete(&self, ids: &[String]) -> Result<usize> {
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        let present = self.with_writer(|w| {
            let mut present = 0;
            for id in &ids {
                if self.contains_id(id)? {
                    present += 1;
                }
            }
            for id in &ids {
                w.delete_term(Term::from_field_text(self.fields.id, id));
            }
            w.commit()?;
            self.reader.reload()?;
            Ok(present)
        })?;
        if let Some(dense) = &self.dense {
            let mut d = dense
                .write()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
            for id in ids {
                d.remove(dense::key(id))?;
            }
        }
        Ok(present)
    }

    /// Removes every post of these authors (by author id, as deletion lists' `user:ID` lines give
    /// them); returns how many posts went.
    pub fn delete_authors(&self, author_ids: &[String]) -> Result<usize> {
        let searcher = self.reader.searcher();
        let terms: Vec<Term> = author_ids
            .iter()
            .map(|a| Term::from_field_text(self.fields.author_id, a))
            .collect();
        let docs = searcher.search(&TermSetQuery::new(terms), &DocSetCollector)?;
        let mut ids = Vec::with_capacity(docs.len());
        for a in docs {
            let d: TantivyDocument = searcher.doc(a)?;
            if let Some(id) = d.get_first(self.fields.id).and_then(|v| v.as_str()) {
                ids.push(id.to_string());
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.delete(&ids)
    }

    /// The stored vectors of the posts `ids` that have one (in the order given; missing ids are skipped).
    pub fn post_vectors(&self, ids: &[String]) -> Result<Vec<Vec<f32>>> {
        let Some(dense) = &self.dense else {
            return Ok(Vec::new());
        };
        let d = dense
            .read()
            .map_err(|_| Error::Format("the vector index lock is poisoned".into()))?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = d.vector(dense::key(id))? {
                out.push(v);
            }
        }
        Ok(out)
    }
    /// Writes what lives only in memory (the ANN graph, the post count, the newest time) to the
    /// index directory, atomically; the text index is already durable after each add and delete.
    pub fn flush(&self) -> Result<IndexMeta> {
        if let Some(dense) = &self.dense {
            dense
                .read()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?
                .save(&self.dir.join(DENSE_FILE))?;
        }
        let mut meta = self.meta.clone();
        meta.posts = self.len();
        let n = self.newest.load(AtomicOrdering::Relaxed);
        meta.newest = (n != i64::MIN).then_some(n);
        write_meta(&self.dir, &meta)?;
        Ok(meta)
    }

    /// Recall@k of the ANN graph against exact search, over the given query vectors.
    pub fn ann_recall(&self, queries: &[Vec<f32>], k: usize) -> Result<f64> {
        let Some(dense) = &self.dense else {
            return Err(Error::Format("the index has no dense vectors".into()));
        };
        let d = dense
            .read()
            .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
        let (mut hit, mut total) = (0usize, 0usize);
        for q in queries {
            let exact: HashSet<u64> = d.exact_search(q, k)?.into_iter().map(|x| x.0).collect();
            let approx = d.search(q, k, None)?;
            hit += approx.iter().filter(|x| exact.contains(&x.0)).count();
            total += exact.len();
        }
        Ok(if total == 0 {
            1.0
        } else {
            hit as f64 / total as f64
        })
    }

    fn hit(&self, d: &TantivyDocument, score: f64) -> Hit {
        let f = &self.fields;
        let text = |field: Field| {
            d.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num = |field: Field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Hit {
            id: text(f.id).unwrap_or_default(),
            score,
            author: text(f.author),
            created_at: d
                .get_first(f.created_at)
                .and_then(|v| v.as_datetime())
                .and_then(|t| chrono::DateTime::from_timestamp(t.into_timestamp_secs(), 0))
                .map(|t| t.to_rfc3339()),
            text: text(f.text).unwrap_or_default(),
            engagement: [num(f.likes), num(f.reposts), num(f.replies), num(f.quotes)],
        }
    }

    /// The underlying tantivy index.
    pub fn tantivy(&self) -> &Index {
        &self.index
    }
}
