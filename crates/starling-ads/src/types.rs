//! The inventory: advertisers, campaigns, ad groups and creatives, with their validation.
//!
//! Money is integer micros (1 USD = 1,000,000 micros), never floats; times are Unix milliseconds.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Micros of a currency unit (1 USD = 1,000,000).
pub type Micros = i64;

/// One cent in micros: what a GSP winner pays above the price that keeps its slot.
pub const CENT: Micros = 10_000;
/// The largest bid accepted (1,000 USD per click or per thousand impressions).
pub const MAX_BID: Micros = 1_000_000_000;
/// The largest daily budget accepted (10 million USD).
pub const MAX_DAILY_BUDGET: Micros = 10_000_000_000_000;
/// Longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest creative text or targeting description accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Most keywords (or excluded terms) per ad group (or campaign).
pub const MAX_KEYWORDS: usize = 200;

/// Milliseconds in a day: budgets are per UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day number of a Unix-millisecond time.
pub fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS)
}

/// The UTC day number of a date `YYYY-MM-DD` given as `field`.
pub fn day_from_date(field: &str, s: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::invalid(field, format!("{s:?} is not a date YYYY-MM-DD")))?;
    let ms = d
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| Error::invalid(field, format!("{s:?} is not a date YYYY-MM-DD")))?;
    Ok(day_of(ms))
}

/// Lifecycle of any inventory item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Serving.
    Active,
    /// Kept, not serving.
    Paused,
    /// Gone from serving and listings; kept for reports.
    Deleted,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Deleted => "deleted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Status::Active),
            "paused" => Ok(Status::Paused),
            "deleted" => Ok(Status::Deleted),
            _ => Err(Error::invalid("status", format!("unknown status {s:?}"))),
        }
    }
}

/// How a campaign bids and is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidType {
    /// Maximum cost per click: charged per click, never more than the bid.
    MaxCpc,
    /// Cost per thousand impressions: charged per impression.
    Cpm,
    /// Target cost per click: the bid is moved so that the average cost per click stays near it.
    TargetCpc,
}

impl BidType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BidType::MaxCpc => "max_cpc",
            BidType::Cpm => "cpm",
            BidType::TargetCpc => "target_cpc",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "max_cpc" => Ok(BidType::MaxCpc),
            "cpm" => Ok(BidType::Cpm),
            "target_cpc" => Ok(BidType::TargetCpc),
            _ => Err(Error::invalid(
                "bid_type",
                format!("unknown bid type {s:?} (max_cpc, cpm, target_cpc)"),
            )),
        }
    }

    /// True when clicks are charged (impressions otherwise).
    pub fn charges_clicks(self) -> bool {
        !matches!(self, BidType::Cpm)
    }
}

/// Where an ad would appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Beside search results.
    Search,
    /// In a home timeline.
    Timeline,
    /// Under a conversation.
    Conversation,
}

impl Placement {
    /// Every placement.
    pub const ALL: [Placement; 3] = [
        Placement::Search,
        Placement::Timeline,
        Placement::Conversation,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Search => "search",
            Placement::Timeline => "timeline",
            Placement::Conversation => "conversation",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "search" => Ok(Placement::Search),
            "timeline" => Ok(Placement::Timeline),
            "conversation" => Ok(Placement::Conversation),
            _ => Err(Error::invalid(
                "placement",
                format!("unknown placement {s:?} (search, timeline, conversation)"),
            )),
        }
    }
}

/// An advertiser: owns campaigns, authenticates with its API key (stored only as a digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advertiser {
    /// `adv_...`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Lifecycle.
    pub status: Status,
    /// Creation time.
    pub created_ms: i64,
}

