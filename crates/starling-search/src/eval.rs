//! Search evaluations that need no hand labels.
//!
//! - Hashtag recovery: every hashtag is stripped from the indexed posts; a query is a hashtag's
//!   words; the relevant posts are those that carried it. Scored by nDCG@10 and recall@100.
//! - Grounding: templated chat questions about a hashtag ("what are people saying about #x?",
//!   "any news on x y?") answered by [`crate::grounding::ground`] on an index that keeps its
//!   hashtags; a grounding post is relevant when it carries the tag. Scored by precision@3 and by
//!   how often the answer abstains, which is right only for tags the index does not hold.

use crate::grounding::ground;
use crate::index::{PostIndex, Result, SearchMode, SearchOrder, SearchRequest};
use starling_corpus::Post;
use starling_embed::Embedder;
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// The lexical-mismatch subset of the task: each query keeps only its relevant posts (hashtags
/// stripped, `posts` as indexed) that share no word with it, and queries left with none are
/// dropped. BM25 cannot find these posts; only meaning can.
pub fn lexical_mismatch(queries: &[HashtagQuery], posts: &[Post]) -> Vec<HashtagQuery> {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let by_id: HashMap<&str, &str> = posts
        .iter()
        .map(|p| (p.id.as_str(), p.text.as_str()))
        .collect();
    queries
        .iter()
        .filter_map(|q| {
            let qw = words(&q.query);
            let relevant: HashSet<String> = q
                .relevant
                .iter()
                .filter(|id| {
                    by_id
                        .get(id.as_str())
                        .is_some_and(|t| words(t).is_disjoint(&qw))
                })
                .cloned()
                .collect();
            (!relevant.is_empty()).then(|| HashtagQuery {
                tag: q.tag.clone(),
                query: q.query.clone(),
                relevant,
            })
        })
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
#[derive(Debug, Clone, PartialEq)]
pub struct ModeScore {
    /// Mean nDCG@10.
    pub ndcg10: f64,
    /// Mean recall@100.
    pub recall100: f64,
    /// Median query latency, milliseconds (the query's embedding included).
    pub p50_ms: f64,
    /// Queries scored.
    pub queries: usize,
    /// nDCG@10 of each query, in order (for paired comparisons).
    pub per_query_ndcg10: Vec<f64>,
    /// Recall@100 of each query, in order.
    pub per_query_recall100: Vec<f64>,
}

/// A mean difference and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Interval {
    /// The mean difference.
    pub mean: f64,
    /// 2.5th percentile of the resampled means.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
}

/// The mean of `a - b` over paired per-query scores and its 95% interval by the paired
/// bootstrap (`rounds` resamples of the queries, seeded).
pub fn paired_bootstrap(a: &[f64], b: &[f64], rounds: usize, seed: u64) -> Interval {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n == 0 {
        return Interval::default();
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let mut sum = 0.0;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                sum += d[(state % n as u64) as usize];
            }
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Interval {
        mean,
        low: at(0.025),
        high: at(0.975),
    }
}

/// Most words a reply-retrieval query keeps.
pub const MAX_REPLY_QUERY_TERMS: usize = 32;

/// Reply retrieval over `posts`: each held-out reply or quote ([`crate::pairs::held_out_threads`],
/// never trained on) asks for the post it answers, its content words as an any-word query
/// ([`any_word_query`]). Returns the posts to index (every post but the asking ones, so a
/// question never finds itself) and the queries (`tag` = the asking post's id).
pub fn reply_queries(posts: &[Post]) -> (Vec<Post>, Vec<HashtagQuery>) {
    let held = crate::pairs::held_out_threads(posts);
    let mut asking = HashSet::new();
    let mut queries = Vec::new();
    for (r, parent) in held {
        let Some(query) = any_word_query(&posts[r].text) else {
            continue;
        };
        // A long post's words would outgrow the query language's limits: its first ones ask.
        let query = query
            .split(" OR ")
            .take(MAX_REPLY_QUERY_TERMS)
            .collect::<Vec<_>>()
            .join(" OR ");
        asking.insert(posts[r].id.clone());
        queries.push(HashtagQuery {
            tag: posts[r].id.clone(),
            query,
            relevant: [posts[parent].id.clone()].into(),
        });
    }
    let indexed = posts
        .iter()
        .filter(|p| !asking.contains(&p.id))
        .cloned()
        .collect();
    (indexed, queries)
}

