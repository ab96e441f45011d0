//! Grounding: the posts a chat message is about, or none when the index holds nothing relevant.
//!
//! A message is read for what it names — hashtags, mentions, cashtags, then its content words —
//! and searched in tiers, most specific first; conversational words ("people", "saying",
//! "news") never find a post on their own. A post grounds an answer only when it passes a tier's
//! gate: it carries a named entity, a hashtag the words spell (`climate change` → `#climatechange`),
//! the words as a phrase, or every content word. In hybrid mode the model's vectors re-rank the
//! posts a tier lets through and never add one it does not: with a causal LM's pooled states the
//! nearest post is often only the same length or style. When no tier finds anything the answer
//! says so instead of grounding on noise.

use crate::index::{PostIndex, Result, SearchMode, SearchOrder, SearchRequest, FUSION_DEPTH};
use crate::Hit;
use starling_embed::Embedder;
use std::collections::HashSet;

/// Words that say how someone asks, not what about: stop words and conversational words.
const CONVERSATIONAL: &[&str] = &[
    "a",
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anybody",
    "anyone",
    "anything",
    "are",
    "around",
    "as",
    "ask",
    "asking",
    "at",
    "be",
    "been",
    "before",
    "being",
    "but",
    "by",
    "can",
    "could",
    "current",
    "currently",
    "did",
    "do",
    "does",
    "doing",
    "don't",
    "else",
    "every",
    "everyone",
    "everything",
    "feel",
    "feeling",
    "feels",
    "find",
    "folks",
    "for",
    "from",
    "get",
    "give",
    "go",
    "going",
    "got",
    "guys",
    "had",
    "happen",
    "happened",
    "happening",
    "has",
    "have",
    "hear",
    "heard",
    "her",
    "here",
    "hey",
    "hi",
    "him",
    "his",
    "how",
    "i",
    "i'm",
    "if",
    "in",
    "info",
    "information",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "just",
    "know",
    "latest",
    "lately",
    "let",
    "like",
    "look",
    "lot",
    "lots",
    "make",
    "many",
    "may",
    "me",
    "mean",
    "more",
    "most",
    "much",
    "my",
    "new",
    "news",
    "no",
    "not",
    "now",
    "of",
    "on",
    "one",
    "opinion",
    "opinions",
    "or",
    "our",
    "out",
    "people",
    "please",
    "post",
    "posted",
    "posting",
    "posts",
    "really",
    "recent",
    "recently",
    "right",
    "said",
    "say",
    "saying",
    "says",
    "see",
    "seen",
    "should",
    "show",
    "so",
    "some",
    "someone",
    "something",
    "stuff",
    "talk",
    "talking",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "thinking",
    "this",
    "those",
    "thought",
    "thoughts",
    "time",
    "to",
    "today",
    "tweet",
    "tweeted",
    "tweeting",
    "tweets",
    "twitter",
    "up",
    "update",
    "updates",
    "us",
    "very",
    "want",
    "was",
    "way",
    "we",
    "were",
    "what",
    "what's",
    "whats",
    "when",
    "where",
    "which",
    "who",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
];

/// Most content words taken from a message.
pub const MAX_WORDS: usize = 8;

/// What a message names, in the order it names it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundingQuery {
    /// Hashtags, mentions and cashtags, lower-cased, with their sigils (at most [`MAX_WORDS`]).
    pub entities: Vec<String>,
    /// Content words, lower-cased (neither stop words nor conversational words).
    pub words: Vec<String>,
    /// The content words with the numbers and single characters among them (`covid 19`,
    /// `1 a`): what may spell a hashtag.
    pub spelling: Vec<String>,
}

