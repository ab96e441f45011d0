//! Emails and phone numbers: found, counted and replaced by placeholders.

use crate::{EMAIL_PLACEHOLDER, PHONE_PLACEHOLDER};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// How many PII items a text held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiCounts {
    /// Email addresses.
    pub emails: usize,
    /// Phone numbers.
    pub phones: usize,
}

impl PiiCounts {
    /// Total items.
    pub fn total(&self) -> usize {
        self.emails + self.phones
    }
}

/// Finds and replaces emails and phone numbers.
#[derive(Debug, Clone)]
pub struct PiiScrubber {
    email: Regex,
    phone: Regex,
}

impl Default for PiiScrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl PiiScrubber {
    /// A scrubber with the built-in patterns.
    pub fn new() -> Self {
        // The patterns are constants; a failure here is a programming error caught by the tests.
        let email =
            Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
                .expect("email pattern");
        // International (+CC ...) or grouped national numbers: 3+ groups of digits separated by
        // space, dot or dash, optionally a parenthesised area code; validated by digit count below.
        let phone = Regex::new(
            r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}|\+\d{8,15}",
        )
        .expect("phone pattern");
        Self { email, phone }
    }

    /// Byte ranges of emails and phone numbers in `text`, in order, not overlapping.
    pub fn find(&self, text: &str) -> Vec<(usize, usize, PiiKind)> {
        let mut found: Vec<(usize, usize, PiiKind)> = Vec::new();
        if text.contains('@') {
            for m in self.email.find_iter(text) {
                found.push((m.start(), m.end(), PiiKind::Email));
            }
        }
        if text.bytes().filter(u8::is_ascii_digit).count() >= 9 {
            for m in self.phone.find_iter(text) {
                if found.iter().any(|&(s, e, _)| m.start() < e && s < m.end()) {
                    continue;
                }
                if is_phone(text, m.start(), m.end()) {
                    found.push((m.start(), m.end(), PiiKind::Phone));
                }
            }
        }
        found.sort_unstable_by_key(|f| f.0);
        found
    }

    /// Replaces each email and phone number by its placeholder and counts them.
    pub fn scrub(&self, text: &str) -> (String, PiiCounts) {
        let found = self.find(text);
        let mut counts = PiiCounts::default();
        if found.is_empty() {
            return (text.to_string(), counts);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e, kind) in found {
            out.push_str(&text[at..s]);
            match kind {
                PiiKind::Email => {
                    counts.emails += 1;
                    out.push_str(EMAIL_PLACEHOLDER);
                }
                PiiKind::Phone => {
                    counts.phones += 1;
                    out.push_str(PHONE_PLACEHOLDER);
                }
            }
            at = e;
        }
        out.push_str(&text[at..]);
        (out, counts)
    }
}

/// What kind of PII a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
}

fn is_phone(text: &str, start: usize, end: usize) -> bool {
    let span = &text[start..end];
    let digits = span.bytes().filter(u8::is_ascii_digit).count();
    if !(9..=15).contains(&digits) {
        return false;
    }
    // Not glued to other word characters (ids, hashes, URLs) or decimals.
    let before = text[..start].chars().next_back();
    let glued_before = before.is_some_and(|c| {
        c.is_alphanumeric() || matches!(c, '/' | '_' | '@' | ',' | '.' | ':' | '-' | '+')
    });
    let mut rest = text[end..].chars();
    let glued_after = match rest.next() {
        Some(c) if c.is_alphanumeric() || matches!(c, '/' | '_' | '@' | '-') => true,
        Some('.' | ',' | ':') => rest.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    };
    if glued_before || glued_after {
        return false;
    }
    // Dates and times look like digit groups too: 2024-01-05 has only 8 digits, but ISO timestamps
    // with seconds might not; require no group to look like a year followed by a month.
    !looks_like_date(span)
}

fn looks_like_date(span: &str) -> bool {
    let groups: Vec<&str> = span
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    groups.len() >= 3
        && groups[0].len() == 4
        && groups[0].starts_with(['1', '2'])
        && groups[1].len() <= 2
        && groups[2].len() <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones() {
        let s = PiiScrubber::new();
        let (out, c) =
            s.scrub("call +1 415-555-0132 or (020) 7946 0958, mail a.b+c@mail.example.org.");
        assert_eq!(out, "call <|phone|> or <|phone|>, mail <|email|>.");
        assert_eq!((c.emails, c.phones), (1, 2));
    }

    #[test]
    fn not_phones() {
        let s = PiiScrubber::new();
        for t in [
            "status 1234567890123456789 is long",
            "on 2024-01-05 12:30:45 we met",
            "score 3-1 and 12 34",
            "price 1,234,567.89 dollars",
            "https://x.com/a/status/1234 5678 901",
        ] {
            assert_eq!(s.scrub(t).1.phones, 0, "{t}");
        }
    }
}
