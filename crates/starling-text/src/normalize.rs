//! The training view of a post: unescaped, NFC, tidy whitespace, placeholders for URLs and users.

use crate::entities::{extract_entities, Entities, EntityKind};
use crate::pii::{PiiCounts, PiiScrubber};
use crate::{URL_PLACEHOLDER, USER_PLACEHOLDER};
use serde::{Deserialize, Serialize};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// What [`Normalizer`] does to a post's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NormalizeConfig {
    /// Decode HTML character references (`&amp;` → `&`). By default true (the API escapes `&<>`).
    pub html_unescape: bool,
    /// Apply Unicode NFC. By default true.
    pub nfc: bool,
    /// Collapse runs of spaces and tabs, trim lines, keep at most one blank line. By default true.
    pub whitespace: bool,
    /// Replace each URL with [`URL_PLACEHOLDER`]. By default true.
    pub url_placeholder: bool,
    /// Replace each @mention with [`USER_PLACEHOLDER`]. By default false.
    pub anonymize_mentions: bool,
    /// Replace emails and phone numbers with their placeholders. By default true.
    pub scrub_pii: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self {
            html_unescape: true,
            nfc: true,
            whitespace: true,
            url_placeholder: true,
            anonymize_mentions: false,
            scrub_pii: true,
        }
    }
}

/// A normalised text and what was replaced on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    /// The training text.
    pub text: String,
    /// URLs replaced by the placeholder.
    pub urls: usize,
    /// Mentions replaced by the placeholder.
    pub mentions: usize,
    /// Emails and phone numbers scrubbed.
    pub pii: PiiCounts,
}

/// Turns post text into training text according to a [`NormalizeConfig`].
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    config: NormalizeConfig,
    pii: PiiScrubber,
}

impl Normalizer {
    /// A normaliser with the given configuration.
    pub fn new(config: NormalizeConfig) -> Self {
        Self {
            config,
            pii: PiiScrubber::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &NormalizeConfig {
        &self.config
    }

    /// Normalises raw (possibly HTML-escaped) post text.
    pub fn normalize(&self, raw: &str) -> Normalized {
        let unescaped = if self.config.html_unescape {
            html_unescape(raw)
        } else {
            raw.to_string()
        };
        let entities = extract_entities(&unescaped);
        self.normalize_display(&unescaped, &entities)
    }

    /// Normalises already-unescaped display text whose entities are known (saves a second extraction
    /// when NFC leaves the text unchanged).
    pub fn normalize_display(&self, display: &str, entities: &Entities) -> Normalized {
        let mut out = Normalized::default();
        let nfc_needed = self.config.nfc && is_nfc_quick(display.chars()) != IsNormalized::Yes;
        let text: String;
        let fresh;
        let (text, entities) = if nfc_needed {
            text = display.nfc().collect();
            fresh = extract_entities(&text);
            (text.as_str(), &fresh)
        } else {
            (display, entities)
        };
        let replaced = self.replace_entities(text, entities, &mut out);
        let scrubbed = if self.config.scrub_pii {
            let (s, counts) = self.pii.scrub(&replaced);
            out.pii = counts;
            s
        } else {
            replaced
        };
        out.text = if self.config.whitespace {
            tidy_whitespace(&scrubbed)
        } else {
            scrubbed
        };
        out
    }

    fn replace_entities(&self, text: &str, entities: &Entities, out: &mut Normalized) -> String {
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        if self.config.url_placeholder {
            for e in &entities.urls {
                spans.push((e.start, e.end, URL_PLACEHOLDER));
                out.urls += 1;
            }
        }
        if self.config.anonymize_mentions {
            for e in &entities.mentions {
                // A list mention keeps no slug: the list's owner is the user being anonymised.
                debug_assert!(matches!(e.kind, EntityKind::Mention | EntityKind::List));
                spans.push((e.start, e.end, USER_PLACEHOLDER));
                out.mentions += 1;
            }
        }
        if spans.is_empty() {
            return text.to_string();
        }
        spans.sort_unstable();
        let mut result = String::with_capacity(text.len());
        let mut next = 0usize;
        let mut span_iter = spans.into_iter().peekable();
        let mut skip_until = 0usize;
        for (ci, (bi, ch)) in text.char_indices().enumerate() {
            let _ = bi;
            while let Some(&(start, end, rep)) = span_iter.peek() {
                if start == ci && ci >= skip_until {
                    result.push_str(rep);
                    skip_until = end;
                    span_iter.next();
                } else if start < ci {
                    span_iter.next();
                } else {
                    break;
                }
            }
            if ci >= skip_until {
                result.push(ch);
            }
            next = ci + 1;
        }
        let _ = next;
        result
    }
}

/// Decodes HTML character references (named and numeric).
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    html_escape::decode_html_entities(s).into_owned()
}

fn tidy_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0usize;
    for line in s.lines() {
        let mut words = line.split(|c: char| c.is_whitespace() || is_invisible(c));
        let mut tidy = String::new();
        for w in words.by_ref().filter(|w| !w.is_empty()) {
            if !tidy.is_empty() {
                tidy.push(' ');
            }
            tidy.push_str(w);
        }
        if tidy.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(&tidy);
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{FEFF}' | '\u{00AD}') || (c.is_control() && c != '\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_nfc_and_whitespace() {
        let n = Normalizer::default();
        let out = n.normalize("  Cafe\u{301} &amp;   tea\r\n\n\n\nnext\tline  ");
        assert_eq!(out.text, "Café & tea\n\nnext line");
    }

    #[test]
    fn urls_and_mentions_become_placeholders() {
        let n = Normalizer::new(NormalizeConfig {
            anonymize_mentions: true,
            ..Default::default()
        });
        let out = n.normalize("@a hi @b/list go to http://x.co and example.com/abc");
        assert_eq!(out.text, "<|user|> hi <|user|> go to <|url|> and <|url|>");
        assert_eq!((out.urls, out.mentions), (2, 2));
    }

    #[test]
    fn mentions_stay_by_default() {
        let out = Normalizer::default().normalize("@a mail bob@example.com");
        assert_eq!(out.text, "@a mail <|email|>");
        assert_eq!(out.pii.emails, 1);
    }
}
