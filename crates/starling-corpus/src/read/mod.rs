//! Readers: any supported dump in, a stream of [`Item`]s out, in bounded memory.
//!
//! The format is sniffed per file (after transparent gzip/bzip2/zstd decompression):
//! Twitter JSON (v1.1 objects, arrays, search responses and stream lines; v2 pages and flattened
//! v2 lines; compliance records), a Twitter archive `tweets.js`, CSV with a header, or plain text.

mod csv_posts;
mod text;
mod twitter;

use crate::error::{Error, Result};
use crate::post::Post;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

pub use csv_posts::CsvColumns;

/// Input formats a file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Twitter API JSON, v1.1 or v2, one document, an array or one record per line.
    TwitterJson,
    /// A Twitter archive's `tweets.js` (`window.YTD.tweets.part0 = [...]`).
    Archive,
    /// CSV with a header row.
    Csv,
    /// Plain text, one post per line.
    Text,
}

/// Compression a file is stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip.
    Gzip,
    /// bzip2.
    Bzip2,
    /// Zstandard.
    Zstd,
}

/// Options that shape how files are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// Force a format instead of sniffing it. By default `None` (sniff).
    pub format: Option<Format>,
    /// Longest record (line) accepted, in bytes; longer ones are quarantined. By default 1 MiB.
    pub max_record_bytes: usize,
    /// Column names for CSV input. By default the common names are tried.
    pub csv: CsvColumns,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            format: None,
            max_record_bytes: 1 << 20,
            csv: CsvColumns::default(),
        }
    }
}

/// A deletion request found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Remove this post.
    Post(String),
    /// Remove every post of this author.
    User(String),
}

/// A record that could not be used, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The input file.
    pub file: String,
    /// 1-based line (record number inside a JSON array; 0 for the whole file).
    pub line: u64,
    /// Why it was quarantined.
    pub reason: String,
    /// The raw record (its first 64 KiB when longer; see `raw_bytes`).
    pub raw: String,
    /// Full length of the raw record in bytes.
    pub raw_bytes: u64,
}

/// One thing read from an input.
#[derive(Debug, Clone)]
pub enum Item {
    /// A post (entities, train text and verdict are filled in by curation).
    Post(Box<Post>),
    /// A deletion notice or compliance record.
    Deletion(Deletion),
    /// A record that is valid but not a post (user object, count bucket, stream control message).
    Notice(&'static str),
    /// A record that could not be used.
    Quarantined(Quarantined),
}

const RAW_KEEP: usize = 64 << 10;

/// What a file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sniffed {
    /// The format read.
    pub format: Format,
    /// The compression undone.
    pub compression: Compression,
}

/// Opens `path`, undoing any compression, and says which compression it was.
pub fn open_decompressed(path: &Path) -> Result<(Box<dyn BufRead>, Compression)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut br = BufReader::with_capacity(1 << 16, file);
    let head = br.fill_buf().map_err(|e| Error::io(path, e))?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let reader: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(br),
        )),
        Compression::Bzip2 => Box::new(BufReader::with_capacity(
            1 << 16,
            bzip2::bufread::MultiBzDecoder::new(br),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 16,
            zstd::stream::read::Decoder::with_buffer(br).map_err(|e| Error::io(path, e))?,
        )),
    };
    Ok((reader, compression))
}

/// Reads every item of one file, calling `sink` for each; returns what the file was.
///
/// Records that fail alone are passed on as [`Item::Quarantined`]; only an unreadable file is an error.
pub fn read_file(path: &Path, opts: &ReadOptions, sink: &mut dyn FnMut(Item)) -> Result<Sniffed> {
    let label = path.display().to_string();
    let (mut reader, compression) = open_decompressed(path)?;
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?.to_vec();
    let format = opts.format.unwrap_or_else(|| sniff(path, &head));
    if head.iter().take(8192).any(|&b| b == 0) {
        sink(Item::Quarantined(Quarantined {
            file: label,
            line: 0,
            reason: "binary content (NUL bytes): not a supported post format".into(),
            raw: String::new(),
            raw_bytes: 0,
        }));
        return Ok(Sniffed {
            format,
            compression,
        });
    }
    let ctx = FileCtx {
        path,
        label: &label,
        opts,
    };
    match format {
        Format::TwitterJson => twitter::read_json(&ctx, reader, sink)?,
        Format::Archive => twitter::read_archive(&ctx, reader, sink)?,
        Format::Csv => csv_posts::read_csv(&ctx, reader, sink)?,
        Format::Text => text::read_text(&ctx, reader, sink)?,
    }
    Ok(Sniffed {
        format,
        compression,
    })
}

