//! `starling synth`: a deterministic synthetic post stream with the structure of real dumps.
//!
//! Zipf-active users, hashtags, mentions, URLs, replies, retweets, quotes, several languages,
//! planted near-duplicates (spread over Jaccard 0.5-0.95), spam bursts, PII, delete notices and
//! optional malformed lines. Every post carries `"starling_synthetic": true`.

use crate::error::{Error, Result};
use rand::distributions::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// API shape written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthFlavor {
    /// Twitter API v1.1 stream lines.
    V1,
    /// Flattened Twitter API v2, one tweet per line.
    V2,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Posts (original, reply, quote or retweet lines).
    pub posts: u64,
    /// Seed; the same seed gives the same bytes.
    pub seed: u64,
    /// API shape.
    pub flavor: SynthFlavor,
    /// Active users (activity is Zipf-distributed).
    pub users: u64,
    /// Share of posts that are planted near-duplicates of an earlier post.
    pub near_dup: f64,
    /// Share of lines written malformed.
    pub malformed: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            posts: 10_000,
            seed: 42,
            flavor: SynthFlavor::V1,
            users: 5_000,
            near_dup: 0.05,
            malformed: 0.0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct SynthSummary {
    /// Post lines.
    pub posts: u64,
    /// Planted near-duplicates.
    pub planted: u64,
    /// Malformed lines.
    pub malformed: u64,
    /// Delete notices.
    pub deletes: u64,
}

const EN: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "of",
    "is",
    "in",
    "it",
    "you",
    "that",
    "this",
    "for",
    "on",
    "my",
    "just",
    "so",
    "be",
    "with",
    "have",
    "are",
    "not",
    "was",
    "but",
    "what",
    "all",
    "we",
    "love",
    "like",
    "new",
    "time",
    "day",
    "today",
    "people",
    "think",
    "good",
    "great",
    "game",
    "night",
    "really",
    "know",
    "get",
    "make",
    "need",
    "want",
    "best",
    "right",
    "going",
    "still",
    "never",
    "always",
    "show",
    "music",
    "world",
    "team",
    "watch",
    "season",
    "coffee",
    "morning",
    "weekend",
    "city",
    "phone",
    "update",
    "launch",
    "release",
    "support",
    "thanks",
    "happy",
    "finally",
    "tonight",
    "week",
    "movie",
    "album",
    "vote",
    "news",
    "market",
    "price",
    "build",
    "code",
    "data",
    "model",
    "train",
    "flight",
    "delay",
    "service",
    "customer",
    "weather",
    "rain",
    "sun",
    "friends",
    "family",
    "school",
    "work",
    "home",
    "food",
    "pizza",
    "football",
    "match",
    "goal",
    "win",
    "lost",
    "fans",
    "crazy",
    "amazing",
    "terrible",
    "honestly",
    "literally",
    "maybe",
    "tomorrow",
    "yesterday",
];
const ES: &[&str] = &[
    "el", "la", "de", "que", "y", "en", "un", "es", "no", "por", "con", "para", "una", "los", "mi",
    "pero", "más", "hoy", "todo", "muy", "día", "bien", "gracias", "amor", "vida", "partido",
    "equipo", "noche", "mañana", "gente", "ciudad", "música", "nuevo", "mejor", "siempre", "nunca",
    "tiempo", "casa", "trabajo", "fútbol", "gol", "feliz", "semana", "café", "lluvia",
];
const FR: &[&str] = &[
    "le", "la", "de", "et", "un", "une", "est", "pas", "que", "pour", "dans", "sur", "avec",
    "mais", "très", "jour", "nuit", "match", "équipe", "merci", "vie", "amour", "ville", "musique",
    "nouveau", "toujours", "jamais", "temps", "maison", "travail", "semaine", "pluie", "demain",
    "hier", "gens", "film", "vraiment",
];
const DE: &[&str] = &[
    "der",
    "die",
    "das",
    "und",
    "ist",
    "nicht",
    "ein",
    "eine",
    "ich",
    "mit",
    "auf",
    "für",
    "heute",
    "morgen",
    "Spiel",
    "Mannschaft",
    "Nacht",
    "danke",
    "Leben",
    "Liebe",
    "Stadt",
    "Musik",
    "neu",
    "immer",
    "nie",
    "Zeit",
    "Haus",
    "Arbeit",
    "Woche",
    "Regen",
    "wirklich",
    "Leute",
    "Kaffee",
];
const PT: &[&str] = &[
    "o", "a", "de", "que", "e", "em", "um", "uma", "não", "para", "com", "mais", "hoje", "dia",
    "noite", "jogo", "time", "obrigado", "vida", "amor", "cidade", "música", "novo", "sempre",
    "nunca", "tempo", "casa", "trabalho", "semana", "chuva", "gente", "muito",
];
const JA: &[&str] = &[
    "今日",
    "は",
    "が",
    "の",
    "に",
    "を",
    "とても",
    "楽しい",
    "ありがとう",
    "明日",
    "仕事",
    "音楽",
    "試合",
    "最高",
    "雨",
    "コーヒー",
    "友達",
    "映画",
    "新しい",
    "本当に",
];
const TAGS: &[&str] = &[
    "news",
    "music",
    "football",
    "AI",
    "crypto",
    "weather",
    "travel",
    "food",
    "gaming",
    "movies",
    "tech",
    "election",
    "WorldCup",
    "NBA",
    "fashion",
    "startup",
    "coffee",
    "climate",
    "art",
    "books",
    "TBT",
    "MondayMotivation",
    "rust",
    "science",
    "health",
];
const CASH: &[&str] = &["TSLA", "AAPL", "BTC", "ETH", "AMZN", "NVDA"];
const DOMAINS: &[&str] = &[
    "example.com",
    "news.example.org",
    "blog.example.net",
    "shop.example.io",
    "t.co",
];
const CLIENTS: &[&str] = &[
    "Twitter for iPhone",
    "Twitter for Android",
    "Twitter Web App",
    "TweetDeck",
    "Buffer",
];
const EMOJI: &[&str] = &["😂", "❤️", "🔥", "🙏", "😍", "👍", "🎉", "😭", "✨", "⚽"];

struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Self {
            cdf: cdf.into_iter().map(|c| c / total).collect(),
        }
    }
}

impl Distribution<u64> for Zipf {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

struct Gen {
    rng: ChaCha8Rng,
    cfg: SynthConfig,
    users: Zipf,
    time_ms: i64,
    next_id: u64,
    history: Vec<(u64, u64, String, String)>,
    summary: SynthSummary,
}

impl Gen {
    fn handle(&self, user: u64) -> String {
        format!("user{user}")
    }

    fn words(&mut self, lang: &str, n: usize) -> String {
        let list = match lang {
            "es" => ES,
            "fr" => FR,
            "de" => DE,
            "pt" => PT,
            "ja" => JA,
            _ => EN,
        };
        let sep = if lang == "ja" { "" } else { " " };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            // Zipf-ish word choice: square the uniform to favour the head of the list.
            let u: f64 = self.rng.gen();
            out.push(list[((u * u) * list.len() as f64) as usize % list.len()]);
        }
        out.join(sep)
    }

    fn text(&mut self, lang: &str) -> String {
        let n = self.rng.gen_range(5..28);
        let mut t = self.words(lang, n);
        if self.rng.gen_bool(0.3) {
            let tag = TAGS[self.rng.gen_range(0..TAGS.len())];
            t.push_str(&format!(" #{tag}"));
        }
        if self.rng.gen_bool(0.2) {
            let u = self.users.sample(&mut self.rng);
            t = format!("{} @{}", t, self.handle(u));
        }
        if self.rng.gen_bool(0.03) {
            t.push_str(&format!(" ${}", CASH[self.rng.gen_range(0..CASH.len())]));
        }
        if self.rng.gen_bool(0.25) {
            let d = DOMAINS[self.rng.gen_range(0..DOMAINS.len())];
            t.push_str(&format!(" https://{d}/{:x}", self.rng.gen::<u32>()));
        }
        if self.rng.gen_bool(0.2) {
            t.push(' ');
            t.push_str(EMOJI[self.rng.gen_range(0..EMOJI.len())]);
        }
        if self.rng.gen_bool(0.05) {
            t.push_str(" &amp; more");
        }
        if self.rng.gen_bool(0.01) {
            let (u, n) = (self.rng.gen_range(0..1000), self.rng.gen_range(0..99));
            t.push_str(&format!(" mail me at {}{n}@example.com", self.handle(u)));
        }
        if self.rng.gen_bool(0.005) {
            t.push_str(&format!(
                " call +1 415-555-{:04}",
                self.rng.gen_range(0..10_000)
            ));
        }
        t
    }

    /// A copy of `text` with a share of its words replaced (Jaccard spread 0.5-0.95 over 5-shingles).
    fn mutate(&mut self, text: &str) -> String {
        let mut words: Vec<String> = text.split(' ').map(String::from).collect();
        let edits = match self.rng.gen_range(0..4) {
            0 => 0,
            1 => 1,
            2 => 1 + words.len() / 12,
            _ => 1 + words.len() / 6,
        };
        for _ in 0..edits {
            let i = self.rng.gen_range(0..words.len());
            words[i] = EN[self.rng.gen_range(0..EN.len())].to_string();
        }
        let mut t = words.join(" ");
        if self.rng.gen_bool(0.5) {
            t.push_str(EMOJI[self.rng.gen_range(0..EMOJI.len())]);
        }
        t
    }

