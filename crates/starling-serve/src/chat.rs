//! Chat as a thread: the conversation laid out with the tokens stage's document template, after
//! the posts it is grounded on, so the answer is the model's next reply.

use starling_search::Hit;
use starling_text::USER_PLACEHOLDER;
use starling_text::{extract_entities, NormalizeConfig, Normalizer};
use starling_tokens::template::{END_OF_POST, END_OF_TEXT};

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

    /// Why the answer has no grounding posts, as a document in their place.
    pub fn grounding_note_document(&self, note: &str) -> String {
        format!("{USER_PLACEHOLDER}: ({note}){END_OF_POST}{END_OF_TEXT}")
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
