//! The one layer every stage writes its artifacts through: atomic writes (temp file, fsync,
//! rename, fsync of the directory), SHA-256 of files and streams, and format versions that refuse
//! a file written by another starling with a message saying what to rebuild.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("manifest.json");
//! starling_artifacts::write_atomic(&path, b"{}").unwrap();
//! let (sum, bytes) = starling_artifacts::sha256_file(&path).unwrap();
//! assert_eq!((sum.len(), bytes), (64, 2));
//! ```

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// An I/O failure on a named file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl IoError {
    /// The failure `source` on `path`.
    pub fn new(path: &Path, source: io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A line of a data file that cannot be used, named by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct Malformed {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the whole file is concerned).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl Malformed {
    /// Line `line` of `path` is unusable for `reason`.
    pub fn new(path: &Path, line: u64, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// The result of this crate's calls.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

/// Lowercase hex of bytes (a digest).
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of everything `r` yields, and how many bytes that was.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let n = io::copy(&mut r, &mut h)?;
    Ok((hex(h.finalize()), n))
}

/// SHA-256 (hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(|e| IoError::new(path, e))?;
    sha256_reader(f).map_err(|e| IoError::new(path, e))
}

/// The temp name `path` is written under before the rename: hidden, beside it (same file
/// system), ending in `.tmp` (a later write of the same file replaces a stale one).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Like [`temp_path`], but keeping the extension last, for writers that pick the format from
/// it (tch's `save`, plotters): `.model.tmp.safetensors`.
pub fn temp_path_keeping_extension(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    match path.extension() {
        Some(ext) => path.with_file_name(format!(".{stem}.tmp.{}", ext.to_string_lossy())),
        None => temp_path(path),
    }
}

/// Makes the rename of a file into `dir` durable (no-op where directories cannot be opened).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
}

/// fsyncs `tmp`, renames it to `path` and fsyncs the directory: `path` is then either the old
/// file or the whole new one, also after a crash.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| IoError::new(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| IoError::new(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| IoError::new(path, e))?;
    f.finish().map(|_| ())
}

/// Writes `path` atomically through a writer that only takes a path (a library's `save`): `write`
/// gets a temp path with the same extension; on success it is committed, on failure removed.
pub fn write_atomic_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<IoError>,
{
    let tmp = temp_path_keeping_extension(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit(&tmp, path).map_err(E::from)
}

/// A file written under a temp name, hashed as it is written, committed into place by
/// [`AtomicFile::finish`] (dropped unfinished, the temp file is removed).
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    inner: Option<BufWriter<File>>,
    hasher: Sha256,
    bytes: u64,
}

impl AtomicFile {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_path(path);
        let f = File::create(&tmp).map_err(|e| IoError::new(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            inner: Some(BufWriter::with_capacity(1 << 20, f)),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// The temp path being written (for error messages).
    pub fn temp(&self) -> &Path {
        &self.tmp
    }

    /// Seeks the temp file (e.g. to fill in a header after the body); bytes written before the
    /// seek stay in the hash as written.
    pub fn file_mut(&mut self) -> Result<&mut File> {
        let tmp = self.tmp.clone();
        let w = self
            .inner
            .as_mut()
            .ok_or_else(|| IoError::new(&tmp, io::Error::other("already finished")))?;
        w.flush().map_err(|e| IoError::new(&tmp, e))?;
        Ok(w.get_mut())
    }

    /// Flushes, fsyncs and renames into place; returns (sha256 of the bytes written, their count).
    pub fn finish(mut self) -> Result<(String, u64)> {
        let tmp = self.tmp.clone();
        let w = self
            .inner
            .take()
            .ok_or_else(|| IoError::new(&tmp, io::Error::other("already finished")))?;
        w.into_inner()
            .map_err(|e| IoError::new(&tmp, e.into_error()))?;
        commit(&self.tmp, &self.path)?;
        let hasher = std::mem::take(&mut self.hasher);
        Ok((hex(hasher.finalize()), self.bytes))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let w = self
            .inner
            .as_mut()
            .ok_or_else(|| io::Error::other("already finished"))?;
        let n = w.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Copies the directory tree `src` to `dst` (created), files and subdirectories.
pub fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| IoError::new(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| IoError::new(src, e))? {
        let entry = entry.map_err(|e| IoError::new(src, e))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry
            .file_type()
            .map_err(|e| IoError::new(&from, e))?
            .is_dir()
        {
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| IoError::new(&from, e))?;
        }
    }
    Ok(())
}

/// A file format's version did not match what this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what} format version {found}, written by {} starling (this one reads version {supported}); {rebuild}", path.display(), if found > supported { "a newer" } else { "an older" })]
pub struct VersionError {
    /// The file.
    pub path: PathBuf,
    /// What the file is ("token shard", "search index", ...).
    pub what: String,
    /// The version in the file.
    pub found: u32,
    /// The version this build reads.
    pub supported: u32,
    /// How to get a file this build reads ("rebuild with `starling tokens ...`").
    pub rebuild: String,
}

/// Checks a file's format version against the one this build reads.
pub fn check_version(
    path: &Path,
    what: &str,
    found: u32,
    supported: u32,
    rebuild: &str,
) -> std::result::Result<(), VersionError> {
    if found == supported {
        return Ok(());
    }
    Err(VersionError {
        path: path.to_path_buf(),
        what: what.to_string(),
        found,
        supported,
        rebuild: rebuild.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("shard-00000.bin");
        std::fs::write(&path, b"old").expect("old");
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"new bytes").expect("write");
        // Until finished, readers see the old file.
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert!(f.temp().to_string_lossy().ends_with(".shard-00000.bin.tmp"));
        assert!(
            temp_path_keeping_extension(&dir.path().join("m.safetensors"))
                .to_string_lossy()
                .ends_with(".m.tmp.safetensors")
        );
        let (sum, n) = f.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"new bytes");
        assert_eq!((sum, n), sha256_file(&path).expect("sum"));
        // Dropped unfinished: the old file stays and no temp file is left.
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"half").expect("write");
        drop(f);
        assert_eq!(std::fs::read(&path).expect("read"), b"new bytes");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        // A failing writer leaves nothing behind.
        let other = dir.path().join("model.safetensors");
        let r: std::result::Result<(), IoError> = write_atomic_with(&other, |tmp| {
            std::fs::write(tmp, b"partial").map_err(|e| IoError::new(tmp, e))?;
            Err(IoError::new(tmp, io::Error::other("disk full")))
        });
        assert!(r.is_err());
        assert!(!other.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        write_atomic_with(&other, |tmp| {
            std::fs::write(tmp, b"w").map_err(|e| IoError::new(tmp, e))
        })
        .expect("with");
        assert_eq!(std::fs::read(&other).expect("read"), b"w");
    }

    #[test]
    fn versions_name_the_file_and_the_way_out() {
        let p = Path::new("out/tokens/shard-00000.bin");
        assert!(check_version(p, "token shard", 2, 2, "x").is_ok());
        let e =
            check_version(p, "token shard", 3, 2, "rebuild with `starling tokens`").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("out/tokens/shard-00000.bin") && m.contains("a newer starling"),
            "{m}"
        );
        assert!(m.contains("rebuild with `starling tokens`"), "{m}");
        let m = check_version(p, "token shard", 1, 2, "r")
            .unwrap_err()
            .to_string();
        assert!(m.contains("an older starling"), "{m}");
    }
}
