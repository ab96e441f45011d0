//! The query language ([`Query`]) as tantivy queries over the index fields.

use super::*;
use crate::query::Query;
use std::ops::Bound;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query as TQuery, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DateTime, Term};

/// A tantivy query for `q`; `None` means "matches everything" (a term with no searchable characters).
pub(crate) fn translate(
    f: &Fields,
    q: &Query,
    post: &mut TextAnalyzer,
    url: &mut TextAnalyzer,
) -> Option<Box<dyn TQuery>> {
    let term = |field: Field, s: &str| -> Box<dyn TQuery> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, s),
            IndexRecordOption::WithFreqs,
        ))
    };
    let words = |field: Field, toks: Vec<String>| -> Option<Box<dyn TQuery>> {
        match toks.len() {
            0 => None,
            1 => Some(term(field, &toks[0])),
            _ => Some(Box::new(PhraseQuery::new(
                toks.iter()
                    .map(|t| Term::from_field_text(field, t))
                    .collect(),
            ))),
        }
    };
    let at_least = |field: Field, n: u64| -> Box<dyn TQuery> {
        Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(field, n)),
            Bound::Unbounded,
        ))
    };
    let date = |d: &chrono::NaiveDate| {
        let secs = d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0);
        Term::from_field_date_for_search(f.created_at, DateTime::from_timestamp_secs(secs))
    };
    Some(match q {
        Query::And(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
            let mut positive = false;
            for p in parts {
                match p {
                    Query::Not(inner) => match translate(f, inner, post, url) {
                        Some(t) => clauses.push((Occur::MustNot, t)),
                        None => return Some(Box::new(EmptyQuery)),
                    },
                    other => {
                        if let Some(t) = translate(f, other, post, url) {
                            clauses.push((Occur::Must, t));
                            positive = true;
                        }
                    }
                }
            }
            if clauses.is_empty() {
                return None;
            }
            if !positive {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Or(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
            for p in parts {
                clauses.push((Occur::Should, translate(f, p, post, url)?));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Not(inner) => match translate(f, inner, post, url) {
            Some(t) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn TQuery>),
                (Occur::MustNot, t),
            ])),
            None => Box::new(EmptyQuery),
        },
        Query::Term(w) => return words(f.text, analyze(post, w)),
        Query::Phrase(ws) => return words(f.text, analyze(post, &ws.join(" "))),
        Query::Hashtag(t) => term(f.hashtags, t),
        Query::Cashtag(t) => term(f.cashtags, t),
        Query::Mention(u) => term(f.mentions, u),
        Query::From(u) => term(f.author, u),
        Query::To(u) => term(f.reply_to_user, u),
        Query::Since(d) => Box::new(RangeQuery::new(Bound::Included(date(d)), Bound::Unbounded)),
        Query::Until(d) => Box::new(RangeQuery::new(Bound::Unbounded, Bound::Excluded(date(d)))),
        Query::SinceId(n) => Box::new(RangeQuery::new(
            Bound::Excluded(Term::from_field_u64(f.id_num, *n)),
            Bound::Unbounded,
        )),
        Query::MaxId(n) => Box::new(RangeQuery::new(
            Bound::Unbounded,
            Bound::Included(Term::from_field_u64(f.id_num, *n)),
        )),
        Query::Lang(l) => term(f.lang, l),
        Query::MinFaves(n) => at_least(f.likes, *n),
        Query::MinRetweets(n) => at_least(f.reposts, *n),
        Query::MinReplies(n) => at_least(f.replies, *n),
        Query::Filter(k) => term(f.flags, k.name()),
        Query::Url(u) => {
            return words(f.urls, analyze(url, u)).or_else(|| Some(Box::new(EmptyQuery)))
        }
        Query::ConversationId(n) => term(f.conversation, &n.to_string()),
    })
}
