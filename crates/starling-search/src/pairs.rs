//! Training pairs the platform has for free, for contrastive embedding training: a post with
//! its hashtags stripped ↔ the hashtag's words, and a reply ↔ its parent.

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
    /// Distinct hashtags (by their words) that gave pairs.
    pub tags: usize,
}

/// Mines at most `max_pairs` pairs from `posts`, at most `per_tag` per hashtag: each post with
/// hashtags (and at least 3 letters left without them) pairs with each tag's words; each reply
/// whose parent is among `posts` pairs with it.
pub fn mine_pairs(posts: &[Post], max_pairs: usize, per_tag: usize) -> PairSet {
    mine_pairs_except(posts, max_pairs, per_tag, &HashSet::new())
}

/// [`mine_pairs`] without any pair of the hashtags in `excluded` (lower-cased, no `#`: an
/// evaluation's tags, so it never scores a tag the embedder was trained on); the posts that
/// carried them still pair with their other tags, every tag stripped from their text.
pub fn mine_pairs_except(
    posts: &[Post],
    max_pairs: usize,
    per_tag: usize,
    excluded: &HashSet<String>,
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
        if set.pairs.len() >= max_pairs {
            break;
        }
        if !p.entities.hashtags.is_empty() {
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
        if let Some(parent) = p.refs.reply_to.as_deref().and_then(|id| by_id.get(id)) {
            let parent = &posts[*parent];
            if !parent.text.is_empty() && !p.text.is_empty() {
                // Each reply pair is its own group, apart from every tag's.
                let group = groups.len() + set.pairs.len() + 1_000_000_000;
                let query = intern(&mut set.texts, parent.text.clone());
                let doc = intern(&mut set.texts, p.text.clone());
                set.pairs.push(TextPair { query, doc, group });
                set.reply_pairs += 1;
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
        assert_eq!(mine_pairs(&posts, 1, 5).pairs.len(), 1);
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
}
