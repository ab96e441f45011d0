//! The index schema: its fields, and the document a post becomes.

use super::*;
use crate::dense;
use crate::query::Filter;
use starling_corpus::Post;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::{DateTime, TantivyDocument};

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub(crate) id: Field,
    pub(crate) id_num: Field,
    pub(crate) key: Field,
    pub(crate) text: Field,
    pub(crate) author: Field,
    pub(crate) author_id: Field,
    pub(crate) created_at: Field,
    pub(crate) lang: Field,
    pub(crate) likes: Field,
    pub(crate) reposts: Field,
    pub(crate) replies: Field,
    pub(crate) quotes: Field,
    pub(crate) flags: Field,
    pub(crate) hashtags: Field,
    pub(crate) mentions: Field,
    pub(crate) cashtags: Field,
    pub(crate) urls: Field,
    pub(crate) domains: Field,
    pub(crate) reply_to: Field,
    pub(crate) reply_to_user: Field,
    pub(crate) quote_of: Field,
    pub(crate) repost_of: Field,
    pub(crate) conversation: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let num = || {
        NumericOptions::default()
            .set_indexed()
            .set_fast()
            .set_stored()
    };
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        id_num: b.add_u64_field("id_num", INDEXED | FAST),
        key: b.add_u64_field("key", INDEXED | FAST),
        text: b.add_text_field("text", text_opts(POST_ANALYZER).set_stored()),
        author: b.add_text_field("author", STRING | STORED),
        author_id: b.add_text_field("author_id", STRING | STORED),
        created_at: b.add_date_field("created_at", INDEXED | FAST | STORED),
        lang: b.add_text_field("lang", STRING | STORED),
        likes: b.add_u64_field("likes", num()),
        reposts: b.add_u64_field("reposts", num()),
        replies: b.add_u64_field("replies", num()),
        quotes: b.add_u64_field("quotes", num()),
        flags: b.add_text_field("flags", STRING),
        hashtags: b.add_text_field("hashtags", STRING | STORED),
        mentions: b.add_text_field("mentions", STRING | STORED),
        cashtags: b.add_text_field("cashtags", STRING | STORED),
        urls: b.add_text_field("urls", text_opts(URL_ANALYZER).set_stored()),
        domains: b.add_text_field("domains", STRING | STORED),
        reply_to: b.add_text_field("reply_to", STRING | STORED),
        reply_to_user: b.add_text_field("reply_to_user", STRING | STORED),
        quote_of: b.add_text_field("quote_of", STRING | STORED),
        repost_of: b.add_text_field("repost_of", STRING | STORED),
        conversation: b.add_text_field("conversation_id", STRING | STORED),
    };
    (b.build(), f)
}

/// The host of a URL as written (`https://www.Example.com/x` → `example.com`).
pub(crate) fn domain(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next()?.split('@').next_back()?;
    let host = host.split(':').next()?.to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
}

pub(crate) fn document(f: &Fields, p: &Post) -> TantivyDocument {
    let mut d = TantivyDocument::new();
    d.add_text(f.id, &p.id);
    d.add_u64(f.key, dense::key(&p.id));
    if let Ok(n) = p.id.parse::<u64>() {
        d.add_u64(f.id_num, n);
    }
    d.add_text(f.text, &p.text);
    if let Some(h) = &p.author_handle {
        d.add_text(f.author, h.to_lowercase());
    }
    if let Some(a) = &p.author_id {
        d.add_text(f.author_id, a);
    }
    if let Some(t) = p.created_at {
        d.add_date(f.created_at, DateTime::from_timestamp_secs(t.timestamp()));
    }
    d.add_text(f.lang, p.lang.to_lowercase());
    let e = p.engagement;
    d.add_u64(f.likes, e.likes);
    d.add_u64(f.reposts, e.reposts);
    d.add_u64(f.replies, e.replies);
    d.add_u64(f.quotes, e.quotes);
    let ents = &p.entities;
    let flags = [
        // The platform's definition: a reply to a post, or to a user (a post that starts with
        // a mention carries `in_reply_to_user_id` without a status id).
        (
            p.refs.reply_to.is_some() || p.refs.reply_to_user.is_some(),
            Filter::Replies,
        ),
        (p.refs.repost_of.is_some(), Filter::Retweets),
        (p.refs.quote_of.is_some(), Filter::Quote),
        (!ents.urls.is_empty(), Filter::Links),
        (p.has_media, Filter::Media),
        (!ents.mentions.is_empty(), Filter::Mentions),
        (!ents.hashtags.is_empty(), Filter::Hashtags),
    ];
    for (on, k) in flags {
        if on {
            d.add_text(f.flags, k.name());
        }
    }
    for h in &ents.hashtags {
        d.add_text(f.hashtags, h.text.to_lowercase());
    }
    for m in &ents.mentions {
        d.add_text(f.mentions, m.text.to_lowercase());
    }
    for c in &ents.cashtags {
        d.add_text(f.cashtags, c.text.to_lowercase());
    }
    for u in &ents.urls {
        d.add_text(f.urls, &u.text);
        if let Some(dom) = domain(&u.text) {
            d.add_text(f.domains, dom);
        }
    }
    let r = &p.refs;
    for (field, v) in [
        (f.reply_to, &r.reply_to),
        (f.quote_of, &r.quote_of),
        (f.repost_of, &r.repost_of),
        (f.conversation, &r.conversation_id),
    ] {
        if let Some(v) = v {
            d.add_text(field, v);
        }
    }
    if let Some(u) = &r.reply_to_handle {
        d.add_text(f.reply_to_user, u.to_lowercase());
    }
    d
}
