//! Twitter API JSON: v1.1 statuses (objects, arrays, search responses, stream lines, delete
//! notices), v2 pages and flattened v2 tweets, compliance records, and archive `tweets.js`.

use super::{read_bounded, FileCtx, Item, Line, LineReader};
use crate::error::Result;
use crate::post::{Engagement, Origin, Post, References, Verdict};
use crate::read::Deletion;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use starling_text::{html_unescape, Entities, Entity, EntityKind};
use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;

/// Largest whole JSON document read at once (a pretty-printed page or status).
const MAX_DOCUMENT_BYTES: u64 = 512 << 20;

/// An id that may be a JSON number or string.
#[derive(Debug, Clone)]
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id (number or string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Id, E> {
                Ok(Id(format!("{v:.0}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A count that may be a number, a numeric string or null.
fn count<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        U(u64),
        F(f64),
        S(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::U(v)) => Some(v),
        Some(N::F(v)) if v >= 0.0 => Some(v as u64),
        Some(N::S(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct User {
    id_str: Option<String>,
    id: Option<Id>,
    screen_name: Option<String>,
    username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Extended {
    full_text: Option<String>,
    extended_entities: Option<IgnoredAny>,
    entities: Option<EntitiesV1>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EntitiesV1 {
    media: Option<IgnoredAny>,
    /// v1.1 mentions (`screen_name`).
    user_mentions: Option<serde_json::Value>,
    /// v2 mentions (`username`).
    mentions: Option<serde_json::Value>,
    /// v1.1 `text`, v2 `tag`.
    hashtags: Option<serde_json::Value>,
    /// v1.1 cashtags.
    symbols: Option<serde_json::Value>,
    /// v2 cashtags.
    cashtags: Option<serde_json::Value>,
}

impl EntitiesV1 {
    /// The platform's mentions, hashtags and cashtags by name (spans are found again in the text
    /// by curation, since truncated and extended texts index differently). Odd shapes are ignored.
    fn named(&self, out: &mut Entities) {
        let names = |v: &Option<serde_json::Value>, keys: &[&str]| -> Vec<String> {
            v.as_ref()
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| keys.iter().find_map(|k| e.get(*k)?.as_str()))
                        .filter(|n| !n.is_empty() && n.len() <= 140)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let entity = |kind, text| Entity {
            kind,
            text,
            start: 0,
            end: 0,
        };
        for (v, keys, kind) in [
            (
                &self.user_mentions,
                &["screen_name"][..],
                EntityKind::Mention,
            ),
            (&self.mentions, &["username"][..], EntityKind::Mention),
            (&self.hashtags, &["text", "tag"][..], EntityKind::Hashtag),
            (&self.symbols, &["text"][..], EntityKind::Cashtag),
            (&self.cashtags, &["tag"][..], EntityKind::Cashtag),
        ] {
            let list = match kind {
                EntityKind::Mention => &mut out.mentions,
                EntityKind::Hashtag => &mut out.hashtags,
                _ => &mut out.cashtags,
            };
            list.extend(names(v, keys).into_iter().map(|n| entity(kind, n)));
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PublicMetrics {
    #[serde(deserialize_with = "count")]
    like_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    retweet_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    reply_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    quote_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Attachments {
    media_keys: Vec<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Includes {
    tweets: Vec<Record>,
    users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Record>),
    One(Box<Record>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeleteStatus {
    id_str: Option<String>,
    id: Option<Id>,
    user_id_str: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeleteNotice {
    status: Option<DeleteStatus>,
}

/// Every top-level shape of Twitter JSON, as one struct of optional fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Record {
    // Status fields (v1.1 and v2).
    id: Option<Id>,
    id_str: Option<String>,
    text: Option<String>,
    full_text: Option<String>,
    extended_tweet: Option<Extended>,
    created_at: Option<String>,
    timestamp_ms: Option<Id>,
    user: Option<User>,
    lang: Option<String>,
    source: Option<String>,
    possibly_sensitive: Option<bool>,
    in_reply_to_status_id_str: Option<String>,
    in_reply_to_status_id: Option<Id>,
    in_reply_to_user_id_str: Option<String>,
    in_reply_to_user_id: Option<Id>,
    in_reply_to_screen_name: Option<String>,
    quoted_status_id_str: Option<String>,
    retweeted_status: Option<Box<Record>>,
    quoted_status: Option<Box<Record>>,
    #[serde(deserialize_with = "count")]
    favorite_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    retweet_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    reply_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    quote_count: Option<u64>,
    entities: Option<EntitiesV1>,
    extended_entities: Option<IgnoredAny>,
    // v2.
    author_id: Option<Id>,
    author: Option<User>,
    conversation_id: Option<Id>,
    public_metrics: Option<PublicMetrics>,
    referenced_tweets: Option<Vec<Record>>,
    /// `type` of a referenced tweet (retweeted, quoted, replied_to).
    #[serde(rename = "type")]
    kind: Option<String>,
    attachments: Option<Attachments>,
    username: Option<String>,
    tweet_count: Option<IgnoredAny>,
    /// Set by `starling synth`.
    starling_synthetic: Option<bool>,
    // Containers.
    data: Option<OneOrMany>,
    includes: Option<Includes>,
    statuses: Option<Vec<Record>>,
    tweet: Option<Box<Record>>,
    // Notices.
    delete: Option<DeleteNotice>,
    action: Option<String>,
    limit: Option<IgnoredAny>,
    scrub_geo: Option<IgnoredAny>,
    status_withheld: Option<IgnoredAny>,
    user_withheld: Option<IgnoredAny>,
    disconnect: Option<IgnoredAny>,
    warning: Option<IgnoredAny>,
    friends: Option<IgnoredAny>,
    errors: Option<IgnoredAny>,
    meta: Option<IgnoredAny>,
    search_metadata: Option<IgnoredAny>,
}

impl Record {
    fn is_status(&self) -> bool {
        (self.text.is_some() || self.full_text.is_some())
            && (self.id.is_some() || self.id_str.is_some())
    }

    fn post_id(&self) -> Option<String> {
        self.id_str
            .clone()
            .or_else(|| self.id.as_ref().map(|i| i.0.clone()))
    }
}

/// Emits posts of one record with the right provenance; users from v2 `includes` name authors.
struct Emitter<'c, 'a> {
    ctx: &'c FileCtx<'a>,
    line: u64,
    users: HashMap<String, String>,
}

impl Emitter<'_, '_> {
    /// Handles one top-level record.
    fn record(&mut self, rec: Record, raw: &[u8], sink: &mut dyn FnMut(Item)) {
        if let Some(inner) = rec.tweet {
            // Archive entries are `{"tweet": {...}}`.
            return self.record(*inner, raw, sink);
        }
        if let Some(d) = rec.delete {
            let st = d.status.unwrap_or_default();
            match st.id_str.or(st.id.map(|i| i.0)) {
                Some(id) => sink(Item::Deletion(Deletion::Post(id))),
                None => sink(self.ctx.quarantine(
                    self.line,
                    "delete notice without a status id",
                    raw,
                )),
            }
            return;
        }
        if let (Some(action), Some(id)) = (&rec.action, &rec.id) {
            if rec.text.is_none() {
                if action != "delete" {
                    sink(Item::Notice("compliance_other"));
                } else if self.ctx.label.contains("user") {
                    sink(Item::Deletion(Deletion::User(id.0.clone())));
                } else {
                    sink(Item::Deletion(Deletion::Post(id.0.clone())));
                }
                return;
            }
        }
        if rec.data.is_some() || rec.includes.is_some() {
            return self.page(rec, raw, sink);
        }
        if let Some(statuses) = rec.statuses {
            for s in statuses {
                self.status(s, false, sink);
            }
            return;
        }
        if rec.is_status() {
            return self.status(rec, false, sink);
        }
        let notice = if rec.limit.is_some()
            || rec.scrub_geo.is_some()
            || rec.status_withheld.is_some()
            || rec.user_withheld.is_some()
            || rec.disconnect.is_some()
            || rec.warning.is_some()
            || rec.friends.is_some()
        {
            Some("stream_control")
        } else if rec.username.is_some() {
            Some("user")
        } else if rec.tweet_count.is_some() {
            Some("count")
        } else if rec.errors.is_some() || rec.meta.is_some() || rec.search_metadata.is_some() {
            Some("api_metadata")
        } else {
            None
        };
        match notice {
            Some(kind) => sink(Item::Notice(kind)),
            None => {
                sink(self.ctx.quarantine(
                    self.line,
                    "JSON record is not a post, page, notice or compliance record",
                    raw,
                ));
            }
        }
    }

    /// `statuses/lookup` with map=true: `{"id": {"<id>": status or null}}`; false when `raw` is not that.
    fn lookup_map(&mut self, raw: &[u8], sink: &mut dyn FnMut(Item)) -> bool {
        let Ok(map) = serde_json::from_slice::<
            std::collections::BTreeMap<String, std::collections::BTreeMap<String, Option<Record>>>,
        >(raw) else {
            return false;
        };
        if map.is_empty() {
            return false;
        }
        for (_, inner) in map {
            for (_, status) in inner {
                match status {
                    Some(s) if s.is_status() => self.status(s, false, sink),
                    _ => sink(Item::Notice("missing_status")),
                }
            }
        }
        true
    }

    /// A v2 response page: `data` (tweets, or users/lists/counts) plus `includes`.
    fn page(&mut self, rec: Record, raw: &[u8], sink: &mut dyn FnMut(Item)) {
        let includes = rec.includes.unwrap_or_default();
        self.users.clear();
        for u in &includes.users {
            if let (Some(id), Some(name)) = (&u.id, &u.username) {
                self.users.insert(id.0.clone(), name.clone());
            }
        }
        let data = match rec.data {
            Some(OneOrMany::Many(v)) => v,
            Some(OneOrMany::One(r)) => vec![*r],
            None => Vec::new(),
        };
        if data.is_empty() && includes.tweets.is_empty() {
            sink(Item::Notice("empty_page"));
        }
        for d in data {
            if d.is_status() {
                self.status(d, false, sink);
            } else if d.username.is_some() {
                sink(Item::Notice("user"));
            } else if d.tweet_count.is_some() {
                sink(Item::Notice("count"));
            } else if d.id.is_some() {
                sink(Item::Notice("other_object"));
            } else {
                sink(self.ctx.quarantine(
                    self.line,
                    "v2 data item is not an object with an id",
                    raw,
                ));
            }
        }
        for t in includes.tweets {
            if t.is_status() {
                self.status(t, true, sink);
            }
        }
    }

    /// One status (v1.1 or v2) and the statuses nested in it.
    fn status(&mut self, mut s: Record, nested: bool, sink: &mut dyn FnMut(Item)) {
        let Some(id) = s.post_id() else { return };
        let retweeted = s.retweeted_status.take();
        let quoted = s.quoted_status.take();
        let mut refs = References {
            reply_to: s
                .in_reply_to_status_id_str
                .take()
                .or(s.in_reply_to_status_id.take().map(|i| i.0)),
            reply_to_user: s
                .in_reply_to_user_id_str
                .take()
                .or(s.in_reply_to_user_id.take().map(|i| i.0)),
            reply_to_handle: s.in_reply_to_screen_name.take(),
            quote_of: s.quoted_status_id_str.take(),
            repost_of: retweeted.as_ref().and_then(|r| r.post_id()),
            conversation_id: s.conversation_id.take().map(|i| i.0),
        };
        if refs.reply_to_handle.is_none() {
            // v2 names the replied-to author only through `includes.users`.
            refs.reply_to_handle = refs
                .reply_to_user
                .as_ref()
                .and_then(|u| self.users.get(u).cloned());
        }
        let mut v2_inline = Vec::new();
        for r in s.referenced_tweets.take().unwrap_or_default() {
            let slot = match r.kind.as_deref() {
                Some("retweeted") => &mut refs.repost_of,
                Some("quoted") => &mut refs.quote_of,
                Some("replied_to") => &mut refs.reply_to,
                _ => continue,
            };
            *slot = r.post_id();
            // Flattened v2 inlines the referenced tweet itself.
            if r.is_status() {
                v2_inline.push(r);
            }
        }
        if refs.quote_of.is_none() {
            refs.quote_of = quoted.as_ref().and_then(|q| q.post_id());
        }
        let ext = s.extended_tweet.take().unwrap_or_default();
        let raw_text = s
            .full_text
            .take()
            .or(ext.full_text)
            .or(s.text.take())
            .unwrap_or_default();
        let user = s.user.take().or(s.author.take()).unwrap_or_default();
        let author_id = user
            .id_str
            .or(user.id.map(|i| i.0))
            .or(s.author_id.take().map(|i| i.0));
        let author_handle = user
            .screen_name
            .or(user.username)
            .or_else(|| author_id.as_ref().and_then(|a| self.users.get(a).cloned()));
        let created_at = s.created_at.as_deref().and_then(parse_time).or_else(|| {
            s.timestamp_ms
                .as_ref()
                .and_then(|t| t.0.parse::<i64>().ok())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        });
        let m = s.public_metrics.take().unwrap_or_default();
        let engagement = Engagement {
            likes: m.like_count.or(s.favorite_count).unwrap_or(0),
            reposts: m.retweet_count.or(s.retweet_count).unwrap_or(0),
            replies: m.reply_count.or(s.reply_count).unwrap_or(0),
            quotes: m.quote_count.or(s.quote_count).unwrap_or(0),
        };
        let has_media = s.extended_entities.is_some()
            || ext.extended_entities.is_some()
            || s.entities.as_ref().is_some_and(|e| e.media.is_some())
            || ext.entities.as_ref().is_some_and(|e| e.media.is_some())
            || s.attachments
                .as_ref()
                .is_some_and(|a| !a.media_keys.is_empty());
        let is_repost = refs.repost_of.is_some();
        let mut platform = Entities::default();
        if !is_repost {
            for e in [&s.entities, &ext.entities].into_iter().flatten() {
                e.named(&mut platform);
            }
        }
        let text = if is_repost {
            String::new()
        } else {
            html_unescape(&raw_text)
        };
        let post = Post {
            id,
            created_at,
            author_id,
            author_handle,
            lang: s.lang.take().unwrap_or_default(),
            lang_detected: false,
            text,
            entities: platform,
            train_text: String::new(),
            refs,
            engagement,
            source: s.source.take().map(|src| strip_tags(&src)),
            sensitive: s.possibly_sensitive.unwrap_or(false),
            has_media,
            synthetic: s.starling_synthetic.unwrap_or(false),
            origin: Origin {
                file: self.ctx.label.to_string(),
                line: self.line,
                nested,
            },
            verdict: if is_repost {
                Verdict::Repost
            } else {
                Verdict::Kept
            },
        };
        sink(Item::Post(Box::new(post)));
        if let Some(r) = retweeted {
            self.status(*r, true, sink);
        }
        if let Some(q) = quoted {
            self.status(*q, true, sink);
        }
        for r in v2_inline {
            self.status(r, true, sink);
        }
    }
}

/// The client name inside v1.1's `<a href=...>Client</a>`.
fn strip_tags(s: &str) -> String {
    match (s.find('>'), s.rfind("</")) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
        _ => s.to_string(),
    }
}

/// Parses v1.1 (`Wed Aug 27 13:08:45 +0000 2008`), ISO 8601 / RFC 3339 and `2015-02-24 11:35:52 -0800` times.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%a %b %d %H:%M:%S %z %Y",
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Reads a Twitter JSON file: one record per line, one document, or a top-level array.
pub(crate) fn read_json(
    ctx: &FileCtx<'_>,
    mut reader: Box<dyn BufRead>,
    sink: &mut dyn FnMut(Item),
) -> Result<()> {
    let head = reader.fill_buf().map_err(|e| ctx.io(e))?;
    let first = head.iter().position(|b| !b.is_ascii_whitespace());
    let mut em = Emitter {
        ctx,
        line: 0,
        users: HashMap::new(),
    };
    match first.map(|i| head[i]) {
        None => Ok(()),
        Some(b'[') => stream_array(ctx, reader, &mut em, sink, 0),
        Some(_) => {
            // One record per line when the first line is a whole JSON value; else one document.
            let first_line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
            let first_line = &head[..first_line_end];
            let is_lines = first_line_end < head.len()
                && serde_json::from_slice::<IgnoredAny>(first_line).is_ok();
            if is_lines
                || first_line_end == head.len()
                    && head.len() < (1 << 16)
                    && serde_json::from_slice::<IgnoredAny>(head).is_ok()
                    && !head[..].contains(&b'\n')
            {
                read_lines(ctx, reader, &mut em, sink)
            } else {
                match read_bounded(&mut reader, MAX_DOCUMENT_BYTES).map_err(|e| ctx.io(e))? {
                    Some(doc) => {
                        match serde_json::from_slice::<Record>(&doc) {
                            Ok(rec) => {
                                em.line = 1;
                                em.record(rec, &doc, sink);
                            }
                            Err(_) if em.lookup_map(&doc, sink) => {}
                            Err(_) => {
                                // Not one document: fall back to lines so good lines survive.
                                read_lines(
                                    ctx,
                                    Box::new(std::io::Cursor::new(doc)),
                                    &mut em,
                                    sink,
                                )?;
                            }
                        }
                        Ok(())
                    }
                    None => {
                        sink(ctx.quarantine(0, format!("JSON document larger than {MAX_DOCUMENT_BYTES} bytes and not one record per line"), &[]));
                        Ok(())
                    }
                }
            }
        }
    }
}

fn read_lines(
    ctx: &FileCtx<'_>,
    reader: Box<dyn BufRead>,
    em: &mut Emitter<'_, '_>,
    sink: &mut dyn FnMut(Item),
) -> Result<()> {
    let mut lines = LineReader::new(reader, ctx.opts.max_record_bytes);
    while let Some((n, line)) = lines.next_line().map_err(|e| ctx.io(e))? {
        match line {
            Line::TooLong(prefix, len) => {
                sink(ctx.too_long(n, prefix, len));
            }
            Line::Ok(bytes) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(e) = std::str::from_utf8(bytes) {
                    sink(ctx.quarantine(
                        n,
                        format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        bytes,
                    ));
                    continue;
                }
                match serde_json::from_slice::<Record>(bytes) {
                    Ok(rec) => {
                        em.line = n;
                        em.record(rec, bytes, sink);
                    }
                    Err(_)
                        if {
                            em.line = n;
                            em.lookup_map(bytes, sink)
                        } => {}
                    Err(e) => sink(ctx.quarantine(n, format!("invalid JSON: {e}"), bytes)),
                }
            }
        }
    }
    Ok(())
}

/// Streams the elements of a top-level JSON array without holding the array.
fn stream_array(
    ctx: &FileCtx<'_>,
    reader: Box<dyn BufRead>,
    em: &mut Emitter<'_, '_>,
    sink: &mut dyn FnMut(Item),
    skip: usize,
) -> Result<()> {
    struct Elements<'x, 'c, 'a> {
        em: &'x mut Emitter<'c, 'a>,
        sink: &'x mut dyn FnMut(Item),
        n: u64,
    }
    impl<'de> Visitor<'de> for Elements<'_, '_, '_> {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<u64, A::Error> {
            let mut n = self.n;
            while let Some(v) = seq.next_element::<serde_json::Value>()? {
                n += 1;
                self.em.line = n;
                let raw = serde_json::to_vec(&v).unwrap_or_default();
                match serde_json::from_value::<Record>(v) {
                    Ok(rec) => self.em.record(rec, &raw, self.sink),
                    Err(e) => (self.sink)(self.em.ctx.quarantine(
                        n,
                        format!("array element {n}: {e}"),
                        &raw,
                    )),
                }
            }
            Ok(n)
        }
    }
    let mut reader = reader;
    if skip > 0 {
        let mut discard = vec![0u8; skip];
        std::io::Read::read_exact(&mut reader, &mut discard).map_err(|e| ctx.io(e))?;
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let v = Elements { em, sink, n: 0 };
    if let Err(e) = de.deserialize_seq(v) {
        // The array is cut or malformed: what was read is kept, the rest is quarantined as one record.
        sink(ctx.quarantine(
            e.line() as u64,
            format!(
                "JSON array unreadable from line {} column {}: {e}",
                e.line(),
                e.column()
            ),
            &[],
        ));
    }
    Ok(())
}

/// Reads a Twitter archive's `tweets.js`: `window.YTD.tweets.part0 = [ {"tweet": {...}}, ... ]`.
pub(crate) fn read_archive(
    ctx: &FileCtx<'_>,
    mut reader: Box<dyn BufRead>,
    sink: &mut dyn FnMut(Item),
) -> Result<()> {
    let head = reader.fill_buf().map_err(|e| ctx.io(e))?;
    match memchr::memchr(b'[', head) {
        Some(at) if head[..at].contains(&b'=') => {
            let mut em = Emitter {
                ctx,
                line: 0,
                users: HashMap::new(),
            };
            stream_array(ctx, reader, &mut em, sink, at)
        }
        _ => {
            sink(ctx.quarantine(
                0,
                "archive file without `window.YTD.<name>.partN = [`",
                head,
            ));
            Ok(())
        }
    }
}

/// Deletion requests of a line-oriented JSON file; lines without `delete` are skipped unparsed.
pub(crate) fn scan_deletions(
    ctx: &FileCtx<'_>,
    reader: Box<dyn BufRead>,
    sink: &mut dyn FnMut(Deletion),
) -> Result<()> {
    let finder = memchr::memmem::Finder::new(b"delete");
    let mut em = Emitter {
        ctx,
        line: 0,
        users: HashMap::new(),
    };
    let mut lines = LineReader::new(reader, ctx.opts.max_record_bytes);
    while let Some((n, line)) = lines.next_line().map_err(|e| ctx.io(e))? {
        let Line::Ok(bytes) = line else { continue };
        if finder.find(bytes).is_none() {
            continue;
        }
        if let Ok(rec) = serde_json::from_slice::<Record>(bytes) {
            if rec.delete.is_some() || rec.action.is_some() {
                em.line = n;
                em.record(rec, bytes, &mut |item| {
                    if let Item::Deletion(d) = item {
                        sink(d);
                    }
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
