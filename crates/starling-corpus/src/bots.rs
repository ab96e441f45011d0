//! Automation found by author, not by volume: each author's posts are profiled while the corpus is
//! read (content signals that need no timestamps, and the times themselves), and once every post
//! is in, an author whose posting is sustained-automatic gets the `bot` verdict on all its posts.
//!
//! - Timing: bursts (more than `burst_posts` inside `burst_window_secs`) on `burst_days` or more
//!   distinct days, or gaps between posts that repeat to the second (scheduled posting).
//!   One burst is a person live-posting an event, and is kept.
//! - Content: a logistic model over the author's shares of templated, linked, reposted and
//!   replying posts and its vocabulary ([`AuthorFeatures`]); fitted on PAN 2019's labelled
//!   authors (`starling corpus-bots`), shipped in `bot_model.json`.
//!
//! Profiles are sums and fixed-size sketches, so they do not depend on the order posts arrive in;
//! memory is ~3 KiB per author plus 8 bytes per timed post.

use crate::hash::{fx64, mix64};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Settings of the author-level automation rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BotConfig {
    /// Judge authors by content with the bot model. By default true.
    pub content: bool,
    /// Fewest posts of an author before its content is judged. By default 20.
    pub min_posts: u32,
    /// More posts than this inside `burst_window_secs` is a burst. By default 8.
    pub burst_posts: usize,
    /// The burst window in seconds. By default 60.
    pub burst_window_secs: i64,
    /// Bursts on this many distinct days make an author automated. By default 3.
    pub burst_days: usize,
    /// Share of gaps between consecutive posts equal to the second at or above which posting is
    /// scheduled (with at least 20 gaps of a minute or more). By default 0.5.
    pub periodic_share: f64,
    /// A bot model file (JSON, as `starling corpus-bots --out` writes) instead of the built-in one.
    pub model: Option<String>,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            content: true,
            min_posts: 20,
            burst_posts: 8,
            burst_window_secs: 60,
            burst_days: 3,
            periodic_share: 0.5,
            model: None,
        }
    }
}

/// Bottom-k sketch of distinct 64-bit hashes (KMV): exact below k values, an estimate above.
#[derive(Debug, Clone, Default)]
struct Kmv {
    k: usize,
    v: Vec<u64>,
}

impl Kmv {
    fn new(k: usize) -> Self {
        Self {
            k,
            v: Vec::with_capacity(k.min(16)),
        }
    }

    fn insert(&mut self, h: u64) {
        let h = mix64(h);
        if self.v.len() >= self.k && self.v.last().is_some_and(|&m| h >= m) {
            return;
        }
        if let Err(i) = self.v.binary_search(&h) {
            self.v.insert(i, h);
            if self.v.len() > self.k {
                self.v.pop();
            }
        }
    }

    fn estimate(&self) -> f64 {
        match self.v.last() {
            Some(&m) if self.v.len() >= self.k => {
                (self.k as f64 - 1.0) * (u64::MAX as f64 / m as f64)
            }
            _ => self.v.len() as f64,
        }
    }
}

/// What one post tells about its author, computed with the rest of the post's preparation.
#[derive(Debug, Clone, Default)]
pub struct PostSignal {
    /// A repost (platform repost or a manual `RT @user:`).
    pub repost: bool,
    /// Hash of the post's template: lower-cased training text, digits as `0`.
    pub template: u64,
    /// Words in it.
    pub words: u32,
    /// Carries a URL.
    pub url: bool,
    /// Ends with a URL.
    pub ends_url: bool,
    /// Starts with a mention (a reply).
    pub reply: bool,
    /// Mentions someone.
    pub mention: bool,
    /// Hashtags in it.
    pub hashtags: u32,
    /// Characters of the text.
    pub chars: u32,
    /// Digits in the text.
    pub digits: u32,
    /// Letters in the text.
    pub letters: u32,
    /// Upper-case letters in the text.
    pub upper: u32,
    /// Characters that are neither letters, digits, whitespace nor ASCII (emoji, symbols).
    pub symbols: u32,
    /// Has a line break.
    pub newline: bool,
    /// Ends with `…` (a truncated feed title).
    pub ellipsis: bool,
    /// Hashes of its URLs (one link posted again and again is a spam pattern).
    pub links: Vec<u64>,
    /// Uses a first-person word (`I`, `my`, `yo`, `mi`, ...).
    pub first_person: bool,
    /// Ends with an attribution (`... - Name`, `—Name`): quote feeds.
    pub attribution: bool,
    /// Starts with a lower-case letter.
    pub lower_start: bool,
    /// Has `!`.
    pub exclaim: bool,
    /// Has `?`.
    pub question: bool,
    /// Laughs or chat words (`lol`, `haha`, `jaja`, `omg`, ...).
    pub informal: bool,
}

