//! Token shards: a 32-byte header (magic, version, dtype, count), then little-endian token ids.

use crate::error::{Error, Result};
use starling_artifacts::{sha256_file, AtomicFile};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of every shard.
pub const MAGIC: &[u8; 8] = b"STRLTOKS";
/// Shard format version.
pub const SHARD_VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 32;

/// Width of the stored ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 2-byte ids (vocabularies up to 65,536).
    U16,
    /// 4-byte ids.
    U32,
}

impl Dtype {
    /// The narrowest dtype for a vocabulary.
    pub fn for_vocab(vocab: usize) -> Self {
        if vocab <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// Bytes per id.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    fn code(self) -> u32 {
        self.bytes() as u32
    }
}

/// Writes one shard through a temp file; `finish` fsyncs, renames and returns (tokens, sha256).
pub struct ShardWriter {
    path: PathBuf,
    out: AtomicFile,
    dtype: Dtype,
    count: u64,
}

impl ShardWriter {
    /// Starts a shard at `path`.
    pub fn create(path: &Path, dtype: Dtype) -> Result<Self> {
        let mut w = Self {
            path: path.to_path_buf(),
            out: AtomicFile::create(path)?,
            dtype,
            count: 0,
        };
        // Placeholder header; the count is filled in by `finish`.
        w.out
            .write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| Error::io(w.out.temp(), e))?;
        Ok(w)
    }

    /// Appends ids.
    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * self.dtype.bytes());
        for &id in ids {
            match self.dtype {
                Dtype::U16 => {
                    let v = u16::try_from(id).map_err(|_| Error::Format {
                        path: self.path.clone(),
                        message: format!("token id {id} does not fit u16"),
                    })?;
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                Dtype::U32 => buf.extend_from_slice(&id.to_le_bytes()),
            }
        }
        self.out
            .write_all(&buf)
            .map_err(|e| Error::io(self.out.temp(), e))?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Tokens written so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the header, fsyncs, renames; returns (tokens, sha256 of the whole file).
    pub fn finish(mut self) -> Result<(u64, String)> {
        use std::io::{Seek, SeekFrom};
        let header = header(self.dtype, self.count);
        let tmp = self.out.temp().to_path_buf();
        let f = self.out.file_mut()?;
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&header))
            .map_err(|e| Error::io(&tmp, e))?;
        self.out.finish()?;
        let (sha, _) = sha256_file(&self.path)?;
        Ok((self.count, sha))
    }
}

fn header(dtype: Dtype, count: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&SHARD_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&dtype.code().to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h
}

/// A shard opened for reading, memory-mapped.
#[derive(Debug)]
pub struct TokenShard {
    map: memmap2::Mmap,
    dtype: Dtype,
    count: usize,
}

impl TokenShard {
    /// Opens and checks a shard: magic, version, dtype and that the size matches the count.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        #[allow(unsafe_code)]
        // SAFETY: shards are written once through a temp file and renamed into place, never
        // modified afterwards; a concurrent truncation by another process would be a misuse we
        // cannot guard against, as with every memory map.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        if map.len() < HEADER_BYTES || &map[..8] != MAGIC {
            return Err(bad("not a starling token shard (bad magic)".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes([map[i], map[i + 1], map[i + 2], map[i + 3]]);
        starling_artifacts::check_version(
            path,
            "token shard",
            u32_at(8),
            SHARD_VERSION,
            "rebuild the shards with `starling tokens`",
        )?;
        let dtype = match u32_at(12) {
            2 => Dtype::U16,
            4 => Dtype::U32,
            other => return Err(bad(format!("unknown dtype code {other}"))),
        };
        let mut c = [0u8; 8];
        c.copy_from_slice(&map[16..24]);
        let count = u64::from_le_bytes(c) as usize;
        let expected = HEADER_BYTES + count * dtype.bytes();
        if map.len() != expected {
            return Err(bad(format!(
                "{} bytes, header says {count} tokens = {expected} bytes (torn or truncated)",
                map.len()
            )));
        }
        Ok(Self { map, dtype, count })
    }

    /// Tokens in the shard.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Stored dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.count {
            return None;
        }
        let at = HEADER_BYTES + i * self.dtype.bytes();
        Some(match self.dtype {
            Dtype::U16 => u32::from(u16::from_le_bytes([self.map[at], self.map[at + 1]])),
            Dtype::U32 => u32::from_le_bytes([
                self.map[at],
                self.map[at + 1],
                self.map[at + 2],
                self.map[at + 3],
            ]),
        })
    }

    /// Copies tokens `start..start + out.len()` into `out`; false when out of range.
    pub fn read_into(&self, start: usize, out: &mut [u32]) -> bool {
        if start + out.len() > self.count {
            return false;
        }
        let w = self.dtype.bytes();
        let bytes = &self.map[HEADER_BYTES + start * w..HEADER_BYTES + (start + out.len()) * w];
        match self.dtype {
            Dtype::U16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u32::from(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            Dtype::U32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_dtypes_and_detect_torn_files() {
        let dir = tempfile::tempdir().expect("tmp");
        for (dtype, ids) in [
            (Dtype::U16, vec![0u32, 1, 65535, 42]),
            (Dtype::U32, vec![0u32, 70_000, 4_000_000_000]),
        ] {
            let p = dir.path().join(format!("{dtype:?}.bin"));
            let mut w = ShardWriter::create(&p, dtype).expect("create");
            w.write(&ids[..2]).expect("write");
            w.write(&ids[2..]).expect("write");
            let (n, sha) = w.finish().expect("finish");
            assert_eq!(n as usize, ids.len());
            assert_eq!(sha, sha256_file(&p).expect("sha").0);
            let s = TokenShard::open(&p).expect("open");
            assert_eq!(
                (0..s.len()).filter_map(|i| s.get(i)).collect::<Vec<_>>(),
                ids
            );
            let mut buf = vec![0; 2];
            assert!(s.read_into(1, &mut buf) && buf == ids[1..3]);
            assert!(!s.read_into(ids.len() - 1, &mut buf));
            // A torn file (cut short) is refused with a clear message.
            let bytes = std::fs::read(&p).expect("read");
            std::fs::write(&p, &bytes[..bytes.len() - 1]).expect("write");
            let err = TokenShard::open(&p).expect_err("torn");
            assert!(err.to_string().contains("torn"), "{err}");
        }
        let p = dir.path().join("big.bin");
        let mut w = ShardWriter::create(&p, Dtype::U16).expect("create");
        assert!(w.write(&[70_000]).is_err());
    }
}