/// Runs every query in `mode` (ranked `top`) and averages the scores.
pub fn evaluate(
    idx: &PostIndex,
    queries: &[HashtagQuery],
    mode: SearchMode,
    embedder: Option<&dyn Embedder>,
) -> Result<ModeScore> {
    let (mut ndcg, mut recall, mut ms) =
        (Vec::new(), Vec::new(), Vec::with_capacity(queries.len()));
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
        ndcg.push(ndcg_at(&ranked, &q.relevant, 10));
        recall.push(recall_at(&ranked, &q.relevant, 100));
    }
    let n = queries.len().max(1) as f64;
    ms.sort_by(f64::total_cmp);
    Ok(ModeScore {
        ndcg10: ndcg.iter().sum::<f64>() / n,
        recall100: recall.iter().sum::<f64>() / n,
        p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        queries: queries.len(),
        per_query_ndcg10: ndcg,
        per_query_recall100: recall,
    })
}

/// How a grounding question is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// "what are people saying about #x?"
    Hashtag,
    /// "any news on x y?" (the tag's words).
    Words,
}

impl Template {
    /// The question about a tag whose words are `words`.
    pub fn ask(self, tag: &str, words: &str) -> String {
        match self {
            Template::Hashtag => format!("what are people saying about #{tag}?"),
            Template::Words => format!("any news on {words}?"),
        }
    }

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Template::Hashtag => "#x",
            Template::Words => "words",
        }
    }
}

/// One grounding question.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundingQuestion {
    /// The tag asked about, lower-cased, without `#`.
    pub tag: String,
    /// How it is asked.
    pub template: Template,
    /// The question.
    pub text: String,
    /// Posts in the index that carry the tag (none: the right answer is to abstain).
    pub relevant: HashSet<String>,
}

/// How often each plain word occurs in the posts' texts (for splitting lower-case tags).
pub fn word_counts(posts: &[Post]) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for p in posts {
        for w in p
            .text
            .split(|c: char| !c.is_alphanumeric() && c != '#' && c != '@')
        {
            if w.is_empty() || w.starts_with(['#', '@']) {
                continue;
            }
            *counts.entry(w.to_lowercase()).or_default() += 1;
        }
    }
    counts
}

/// A lower-case tag split into the likeliest words under `counts` (a unigram model over words
/// seen at least twice; `mondaymotivation` → `monday motivation`); the tag itself when no split
/// into such words exists.
pub fn segment(tag: &str, counts: &HashMap<String, u64>) -> String {
    let chars: Vec<char> = tag.chars().collect();
    let total: u64 = counts.values().sum::<u64>().max(1);
    let cost = |w: &str| -> Option<f64> {
        let c = *counts.get(w)?;
        (c >= 2 && (w.chars().count() >= 2 || w == "a" || w == "i"))
            .then(|| -(c as f64 / total as f64).ln())
    };
    let n = chars.len();
    // best[i]: cheapest split of chars[..i] and where its last word starts.
    let mut best: Vec<Option<(f64, usize)>> = vec![None; n + 1];
    best[0] = Some((0.0, 0));
    for end in 1..=n {
        for start in end.saturating_sub(24)..end {
            let Some((before, _)) = best[start] else {
                continue;
            };
            let w: String = chars[start..end].iter().collect();
            if let Some(c) = cost(&w) {
                if best[end].is_none_or(|(b, _)| before + c < b) {
                    best[end] = Some((before + c, start));
                }
            }
        }
    }
    if best[n].is_none() {
        return tag.to_string();
    }
    let mut words = Vec::new();
    let mut end = n;
    while end > 0 {
        let Some((_, start)) = best[end] else {
            return tag.to_string();
        };
        words.push(chars[start..end].iter().collect::<String>());
        end = start;
    }
    words.reverse();
    words.join(" ")
}