/// Words that make a post first-person (English and Spanish).
const FIRST_PERSON: [&str; 16] = [
    "i", "i'm", "im", "me", "my", "mine", "i've", "i'll", "myself", "yo", "mi", "mis", "me",
    "conmigo", "estoy", "soy",
];

/// Laughter and chat words.
const INFORMAL: [&str; 12] = [
    "lol", "haha", "hahaha", "jaja", "jajaja", "omg", "lmao", "xd", "jajajaja", "wtf", "idk", "tbh",
];

impl PostSignal {
    /// The signal of a post from its display text and training text (one pass over each, no
    /// allocation: it runs for every post).
    pub fn of(
        text: &str,
        train_text: &str,
        entities: &starling_text::Entities,
        repost: bool,
    ) -> Self {
        let trimmed = text.trim();
        let mut s = PostSignal {
            repost: repost || trimmed.starts_with("RT @"),
            url: !entities.urls.is_empty(),
            mention: !entities.mentions.is_empty(),
            reply: trimmed.starts_with('@'),
            hashtags: entities.hashtags.len() as u32,
            ..Default::default()
        };
        if repost {
            return s;
        }
        for c in text.chars() {
            s.chars += 1;
            match c {
                '0'..='9' => s.digits += 1,
                '\n' => s.newline = true,
                '!' => s.exclaim = true,
                '?' | '¿' => s.question = true,
                c if c.is_alphabetic() => {
                    s.letters += 1;
                    s.upper += u32::from(c.is_uppercase());
                }
                c if !c.is_whitespace() && !c.is_ascii() => s.symbols += 1,
                _ => {}
            }
        }
        let last_url = entities
            .urls
            .last()
            .filter(|u| u.end + 1 >= s.chars as usize);
        s.ends_url = last_url.is_some();
        s.links = entities
            .urls
            .iter()
            .map(|u| fx64(u.text.as_bytes()))
            .collect();
        s.lower_start = trimmed.chars().next().is_some_and(char::is_lowercase);
        // The text before a trailing link: where feed titles end in `…` and quotes in `- Name`.
        let body = match last_url {
            Some(u) => {
                let at = text
                    .char_indices()
                    .nth(u.start)
                    .map_or(text.len(), |(i, _)| i);
                &text[..at]
            }
            None => text,
        }
        .trim_end();
        s.ellipsis = body.ends_with('…') || body.ends_with("...");
        let mut from = body.len().saturating_sub(80);
        while !body.is_char_boundary(from) {
            from += 1;
        }
        let tail = &body[from..];
        s.attribution = ["- ", "— ", "―", "—", "~ ", "-- "].iter().any(|d| {
            tail.rfind(d).is_some_and(|i| {
                let after = tail[i + d.len()..].trim_start();
                after.chars().next().is_some_and(char::is_uppercase)
                    && after.split_whitespace().count() <= 5
            })
        });
        for w in text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty() && w.len() <= 8)
        {
            s.first_person |= FIRST_PERSON.iter().any(|x| w.eq_ignore_ascii_case(x));
            s.informal |= INFORMAL.iter().any(|x| w.eq_ignore_ascii_case(x));
        }
        // Template: lower-cased training text, digits as 0, whitespace runs as one space.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
        let (mut in_space, mut started) = (false, false);
        let mut buf = [0u8; 4];
        for c in train_text.chars() {
            if c.is_whitespace() {
                in_space = started;
                continue;
            }
            if !started || in_space {
                s.words += 1;
            }
            if in_space {
                feed(b' ');
                in_space = false;
            }
            started = true;
            let c = if c.is_ascii_digit() { '0' } else { c };
            for l in c.to_lowercase() {
                for &b in l.encode_utf8(&mut buf).as_bytes() {
                    feed(b);
                }
            }
        }
        s.template = mix64(h);
        s
    }
}

