//! Hashtag recovery, a search evaluation that needs no hand labels: every hashtag is stripped
//! from the indexed posts; a query is a hashtag's words; the relevant posts are those that
//! carried it. Scored by nDCG@10 and recall@100.

use crate::index::{PostIndex, Result, SearchMode, SearchOrder, SearchRequest};
use starling_corpus::Post;
use starling_embed::Embedder;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// One query of the task.
#[derive(Debug, Clone, PartialEq)]
pub struct HashtagQuery {
    /// The hashtag, lower-cased, without `#`.
    pub tag: String,
    /// Its words, lower-cased (`#NBAFinals` → `nba finals`).
    pub query: String,
    /// Ids of the posts that carried it.
    pub relevant: HashSet<String>,
}

/// Removes every hashtag from a post's text and entities (other entities are found again).
pub fn strip_hashtags(p: &mut Post) {
    if p.entities.hashtags.is_empty() {
        return;
    }
    let spans: Vec<(usize, usize)> = p
        .entities
        .hashtags
        .iter()
        .map(|e| (e.start, e.end))
        .collect();
    let mut out = String::with_capacity(p.text.len());
    for (i, c) in p.text.chars().enumerate() {
        if !spans.iter().any(|&(s, e)| i >= s && i < e) {
            out.push(c);
        }
    }
    p.text = out
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    p.entities = starling_text::extract_entities(&p.text);
}

/// A hashtag's words: split at case changes, digits and underscores, lower-cased.
pub fn tag_words(tag: &str) -> String {
    let chars: Vec<char> = tag.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some(&prev) = cur.chars().last().as_ref() {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_alphabetic() && c.is_numeric())
                || (prev.is_numeric() && c.is_alphabetic())
                || (prev.is_uppercase() && c.is_uppercase() && next_lower);
            if boundary {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words.join(" ").to_lowercase()
}

/// Collects the task's queries from posts (before stripping): hashtags carried by at least
/// `min_posts` and at most `max_posts` posts, `limit` of them spread evenly over the list
/// sorted by tag, so the choice is deterministic.
pub fn hashtag_queries(
    posts: &[Post],
    min_posts: usize,
    max_posts: usize,
    limit: usize,
) -> Vec<HashtagQuery> {
    // tag → (relevant ids, a written form that shows word boundaries when there is one)
    let mut tags: BTreeMap<String, (HashSet<String>, String)> = BTreeMap::new();
    for p in posts {
        for h in &p.entities.hashtags {
            let e = tags
                .entry(h.text.to_lowercase())
                .or_insert_with(|| (HashSet::new(), h.text.clone()));
            e.0.insert(p.id.clone());
            if !e.1.chars().any(char::is_uppercase) && h.text.chars().any(char::is_uppercase) {
                e.1 = h.text.clone();
            }
        }
    }
    let eligible: Vec<HashtagQuery> = tags
        .into_iter()
        .filter(|(_, (ids, _))| (min_posts..=max_posts).contains(&ids.len()))
        .map(|(tag, (relevant, written))| HashtagQuery {
            query: tag_words(&written),
            tag,
            relevant,
        })
        .filter(|q| !q.query.is_empty())
        .collect();
    if eligible.len() <= limit {
        return eligible;
    }
    let step = eligible.len() as f64 / limit as f64;
    (0..limit)
        .filter_map(|i| eligible.get((i as f64 * step) as usize).cloned())
        .collect()
}

/// nDCG@k with binary relevance.
pub fn ndcg_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, id)| relevant.contains(*id))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// Share of the relevant posts found in the first `k`.
pub fn recall_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    ranked
        .iter()
        .take(k)
        .filter(|id| relevant.contains(*id))
        .count() as f64
        / relevant.len() as f64
}

/// One mode's scores over the task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeScore {
    /// Mean nDCG@10.
    pub ndcg10: f64,
    /// Mean recall@100.
    pub recall100: f64,
    /// Median query latency, milliseconds (the query's embedding included).
    pub p50_ms: f64,
    /// Queries scored.
    pub queries: usize,
}

/// Runs every query in `mode` (ranked `top`) and averages the scores.
pub fn evaluate(
    idx: &PostIndex,
    queries: &[HashtagQuery],
    mode: SearchMode,
    embedder: Option<&dyn Embedder>,
) -> Result<ModeScore> {
    let (mut ndcg, mut recall, mut ms) = (0.0, 0.0, Vec::with_capacity(queries.len()));
    for q in queries {
        let t = Instant::now();
        let hits = idx.search_with(&SearchRequest {
            query: &q.query,
            mode,
            order: SearchOrder::Top,
            limit: 100,
            embedder,
        })?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let ranked: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        ndcg += ndcg_at(&ranked, &q.relevant, 10);
        recall += recall_at(&ranked, &q.relevant, 100);
    }
    let n = queries.len().max(1) as f64;
    ms.sort_by(f64::total_cmp);
    Ok(ModeScore {
        ndcg10: ndcg / n,
        recall100: recall / n,
        p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        queries: queries.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_words_split_like_people_write_them() {
        assert_eq!(tag_words("NBAFinals"), "nba finals");
        assert_eq!(tag_words("MondayMotivation"), "monday motivation");
        assert_eq!(tag_words("covid19"), "covid 19");
        assert_eq!(tag_words("climate_change"), "climate change");
        assert_eq!(tag_words("mondaymotivation"), "mondaymotivation");
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let rel: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let ranked: Vec<String> = ["a", "x", "b"].iter().map(|s| s.to_string()).collect();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((ndcg_at(&ranked, &rel, 10) - (1.0 + 0.5) / ideal).abs() < 1e-12);
        assert_eq!(recall_at(&ranked, &rel, 2), 0.5);
        assert_eq!(recall_at(&ranked, &rel, 100), 1.0);
        assert_eq!(ndcg_at(&[], &rel, 10), 0.0);
    }

    #[test]
    fn stripping_removes_every_hashtag_and_keeps_other_entities() {
        let origin = starling_corpus::Origin {
            file: "t".into(),
            line: 1,
            nested: false,
        };
        let mut p = Post::new(
            "1".into(),
            "Go #Lakers! @bob see #NBAFinals $TSLA".into(),
            origin,
        );
        p.entities = starling_text::extract_entities(&p.text);
        let qs = hashtag_queries(std::slice::from_ref(&p), 1, 10, 10);
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[1].query, "nba finals");
        strip_hashtags(&mut p);
        assert_eq!(p.text, "Go ! @bob see $TSLA");
        assert!(p.entities.hashtags.is_empty());
        assert_eq!(p.entities.mentions.len(), 1);
        assert_eq!(p.entities.cashtags.len(), 1);
    }
}