/// A tag's words as people would write them: split at case changes (`query` of
/// [`HashtagQuery`]), or by [`segment`] when the tag is written in one case.
pub fn spoken_words(words: &str, counts: &HashMap<String, u64>) -> String {
    if words.contains(' ') {
        words.to_string()
    } else {
        segment(words, counts)
    }
}

/// The grounding questions about the tags of `present` (the index holds their posts) and of
/// `absent` (it holds none, so abstaining is right; their `relevant` is ignored), each asked
/// with every template.
pub fn grounding_questions(
    present: &[HashtagQuery],
    absent: &[HashtagQuery],
    counts: &HashMap<String, u64>,
) -> Vec<GroundingQuestion> {
    let mut out = Vec::new();
    let asked = present
        .iter()
        .map(|q| (q, q.relevant.clone()))
        .chain(absent.iter().map(|q| (q, HashSet::new())));
    for (q, relevant) in asked {
        let words = spoken_words(&q.query, counts);
        for template in [Template::Hashtag, Template::Words] {
            out.push(GroundingQuestion {
                text: template.ask(&q.tag, &words),
                tag: q.tag.clone(),
                template,
                relevant: relevant.clone(),
            });
        }
    }
    out
}

/// Grounding scores over one template's questions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GroundingScore {
    /// Mean over questions whose tag the index holds of relevant grounding posts / posts shown
    /// (at most `want`); an abstention counts 0.
    pub precision: f64,
    /// Share of those questions answered without grounding (wrong: relevant posts exist).
    pub abstained_present: f64,
    /// Share of questions about absent tags answered without grounding (right).
    pub abstained_absent: f64,
    /// Mean grounding posts per answer, over questions whose tag the index holds.
    pub posts: f64,
    /// Questions whose tag the index holds.
    pub present: usize,
    /// Questions about absent tags.
    pub absent: usize,
}

/// How a grounding evaluation searches: the tiered [`ground`] or, for comparison, one BM25
/// search of the message's words joined by `OR` (the server's grounding before tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grounder {
    /// [`ground`], hybrid when an embedder is given.
    Tiered,
    /// Any word of three or more letters that is not a stop word, `OR`, BM25.
    AnyWord,
}

/// Words too common to find posts by, for [`any_word_query`].
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "all", "any", "can", "had", "her",
    "was", "one", "our", "out", "has", "him", "his", "how", "its", "let", "may", "who", "did",
    "get", "got", "just", "this", "that", "with", "have", "from", "they", "will", "would", "there",
    "their", "what", "about", "which", "when", "make", "like", "time", "than", "then", "them",
    "these", "some", "could", "into", "been", "were", "does", "doing", "tell", "know", "think",
    "please", "should", "what's", "i'm", "it's", "don't",
];

