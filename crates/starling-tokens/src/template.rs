//! The document template: how posts and reply threads become model text. `serve` reuses it for chat.
//!
//! A document is one post, or a reply thread rebuilt from reply references (parent before child,
//! replies in time order). Each post is laid out as
//!
//! ```text
//! <|user|>: {train_text}<|endofpost|>
//! ```
//!
//! (the author is the user placeholder: authors are not identities the model should learn), and the
//! document ends with `<|endoftext|>`. The placeholders are `starling-text`'s, so the special tokens
//! and the corpus agree.

use starling_text::{PLACEHOLDERS, USER_PLACEHOLDER};

/// Version of the template (recorded in token manifests).
pub const TEMPLATE_VERSION: u32 = 1;
/// Ends each post.
pub const END_OF_POST: &str = "<|endofpost|>";
/// Ends each document.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Every special token, in id order (they take the first ids of the vocabulary).
pub fn special_tokens() -> Vec<&'static str> {
    let mut v = vec![END_OF_TEXT, END_OF_POST];
    v.extend(PLACEHOLDERS);
    v
}

/// One post as the template lays it out (without the document end).
pub fn post(text: &str) -> String {
    format!("{USER_PLACEHOLDER}: {text}{END_OF_POST}")
}

/// A whole document from its posts' training texts, in thread order.
pub fn document<'a>(posts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in posts {
        out.push_str(&post(p));
    }
    out.push_str(END_OF_TEXT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_layout() {
        assert_eq!(
            document(["hi all", "hello back"]),
            "<|user|>: hi all<|endofpost|><|user|>: hello back<|endofpost|><|endoftext|>"
        );
        assert_eq!(special_tokens()[0], END_OF_TEXT);
        assert!(special_tokens().contains(&"<|url|>"));
    }
}