    fn tick(&mut self) -> i64 {
        let u: f64 = self.rng.gen::<f64>().max(1e-12);
        self.time_ms += (-u.ln() * 5000.0) as i64 + 1;
        self.time_ms
    }

    fn status(&mut self, id: u64, user: u64, text: &str, lang: &str, t: i64) -> Value {
        let created = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
        let client = CLIENTS[(user % CLIENTS.len() as u64) as usize];
        let (likes, rts) = (
            self.rng.gen_range(0..50u64).pow(2) / 10,
            self.rng.gen_range(0..20u64).pow(2) / 10,
        );
        match self.cfg.flavor {
            SynthFlavor::V1 => json!({
                "created_at": created.format("%a %b %d %H:%M:%S +0000 %Y").to_string(),
                "id": id, "id_str": id.to_string(), "text": text,
                "source": format!("<a href=\"https://example.com/client\" rel=\"nofollow\">{client}</a>"),
                "user": {"id": user + 1000, "id_str": (user + 1000).to_string(), "screen_name": self.handle(user), "name": format!("User {user}")},
                "lang": lang, "favorite_count": likes, "retweet_count": rts, "reply_count": 0, "quote_count": 0,
                "timestamp_ms": t.to_string(), "starling_synthetic": true,
            }),
            SynthFlavor::V2 => json!({
                "id": id.to_string(), "text": text, "created_at": created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "author_id": (user + 1000).to_string(), "author": {"id": (user + 1000).to_string(), "username": self.handle(user)},
                "lang": lang, "conversation_id": id.to_string(), "source": client,
                "public_metrics": {"like_count": likes, "retweet_count": rts, "reply_count": 0, "quote_count": 0},
                "edit_history_tweet_ids": [id.to_string()], "starling_synthetic": true,
            }),
        }
    }