/// The server's grounding query before tiers: the message's words of three or more letters
/// that are not stop words, and its hashtags and mentions, any of them (`OR`).
pub fn any_word_query(message: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for raw in message.split_whitespace() {
        let w: String = raw
            .trim_matches(|c: char| !(c.is_alphanumeric() || c == '#' || c == '@' || c == '_'))
            .to_lowercase();
        let (sigil, body) = match w.chars().next() {
            Some(c @ ('#' | '@')) => (Some(c), &w[1..]),
            _ => (None, w.as_str()),
        };
        if body.is_empty() || !body.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let keep = sigil.is_some() || (body.chars().count() >= 3 && !STOPWORDS.contains(&body));
        if keep && seen.insert(w.clone()) {
            terms.push(w);
        }
    }
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// Asks every question of one template and scores the grounding posts (`want` per answer).
pub fn evaluate_grounding(
    idx: &PostIndex,
    questions: &[GroundingQuestion],
    template: Template,
    grounder: Grounder,
    want: usize,
    embedder: Option<&dyn Embedder>,
) -> Result<GroundingScore> {
    let mut s = GroundingScore::default();
    for q in questions.iter().filter(|q| q.template == template) {
        let ids: Vec<String> = match grounder {
            Grounder::Tiered => ground(idx, &q.text, want, embedder)?.hits,
            Grounder::AnyWord => match any_word_query(&q.text) {
                Some(query) => idx.search_with(&SearchRequest {
                    query: &query,
                    mode: SearchMode::Bm25,
                    order: SearchOrder::Top,
                    limit: want,
                    embedder: None,
                })?,
                None => Vec::new(),
            },
        }
        .into_iter()
        .map(|h| h.id)
        .collect();
        if q.relevant.is_empty() {
            s.absent += 1;
            s.abstained_absent += f64::from(u8::from(ids.is_empty()));
            continue;
        }
        s.present += 1;
        s.posts += ids.len() as f64;
        if ids.is_empty() {
            s.abstained_present += 1.0;
        } else {
            let hit = ids.iter().filter(|id| q.relevant.contains(*id)).count();
            s.precision += hit as f64 / ids.len() as f64;
        }
    }
    let (p, a) = (s.present.max(1) as f64, s.absent.max(1) as f64);
    s.precision /= p;
    s.abstained_present /= p;
    s.posts /= p;
    s.abstained_absent /= a;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mismatch_subset_keeps_posts_without_the_query_words() {
        let origin = starling_corpus::Origin {
            file: "t".into(),
            line: 1,
            nested: false,
        };
        let post = |id: &str, text: &str| Post::new(id.into(), text.into(), origin.clone());
        let posts = vec![
            post("1", "rain all day"),
            post("2", "storm warning tonight"),
        ];
        let q = HashtagQuery {
            tag: "rainstorm".into(),
            query: "rain storm".into(),
            relevant: ["1".to_string(), "2".to_string()].into(),
        };
        let q2 = HashtagQuery {
            relevant: ["1".to_string()].into(),
            ..q.clone()
        };
        let subset = lexical_mismatch(&[q, q2], &posts);
        assert!(subset.is_empty(), "both posts share a word: {subset:?}");
        let posts = vec![
            post("1", "wet and windy all day"),
            post("2", "storm warning"),
        ];
        let q = HashtagQuery {
            tag: "rainstorm".into(),
            query: "rain storm".into(),
            relevant: ["1".to_string(), "2".to_string()].into(),
        };
        let subset = lexical_mismatch(&[q], &posts);
        assert_eq!(subset.len(), 1);
        assert_eq!(subset[0].relevant, ["1".to_string()].into());
    }

    #[test]
    fn paired_bootstrap_brackets_the_mean_difference() {
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 2)).collect();
        let b = vec![0.0; 200];
        let i = paired_bootstrap(&a, &b, 1000, 7);
        assert!((i.mean - 0.5).abs() < 1e-12);
        assert!(
            i.low < 0.5 && i.high > 0.5 && i.low > 0.4 && i.high < 0.6,
            "{i:?}"
        );
        // No difference: an interval around 0.
        assert_eq!(paired_bootstrap(&a, &a, 100, 7), Interval::default());
    }

    #[test]
    fn lower_case_tags_split_into_likely_words() {
        let counts: HashMap<String, u64> = [
            ("monday", 20),
            ("motivation", 5),
            ("mon", 3),
            ("day", 30),
            ("climate", 4),
            ("change", 9),
        ]
        .iter()
        .map(|(w, c)| (w.to_string(), *c))
        .collect();
        assert_eq!(segment("mondaymotivation", &counts), "monday motivation");
        assert_eq!(segment("climatechange", &counts), "climate change");
        assert_eq!(segment("brexit", &counts), "brexit");
        assert_eq!(
            spoken_words(&tag_words("ClimateChange"), &counts),
            "climate change"
        );
        assert_eq!(spoken_words("climatechange", &counts), "climate change");
        assert_eq!(
            any_word_query("what are people saying about #sports?").as_deref(),
            Some("people OR saying OR #sports")
        );
    }

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
