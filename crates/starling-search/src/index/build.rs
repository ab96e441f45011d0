//! Building an index from a corpus or from posts, with dense vectors when an embedder is given.

use super::*;
use crate::dense::{self, DenseIndex, DENSE_FILE};
use starling_corpus::{Corpus, Post};
use std::path::Path;
use tantivy::{Index, TantivyDocument};

/// Builds the index of every written post of the corpus at `corpus` into `out`, through a
/// temporary directory renamed at the end (a failed build leaves nothing at `out`).
pub fn build(
    corpus: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    let c = Corpus::open(corpus)?;
    let (sha, _) = starling_artifacts::sha256_file(&corpus.join("manifest.json"))?;
    build_from(
        &mut |sink: &mut dyn FnMut(Post)| Ok(c.for_each_post(sink)?),
        &sha,
        out,
        opts,
        progress,
    )
}

/// A source of posts for [`build_from`]: calls the sink once per post.
pub type PostSource<'a> = dyn FnMut(&mut dyn FnMut(Post)) -> Result<()> + 'a;

/// Builds an index of the posts `source` yields (see [`build`]); `source_sha256` identifies them.
pub fn build_from(
    source: &mut PostSource,
    source_sha256: &str,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    if out.exists() {
        return Err(Error::Format(format!(
            "{}: already exists; remove it or choose another --out",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    let tmp = parent.join(format!(".{name}.building"));
    let _ = std::fs::remove_dir_all(&tmp);
    let r = build_into(source, source_sha256, &tmp, opts, progress);
    match r {
        Ok(meta) => {
            std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
            Ok(meta)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Builds an index of posts held in memory (see [`build_from`]).
pub fn build_posts(
    posts: &[Post],
    source_sha256: &str,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    build_from(
        &mut |sink: &mut dyn FnMut(Post)| {
            posts.iter().cloned().for_each(&mut *sink);
            Ok(())
        },
        source_sha256,
        out,
        opts,
        progress,
    )
}

/// Posts embedded per call while building.
pub(crate) const EMBED_CHUNK: usize = 256;

pub(crate) fn build_into(
    source: &mut PostSource,
    source_sha256: &str,
    dir: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (schema, f) = schema();
    let index = Index::create_in_dir(dir, schema)?;
    register(&index);
    let mut writer = match opts.reproducible {
        true => index.writer_with_num_threads::<TantivyDocument>(1, 200_000_000)?,
        false => index.writer::<TantivyDocument>(200_000_000)?,
    };
    let mut dense = match opts.embedder {
        Some(e) => Some(DenseIndex::new(e.dim())?),
        None => None,
    };
    let mut pending: Vec<(String, String)> = Vec::new();
    let embed_pending =
        |pending: &mut Vec<(String, String)>, dense: &mut Option<DenseIndex>| -> Result<()> {
            if let (Some(e), Some(d)) = (opts.embedder, dense.as_mut()) {
                let texts: Vec<&str> = pending.iter().map(|(_, t)| t.as_str()).collect();
                let vecs = e.embed(&texts)?;
                let items: Vec<(u64, Vec<f32>)> = pending
                    .iter()
                    .zip(vecs)
                    .map(|((id, _), v)| (dense::key(id), v))
                    .collect();
                d.add(&items)?;
            }
            pending.clear();
            Ok(())
        };
    let mut posts = 0u64;
    let mut newest: Option<i64> = None;
    let mut failed: Option<Error> = None;
    source(&mut |p: Post| {
        if failed.is_some() {
            return;
        }
        if let Some(t) = p.created_at {
            newest = Some(newest.map_or(t.timestamp(), |n| n.max(t.timestamp())));
        }
        if let Err(e) = writer.add_document(document(&f, &p)) {
            failed = Some(e.into());
            return;
        }
        if dense.is_some() {
            pending.push((p.id.clone(), p.text.clone()));
            if pending.len() >= EMBED_CHUNK {
                if let Err(e) = embed_pending(&mut pending, &mut dense) {
                    failed = Some(e);
                    return;
                }
            }
        }
        posts += 1;
        if posts.is_multiple_of(if dense.is_some() { 1_000 } else { 10_000 }) {
            progress(posts);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    embed_pending(&mut pending, &mut dense)?;
    if posts == 0 {
        return Err(Error::Format(
            "the corpus has no posts to index".to_string(),
        ));
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    progress(posts);
    let dense_meta = match (opts.embedder, &dense) {
        (Some(e), Some(d)) => {
            d.save(&dir.join(DENSE_FILE))?;
            Some(DenseMeta {
                embedder: e.id().to_string(),
                dim: e.dim(),
                model: opts.model.clone(),
                ann: format!(
                    "usearch {} HNSW, cosine, f32, M={}, efConstruction={}, ef={}",
                    usearch::version(),
                    dense::CONNECTIVITY,
                    dense::EXPANSION_ADD,
                    dense::EXPANSION_SEARCH
                ),
            })
        }
        _ => None,
    };
    let meta = IndexMeta {
        version: INDEX_VERSION,
        starling: env!("CARGO_PKG_VERSION").to_string(),
        posts,
        newest,
        corpus_manifest_sha256: source_sha256.to_string(),
        dense: dense_meta,
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

pub(crate) fn write_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::Format(e.to_string()))?;
    Ok(starling_artifacts::write_atomic(
        &dir.join(META_FILE),
        &json,
    )?)
}
