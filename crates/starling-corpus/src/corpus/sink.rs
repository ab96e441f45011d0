//! Writing post shards: zstd-compressed JSON lines, a fixed number of posts per file.

use super::ShardRecord;
use crate::error::{Error, Result};
use starling_artifacts::AtomicFile;
use std::io::Write;
use std::path::PathBuf;

/// zstd level of post shards: level 1 compresses several times faster than 3 for ~10% more bytes.
const ZSTD_LEVEL: i32 = 1;

/// Post shards being written: lines go into zstd-compressed files of `per_shard` posts each,
/// each file atomic and hashed when closed.
pub(super) struct ShardSink {
    pub(super) dir: PathBuf,
    pub(super) per_shard: usize,
    pub(super) current: Option<(zstd::Encoder<'static, AtomicFile>, u64)>,
    pub(super) done: Vec<ShardRecord>,
    pub(super) pending: Vec<u8>,
}

impl ShardSink {
    /// The file name of shard `i`.
    pub(super) fn name(i: usize) -> String {
        format!("posts-{i:05}.jsonl.zst")
    }

    /// Appends one serialised post (a JSON line with its newline); compressor input goes in
    /// 256 KiB blocks (small writes cost).
    pub(super) fn write_line(&mut self, line: &[u8]) -> Result<()> {
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

    /// Hands the buffered lines to the compressor.
    fn flush_pending(&mut self) -> Result<()> {
        if let Some((enc, _)) = self.current.as_mut() {
            enc.write_all(&self.pending)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Finishes the open shard (if any) and records it.
    pub(super) fn close(&mut self) -> Result<()> {
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