    fn next_line(&mut self) -> Vec<u8> {
        let t = self.tick();
        let id = self.next_id;
        self.next_id += self.rng.gen_range(1..1000);
        let user = self.users.sample(&mut self.rng);
        let lang = match self.rng.gen_range(0..100) {
            0..=69 => "en",
            70..=79 => "es",
            80..=85 => "pt",
            86..=90 => "fr",
            91..=94 => "de",
            _ => "ja",
        };
        // Malformed lines.
        if self.cfg.malformed > 0.0 && self.rng.gen_bool(self.cfg.malformed.min(1.0)) {
            self.summary.malformed += 1;
            return match self.rng.gen_range(0..3) {
                0 => {
                    let full = self.status(id, user, "truncated line", lang, t).to_string();
                    full.as_bytes()[..full.len() / 2].to_vec()
                }
                1 => {
                    let mut b = self
                        .status(id, user, "bad bytes", lang, t)
                        .to_string()
                        .into_bytes();
                    let at = b.len() / 3;
                    b.splice(at..at, [0xff, 0xfe]);
                    b
                }
                _ => br#"{"unexpected": "shape", "starling_synthetic": true}"#.to_vec(),
            };
        }
        // Delete notices for earlier posts.
        if !self.history.is_empty() && self.rng.gen_bool(0.002) {
            let (old, u, _, _) = self.history[self.rng.gen_range(0..self.history.len())].clone();
            self.summary.deletes += 1;
            let v = match self.cfg.flavor {
                SynthFlavor::V1 => {
                    json!({"delete": {"status": {"id": old, "id_str": old.to_string(), "user_id": u + 1000, "user_id_str": (u + 1000).to_string()}, "timestamp_ms": t.to_string()}})
                }
                SynthFlavor::V2 => {
                    json!({"id": old.to_string(), "action": "delete", "created_at": "2023-01-01T00:00:00.000Z", "reason": "deleted"})
                }
            };
            return v.to_string().into_bytes();
        }
        self.summary.posts += 1;
        let roll: f64 = self.rng.gen();
        // Spam burst: one account, hashtag stuffing, many posts within seconds.
        if roll < 0.004 {
            let spammer = 900_000 + self.rng.gen_range(0..5);
            let tags: Vec<String> = (0..9)
                .map(|_| format!("#{}", TAGS[self.rng.gen_range(0..TAGS.len())]))
                .collect();
            let text = format!(
                "WIN FREE {} NOW click https://spam.example.com/{} {}",
                CASH[self.rng.gen_range(0..CASH.len())],
                self.rng.gen::<u16>(),
                tags.join(" ")
            );
            let v = self.status(id, spammer, &text, "en", t);
            return v.to_string().into_bytes();
        }
        let (text, mut v) = if roll < 0.004 + self.cfg.near_dup && !self.history.is_empty() {
            self.summary.planted += 1;
            let src = self.history[self.rng.gen_range(0..self.history.len())]
                .2
                .clone();
            let text = self.mutate(&src);
            let v = self.status(id, user, &text, lang, t);
            (text, v)
        } else {
            let text = self.text(lang);
            let v = self.status(id, user, &text, lang, t);
            (text, v)
        };
        // Replies, quotes and retweets of earlier posts.
        if !self.history.is_empty() {
            let (pid, puser, ptext, plang) =
                self.history[self.rng.gen_range(0..self.history.len())].clone();
            let r: f64 = self.rng.gen();
            if r < 0.15 {
                let reply = format!("@{} {}", self.handle(puser), text);
                v["text"] = json!(reply);
                match self.cfg.flavor {
                    SynthFlavor::V1 => {
                        v["in_reply_to_status_id"] = json!(pid);
                        v["in_reply_to_status_id_str"] = json!(pid.to_string());
                        v["in_reply_to_user_id_str"] = json!((puser + 1000).to_string());
                        v["in_reply_to_screen_name"] = json!(self.handle(puser));
                    }
                    SynthFlavor::V2 => {
                        v["referenced_tweets"] =
                            json!([{"type": "replied_to", "id": pid.to_string()}]);
                        v["conversation_id"] = json!(pid.to_string());
                    }
                }
            } else if r < 0.25 {
                let orig = self.status(pid, puser, &ptext, &plang, t - 60_000);
                v["text"] = json!(format!("RT @{}: {}", self.handle(puser), ptext));
                match self.cfg.flavor {
                    SynthFlavor::V1 => v["retweeted_status"] = orig,
                    SynthFlavor::V2 => {
                        let mut o = orig;
                        o["type"] = json!("retweeted");
                        v["referenced_tweets"] = json!([o]);
                    }
                }
                return v.to_string().into_bytes();
            } else if r < 0.28 {
                let orig = self.status(pid, puser, &ptext, &plang, t - 60_000);
                match self.cfg.flavor {
                    SynthFlavor::V1 => {
                        v["quoted_status_id_str"] = json!(pid.to_string());
                        v["quoted_status"] = orig;
                    }
                    SynthFlavor::V2 => {
                        let mut o = orig;
                        o["type"] = json!("quoted");
                        v["referenced_tweets"] = json!([o]);
                    }
                }
            }
        }
        if self.history.len() < 50_000 {
            self.history.push((id, user, text, lang.to_string()));
        } else {
            let i = self.rng.gen_range(0..self.history.len());
            self.history[i] = (id, user, text, lang.to_string());
        }
        v.to_string().into_bytes()
    }
}

/// Generates the stream into `w`, one JSON record per line.
pub fn generate(cfg: &SynthConfig, w: &mut dyn Write) -> std::io::Result<SynthSummary> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        users: Zipf::new(cfg.users.max(1), 1.1),
        cfg: cfg.clone(),
        time_ms: 1_672_531_200_000,
        next_id: 1_600_000_000_000_000_000,
        history: Vec::new(),
        summary: SynthSummary::default(),
    };
    while g.summary.posts < cfg.posts {
        let line = g.next_line();
        w.write_all(&line)?;
        w.write_all(b"\n")?;
    }
    Ok(g.summary)
}

/// Generates the stream into a file, compressed when the name ends in `.gz` or `.zst`.
pub fn write_file(cfg: &SynthConfig, path: &Path) -> Result<SynthSummary> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let f = starling_artifacts::AtomicFile::create(path)?;
    let name = path.to_string_lossy();
    let io = |e| Error::io(path, e);
    let summary = if name.ends_with(".zst") {
        let mut enc = zstd::Encoder::new(f, 3).map_err(io)?;
        let s = generate(cfg, &mut enc).map_err(io)?;
        enc.finish().map_err(io)?.finish()?;
        s
    } else if name.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let s = generate(cfg, &mut enc).map_err(io)?;
        enc.finish().map_err(io)?.finish()?;
        s
    } else {
        let mut f = f;
        let s = generate(cfg, &mut f).map_err(io)?;
        f.finish()?;
        s
    };
    Ok(summary)
}

