//! Text rules for posts: what a post contains and what a model should see of it.
//!
//! - [`extract_entities`]: mentions, lists, hashtags, cashtags and URLs by the twitter-text rules
//!   (indices count Unicode code points, as twitter-text does).
//! - [`weighted_length`]: the weighted length and validity of a post under a twitter-text config.
//! - [`Normalizer`]: the training view of a post (HTML unescape, NFC, whitespace, placeholders).
//! - [`PiiScrubber`]: emails and phone numbers found and replaced, with counts.
//!
//! ```
//! use starling_text::{extract_entities, Normalizer, NormalizeConfig};
//! let text = "Hi @jack, see https://example.com #rust &amp; $TSLA";
//! let e = extract_entities(text);
//! assert_eq!(e.mentions[0].text, "jack");
//! assert_eq!(e.hashtags[0].text, "rust");
//! let n = Normalizer::new(NormalizeConfig { anonymize_mentions: true, ..Default::default() });
//! let out = n.normalize(text);
//! assert_eq!(out.text, "Hi <|user|>, see <|url|> #rust & $TSLA");
//! ```

mod entities;
mod normalize;
mod pii;

pub use entities::{
    extract_entities, is_valid_hashtag, is_valid_list, is_valid_url, is_valid_username,
    panic_message, reply_to, try_extract_entities, weighted_length, weighted_length_with, Entities,
    Entity, EntityKind, LengthConfig, WeightedLength,
};
pub use normalize::{html_unescape, NormalizeConfig, Normalized, Normalizer};
pub use pii::{PiiCounts, PiiScrubber};

/// Placeholder that replaces a URL in training text.
pub const URL_PLACEHOLDER: &str = "<|url|>";
/// Placeholder that replaces an @mention in training text when mentions are anonymised.
pub const USER_PLACEHOLDER: &str = "<|user|>";
/// Placeholder that replaces an email address in training text.
pub const EMAIL_PLACEHOLDER: &str = "<|email|>";
/// Placeholder that replaces a phone number in training text.
pub const PHONE_PLACEHOLDER: &str = "<|phone|>";
/// Every placeholder, in a fixed order (the tokenizer reserves these as special tokens).
pub const PLACEHOLDERS: [&str; 4] = [
    URL_PLACEHOLDER,
    USER_PLACEHOLDER,
    EMAIL_PLACEHOLDER,
    PHONE_PLACEHOLDER,
];

/// Number of Unicode code points in `s` (the unit of entity indices).
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}
