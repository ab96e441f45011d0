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

/// Opens `path`, undoing any compression, and says which compression it was (a stream that
/// breaks off is a read error).
pub fn open_decompressed(path: &Path) -> Result<(Box<dyn BufRead>, Compression)> {
    let (reader, compression, _) = open_salvaging(path, false)?;
    Ok((reader, compression))
}

/// The start of the quarantine reason for a compressed stream that breaks off.
pub const BROKEN_STREAM: &str = "compressed stream breaks off";

/// Where a compressed stream broke: the error and how far it had got.
#[derive(Debug, Default)]
struct Break {
    error: Option<std::io::Error>,
    compressed: u64,
    decompressed: u64,
}

type BreakCell = std::sync::Arc<std::sync::Mutex<Break>>;

/// Counts the compressed bytes the decoder has taken from the file.
struct CountingRead<R> {
    inner: R,
    cell: BreakCell,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut b) = self.cell.lock() {
            b.compressed += n as u64;
        }
        Ok(n)
    }
}

/// A decoder whose first error (a truncated or corrupt stream) ends the stream instead of the
/// file: what was decoded before it is read as usual, and the break is kept for a quarantine entry.
struct SalvagingRead<R> {
    inner: R,
    cell: BreakCell,
    ended: bool,
}

impl<R: Read> Read for SalvagingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    if let Ok(mut b) = self.cell.lock() {
                        b.decompressed += n as u64;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.ended = true;
                    if let Ok(mut b) = self.cell.lock() {
                        b.error = Some(e);
                    }
                    return Ok(0);
                }
            }
        }
    }
}

/// Opens `path`, undoing its compression; with `salvage`, a compressed stream that breaks off
/// ends early and leaves its break in the returned cell.
fn open_salvaging(
    path: &Path,
    salvage: bool,
) -> Result<(Box<dyn BufRead>, Compression, BreakCell)> {
    let cell = BreakCell::default();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut br = BufReader::with_capacity(
        1 << 16,
        CountingRead {
            inner: file,
            cell: cell.clone(),
        },
    );
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
    let wrap = |inner: Box<dyn Read>| -> Box<dyn BufRead> {
        if !salvage {
            return Box::new(BufReader::with_capacity(1 << 16, inner));
        }
        Box::new(BufReader::with_capacity(
            1 << 16,
            SalvagingRead {
                inner,
                cell: cell.clone(),
                ended: false,
            },
        ))
    };
    let reader: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(br),
        Compression::Gzip => wrap(Box::new(flate2::bufread::MultiGzDecoder::new(br))),
        Compression::Bzip2 => wrap(Box::new(bzip2::bufread::MultiBzDecoder::new(br))),
        Compression::Zstd => wrap(Box::new(
            zstd::stream::read::Decoder::with_buffer(br).map_err(|e| Error::io(path, e))?,
        )),
    };
    Ok((reader, compression, cell))
}

/// Reads every item of one file, calling `sink` for each; returns what the file was.
///
/// Records that fail alone are passed on as [`Item::Quarantined`]; only an unreadable file is an error.
pub fn read_file(path: &Path, opts: &ReadOptions, sink: &mut dyn FnMut(Item)) -> Result<Sniffed> {
    let label = path.display().to_string();
    let (mut reader, compression, broken) = open_salvaging(path, true)?;
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
    let broke = broken.lock().ok().and_then(|mut b| {
        let e = b.error.take()?;
        Some((e, b.compressed, b.decompressed))
    });
    if let Some((e, compressed, decompressed)) = broke {
        sink(ctx.quarantine(
            0,
            format!(
                "{BROKEN_STREAM} ({e}) after {compressed} compressed bytes read \
                 ({decompressed} bytes decoded); the records before the break were read"
            ),
            &[],
        ));
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

#[cfg(test)]
mod salvage_tests {
    use super::*;
    use std::io::Write;

    fn lines(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            writeln!(
                out,
                r#"{{"id_str":"{}","text":"post number {i} with some words {}","created_at":"Wed Oct 10 20:19:24 +0000 2018","user":{{"id_str":"7","screen_name":"a"}}}}"#,
                1000 + i,
                i * 7919 % 1013
            )
            .expect("write");
        }
        out
    }

    fn read_all(path: &Path) -> (usize, Vec<Quarantined>) {
        let (mut posts, mut q) = (0, Vec::new());
        read_file(path, &ReadOptions::default(), &mut |item| match item {
            Item::Post(_) => posts += 1,
            Item::Quarantined(x) => q.push(x),
            _ => {}
        })
        .expect("a truncated stream is not a file error");
        (posts, q)
    }

    #[test]
    fn a_truncated_gzip_or_zstd_file_keeps_the_records_before_the_break() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = lines(20_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("gz");
        let gz = gz.finish().expect("gz");
        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        for (name, bytes) in [("a.jsonl.gz", gz), ("a.jsonl.zst", zst)] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).expect("write");
            assert_eq!(read_all(&path), (20_000, Vec::new()), "{name} whole");
            let cut = bytes.len() / 2;
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let (posts, q) = read_all(&path);
            assert!(
                posts > 5_000 && posts < 20_000,
                "{name}: {posts} posts before the break"
            );
            let breaks: Vec<_> = q
                .iter()
                .filter(|x| x.reason.starts_with(BROKEN_STREAM))
                .collect();
            assert_eq!(breaks.len(), 1, "{name}: {q:?}");
            assert_eq!(breaks[0].line, 0);
            assert!(breaks[0].file.ends_with(name));
            assert!(
                breaks[0]
                    .reason
                    .contains(&format!("after {cut} compressed bytes")),
                "{}",
                breaks[0].reason
            );
            // At most the one record cut in half besides the break.
            assert!(q.len() <= 2, "{name}: {q:?}");
            assert!(
                open_decompressed(&path)
                    .and_then(|(mut r, _)| {
                        let mut v = Vec::new();
                        r.read_to_end(&mut v).map_err(|e| Error::io(&path, e))
                    })
                    .is_err(),
                "{name}: a deletion list must not be salvaged silently"
            );
        }
    }
}