impl GroundingQuery {
    /// Reads a chat message.
    pub fn from_message(message: &str) -> Self {
        let mut q = GroundingQuery::default();
        for raw in message.replace(['’', 'ʼ'], "'").split_whitespace() {
            let w: String = raw
                .trim_matches(|c: char| {
                    !(c.is_alphanumeric() || matches!(c, '#' | '@' | '$' | '_' | '\''))
                })
                .trim_end_matches("'s")
                .trim_matches('\'')
                .to_lowercase();
            let (sigil, body) = match w.chars().next() {
                Some(c @ ('#' | '@' | '$')) => (Some(c), &w[1..]),
                _ => (None, w.as_str()),
            };
            let plain = body.chars().all(|c| c.is_alphanumeric() || c == '_');
            if body.is_empty() || !plain {
                continue;
            }
            match sigil {
                // `$5` is money, not a cashtag.
                Some('$') if !body.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) => {}
                // At most MAX_WORDS entities: a message naming thousands must not cost
                // thousands squared, nor become a query of thousands of terms.
                Some(s) if q.entities.len() < MAX_WORDS => {
                    let e = format!("{s}{body}");
                    if !q.entities.contains(&e) {
                        q.entities.push(e);
                    }
                }
                Some(_) => {}
                None if q.spelling.len() < 2 * MAX_WORDS => {
                    let short = body.chars().count() < 2;
                    let number = body.chars().all(|c| c.is_numeric());
                    let content = !short && !number && !CONVERSATIONAL.contains(&body);
                    if content && !q.words.iter().any(|w| w == body) && q.words.len() < MAX_WORDS {
                        q.words.push(body.to_string());
                    }
                    if content || short || number {
                        q.spelling.push(body.to_string());
                    }
                }
                None => {}
            }
        }
        q
    }

    /// True when the message names nothing to search for.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.words.is_empty() && self.spelling.is_empty()
    }

    /// The searches to try, most specific first, in the query language: a post any of them
    /// finds is about what the message names.
    pub fn tiers(&self) -> Vec<String> {
        let mut tiers = Vec::new();
        if !self.entities.is_empty() {
            let any = self.entities.join(" OR ");
            // Named entities are what the message is about: with its words first, then alone.
            if !self.words.is_empty() {
                tiers.push(format!("({any}) ({})", self.words.join(" OR ")));
            }
            tiers.push(any);
            return tiers;
        }
        // Hashtags the words spell: every run of two to four adjacent words joined, or the one word.
        let sp = &self.spelling;
        let mut spelled: Vec<String> = Vec::new();
        if sp.len() == 1 {
            spelled.push(format!("#{}", sp[0]));
        } else {
            for len in (2..=sp.len().min(4)).rev() {
                for run in sp.windows(len) {
                    spelled.push(format!("#{}", run.concat()));
                }
            }
        }
        if !spelled.is_empty() {
            tiers.push(spelled.join(" OR "));
        }
        let w = &self.words;
        if w.is_empty() {
            return tiers;
        }
        if w.len() > 1 {
            tiers.push(format!("\"{}\"", w.join(" ")));
        }
        tiers.push(w.join(" "));
        tiers
    }
}

/// The posts found for a message, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounded {
    /// The posts, best first.
    pub hits: Vec<Hit>,
    /// The searches that found them, in the order tried.
    pub queries: Vec<String>,
    /// How they were ranked.
    pub mode: SearchMode,
    /// Why there are none, when there are none.
    pub note: Option<String>,
}

