//! Plain text: one post per line; ids derived from the file's path (last three parts) and line.

use super::{FileCtx, Item, Line, LineReader};
use crate::error::Result;
use crate::post::{derived_id, Origin, Post, Verdict};
use std::io::BufRead;

/// Reads one post per non-empty line. Files named `test_*` (published test sets such as
/// TweetEval's) are marked held out, so they never enter training.
pub(crate) fn read_text(
    ctx: &FileCtx<'_>,
    reader: Box<dyn BufRead>,
    sink: &mut dyn FnMut(Item),
) -> Result<()> {
    let name = ctx
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let held_out = name.starts_with("test");
    let mut lines = LineReader::new(reader, ctx.opts.max_record_bytes);
    while let Some((n, line)) = lines.next_line().map_err(|e| ctx.io(e))? {
        let bytes = match line {
            Line::TooLong(prefix, len) => {
                sink(ctx.too_long(n, prefix, len));
                continue;
            }
            Line::Ok(b) => b,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                sink(ctx.quarantine(
                    n,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                    bytes,
                ));
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            file: ctx.label.to_string(),
            line: n,
            nested: false,
        };
        let mut post = Post::new(
            derived_id(&super::id_scope(ctx.path), n),
            starling_text::html_unescape(text.trim_end()),
            origin,
        );
        if held_out {
            post.verdict = Verdict::HeldOut;
        }
        sink(Item::Post(Box::new(post)));
    }
    Ok(())
}