/// One author's posts, summed: counts, sketches and times.
#[derive(Debug, Clone)]
pub struct AuthorProfile {
    posts: u32,
    reposts: u32,
    urls: u32,
    ends_url: u32,
    replies: u32,
    mentions: u32,
    hashtag_posts: u32,
    hashtags: u32,
    newlines: u32,
    ellipses: u32,
    chars: u64,
    chars_sq: f64,
    digits: u64,
    letters: u64,
    upper: u64,
    symbols: u64,
    words: u64,
    templates: Kmv,
    links: u32,
    distinct_links: Kmv,
    first_person: u32,
    attribution: u32,
    lower_start: u32,
    exclaim: u32,
    question: u32,
    informal: u32,
    times: Vec<i64>,
}

impl Default for AuthorProfile {
    fn default() -> Self {
        Self {
            posts: 0,
            reposts: 0,
            urls: 0,
            ends_url: 0,
            replies: 0,
            mentions: 0,
            hashtag_posts: 0,
            hashtags: 0,
            newlines: 0,
            ellipses: 0,
            chars: 0,
            chars_sq: 0.0,
            digits: 0,
            letters: 0,
            upper: 0,
            symbols: 0,
            words: 0,
            templates: Kmv::new(64),
            links: 0,
            distinct_links: Kmv::new(64),
            first_person: 0,
            attribution: 0,
            lower_start: 0,
            exclaim: 0,
            question: 0,
            informal: 0,
            times: Vec::new(),
        }
    }
}

/// Names of [`AuthorFeatures`] values, in order.
pub const FEATURE_NAMES: [&str; 23] = [
    "repost_share",
    "url_share",
    "ends_url_share",
    "reply_share",
    "mention_share",
    "hashtag_share",
    "hashtags_per_post",
    "distinct_template_ratio",
    "mean_chars",
    "sd_chars",
    "digit_share",
    "upper_share",
    "symbol_share",
    "newline_share",
    "ellipsis_share",
    "words_per_post",
    "repeated_link_share",
    "first_person_share",
    "attribution_share",
    "lower_start_share",
    "exclaim_share",
    "question_share",
    "informal_share",
];

/// An author's content features (see [`FEATURE_NAMES`]); they do not grow with the author's volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorFeatures(pub Vec<f64>);

impl AuthorProfile {
    /// Adds one post (its time, when it has one).
    pub fn observe(&mut self, s: &PostSignal, time: Option<i64>) {
        self.posts += 1;
        if let Some(t) = time {
            self.times.push(t);
        }
        self.urls += u32::from(s.url);
        self.ends_url += u32::from(s.ends_url);
        self.mentions += u32::from(s.mention && !s.repost);
        self.hashtag_posts += u32::from(s.hashtags > 0);
        self.hashtags += s.hashtags;
        if s.repost {
            self.reposts += 1;
            return;
        }
        self.replies += u32::from(s.reply);
        self.newlines += u32::from(s.newline);
        self.ellipses += u32::from(s.ellipsis);
        self.chars += u64::from(s.chars);
        self.chars_sq += f64::from(s.chars).powi(2);
        self.digits += u64::from(s.digits);
        self.letters += u64::from(s.letters);
        self.upper += u64::from(s.upper);
        self.symbols += u64::from(s.symbols);
        self.words += u64::from(s.words);
        self.templates.insert(s.template);
        self.links += s.links.len() as u32;
        for &l in &s.links {
            self.distinct_links.insert(l);
        }
        self.first_person += u32::from(s.first_person);
        self.attribution += u32::from(s.attribution);
        self.lower_start += u32::from(s.lower_start);
        self.exclaim += u32::from(s.exclaim);
        self.question += u32::from(s.question);
        self.informal += u32::from(s.informal);
    }