/// A one-author account archive: Twitter API v1.1 statuses, one JSON array file per year,
/// each newest first (the order the timeline API returns).
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Days of posting.
    pub days: u32,
    /// Fewest and most posts a day.
    pub per_day: (u32, u32),
    /// Chance that a day has a burst of 5-10 posts within a few minutes.
    pub burst_chance: f64,
    /// Seed; the same seed gives the same bytes.
    pub seed: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            days: 1200,
            per_day: (20, 30),
            burst_chance: 0.08,
            seed: 7,
        }
    }
}

/// What [`write_archive`] wrote.
#[derive(Debug, Clone, Default)]
pub struct ArchiveSummary {
    /// Files written, oldest year first.
    pub files: Vec<std::path::PathBuf>,
    /// Statuses written.
    pub posts: u64,
    /// Of which retweets.
    pub retweets: u64,
    /// Bursts planted.
    pub bursts: u64,
}

/// Writes a prolific human's archive into `dir` (`tweets-YYYY.json`).
pub fn write_archive(cfg: &ArchiveConfig, dir: &Path) -> Result<ArchiveSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        users: Zipf::new(2000, 1.1),
        cfg: SynthConfig::default(),
        time_ms: 0,
        next_id: 500_000_000_000_000_000,
        history: Vec::new(),
        summary: SynthSummary::default(),
    };
    let me = 4242u64;
    let start = 1_420_070_400_000i64; // 2015-01-01
    let mut by_year: std::collections::BTreeMap<i32, Vec<Value>> = Default::default();
    let mut summary = ArchiveSummary::default();
    let mut recent: Vec<(u64, String)> = Vec::new();
    for day in 0..i64::from(cfg.days) {
        let n = g
            .rng
            .gen_range(cfg.per_day.0..=cfg.per_day.1.max(cfg.per_day.0));
        let mut times: Vec<i64> = (0..n)
            .map(|_| start + day * 86_400_000 + g.rng.gen_range(7 * 3_600_000..24 * 3_600_000))
            .collect();
        if g.rng.gen_bool(cfg.burst_chance.clamp(0.0, 1.0)) {
            // Live-posting an event: 5-10 posts spread over 2-8 minutes.
            let at = start + day * 86_400_000 + g.rng.gen_range(9 * 3_600_000..22 * 3_600_000);
            let k = g.rng.gen_range(5..=10);
            let span = g.rng.gen_range(120_000..480_000);
            times.extend((0..k).map(|i| at + span * i / k + g.rng.gen_range(0..5_000)));
            summary.bursts += 1;
        }
        times.sort_unstable();
        for t in times {
            g.next_id += g.rng.gen_range(1_000..1_000_000);
            let id = g.next_id;
            let kind = g.rng.gen_range(0..100);
            let mut st = if kind < 8 && !recent.is_empty() {
                // A retweet of someone else's post.
                let other = g.users.sample(&mut g.rng) + 1;
                let text = g.text("en");
                let orig = g.status(id - 1, other, &text, "en", t - 60_000);
                summary.retweets += 1;
                let mut s = g.status(id, me, &format!("RT @{}: {text}", g.handle(other)), "en", t);
                s["retweeted_status"] = orig;
                s
            } else if kind < 40 {
                // A reply: to someone's post, or (no status id) to a user.
                let other = g.users.sample(&mut g.rng) + 1;
                let body = g.text("en");
                let mut s = g.status(id, me, &format!("@{} {body}", g.handle(other)), "en", t);
                s["in_reply_to_user_id_str"] = json!((other + 1000).to_string());
                s["in_reply_to_screen_name"] = json!(g.handle(other));
                if g.rng.gen_bool(0.8) {
                    s["in_reply_to_status_id_str"] = json!((id - 7).to_string());
                }
                s
            } else {
                let text = g.text("en");
                g.status(id, me, &text, "en", t)
            };
            st.as_object_mut().map(|o| o.remove("timestamp_ms"));
            let text = st["text"].as_str().unwrap_or_default().to_string();
            recent.push((id, text));
            if recent.len() > 50 {
                recent.remove(0);
            }
            let year = chrono::DateTime::from_timestamp_millis(t)
                .map(|d| chrono::Datelike::year(&d))
                .unwrap_or(2015);
            by_year.entry(year).or_default().push(st);
            summary.posts += 1;
        }
    }
    for (year, mut statuses) in by_year {
        statuses.reverse(); // newest first
        let path = dir.join(format!("tweets-{year}.json"));
        let bytes = serde_json::to_vec(&statuses).map_err(|e| Error::io(&path, e.into()))?;
        starling_artifacts::write_atomic(&path, &bytes)?;
        summary.files.push(path);
    }
    Ok(summary)
}
