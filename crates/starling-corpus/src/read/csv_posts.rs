//! CSV with a header row; columns mapped by name.

use super::twitter::parse_time;
use super::{FileCtx, Item};
use crate::error::{Error, Result};
use crate::post::{derived_id, Origin, Post};
use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// Which CSV columns hold which post fields. Each field lists candidate names; the first present wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvColumns {
    /// Text column. By default `text`, `full_text`, `tweet`, `content`, `body`.
    pub text: Vec<String>,
    /// Id column. By default `id`, `id_str`, `tweet_id`, `post_id`.
    pub id: Vec<String>,
    /// Creation time column. By default `created_at`, `tweet_created`, `date`, `timestamp`.
    pub created_at: Vec<String>,
    /// Author handle column. By default `screen_name`, `username`, `user`, `name`, `author`.
    pub author: Vec<String>,
    /// Language column. By default `lang`, `language`.
    pub lang: Vec<String>,
    /// Repost count column. By default `retweet_count`, `retweets`.
    pub reposts: Vec<String>,
    /// Like count column. By default `favorite_count`, `like_count`, `likes`.
    pub likes: Vec<String>,
}

impl Default for CsvColumns {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Self {
            text: v(&["text", "full_text", "tweet", "content", "body"]),
            id: v(&["id", "id_str", "tweet_id", "post_id"]),
            created_at: v(&["created_at", "tweet_created", "date", "timestamp"]),
            author: v(&["screen_name", "username", "user", "name", "author"]),
            lang: v(&["lang", "language"]),
            reposts: v(&["retweet_count", "retweets"]),
            likes: v(&["favorite_count", "like_count", "likes"]),
        }
    }
}

pub(crate) fn read_csv(
    ctx: &FileCtx<'_>,
    reader: Box<dyn BufRead>,
    sink: &mut dyn FnMut(Item),
) -> Result<()> {
    let tsv = ctx.label.ends_with(".tsv") || ctx.label.contains(".tsv.");
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        .flexible(true)
        .from_reader(reader);
    let headers = rdr
        .byte_headers()
        .map_err(|e| Error::Format {
            path: ctx.path.to_path_buf(),
            line: 1,
            message: format!("CSV header: {e}"),
        })?
        .clone();
    let find = |names: &[String]| {
        names.iter().find_map(|n| {
            headers
                .iter()
                .position(|h| String::from_utf8_lossy(h).trim().eq_ignore_ascii_case(n))
        })
    };
    let cols = &ctx.opts.csv;
    let Some(text_col) = find(&cols.text) else {
        return Err(Error::Format {
            path: ctx.path.to_path_buf(),
            line: 1,
            message: format!(
                "no text column among {:?} in header {:?}; map one with the csv text column option",
                cols.text,
                headers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .collect::<Vec<_>>()
            ),
        });
    };
    let (id_col, time_col, author_col, lang_col, rt_col, like_col) = (
        find(&cols.id),
        find(&cols.created_at),
        find(&cols.author),
        find(&cols.lang),
        find(&cols.reposts),
        find(&cols.likes),
    );
    let scope = super::id_scope(ctx.path);
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                sink(ctx.quarantine(line, format!("CSV: {e}"), &[]));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(line);
        let raw = || rec.iter().collect::<Vec<_>>().join(&b',');
        let field = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let text = match rec.get(text_col).map(std::str::from_utf8) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                sink(ctx.quarantine(
                    line,
                    format!("invalid UTF-8 in text column at byte {}", e.valid_up_to()),
                    &raw(),
                ));
                continue;
            }
            None => {
                sink(ctx.quarantine(line, "row has no text column", &raw()));
                continue;
            }
        };
        if rec.as_slice().len() > ctx.opts.max_record_bytes {
            sink(ctx.quarantine(
                line,
                format!("row exceeds the {} byte limit", ctx.opts.max_record_bytes),
                &raw(),
            ));
            continue;
        }
        let num = |c| field(c).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let id = field(id_col)
            .map(String::from)
            .unwrap_or_else(|| derived_id(&scope, line));
        let origin = Origin {
            file: ctx.label.to_string(),
            line,
            nested: false,
        };
        let mut post = Post::new(id, starling_text::html_unescape(text), origin);
        post.created_at = field(time_col).and_then(parse_time);
        post.author_handle = field(author_col).map(|s| s.trim_start_matches('@').to_string());
        post.lang = field(lang_col).unwrap_or_default().to_string();
        post.engagement.reposts = num(rt_col);
        post.engagement.likes = num(like_col);
        sink(Item::Post(Box::new(post)));
    }
    Ok(())
}
