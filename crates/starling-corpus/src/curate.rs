//! Curation: each post gets its entities, training text, language and a verdict.

use crate::dedup::{shingle_text, ExactDedup, NearDupConfig, NearDupIndex};
use crate::hash::fx64;
use crate::post::{Post, Verdict};
use serde::{Deserialize, Serialize};
use starling_text::{extract_entities, NormalizeConfig, Normalizer, PiiCounts};
use std::collections::{HashMap, VecDeque};

/// Curation settings; each filter can be turned off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurateConfig {
    /// How training text is derived. By default: unescape, NFC, whitespace, URL placeholder, PII scrub.
    pub normalize: NormalizeConfig,
    /// Languages kept for training (ISO codes); empty keeps all. By default empty.
    pub languages: Vec<String>,
    /// Detect a language when the source gives none. By default true.
    pub detect_language: bool,
    /// Fewest characters of real text (placeholders not counted). By default 10.
    pub min_chars: usize,
    /// Fewest words of real text. By default 2.
    pub min_words: usize,
    /// Most characters of training text. By default 2,000.
    pub max_chars: usize,
    /// More hashtags than this is spam. By default 6.
    pub max_hashtags: usize,
    /// More mentions than this is spam. By default 10.
    pub max_mentions: usize,
    /// More URLs than this is spam. By default 4.
    pub max_urls: usize,
    /// A run of this many identical characters is spam. By default 12.
    pub max_char_run: usize,
    /// Posts by one author within `burst_window_secs` above which the rest are bot output. By default 8.
    pub burst_posts: usize,
    /// The burst window in seconds. By default 60.
    pub burst_window_secs: i64,
    /// Client names (the `source` field) that mark automated posting. By default a few known bot clients.
    pub bot_sources: Vec<String>,
    /// Drop exact duplicates of training text. By default true.
    pub exact_dedup: bool,
    /// Near-duplicate removal; `None` turns it off. By default on at Jaccard 0.8.
    pub near_dup: Option<NearDupConfig>,
}

impl Default for CurateConfig {
    fn default() -> Self {
        Self {
            normalize: NormalizeConfig::default(),
            languages: Vec::new(),
            detect_language: true,
            min_chars: 10,
            min_words: 2,
            max_chars: 2000,
            max_hashtags: 6,
            max_mentions: 10,
            max_urls: 4,
            max_char_run: 12,
            burst_posts: 8,
            burst_window_secs: 60,
            bot_sources: ["twittbot.net", "IFTTT", "dlvr.it", "Botize", "Cheap Bots, Done Quick!"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exact_dedup: true,
            near_dup: Some(NearDupConfig::default()),
        }
    }
}

/// Totals gathered while curating (beyond the verdict counts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CurateStats {
    /// URLs replaced by placeholders.
    pub urls_replaced: u64,
    /// Mentions anonymised.
    pub mentions_replaced: u64,
    /// Emails scrubbed.
    pub emails_scrubbed: u64,
    /// Phone numbers scrubbed.
    pub phones_scrubbed: u64,
    /// Posts whose language was detected.
    pub lang_detected: u64,
}

/// Decides each post's training text and verdict, in input order.
#[derive(Debug)]
pub struct Curator {
    config: CurateConfig,
    normalizer: Normalizer,
    exact: ExactDedup,
    near: Option<NearDupIndex>,
    recent: HashMap<u64, VecDeque<i64>>,
    next_key: u32,
    keys: Vec<String>,
    /// Totals so far.
    pub stats: CurateStats,
}

impl Curator {
    /// A curator with the given settings.
    pub fn new(config: CurateConfig) -> Self {
        Self {
            normalizer: Normalizer::new(config.normalize),
            near: config.near_dup.map(NearDupIndex::new),
            exact: ExactDedup::default(),
            recent: HashMap::new(),
            next_key: 0,
            keys: Vec::new(),
            config,
            stats: CurateStats::default(),
        }
    }

    /// The near-duplicate index, when enabled.
    pub fn near_index(&self) -> Option<&NearDupIndex> {
        self.near.as_ref()
    }