/// A campaign: bid type, daily budget, frequency cap, schedule and exclusions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// `cmp_...`.
    pub id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Display name.
    pub name: String,
    /// Lifecycle.
    pub status: Status,
    /// How it bids and is charged.
    pub bid_type: BidType,
    /// Most it may be charged per UTC day.
    pub daily_budget_micros: Micros,
    /// Most impressions per user per window (0: no cap).
    pub frequency_cap: i64,
    /// The frequency cap's window.
    pub frequency_window_s: i64,
    /// Serves from this time (none: already).
    pub start_ms: Option<i64>,
    /// Serves until this time (none: no end).
    pub end_ms: Option<i64>,
    /// The campaign never appears beside a context containing one of these terms (lowercase).
    pub excluded_terms: Vec<String>,
    /// Creation time.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// An ad group: a bid and the targeting its creatives share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdGroup {
    /// `grp_...`.
    pub id: String,
    /// Parent campaign.
    pub campaign_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Display name.
    pub name: String,
    /// Lifecycle.
    pub status: Status,
    /// Max CPC, CPM or target CPC, as the campaign's bid type says.
    pub bid_micros: Micros,
    /// Keywords and hashtags (lowercase; `#tag` matches the hashtag, `tag` the word or the hashtag).
    pub keywords: Vec<String>,
    /// The audience and conversations wanted, in words: matched semantically against the context.
    pub description: String,
    /// Languages served (ISO 639-1; empty: any).
    pub languages: Vec<String>,
    /// Placements served (empty: all).
    pub placements: Vec<Placement>,
    /// Serves from this UTC hour ...
    pub hour_start: i64,
    /// ... to this one (exclusive; 0..24 is all day; start > end wraps past midnight).
    pub hour_end: i64,
    /// Least similarity between context and group for semantic targeting.
    pub min_similarity: f64,
    /// Creation time.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// A creative: the promoted post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Creative {
    /// `cre_...`.
    pub id: String,
    /// Parent ad group.
    pub group_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Lifecycle.
    pub status: Status,
    /// The post's text.
    pub text: String,
    /// Landing page.
    pub url: Option<String>,
    /// Creation time.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// Fields of a new or changed campaign (absent fields keep their value, or the default on create).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// Owner (operators only; an advertiser's own id otherwise).
    pub advertiser_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Lifecycle.
    pub status: Option<Status>,
    /// Bid type.
    pub bid_type: Option<BidType>,
    /// Daily budget.
    pub daily_budget_micros: Option<Micros>,
    /// Impressions per user per window (0: none).
    pub frequency_cap: Option<i64>,
    /// Window of the cap, seconds.
    pub frequency_window_s: Option<i64>,
    /// Start time.
    pub start_ms: Option<i64>,
    /// End time.
    pub end_ms: Option<i64>,
    /// Excluded context terms.
    pub excluded_terms: Option<Vec<String>>,
}

/// Fields of a new or changed ad group.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Parent campaign (create only).
    pub campaign_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Lifecycle.
    pub status: Option<Status>,
    /// Bid.
    pub bid_micros: Option<Micros>,
    /// Keywords and hashtags.
    pub keywords: Option<Vec<String>>,
    /// Targeting description.
    pub description: Option<String>,
    /// Languages.
    pub languages: Option<Vec<String>>,
    /// Placements.
    pub placements: Option<Vec<Placement>>,
    /// First UTC hour served.
    pub hour_start: Option<i64>,
    /// UTC hour serving ends (exclusive).
    pub hour_end: Option<i64>,
    /// Least semantic similarity.
    pub min_similarity: Option<f64>,
}

/// Fields of a new or changed creative.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreativeSpec {
    /// Parent ad group (create only).
    pub group_id: Option<String>,
    /// Lifecycle.
    pub status: Option<Status>,
    /// Post text.
    pub text: Option<String>,
    /// Landing page.
    pub url: Option<String>,
}

