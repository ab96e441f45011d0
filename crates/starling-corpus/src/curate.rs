//! Curation: each post gets its entities, training text, language and a verdict.

use crate::authors::AuthorList;
use crate::bots::{author_key, AuthorProfiles, BotConfig, PostSignal};
use crate::dedup::{shingle_text, shingles, ExactDedup, MinHasher, NearDupConfig, NearDupIndex};
use crate::hash::fx64;
use crate::post::{Post, Verdict};
use serde::{Deserialize, Serialize};
use starling_text::{extract_entities, NormalizeConfig, Normalizer, PiiCounts};
use std::collections::HashSet;

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
    /// Automation judged by author: repeated bursts, scheduled posting, the content model.
    pub bots: BotConfig,
    /// Client names (the `source` field) that mark automated posting. By default a few known bot clients.
    pub bot_sources: Vec<String>,
    /// Drop exact duplicates of training text. By default true.
    pub exact_dedup: bool,
    /// Near-duplicate removal; `None` turns it off. By default on at Jaccard 0.8.
    pub near_dup: Option<NearDupConfig>,
    /// A file of the authors whose posts alone are trained on ([`AuthorList`]); posts that name
    /// no author are not judged by it. By default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_list: Option<std::path::PathBuf>,
    /// The inputs the author list applies to (files, or directories holding them); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author_list_inputs: Vec<std::path::PathBuf>,
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
            bots: BotConfig::default(),
            bot_sources: [
                "twittbot.net",
                "IFTTT",
                "dlvr.it",
                "Botize",
                "Cheap Bots, Done Quick!",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            exact_dedup: true,
            near_dup: Some(NearDupConfig::default()),
            author_list: None,
            author_list_inputs: Vec::new(),
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

/// The part of curation that depends on one post alone (entities, training text, language,
/// stateless filters, dedup signature), so it can run on another thread than [`Curator`].
#[derive(Debug, Clone)]
pub struct Preparer {
    config: CurateConfig,
    normalizer: Normalizer,
    hasher: Option<MinHasher>,
    authors: Option<AuthorList>,
}

/// What [`Preparer::prepare`] found out about a post, for [`Curator::decide`].
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// A stateless filter's verdict, if one applies.
    pub(crate) verdict: Option<Verdict>,
    /// Hash of the training text (exact dedup).
    pub(crate) text_hash: u64,
    /// MinHash signature of the shingle text (near dedup).
    pub(crate) signature: Vec<u32>,
    pub(crate) pii: PiiCounts,
    pub(crate) urls: usize,
    pub(crate) mentions: usize,
    pub(crate) lang_detected: bool,
    /// What the post tells about its author (taken by the author profiles).
    pub(crate) signal: Option<PostSignal>,
}

impl Preparer {
    /// A preparer with the given settings.
    pub fn new(config: CurateConfig) -> Self {
        Self {
            normalizer: Normalizer::new(config.normalize),
            hasher: config.near_dup.map(|n| MinHasher::new(n.num_perm, n.seed)),
            config,
            authors: None,
        }
    }

    /// [`Preparer::prepare`], with a panic inside it (a parser bug tripped by this record)
    /// returned as its message, so the record can be quarantined and the run go on.
    pub fn try_prepare(&self, post: &mut Post) -> Result<Prepared, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.prepare(post)))
            .map_err(|p| starling_text::panic_message(p.as_ref()))
    }

    /// Fills entities, training text and language; applies the filters that need no state.
    pub fn prepare(&self, post: &mut Post) -> Prepared {
        let mut prep = Prepared::default();
        if post.verdict == Verdict::Repost {
            prep.signal = Some(PostSignal {
                repost: true,
                ..Default::default()
            });
            return prep;
        }
        let platform = std::mem::take(&mut post.entities);
        post.entities = extract_entities(&post.text);
        if !platform.is_empty() {
            post.entities.merge_named(&post.text, &platform);
        }
        let n = self
            .normalizer
            .normalize_display(&post.text, &post.entities);
        (prep.pii, prep.urls, prep.mentions) = (n.pii, n.urls, n.mentions);
        post.train_text = n.text;
        if post.lang.is_empty() || post.lang == "und" {
            if self.config.detect_language {
                let bare = strip_placeholders(&post.train_text);
                post.lang = crate::lang::detect(&bare).unwrap_or("und").to_string();
                post.lang_detected = true;
                prep.lang_detected = true;
            } else if post.lang.is_empty() {
                post.lang = "und".into();
            }
        }
        prep.signal = Some(PostSignal::of(
            &post.text,
            &post.train_text,
            &post.entities,
            false,
        ));
        if post.verdict == Verdict::Kept {
            prep.verdict = self.stateless_verdict(post);
        }
        if prep.verdict.is_none() && matches!(post.verdict, Verdict::Kept | Verdict::HeldOut) {
            prep.text_hash = fx64(post.train_text.as_bytes());
            if let (Some(h), Some(nd)) = (&self.hasher, &self.config.near_dup) {
                let mut sh = Vec::new();
                shingles(&shingle_text(&post.train_text), nd.shingle, &mut sh);
                h.signature(&sh, &mut prep.signature);
            }
        }
        prep
    }

    fn stateless_verdict(&self, post: &Post) -> Option<Verdict> {
        let c = &self.config;
        if self.authors.as_ref().is_some_and(|l| !l.admits(post)) {
            return Some(Verdict::Author);
        }
        let bare = strip_placeholders(&post.train_text);
        let chars = bare.chars().filter(|c| !c.is_whitespace()).count();
        let words = bare.split_whitespace().count();
        if chars < c.min_chars || words < c.min_words {
            return Some(Verdict::TooShort);
        }
        if post.train_text.chars().count() > c.max_chars {
            return Some(Verdict::TooLong);
        }
        if !c.languages.is_empty() && !c.languages.iter().any(|l| l == &post.lang) {
            return Some(Verdict::Language);
        }
        let e = &post.entities;
        if e.hashtags.len() > c.max_hashtags
            || e.mentions.len() > c.max_mentions
            || e.urls.len() > c.max_urls
            || longest_run(&post.text) >= c.max_char_run
        {
            return Some(Verdict::Spam);
        }
        if post
            .source
            .as_ref()
            .is_some_and(|s| c.bot_sources.iter().any(|b| b == s))
        {
            return Some(Verdict::Bot);
        }
        None
    }
}