    /// Posts seen.
    pub fn posts(&self) -> u32 {
        self.posts
    }

    /// The content features.
    pub fn features(&self) -> AuthorFeatures {
        let n = f64::from(self.posts.max(1));
        let own = f64::from((self.posts - self.reposts).max(1));
        let chars = self.chars as f64;
        let mean = chars / own;
        let sd = (self.chars_sq / own - mean * mean).max(0.0).sqrt();
        let w = self.words as f64;
        AuthorFeatures(vec![
            f64::from(self.reposts) / n,
            f64::from(self.urls) / n,
            f64::from(self.ends_url) / n,
            f64::from(self.replies) / own,
            f64::from(self.mentions) / n,
            f64::from(self.hashtag_posts) / n,
            f64::from(self.hashtags) / n,
            (self.templates.estimate() / own).min(1.0),
            mean / 100.0,
            sd / 100.0,
            self.digits as f64 / chars.max(1.0),
            self.upper as f64 / (self.letters as f64).max(1.0),
            self.symbols as f64 / chars.max(1.0),
            f64::from(self.newlines) / own,
            f64::from(self.ellipses) / own,
            w / own / 10.0,
            1.0 - (self.distinct_links.estimate() / f64::from(self.links.max(1))).min(1.0),
            f64::from(self.first_person) / own,
            f64::from(self.attribution) / own,
            f64::from(self.lower_start) / own,
            f64::from(self.exclaim) / own,
            f64::from(self.question) / own,
            f64::from(self.informal) / own,
        ])
    }

    /// Why the author's timing is automatic, if it is: repeated bursts or scheduled gaps.
    pub fn timing_verdict(&mut self, c: &BotConfig) -> Option<&'static str> {
        if self.times.len() <= c.burst_posts {
            return None;
        }
        self.times.sort_unstable();
        let t = &self.times;
        let mut burst_days = BTreeSet::new();
        let mut lo = 0;
        for (hi, &now) in t.iter().enumerate() {
            while now - t[lo] >= c.burst_window_secs * 1000 {
                lo += 1;
            }
            if hi - lo + 1 > c.burst_posts {
                burst_days.insert(now.div_euclid(86_400_000));
            }
        }
        if burst_days.len() >= c.burst_days {
            return Some("repeated bursts");
        }
        let mut gaps: HashMap<i64, u32> = HashMap::new();
        let mut long_gaps = 0u32;
        for w in t.windows(2) {
            let g = (w[1] - w[0]) / 1000;
            if g >= 60 {
                long_gaps += 1;
                *gaps.entry(g).or_default() += 1;
            }
        }
        let modal = gaps.values().copied().max().unwrap_or(0);
        if long_gaps >= 20 && f64::from(modal) >= c.periodic_share * f64::from(long_gaps) {
            return Some("scheduled posting");
        }
        None
    }
}

/// A logistic model over standardised [`AuthorFeatures`]: bot when the score reaches `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotModel {
    /// Feature names, in order (must equal [`FEATURE_NAMES`]).
    pub features: Vec<String>,
    /// Mean of each feature over the training authors.
    pub mean: Vec<f64>,
    /// Standard deviation of each feature over the training authors.
    pub sd: Vec<f64>,
    /// 1: linear in the standardised features; 2: also their squares and pairwise products.
    pub degree: u8,
    /// Weight of each term (standardised features, then squares and products in degree 2).
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
    /// Probability at or above which an author is a bot.
    pub threshold: f64,
    /// What it was fitted on.
    pub trained_on: String,
}

