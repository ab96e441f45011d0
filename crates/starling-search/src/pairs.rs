//! Training pairs the platform has for free, for contrastive embedding training: a post with
//! its hashtags stripped ↔ the hashtag's words, a reply ↔ its parent and a quote ↔ the post it
//! quotes. Half of the reply and quote pairs (by [`thread_held_out`]) are kept for evaluating
//! reply retrieval and never trained on.

use crate::eval::{strip_hashtags, tag_words};
use starling_corpus::Post;
use std::collections::{HashMap, HashSet};

/// One pair: indices into [`PairSet::texts`], and a group (pairs of one group — one hashtag —
/// are never each other's negatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPair {
    /// The query side (the tag's words, or the parent post).
    pub query: usize,
    /// The document side (the post without its tags, or the reply).
    pub doc: usize,
    /// The pair's group.
    pub group: usize,
}

/// Mined pairs over a set of distinct texts, with how many of each kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairSet {
    /// Every distinct text the pairs use.
    pub texts: Vec<String>,
    /// The pairs.
    pub pairs: Vec<TextPair>,
    /// Hashtag ↔ post pairs.
    pub hashtag_pairs: usize,
    /// Parent ↔ reply pairs.
    pub reply_pairs: usize,
    /// Quoted ↔ quote pairs.
    pub quote_pairs: usize,
    /// Reply and quote pairs held out for evaluation ([`thread_held_out`]), not mined.
    pub held_out_threads: usize,
    /// Distinct hashtags (by their words) that gave pairs.
    pub tags: usize,
}

/// Mines pairs from `posts`: hashtag pairs until there are `max_pairs` pairs, at most `per_tag`
/// per hashtag (each post with hashtags and at least 3 letters left without them pairs with each
/// tag's words); then every reply or quote whose parent is among `posts` pairs with it.
pub fn mine_pairs(posts: &[Post], max_pairs: usize, per_tag: usize) -> PairSet {
    mine(posts, max_pairs, per_tag, &HashSet::new(), false)
}

/// Pairs for training an embedder that will be evaluated: [`mine_pairs`] without any pair of the
/// hashtags in `excluded` (lower-cased, no `#`: an evaluation's tags, so it never scores a tag
/// the embedder was trained on; the posts that carried them still pair with their other tags,
/// every tag stripped from their text) and without the reply and quote pairs that
/// [`thread_held_out`] keeps for reply retrieval.
pub fn mine_pairs_except(
    posts: &[Post],
    max_pairs: usize,
    per_tag: usize,
    excluded: &HashSet<String>,
) -> PairSet {
    mine(posts, max_pairs, per_tag, excluded, true)
}

/// Whether the reply or quote `post_id` (and its pair with the post it answers) is kept for
/// evaluating reply retrieval: a stable half of them, by a hash of the id.
pub fn thread_held_out(post_id: &str) -> bool {
    // FNV-1a: stable across runs, platforms and releases.
    let h = post_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % 2 == 0
}

/// The held-out reply and quote pairs of `posts` (see [`thread_held_out`]): (index of the reply
/// or quote, index of the post it answers), both with text.
pub fn held_out_threads(posts: &[Post]) -> Vec<(usize, usize)> {
    let by_id: HashMap<&str, usize> = posts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    posts
        .iter()
        .enumerate()
        .filter(|(_, p)| thread_held_out(&p.id) && !p.text.is_empty())
        .filter_map(|(i, p)| {
            let parent = answered(p).and_then(|id| by_id.get(id))?;
            (!posts[*parent].text.is_empty() && *parent != i).then_some((i, *parent))
        })
        .collect()
}

/// The post a reply answers or a quote quotes.
fn answered(p: &Post) -> Option<&str> {
    p.refs.reply_to.as_deref().or(p.refs.quote_of.as_deref())
}