/// Finds up to `want` posts `message` is about: the tiers of [`GroundingQuery::tiers`] in
/// order until `want` are found, ranked by BM25, or hybrid when the index has vectors and an
/// embedder is given.
pub fn ground(
    idx: &PostIndex,
    message: &str,
    want: usize,
    embedder: Option<&dyn Embedder>,
) -> Result<Grounded> {
    let q = GroundingQuery::from_message(message);
    let mode = if idx.has_dense() && embedder.is_some() {
        SearchMode::Hybrid
    } else {
        SearchMode::Bm25
    };
    let mut out = Grounded {
        hits: Vec::new(),
        queries: Vec::new(),
        mode,
        note: None,
    };
    if q.is_empty() {
        out.note = Some("the message names nothing to search posts for".into());
        return Ok(out);
    }
    let mut seen: HashSet<String> = HashSet::new();
    for tier in q.tiers() {
        if out.hits.len() >= want {
            break;
        }
        let request = |mode, limit| SearchRequest {
            query: &tier,
            mode,
            order: SearchOrder::Top,
            limit,
            embedder,
        };
        let lexical = idx.search_with(&request(SearchMode::Bm25, FUSION_DEPTH))?;
        if lexical.is_empty() {
            continue;
        }
        let ranked = if mode == SearchMode::Hybrid {
            // The tier's gate holds: fusion re-ranks its posts and adds none.
            let gate: HashSet<&str> = lexical.iter().map(|h| h.id.as_str()).collect();
            let fused = idx.search_with(&request(SearchMode::Hybrid, FUSION_DEPTH))?;
            fused
                .into_iter()
                .filter(|h| gate.contains(h.id.as_str()))
                .collect()
        } else {
            lexical
        };
        out.queries.push(tier.clone());
        for h in ranked {
            if out.hits.len() >= want {
                break;
            }
            if seen.insert(h.id.clone()) {
                out.hits.push(h);
            }
        }
    }
    if out.hits.is_empty() {
        let named: Vec<String> = q
            .entities
            .iter()
            .cloned()
            .chain(q.entities.is_empty().then(|| q.spelling.join(" ")))
            .collect();
        out.note = Some(format!(
            "no post in the index is about {}",
            named.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entities_and_content_words_not_conversation() {
        let q =
            GroundingQuery::from_message("What are people saying about #Sports and @ESPN's take?");
        assert_eq!(q.entities, vec!["#sports", "@espn"]);
        assert_eq!(q.words, vec!["take"]);
        let q = GroundingQuery::from_message("any news on climate change? costs $5, see $TSLA");
        assert_eq!(q.entities, vec!["$tsla"]);
        assert_eq!(q.words, vec!["climate", "change", "costs"]);
        assert!(GroundingQuery::from_message("what's new with you today?").is_empty());
        // Operators in a message never reach the query language.
        let q = GroundingQuery::from_message("-filter:replies OR (xy)");
        assert_eq!(q.tiers(), vec!["#xy", "xy"]);
    }

    #[test]
    fn a_huge_message_reads_in_linear_time_into_a_bounded_query() {
        // 200,000 words (about a 1.4 MB body): every list is capped, so the tiers stay small.
        let msg = (0..200_000)
            .map(|i| format!("w{i} #t{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let t = std::time::Instant::now();
        let q = GroundingQuery::from_message(&msg);
        assert!(q.words.len() <= MAX_WORDS && q.spelling.len() <= 2 * MAX_WORDS);
        let tiers = q.tiers();
        assert!(tiers.len() <= 3 && tiers.iter().all(|x| crate::parse(x).is_ok()));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn tiers_go_from_specific_to_general() {
        let q = GroundingQuery::from_message("any news on climate change?");
        assert_eq!(
            q.tiers(),
            vec!["#climatechange", "\"climate change\"", "climate change"]
        );
        let q = GroundingQuery::from_message("thoughts on brexit?");
        assert_eq!(q.tiers(), vec!["#brexit", "brexit"]);
        let q = GroundingQuery::from_message("what about #NBA finals?");
        assert_eq!(q.tiers(), vec!["(#nba) (finals)", "#nba"]);
        let q = GroundingQuery::from_message("any news on covid 19?");
        assert_eq!(q.tiers(), vec!["#covid19", "covid"]);
        let q = GroundingQuery::from_message("any news on 1 a?");
        assert_eq!(q.tiers(), vec!["#1a"]);
        let q = GroundingQuery::from_message("what's new with you, and how?");
        assert!(q.tiers().is_empty());
        // Every tier parses in the query language.
        for m in ["new york state fair today", "@jack $tsla #x y"] {
            for t in GroundingQuery::from_message(m).tiers() {
                assert!(crate::parse(&t).is_ok(), "{t}");
            }
        }
    }
}
