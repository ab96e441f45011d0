//! Chat as a thread: the conversation laid out with the tokens stage's document template, after
//! the posts it is grounded on, so the answer is the model's next reply.

use starling_search::Hit;
use starling_text::USER_PLACEHOLDER;
use starling_text::{extract_entities, NormalizeConfig, Normalizer};
use starling_tokens::template::{END_OF_POST, END_OF_TEXT};

/// Words too common to find relevant posts by.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "all", "any", "can", "had", "her",
    "was", "one", "our", "out", "has", "him", "his", "how", "its", "let", "may", "who", "did",
    "get", "got", "just", "this", "that", "with", "have", "from", "they", "will", "would", "there",
    "their", "what", "about", "which", "when", "make", "like", "time", "than", "then", "them",
    "these", "some", "could", "into", "been", "were", "does", "doing", "tell", "know", "think",
    "please", "should", "what's", "i'm", "it's", "don't", "me", "my", "is", "it", "of", "to", "in",
    "on", "at", "be", "do", "so", "we", "an", "or", "if", "by", "up", "no", "as", "a", "i",
];

/// Most words of a message used to search for grounding posts.
pub const MAX_QUERY_TERMS: usize = 12;

/// The search query (operator language) that finds posts about `message`: its content words,
/// hashtags and mentions, any of them (`OR`); None when it has none.
pub fn grounding_query(message: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
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
        let term = match sigil {
            Some(s) => format!("{s}{body}"),
            None => body.to_string(),
        };
        if keep && !terms.contains(&term) {
            terms.push(term);
        }
        if terms.len() == MAX_QUERY_TERMS {
            break;
        }
    }
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// Lays out posts and conversations in the training template.
#[derive(Debug, Clone)]
pub struct ThreadLayout {
    normalizer: Normalizer,
}

impl Default for ThreadLayout {
    fn default() -> Self {
        Self {
            normalizer: Normalizer::new(NormalizeConfig::default()),
        }
    }
}

impl ThreadLayout {
    /// A text as the corpus stage normalises it.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer
            .normalize_display(text, &extract_entities(text))
            .text
    }

    /// One grounding post as its own document.
    pub fn grounding_document(&self, hit: &Hit) -> String {
        format!(
            "{USER_PLACEHOLDER}: {}{END_OF_POST}{END_OF_TEXT}",
            self.normalize(&hit.text)
        )
    }

    /// The conversation as one reply thread, open for the next reply: every message a post
    /// (in order, whatever its role), then the reply's author prefix.
    pub fn thread(&self, messages: &[String]) -> String {
        let mut out = String::new();
        for m in messages {
            let t = self.normalize(m);
            if t.is_empty() {
                continue;
            }
            out.push_str(&format!("{USER_PLACEHOLDER}: {t}{END_OF_POST}"));
        }
        out.push_str(&format!("{USER_PLACEHOLDER}:"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_content_words_tags_and_mentions() {
        assert_eq!(
            grounding_query("What do you think about the #NBA finals, @espn?").as_deref(),
            Some("#nba OR finals OR @espn")
        );
        assert_eq!(grounding_query("is it ok?"), None);
        assert_eq!(grounding_query("-filter:replies OR (x)"), None);
    }

    #[test]
    fn thread_uses_the_training_template() {
        let l = ThreadLayout::default();
        assert_eq!(
            l.thread(&[
                "hello there".into(),
                "  ".into(),
                "see https://x.co/a".into()
            ]),
            "<|user|>: hello there<|endofpost|><|user|>: see <|url|><|endofpost|><|user|>:"
        );
    }
}