/// The model shipped with starling (fitted by `starling corpus-bots` on 80% of PAN 2019's authors).
const BUILTIN_MODEL: &str = include_str!("bot_model.json");

impl BotModel {
    /// The built-in model.
    pub fn builtin() -> Self {
        serde_json::from_str(BUILTIN_MODEL).expect("bot_model.json is valid (tested)")
    }

    /// Reads a model file and checks it matches this build's features.
    pub fn load(path: &std::path::Path) -> crate::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
        let m: BotModel = serde_json::from_slice(&bytes).map_err(|e| crate::Error::Format {
            path: path.into(),
            line: e.line() as u64,
            message: e.to_string(),
        })?;
        m.check().map_err(|message| crate::Error::Format {
            path: path.into(),
            line: 0,
            message,
        })?;
        Ok(m)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.features != FEATURE_NAMES {
            return Err(format!(
                "bot model features {:?} differ from this build's {:?}",
                self.features, FEATURE_NAMES
            ));
        }
        let n = FEATURE_NAMES.len();
        let terms = expand(&vec![0.0; n], self.degree).len();
        if self.mean.len() != n || self.sd.len() != n || self.weights.len() != terms {
            return Err(format!(
                "bot model needs {n} means and sds and {terms} weights (degree {})",
                self.degree
            ));
        }
        Ok(())
    }

    /// Probability that an author with these features is a bot.
    pub fn score(&self, f: &AuthorFeatures) -> f64 {
        let z: Vec<f64> =
            f.0.iter()
                .zip(&self.mean)
                .zip(&self.sd)
                .map(|((x, m), s)| ((x - m) / s.max(1e-9)).clamp(-8.0, 8.0))
                .collect();
        let t: f64 = expand(&z, self.degree)
            .iter()
            .zip(&self.weights)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            + self.bias;
        1.0 / (1.0 + (-t).exp())
    }

    /// Fits an L2-regularised logistic regression (Newton's method) on labelled authors.
    pub fn fit(x: &[AuthorFeatures], bot: &[bool], degree: u8, l2: f64, trained_on: &str) -> Self {
        let d = FEATURE_NAMES.len();
        let n = x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for f in x {
            for (m, v) in mean.iter_mut().zip(&f.0) {
                *m += v / n;
            }
        }
        let mut sd = vec![0.0; d];
        for f in x {
            for ((s, v), m) in sd.iter_mut().zip(&f.0).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let sd: Vec<f64> = sd.into_iter().map(|v| v.sqrt().max(1e-6)).collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|f| {
                let z: Vec<f64> =
                    f.0.iter()
                        .zip(&mean)
                        .zip(&sd)
                        .map(|((v, m), s)| ((v - m) / s).clamp(-8.0, 8.0))
                        .collect();
                let mut r = expand(&z, degree);
                r.push(1.0);
                r
            })
            .collect();
        let d = z.first().map_or(d, |r| r.len() - 1);
        let p = d + 1;
        let mut w = vec![0.0; p];
        for _ in 0..30 {
            let mut g = vec![0.0; p];
            let mut h = vec![vec![0.0; p]; p];
            for (zi, &yi) in z.iter().zip(bot) {
                let s: f64 = zi.iter().zip(&w).map(|(a, b)| a * b).sum();
                let pr = 1.0 / (1.0 + (-s).exp());
                let r = pr - f64::from(u8::from(yi));
                let wt = (pr * (1.0 - pr)).max(1e-9);
                for a in 0..p {
                    g[a] += r * zi[a];
                    for b in 0..p {
                        h[a][b] += wt * zi[a] * zi[b];
                    }
                }
            }
            for a in 0..d {
                g[a] += l2 * w[a];
                h[a][a] += l2;
            }
            let step = solve(h, g);
            for (wa, sa) in w.iter_mut().zip(&step) {
                *wa -= sa;
            }
            if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-8 {
                break;
            }
        }
        BotModel {
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean,
            sd,
            degree,
            bias: w[d],
            weights: w[..d].to_vec(),
            threshold: 0.5,
            trained_on: trained_on.to_string(),
        }
    }
}