fn mine(
    posts: &[Post],
    max_pairs: usize,
    per_tag: usize,
    excluded: &HashSet<String>,
    hold_out_threads: bool,
) -> PairSet {
    let by_id: HashMap<&str, usize> = posts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut set = PairSet::default();
    let mut text_index: HashMap<String, usize> = HashMap::new();
    let mut intern = |texts: &mut Vec<String>, t: String| -> usize {
        let n = text_index.len();
        *text_index.entry(t.clone()).or_insert_with(|| {
            texts.push(t);
            n
        })
    };
    let mut groups: HashMap<String, usize> = HashMap::new();
    let mut per_group: HashMap<usize, usize> = HashMap::new();
    for p in posts {
        // Past the limit only reply and quote pairs (few, and rarer) are still taken.
        let full = set.pairs.len() >= max_pairs;
        if !full && !p.entities.hashtags.is_empty() {
            let mut stripped = p.clone();
            strip_hashtags(&mut stripped);
            if stripped
                .text
                .chars()
                .filter(|c| c.is_alphanumeric())
                .count()
                >= 3
            {
                for h in &p.entities.hashtags {
                    if excluded.contains(&h.text.to_lowercase()) {
                        continue;
                    }
                    let words = tag_words(&h.text);
                    if words.is_empty() {
                        continue;
                    }
                    let n = groups.len();
                    let group = *groups.entry(words.clone()).or_insert(n);
                    let count = per_group.entry(group).or_default();
                    if *count >= per_tag {
                        continue;
                    }
                    *count += 1;
                    let query = intern(&mut set.texts, words);
                    let doc = intern(&mut set.texts, stripped.text.clone());
                    set.pairs.push(TextPair { query, doc, group });
                    set.hashtag_pairs += 1;
                }
            }
        }
        if let Some(parent) = answered(p).and_then(|id| by_id.get(id)) {
            let parent = &posts[*parent];
            if !parent.text.is_empty() && !p.text.is_empty() && parent.id != p.id {
                if hold_out_threads && thread_held_out(&p.id) {
                    set.held_out_threads += 1;
                    continue;
                }
                // Each reply pair is its own group, apart from every tag's.
                let group = groups.len() + set.pairs.len() + 1_000_000_000;
                let query = intern(&mut set.texts, parent.text.clone());
                let doc = intern(&mut set.texts, p.text.clone());
                set.pairs.push(TextPair { query, doc, group });
                if p.refs.reply_to.is_some() {
                    set.reply_pairs += 1;
                } else {
                    set.quote_pairs += 1;
                }
            }
        }
    }
    set.tags = groups.len();
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_corpus::{Origin, Post};

    fn post(id: &str, text: &str, reply_to: Option<&str>) -> Post {
        let origin = Origin {
            file: "t".into(),
            line: 1,
            nested: false,
        };
        let mut p = Post::new(id.into(), text.into(), origin);
        p.entities = starling_text::extract_entities(text);
        p.refs.reply_to = reply_to.map(String::from);
        p
    }

    #[test]
    fn hashtags_and_replies_make_pairs_within_the_limits() {
        let posts = vec![
            post("1", "rain all day in town #WeatherUpdate", None),
            post("2", "sunny and warm #WeatherUpdate", None),
            post("3", "#WeatherUpdate", None),
            post("4", "so true, stay dry", Some("1")),
            post("5", "no parent here", Some("99")),
        ];
        let set = mine_pairs(&posts, 100, 1);
        assert_eq!((set.hashtag_pairs, set.reply_pairs, set.tags), (1, 1, 1));
        let tag = set.pairs[0];
        assert_eq!(set.texts[tag.query], "weather update");
        assert_eq!(set.texts[tag.doc], "rain all day in town");
        let reply = set.pairs[1];
        assert_eq!(
            set.texts[reply.query],
            "rain all day in town #WeatherUpdate"
        );
        assert_eq!(set.texts[reply.doc], "so true, stay dry");
        assert_ne!(reply.group, tag.group);
        assert_eq!(mine_pairs(&posts, 100, 5).hashtag_pairs, 2);
        // The limit stops hashtag pairs; the rarer reply pairs are still taken.
        let capped = mine_pairs(&posts, 1, 5);
        assert_eq!((capped.hashtag_pairs, capped.reply_pairs), (1, 1));
        // An evaluation's tags make no pair, and their text never reaches a pair.
        let mut posts = posts;
        posts.push(post(
            "6",
            "storm warning tonight #WeatherUpdate #EvalTag",
            None,
        ));
        let excluded: HashSet<String> = ["evaltag".to_string()].into();
        let set = mine_pairs_except(&posts, 100, 5, &excluded);
        assert!(
            set.texts.iter().all(|t| !t.to_lowercase().contains("eval")),
            "{:?}",
            set.texts
        );
        assert_eq!(set.hashtag_pairs, 3);
        assert_eq!(mine_pairs(&posts, 100, 5).hashtag_pairs, 4);
    }

    #[test]
    fn held_out_replies_and_quotes_are_never_trained_on() {
        let mut posts = vec![post("p", "the parent post about rivers", None)];
        for i in 0..40 {
            let mut p = post(&format!("r{i}"), &format!("answer number {i}"), None);
            if i % 2 == 0 {
                p.refs.reply_to = Some("p".into());
            } else {
                p.refs.quote_of = Some("p".into());
            }
            posts.push(p);
        }
        let all = mine_pairs(&posts, 1000, 5);
        assert_eq!((all.reply_pairs, all.quote_pairs), (20, 20));
        let train = mine_pairs_except(&posts, 1000, 5, &HashSet::new());
        let held = held_out_threads(&posts);
        // About half held out, and the two sides partition the pairs.
        assert!((10..=30).contains(&held.len()), "{}", held.len());
        assert_eq!(train.held_out_threads, held.len());
        assert_eq!(train.reply_pairs + train.quote_pairs + held.len(), 40);
        for (r, parent) in &held {
            assert_eq!(*parent, 0);
            assert!(
                !train.texts.contains(&posts[*r].text),
                "{} trained on",
                posts[*r].id
            );
        }
        // Reply retrieval asks with exactly the held-out ones, which are not in its index.
        let (indexed, queries) = crate::eval::reply_queries(&posts);
        assert_eq!(queries.len(), held.len());
        assert_eq!(indexed.len(), posts.len() - held.len());
        for q in &queries {
            assert!(
                q.relevant.contains("p") && q.query.contains("answer"),
                "{q:?}"
            );
            assert!(indexed.iter().all(|p| p.id != q.tag));
        }
        // A huge reply asks with a bounded query, in linear time.
        let r = (0..)
            .map(|i| format!("h{i}"))
            .find(|id| thread_held_out(id))
            .expect("some id is held out");
        let long: String = (0..200_000).map(|i| format!("word{i} ")).collect();
        let mut huge = post(&r, &long, Some("p"));
        huge.entities = Default::default();
        posts.push(huge);
        let t = std::time::Instant::now();
        let (_, queries) = crate::eval::reply_queries(&posts);
        let q = queries.iter().find(|q| q.tag == r).expect("asked");
        assert_eq!(
            q.query.split(" OR ").count(),
            crate::eval::MAX_REPLY_QUERY_TERMS
        );
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
        // The split is a property of the id alone.
        assert_eq!(thread_held_out("r3"), thread_held_out("r3"));
    }
}