pub(crate) fn check_name(field: &str, s: &str) -> Result<()> {
    let n = s.chars().count();
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if n > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("{n} characters (at most {MAX_NAME_CHARS})"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

pub(crate) fn check_text(field: &str, s: &str, allow_empty: bool) -> Result<()> {
    let n = s.chars().count();
    if !allow_empty && s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if n > MAX_TEXT_CHARS {
        return Err(Error::invalid(
            field,
            format!("{n} characters (at most {MAX_TEXT_CHARS})"),
        ));
    }
    Ok(())
}

pub(crate) fn check_terms(field: &str, terms: &[String]) -> Result<Vec<String>> {
    if terms.len() > MAX_KEYWORDS {
        return Err(Error::invalid(
            field,
            format!("{} terms (at most {MAX_KEYWORDS})", terms.len()),
        ));
    }
    let mut out = Vec::with_capacity(terms.len());
    for t in terms {
        let t = t.trim().to_lowercase();
        let body = t.strip_prefix('#').unwrap_or(&t);
        if body.is_empty() || body.chars().count() > 64 || body.chars().any(|c| c.is_whitespace()) {
            return Err(Error::invalid(
                field,
                format!("{t:?} is not a term (1 to 64 characters, no spaces)"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

pub(crate) fn check_money(field: &str, v: Micros, max: Micros, allow_zero: bool) -> Result<()> {
    if v < 0 || (!allow_zero && v == 0) {
        return Err(Error::invalid(
            field,
            format!("{v} micros: must be positive"),
        ));
    }
    if v > max {
        return Err(Error::invalid(
            field,
            format!("{v} micros is more than the most accepted, {max}"),
        ));
    }
    Ok(())
}

impl Campaign {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        check_money(
            "daily_budget_micros",
            self.daily_budget_micros,
            MAX_DAILY_BUDGET,
            false,
        )?;
        if !(0..=1_000_000).contains(&self.frequency_cap) {
            return Err(Error::invalid("frequency_cap", "must be 0 to 1,000,000"));
        }
        if !(60..=30 * 86_400).contains(&self.frequency_window_s) {
            return Err(Error::invalid(
                "frequency_window_s",
                "must be 60 s to 30 days",
            ));
        }
        if let (Some(s), Some(e)) = (self.start_ms, self.end_ms) {
            if e <= s {
                return Err(Error::invalid("end_ms", "must be after start_ms"));
            }
        }
        check_terms("excluded_terms", &self.excluded_terms)?;
        Ok(())
    }

    /// Applies `spec`'s present fields.
    pub fn apply(&mut self, spec: &CampaignSpec) -> Result<()> {
        if let Some(v) = &spec.name {
            self.name = v.clone();
        }
        if let Some(v) = spec.status {
            self.status = v;
        }
        if let Some(v) = spec.bid_type {
            self.bid_type = v;
        }
        if let Some(v) = spec.daily_budget_micros {
            self.daily_budget_micros = v;
        }
        if let Some(v) = spec.frequency_cap {
            self.frequency_cap = v;
        }
        if let Some(v) = spec.frequency_window_s {
            self.frequency_window_s = v;
        }
        if spec.start_ms.is_some() {
            self.start_ms = spec.start_ms;
        }
        if spec.end_ms.is_some() {
            self.end_ms = spec.end_ms;
        }
        if let Some(v) = &spec.excluded_terms {
            self.excluded_terms = check_terms("excluded_terms", v)?;
        }
        self.validate()
    }

    /// True when the campaign may serve at `now_ms` (status and flight dates).
    pub fn live_at(&self, now_ms: i64) -> bool {
        self.status == Status::Active
            && self.start_ms.is_none_or(|s| now_ms >= s)
            && self.end_ms.is_none_or(|e| now_ms < e)
    }
}

impl AdGroup {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        check_money("bid_micros", self.bid_micros, MAX_BID, false)?;
        check_terms("keywords", &self.keywords)?;
        check_text("description", &self.description, true)?;
        if self.languages.len() > 50
            || self
                .languages
                .iter()
                .any(|l| l.len() < 2 || l.len() > 8 || !l.chars().all(|c| c.is_ascii_alphabetic()))
        {
            return Err(Error::invalid(
                "languages",
                "language codes are 2 to 8 ASCII letters (at most 50)",
            ));
        }
        if !(0..24).contains(&self.hour_start) || !(1..=24).contains(&self.hour_end) {
            return Err(Error::invalid(
                "hour_start",
                "hours are UTC: hour_start 0..23, hour_end 1..24",
            ));
        }
        if !self.min_similarity.is_finite() || !(-1.0..=1.0).contains(&self.min_similarity) {
            return Err(Error::invalid("min_similarity", "must be -1 to 1"));
        }
        if self.keywords.is_empty() && self.description.trim().is_empty() {
            return Err(Error::invalid(
                "keywords",
                "an ad group needs keywords or a description to target",
            ));
        }
        Ok(())
    }

    /// Applies `spec`'s present fields.
    pub fn apply(&mut self, spec: &GroupSpec) -> Result<()> {
        if let Some(v) = &spec.name {
            self.name = v.clone();
        }
        if let Some(v) = spec.status {
            self.status = v;
        }
        if let Some(v) = spec.bid_micros {
            self.bid_micros = v;
        }
        if let Some(v) = &spec.keywords {
            self.keywords = check_terms("keywords", v)?;
        }
        if let Some(v) = &spec.description {
            self.description = v.clone();
        }
        if let Some(v) = &spec.languages {
            self.languages = v.iter().map(|l| l.trim().to_lowercase()).collect();
        }
        if let Some(v) = &spec.placements {
            self.placements = v.clone();
        }
        if let Some(v) = spec.hour_start {
            self.hour_start = v;
        }
        if let Some(v) = spec.hour_end {
            self.hour_end = v;
        }
        if let Some(v) = spec.min_similarity {
            self.min_similarity = v;
        }
        self.validate()
    }

    /// True when the group serves at UTC hour `hour` (0..24).
    pub fn serves_hour(&self, hour: i64) -> bool {
        if self.hour_start < self.hour_end {
            (self.hour_start..self.hour_end).contains(&hour)
        } else {
            hour >= self.hour_start || hour < self.hour_end
        }
    }

    /// The text its targeting vector is computed from.
    pub fn targeting_text(&self) -> String {
        if self.description.trim().is_empty() {
            self.keywords.join(" ")
        } else {
            self.description.clone()
        }
    }
}

impl Creative {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        check_text("text", &self.text, false)?;
        if let Some(u) = &self.url {
            if u.len() > 2_000 || !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(Error::invalid(
                    "url",
                    "must be an http(s) URL of at most 2,000 bytes",
                ));
            }
        }
        Ok(())
    }

    /// Applies `spec`'s present fields.
    pub fn apply(&mut self, spec: &CreativeSpec) -> Result<()> {
        if let Some(v) = spec.status {
            self.status = v;
        }
        if let Some(v) = &spec.text {
            self.text = v.clone();
        }
        if spec.url.is_some() {
            self.url = spec.url.clone();
        }
        self.validate()
    }
}

/// A fresh id: `prefix` and 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}_{n:016x}")
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_wrap_past_midnight() {
        let mut g = AdGroup {
            id: "g".into(),
            campaign_id: "c".into(),
            advertiser_id: "a".into(),
            name: "n".into(),
            status: Status::Active,
            bid_micros: 1,
            keywords: vec!["x".into()],
            description: String::new(),
            languages: vec![],
            placements: vec![],
            hour_start: 22,
            hour_end: 2,
            min_similarity: 0.3,
            created_ms: 0,
            updated_ms: 0,
        };
        assert!(g.serves_hour(23) && g.serves_hour(1) && !g.serves_hour(2) && !g.serves_hour(12));
        g.hour_start = 0;
        g.hour_end = 24;
        assert!((0..24).all(|h| g.serves_hour(h)));
        assert!(g.validate().is_ok());
        g.bid_micros = -5;
        assert!(g.validate().unwrap_err().to_string().contains("bid_micros"));
        g.bid_micros = MAX_BID + 1;
        assert!(g.validate().is_err());
    }

    #[test]
    fn dates_become_utc_days_and_bad_ones_name_the_field() {
        assert_eq!(day_from_date("from", "1970-01-02").unwrap(), 1);
        let e = day_from_date("from", "2026-13-01").unwrap_err().to_string();
        assert!(e.starts_with("from:") && e.contains("YYYY-MM-DD"), "{e}");
    }

    #[test]
    fn terms_are_lowercased_deduplicated_and_checked() {
        let t = check_terms("keywords", &["Run".into(), "#RUN".into(), "run".into()]).unwrap();
        assert_eq!(t, vec!["run", "#run"]);
        assert!(check_terms("keywords", &["two words".into()]).is_err());
        assert!(check_terms("keywords", &["#".into()]).is_err());
    }
}