/// Decides each post's verdict: automated authors, then exact and near dedup (the first copy
/// decided is kept, so the caller decides posts in time order).
#[derive(Debug)]
pub struct Curator {
    preparer: Preparer,
    config: CurateConfig,
    exact: ExactDedup,
    near: Option<NearDupIndex>,
    bot_authors: HashSet<u64>,
    next_key: u32,
    /// Totals so far.
    pub stats: CurateStats,
}

impl Curator {
    /// A curator with the given settings.
    pub fn new(config: CurateConfig) -> Self {
        Self {
            preparer: Preparer::new(config.clone()),
            near: config.near_dup.map(NearDupIndex::new),
            exact: ExactDedup::default(),
            bot_authors: HashSet::new(),
            next_key: 0,
            config,
            stats: CurateStats::default(),
        }
    }

    /// Keeps only the posts of these authors (among posts that name one); see [`AuthorList`].
    pub fn with_authors(mut self, authors: Option<AuthorList>) -> Self {
        self.preparer.authors = authors;
        self
    }

    /// A [`Preparer`] with the same settings, for another thread.
    pub fn preparer(&self) -> Preparer {
        self.preparer.clone()
    }

    /// The near-duplicate index, when enabled.
    pub fn near_index(&self) -> Option<&NearDupIndex> {
        self.near.as_ref()
    }

    /// Marks the authors whose posts are all `bot` (from [`AuthorProfiles::judge`]).
    pub fn set_bot_authors(&mut self, keys: HashSet<u64>) {
        self.bot_authors = keys;
    }

    /// Prepares and decides one post (both steps on this thread).
    pub fn curate(&mut self, post: &mut Post) {
        let prep = self.preparer.prepare(post);
        self.decide(post, prep);
    }

    /// Sets the verdict of a prepared post whose reader verdict is `Kept` or `HeldOut`
    /// (reposts are left as they are).
    pub fn decide(&mut self, post: &mut Post, prep: Prepared) {
        post.verdict = self.decide_verdict(post.verdict, AuthorProfiles::author_of(post), prep);
    }

    /// The verdict of a prepared post from the reader's verdict and its author (id, else handle).
    pub fn decide_verdict(
        &mut self,
        reader: Verdict,
        author: Option<&str>,
        prep: Prepared,
    ) -> Verdict {
        if reader == Verdict::Repost {
            return reader;
        }
        self.stats.urls_replaced += prep.urls as u64;
        self.stats.mentions_replaced += prep.mentions as u64;
        self.stats.emails_scrubbed += prep.pii.emails as u64;
        self.stats.phones_scrubbed += prep.pii.phones as u64;
        self.stats.lang_detected += u64::from(prep.lang_detected);
        if reader == Verdict::HeldOut {
            // Held-out posts still enter the dedup index, so training copies of test posts are caught.
            self.dedup(&prep);
            return reader;
        }
        if reader != Verdict::Kept {
            return reader;
        }
        let bot_author = !self.bot_authors.is_empty()
            && author.is_some_and(|a| self.bot_authors.contains(&author_key(a)));
        match prep.verdict {
            Some(Verdict::Author) => Verdict::Author,
            _ if bot_author => Verdict::Bot,
            Some(v) => v,
            None => self.dedup(&prep),
        }
    }

    fn dedup(&mut self, prep: &Prepared) -> Verdict {
        if self.config.exact_dedup && self.exact.check_and_insert_hash(prep.text_hash) {
            return Verdict::ExactDuplicate;
        }
        if let Some(near) = self.near.as_mut() {
            let key = self.next_key;
            if near
                .check_and_insert_signature(&prep.signature, key, false)
                .is_some()
            {
                return Verdict::NearDuplicate;
            }
            self.next_key += 1;
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
