//! Inputs (files and directories), deletion lists, and a corpus directory read back.

use super::manifest::{Manifest, ShardRecord, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::post::Post;
use starling_artifacts::sha256_file;
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

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
pub(crate) fn is_documentation(p: &Path) -> bool {
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

pub(crate) fn remove_stale_shards(out: &Path, keep: &[ShardRecord]) -> Result<()> {
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
        starling_artifacts::check_version(
            &path,
            "corpus",
            manifest.format_version,
            FORMAT_VERSION,
            "rebuild the corpus with `starling corpus`",
        )
        .map_err(|e| Error::Format {
            path: path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
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

    /// Calls `f` for every post kept for training (verdict `kept`), in shard order; returns how
    /// many written posts it passed over (filtered with their verdict, or held out).
    pub fn for_each_kept(&self, f: &mut dyn FnMut(Post)) -> Result<u64> {
        let mut passed = 0u64;
        self.for_each_post(&mut |p| {
            if p.verdict == crate::Verdict::Kept {
                f(p);
            } else {
                passed += 1;
            }
        })?;
        Ok(passed)
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