/// Guesses the format from the file name and first bytes.
pub fn sniff(path: &Path, head: &[u8]) -> Format {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".bz2")
        .trim_end_matches(".zst");
    let trimmed = head
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF)
        .map(|i| &head[i..])
        .unwrap_or(&[]);
    if trimmed.starts_with(b"window.YTD.") {
        Format::Archive
    } else if stem.ends_with(".csv") || stem.ends_with(".tsv") {
        Format::Csv
    } else if trimmed.starts_with(b"{")
        || trimmed.starts_with(b"[")
        || stem.ends_with(".json")
        || stem.ends_with(".jsonl")
        || stem.ends_with(".ndjson")
    {
        Format::TwitterJson
    } else {
        Format::Text
    }
}

/// The file being read, for readers.
pub(crate) struct FileCtx<'a> {
    pub(crate) path: &'a Path,
    pub(crate) label: &'a str,
    pub(crate) opts: &'a ReadOptions,
}

impl FileCtx<'_> {
    pub(crate) fn quarantine(&self, line: u64, reason: impl Into<String>, raw: &[u8]) -> Item {
        let keep = raw.len().min(RAW_KEEP);
        Item::Quarantined(Quarantined {
            file: self.label.to_string(),
            line,
            reason: reason.into(),
            raw: String::from_utf8_lossy(&raw[..keep]).into_owned(),
            raw_bytes: raw.len() as u64,
        })
    }

    /// The quarantine record of a line longer than the limit: its first bytes and full length.
    pub(crate) fn too_long(&self, line: u64, prefix: &[u8], len: u64) -> Item {
        let mut item = self.quarantine(
            line,
            format!(
                "record of {len} bytes exceeds the {} byte limit",
                self.opts.max_record_bytes
            ),
            prefix,
        );
        if let Item::Quarantined(q) = &mut item {
            q.raw_bytes = len;
        }
        item
    }

    pub(crate) fn io(&self, e: std::io::Error) -> Error {
        Error::io(self.path, e)
    }
}

/// A line as read by [`LineReader`].
pub(crate) enum Line<'a> {
    /// The line's bytes without the line ending.
    Ok(&'a [u8]),
    /// The line exceeded the limit: its first bytes and its full length.
    TooLong(&'a [u8], u64),
}

/// Reads lines with a length limit, never holding more than the limit in memory.
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// 1-based number of the last line returned.
    pub(crate) line: u64,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max,
            line: 0,
        }
    }

    /// The next line, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut total: u64 = 0;
        let mut saw_any = false;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            total += take as u64;
            let room = (self.max + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            self.inner.consume(take);
            if done {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.line += 1;
        let mut content_len = total;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            content_len -= 1;
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
                content_len -= 1;
            }
        }
        if content_len as usize > self.max {
            self.buf.truncate(RAW_KEEP.min(self.buf.len()));
            return Ok(Some((self.line, Line::TooLong(&self.buf, content_len))));
        }
        Ok(Some((self.line, Line::Ok(&self.buf))))
    }
}

/// Reads all of `reader` up to `limit` bytes; `None` when it is longer.
pub(crate) fn read_bounded(reader: &mut dyn Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out)?;
    Ok(if out.len() as u64 > limit {
        None
    } else {
        Some(out)
    })
}

/// Finds the deletion requests of one file (stream `delete` notices, compliance records) without
/// reading its posts: only lines that mention `delete` are parsed. Line-oriented JSON only; other
/// formats carry no deletions.
pub fn scan_deletions(
    path: &Path,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Deletion),
) -> Result<()> {
    let (mut reader, _) = open_decompressed(path)?;
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?.to_vec();
    let format = opts.format.unwrap_or_else(|| sniff(path, &head));
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    if format != Format::TwitterJson || first != Some(&b'{') || head.contains(&0) {
        return Ok(());
    }
    let label = path.display().to_string();
    let ctx = FileCtx {
        path,
        label: &label,
        opts,
    };
    twitter::scan_deletions(&ctx, reader, sink)
}

/// The part of a path that scopes derived ids: its last three components (`tweeteval/emoji/train_text.txt`),
/// so files that share a name in different folders get different ids, and the same file read through
/// an absolute or a relative path gets the same ones.
pub(crate) fn id_scope(path: &std::path::Path) -> String {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts[parts.len().saturating_sub(3)..].join("/")
}