/// The model's terms: `z`, then (degree 2) each `z_i * z_j` for `i <= j`.
fn expand(z: &[f64], degree: u8) -> Vec<f64> {
    let mut out = z.to_vec();
    if degree >= 2 {
        for i in 0..z.len() {
            for j in i..z.len() {
                out.push(z[i] * z[j]);
            }
        }
    }
    out
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (small dense systems).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, piv);
        b.swap(c, piv);
        let d = if a[c][c].abs() < 1e-12 {
            1e-12
        } else {
            a[c][c]
        };
        let (top, rest) = a.split_at_mut(c + 1);
        let pivot_row = &top[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[c] / d;
            if f != 0.0 {
                for (x, p) in row[c..].iter_mut().zip(&pivot_row[c..]) {
                    *x -= f * p;
                }
                b[c + 1 + r] -= f * b[c];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        let d = if a[r][r].abs() < 1e-12 {
            1e-12
        } else {
            a[r][r]
        };
        x[r] = (b[r] - s) / d;
    }
    x
}

/// Every author's profile, keyed by author, and the verdicts drawn from them.
#[derive(Debug, Default)]
pub struct AuthorProfiles {
    profiles: HashMap<u64, (String, AuthorProfile)>,
}

/// An author the rule judged automated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BotAuthor {
    /// The author id (or handle when the source has no ids).
    pub author: String,
    /// Posts of it that were read.
    pub posts: u64,
    /// Why: `repeated bursts`, `scheduled posting` or `content` (with the model's score).
    pub reason: String,
}

impl AuthorProfiles {
    /// The key of a post's author: its id, else its handle.
    pub fn author_of(post: &crate::Post) -> Option<&str> {
        post.author_id.as_deref().or(post.author_handle.as_deref())
    }

    /// Adds one post of `author`.
    pub fn observe(&mut self, author: &str, s: &PostSignal, time: Option<i64>) {
        self.profiles
            .entry(fx64(author.as_bytes()))
            .or_insert_with(|| (author.to_string(), AuthorProfile::default()))
            .1
            .observe(s, time);
    }

    /// Authors profiled.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// True when no author was profiled.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Each author's features and post count (authors with at least `min_posts`).
    pub fn features(&self, min_posts: u32) -> Vec<(String, u32, AuthorFeatures)> {
        let mut v: Vec<_> = self
            .profiles
            .values()
            .filter(|(_, p)| p.posts >= min_posts)
            .map(|(a, p)| (a.clone(), p.posts, p.features()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Judges every author; returns the automated ones (sorted by posts, most first) and their keys.
    pub fn judge(
        &mut self,
        c: &BotConfig,
        model: Option<&BotModel>,
    ) -> (Vec<BotAuthor>, std::collections::HashSet<u64>) {
        let mut out = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for (key, (author, p)) in &mut self.profiles {
            let mut reason = p.timing_verdict(c).map(str::to_string);
            if reason.is_none() && p.posts >= c.min_posts {
                if let Some(m) = model {
                    let s = m.score(&p.features());
                    if s >= m.threshold {
                        reason = Some(format!("content ({s:.2})"));
                    }
                }
            }
            if let Some(reason) = reason {
                keys.insert(*key);
                out.push(BotAuthor {
                    author: author.clone(),
                    posts: u64::from(p.posts),
                    reason,
                });
            }
        }
        out.sort_by(|a, b| b.posts.cmp(&a.posts).then(a.author.cmp(&b.author)));
        (out, keys)
    }
}

/// The key [`AuthorProfiles::judge`] returns for an author.
pub fn author_key(author: &str) -> u64 {
    fx64(author.as_bytes())
}

#[cfg(test)]
mod tests;
