//! Plain text: one post per line; ids derived from file name and line.

use super::{FileCtx, Item, Line, LineReader};
use crate::error::Result;
use crate::post::{derived_id, Engagement, Origin, Post, References, Verdict};
use starling_text::Entities;
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
                let mut item = ctx.quarantine(
                    n,
                    format!(
                        "line of {len} bytes exceeds the {} byte limit",
                        ctx.opts.max_record_bytes
                    ),
                    prefix,
                );
                if let Item::Quarantined(q) = &mut item {
                    q.raw_bytes = len;
                }
                sink(item);
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
        sink(Item::Post(Box::new(Post {
            id: derived_id(&name, n),
            created_at: None,
            author_id: None,
            author_handle: None,
            lang: String::new(),
            lang_detected: false,
            text: starling_text::html_unescape(text.trim_end()),
            entities: Entities::default(),
            train_text: String::new(),
            refs: References::default(),
            engagement: Engagement::default(),
            source: None,
            sensitive: false,
            has_media: false,
            synthetic: false,
            origin: Origin {
                file: ctx.label.to_string(),
                line: n,
                nested: false,
            },
            verdict: if held_out {
                Verdict::HeldOut
            } else {
                Verdict::Kept
            },
        })));
    }
    Ok(())
}