    /// Fills entities, training text and language, and sets the verdict of a post whose
    /// reader verdict is `Kept` or `HeldOut` (reposts are left as they are).
    pub fn curate(&mut self, post: &mut Post) {
        if post.verdict == Verdict::Repost {
            return;
        }
        post.entities = extract_entities(&post.text);
        let n = self.normalizer.normalize_display(&post.text, &post.entities);
        self.count(&n.pii, n.urls, n.mentions);
        post.train_text = n.text;
        if post.lang.is_empty() || post.lang == "und" {
            if self.config.detect_language {
                let bare = strip_placeholders(&post.train_text);
                post.lang = crate::lang::detect(&bare).unwrap_or("und").to_string();
                post.lang_detected = true;
                self.stats.lang_detected += 1;
            } else if post.lang.is_empty() {
                post.lang = "und".into();
            }
        }
        if post.verdict != Verdict::Kept {
            // Held-out posts still enter the dedup index, so training copies of test posts are caught.
            if post.verdict == Verdict::HeldOut {
                self.dedup(post);
            }
            return;
        }
        post.verdict = self.verdict(post);
    }

    fn count(&mut self, pii: &PiiCounts, urls: usize, mentions: usize) {
        self.stats.urls_replaced += urls as u64;
        self.stats.mentions_replaced += mentions as u64;
        self.stats.emails_scrubbed += pii.emails as u64;
        self.stats.phones_scrubbed += pii.phones as u64;
    }

    fn verdict(&mut self, post: &Post) -> Verdict {
        let c = &self.config;
        let bare = strip_placeholders(&post.train_text);
        let chars = bare.chars().filter(|c| !c.is_whitespace()).count();
        let words = bare.split_whitespace().count();
        if chars < c.min_chars || words < c.min_words {
            return Verdict::TooShort;
        }
        if post.train_text.chars().count() > c.max_chars {
            return Verdict::TooLong;
        }
        if !c.languages.is_empty() && !c.languages.iter().any(|l| l == &post.lang) {
            return Verdict::Language;
        }
        let e = &post.entities;
        if e.hashtags.len() > c.max_hashtags
            || e.mentions.len() > c.max_mentions
            || e.urls.len() > c.max_urls
            || longest_run(&post.text) >= c.max_char_run
        {
            return Verdict::Spam;
        }
        if post
            .source
            .as_ref()
            .is_some_and(|s| c.bot_sources.iter().any(|b| b == s))
        {
            return Verdict::Bot;
        }
        if let (Some(author), Some(t)) = (&post.author_id, post.created_at) {
            let window = c.burst_window_secs;
            let limit = c.burst_posts;
            let q = self.recent.entry(fx64(author.as_bytes())).or_default();
            let now = t.timestamp();
            while q.front().is_some_and(|&f| now - f > window) {
                q.pop_front();
            }
            q.push_back(now);
            if q.len() > limit {
                return Verdict::Bot;
            }
        }
        self.dedup(post)
    }

    fn dedup(&mut self, post: &Post) -> Verdict {
        if self.config.exact_dedup && self.exact.check_and_insert(&post.train_text) {
            return Verdict::ExactDuplicate;
        }
        if let Some(near) = self.near.as_mut() {
            let key = self.next_key;
            if near.check_and_insert(&shingle_text(&post.train_text), key).is_some() {
                return Verdict::NearDuplicate;
            }
            self.next_key += 1;
            let _ = &self.keys;
        }
        Verdict::Kept
    }
}

/// Training text without placeholders.
pub fn strip_placeholders(text: &str) -> String {
    let mut out = text.to_string();
    for p in starling_text::PLACEHOLDERS {
        if out.contains(p) {
            out = out.replace(p, " ");
        }
    }
    out
}

fn longest_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev = None;
    for c in s.chars() {
        if Some(c) == prev && !c.is_whitespace() {
            run += 1;
        } else {
            run = 1;
        }
        prev = Some(c);
        best = best.max(run);
    }
    best
}
