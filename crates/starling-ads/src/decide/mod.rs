//! Deciding which ads to show: candidates, filters, pCTR, auction, pacing; and the events that
//! follow (impressions, clicks) with their charges.
//!
//! [`AdServer`] holds the live inventory in memory (read from the [`AdStore`] by
//! [`AdServer::reload`]) with its keyword index and targeting vectors; the store stays the record of
//! money. A decision reads no database; an event is one transaction.

use crate::auction::{self, Bid};
use crate::error::{Error, Result};
use crate::ftrl::{AdFeatures, Ftrl, FtrlConfig, MAX_TERMS};
use crate::pacing::{Pacer, PacingConfig, TargetBidder};
use crate::safety::BrandSafety;
use crate::store::{AdStore, EventKind, EventOutcome, EventRecord};
use crate::token::{ImpressionFacts, ImpressionSealer};
use crate::types::*;
use rand::Rng;
use serde::{Deserialize, Serialize};
use starling_embed::{normalize, Embedder};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Settings of the decision path.
#[derive(Debug, Clone)]
pub struct DecideConfig {
    /// Least value per thousand impressions a winner must bring.
    pub reserve_cpm_micros: Micros,
    /// Most slots one request may ask for.
    pub max_slots: usize,
    /// Most semantic candidates (best similarity first) per request.
    pub max_semantic_candidates: usize,
    /// An impression is refused when its decision is older than this.
    pub impression_ttl_ms: i64,
    /// A click is refused when its decision is older than this.
    pub click_ttl_ms: i64,
    /// pCTR model.
    pub ftrl: FtrlConfig,
    /// Pacing controller.
    pub pacing: PacingConfig,
    /// Pace budgets (off: spend as fast as demand allows).
    pub pace: bool,
    /// Retrieve by similarity as well as by keyword (needs an embedder).
    pub semantic: bool,
    /// Replace pCTR by a random draw around the prior (the simulation's random baseline).
    pub random_pctr: bool,
    /// Days of logged events a starting server learns pCTR (and frequency windows) from.
    pub replay_days: i64,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            reserve_cpm_micros: 500_000,
            max_slots: 10,
            max_semantic_candidates: 200,
            impression_ttl_ms: 3_600_000,
            click_ttl_ms: DAY_MS,
            ftrl: FtrlConfig::default(),
            pacing: PacingConfig::default(),
            pace: true,
            semantic: true,
            random_pctr: false,
            replay_days: 7,
        }
    }
}

/// What an ad would appear beside.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdContext {
    /// The query, or the text of the posts being viewed.
    #[serde(default)]
    pub text: String,
    /// The context's embedding when already known (search results, indexed posts): skips embedding.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Indexed posts being viewed: `starling serve` takes their stored vectors as `vector` (their
    /// mean) when no vector is given; the library itself does not read them.
    #[serde(default)]
    pub post_ids: Vec<String>,
}

/// A decision request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecideRequest {
    /// Where the ads go.
    pub placement: Placement,
    /// What they go beside.
    pub context: AdContext,
    /// The viewer (frequency caps).
    pub user_id: String,
    /// The viewer's language (ISO 639-1).
    #[serde(default)]
    pub language: Option<String>,
    /// Slots to fill.
    #[serde(default = "one")]
    pub slots: usize,
    /// Advertisers not to show (the publisher's blocks, the viewer's mutes).
    #[serde(default)]
    pub exclude_advertisers: Vec<String>,
}

fn one() -> usize {
    1
}

/// One filled slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdSlot {
    /// Send back with the impression and click events.
    pub impression_id: String,
    /// Slot, 0-based.
    pub position: usize,
    /// Creative.
    pub creative_id: String,
    /// The promoted post's text.
    pub text: String,
    /// Landing page.
    pub url: Option<String>,
    /// Ad group.
    pub group_id: String,
    /// Campaign.
    pub campaign_id: String,
    /// Advertiser.
    pub advertiser_id: String,
    /// How it is charged.
    pub bid_type: BidType,
    /// Price per click, or per thousand impressions for CPM.
    pub price_micros: Micros,
    /// Predicted click probability.
    pub pctr: f64,
    /// Similarity of context and ad.
    pub similarity: f32,
    /// True when a keyword matched.
    pub keyword_match: bool,
}

/// Candidates dropped, per reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Dropped {
    /// Campaign or group paused, ended, not started, or out of its hours.
    pub schedule: usize,
    /// Language or placement not targeted.
    pub targeting: usize,
    /// Budget spent for the day.
    pub budget: usize,
    /// Held back by pacing.
    pub pacing: usize,
    /// The user saw the campaign often enough.
    pub frequency: usize,
    /// The context holds a term the advertiser excluded, or the request excluded the advertiser.
    pub exclusion: usize,
    /// The whole context was unsafe for brands.
    pub brand_safety: usize,
}

/// Microseconds each step took.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// Embedding the context.
    pub embed_us: u64,
    /// Keyword and semantic retrieval.
    pub candidates_us: u64,
    /// Filters.
    pub filters_us: u64,
    /// pCTR.
    pub pctr_us: u64,
    /// Auction.
    pub auction_us: u64,
}

/// The answer to a decision request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Filled slots, best first (may be fewer than asked, or none).
    pub ads: Vec<AdSlot>,
    /// Ad groups retrieved by keyword.
    pub keyword_candidates: usize,
    /// Ad groups retrieved by similarity (and not by keyword).
    pub semantic_candidates: usize,
    /// Candidates dropped, per reason.
    pub dropped: Dropped,
    /// Probability that the context is unsafe beside ads (when a classifier is loaded).
    pub unsafe_probability: Option<f64>,
    /// Time per step.
    pub times: StepTimes,
}

/// The words and hashtags of a text, lowercase (hashtags keep their `#`), each once.
pub fn terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '#' || c == '_' || c == '\'')) {
        let t = raw.trim_matches('\'');
        let (tag, body) = match t.rfind('#') {
            Some(i) => (true, &t[i + 1..]),
            None => (false, t),
        };
        if body.is_empty() {
            continue;
        }
        let body = body.to_lowercase();
        let term = if tag { format!("#{body}") } else { body };
        if seen.insert(term.clone()) {
            out.push(term);
        }
    }
    out
}

/// Dot product written so the compiler vectorizes it (eight independent sums).
fn fast_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// A group the context matched: by keyword, or by similarity (its value, 0 when unknown).
struct Candidate {
    group: usize,
    keyword: bool,
    similarity: f32,
}

/// A candidate that passed the filters, with its bid.
struct Eligible {
    cand: Candidate,
    bid: Micros,
}

/// The best creative of an eligible group, as it enters the auction.
struct Bidder {
    creative: usize,
    features: AdFeatures,
    pctr: f64,
    similarity: f32,
    keyword: bool,
    bid: Micros,
}

struct GroupEntry {
    group: AdGroup,
    campaign: usize,
    creatives: Vec<usize>,
}

struct CreativeEntry {
    creative: Creative,
    group: usize,
    vector: Option<Vec<f32>>,
}

/// The in-memory inventory.
#[derive(Default)]
struct Index {
    campaigns: Vec<Campaign>,
    campaign_by_id: HashMap<String, usize>,
    group_by_id: HashMap<String, usize>,
    groups: Vec<GroupEntry>,
    creatives: Vec<CreativeEntry>,
    keywords: HashMap<String, Vec<usize>>,
    /// Rows of targeting vectors (one per group with a description or keywords), row -> group.
    vectors: Vec<f32>,
    vector_group: Vec<usize>,
    dim: usize,
}

/// Live state: spend, pacing, frequency, auto-bids and the pCTR model.
struct Live {
    spend: HashMap<String, (i64, Micros)>,
    pacers: HashMap<String, Pacer>,
    target: HashMap<String, TargetBidder>,
    seen: HashMap<(String, String), VecDeque<i64>>,
}

/// The decision engine and event recorder.
pub struct AdServer {
    store: AdStore,
    embedder: Option<Arc<dyn Embedder>>,
    safety: Option<BrandSafety>,
    /// Settings.
    pub config: DecideConfig,
    sealer: ImpressionSealer,
    index: RwLock<Arc<Index>>,
    live: Mutex<Live>,
    model: RwLock<Ftrl>,
}

impl std::fmt::Debug for AdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdServer")
            .field("backend", &self.store.backend())
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.id().to_string()),
            )
            .finish()
    }
}

/// The result of recording one event.
#[derive(Debug, Clone, Serialize)]
pub struct EventResult {
    /// How it was counted.
    pub outcome: EventOutcome,
    /// Campaign.
    pub campaign_id: String,
}

/// An event as a client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// `impression` or `click`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// From the decision.
    pub impression_id: String,
    /// The client's key for this event: a retry with the same key is counted once.
    pub idempotency_key: String,
}

fn lock_err<T>(_: T) -> Error {
    Error::Event("internal state poisoned by an earlier panic".into())
}

mod stages;

impl AdServer {
    /// An engine over `store`; `embedder` enables semantic targeting, `safety` brand safety.
    pub async fn new(
        store: AdStore,
        embedder: Option<Arc<dyn Embedder>>,
        safety: Option<BrandSafety>,
        config: DecideConfig,
    ) -> Result<Self> {
        if let (Some(s), Some(e)) = (&safety, &embedder) {
            if s.embedder_id != e.id() {
                return Err(Error::invalid(
                    "brand_safety",
                    format!(
                        "the classifier was trained on {:?} vectors, the server embeds with {:?}",
                        s.embedder_id,
                        e.id()
                    ),
                ));
            }
        }
        let secret = store.secret("impression-signing").await?;
        let server = Self {
            sealer: ImpressionSealer::new(secret.as_bytes()),
            model: RwLock::new(Ftrl::new(config.ftrl)),
            store,
            embedder,
            safety,
            config,
            index: RwLock::new(Arc::new(Index::default())),
            live: Mutex::new(Live {
                spend: HashMap::new(),
                pacers: HashMap::new(),
                target: HashMap::new(),
                seen: HashMap::new(),
            }),
        };
        server.reload(now_ms()).await?;
        server.learn_from_log(now_ms()).await?;
        Ok(server)
    }

    /// The store.
    pub fn store(&self) -> &AdStore {
        &self.store
    }

    /// The embedder, if any.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// Embeds one text with the server's embedder: `(embedder id, vector)`.
    pub fn embed_one(&self, text: &str) -> Result<Option<(String, Vec<f32>)>> {
        let Some(e) = &self.embedder else {
            return Ok(None);
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let mut v = e.embed(&[text])?;
        Ok(v.pop().map(|v| (e.id().to_string(), v)))
    }

    /// Re-reads the inventory (and the spend of `now_ms`'s day); embeds, and stores, the
    /// targeting and creative vectors that are missing or from another embedder.
    pub async fn reload(&self, now_ms: i64) -> Result<()> {
        let inv = self.store.inventory(day_of(now_ms)).await?;
        let eid = self.embedder.as_ref().map(|e| e.id().to_string());
        let mut group_vecs: Vec<Option<Vec<f32>>> = Vec::with_capacity(inv.groups.len());
        let mut todo_groups: Vec<(usize, String)> = Vec::new();
        for (i, (g, v)) in inv.groups.iter().enumerate() {
            match (v, &eid) {
                (Some((id, v)), Some(e)) if id == e => group_vecs.push(Some(v.clone())),
                (_, Some(_)) if !g.targeting_text().trim().is_empty() => {
                    todo_groups.push((i, g.targeting_text()));
                    group_vecs.push(None);
                }
                _ => group_vecs.push(None),
            }
        }
        let mut creative_vecs: Vec<Option<Vec<f32>>> = Vec::with_capacity(inv.creatives.len());
        let mut todo_creatives: Vec<(usize, String)> = Vec::new();
        for (i, (c, v)) in inv.creatives.iter().enumerate() {
            match (v, &eid) {
                (Some((id, v)), Some(e)) if id == e => creative_vecs.push(Some(v.clone())),
                (_, Some(_)) => {
                    todo_creatives.push((i, c.text.clone()));
                    creative_vecs.push(None);
                }
                _ => creative_vecs.push(None),
            }
        }
        if let (Some(e), Some(eid)) = (&self.embedder, &eid) {
            let mut stored_g = Vec::new();
            for chunk in todo_groups.chunks(64) {
                let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
                for ((i, _), v) in chunk.iter().zip(e.embed(&texts)?) {
                    stored_g.push((inv.groups[*i].0.id.clone(), v.clone()));
                    group_vecs[*i] = Some(v);
                }
            }
            let mut stored_c = Vec::new();
            for chunk in todo_creatives.chunks(64) {
                let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
                for ((i, _), v) in chunk.iter().zip(e.embed(&texts)?) {
                    stored_c.push((inv.creatives[*i].0.id.clone(), v.clone()));
                    creative_vecs[*i] = Some(v);
                }
            }
            if !stored_g.is_empty() || !stored_c.is_empty() {
                tracing::info!(
                    groups = stored_g.len(),
                    creatives = stored_c.len(),
                    "embedded targeting vectors"
                );
                self.store.store_vectors(eid, &stored_g, &stored_c).await?;
            }
        }
        let dim = self.embedder.as_ref().map_or(0, |e| e.dim());
        let mut ix = Index {
            dim,
            ..Default::default()
        };
        for c in inv.campaigns {
            ix.campaign_by_id.insert(c.id.clone(), ix.campaigns.len());
            ix.campaigns.push(c);
        }
        for ((g, _), v) in inv.groups.into_iter().zip(group_vecs) {
            let Some(&campaign) = ix.campaign_by_id.get(&g.campaign_id) else {
                continue;
            };
            let gi = ix.groups.len();
            ix.group_by_id.insert(g.id.clone(), gi);
            for k in &g.keywords {
                let keys = if k.starts_with('#') {
                    vec![k.clone()]
                } else {
                    vec![k.clone(), format!("#{k}")]
                };
                for key in keys {
                    ix.keywords.entry(key).or_default().push(gi);
                }
            }
            if let Some(v) = v.filter(|v| v.len() == dim && dim > 0) {
                ix.vectors.extend_from_slice(&v);
                ix.vector_group.push(gi);
            }
            ix.groups.push(GroupEntry {
                group: g,
                campaign,
                creatives: vec![],
            });
        }
        for ((c, _), v) in inv.creatives.into_iter().zip(creative_vecs) {
            let Some(&gi) = ix.group_by_id.get(&c.group_id) else {
                continue;
            };
            // Creatives do not retrieve (their text is the advertiser's copy, not its audience);
            // their similarity to the context is a pCTR feature.
            let v = v.filter(|v| v.len() == dim && dim > 0);
            ix.groups[gi].creatives.push(ix.creatives.len());
            ix.creatives.push(CreativeEntry {
                creative: c,
                group: gi,
                vector: v,
            });
        }
        let day = day_of(now_ms);
        {
            let mut live = self.live.lock().map_err(lock_err)?;
            for (cid, spent) in inv.spend {
                let e = live.spend.entry(cid).or_insert((day, 0));
                if e.0 != day || spent > e.1 {
                    *e = (day, spent);
                }
            }
        }
        tracing::info!(
            campaigns = ix.campaigns.len(),
            groups = ix.groups.len(),
            creatives = ix.creatives.len(),
            vectors = ix.vector_group.len(),
            "ad inventory loaded"
        );
        *self.index.write().map_err(lock_err)? = Arc::new(ix);
        Ok(())
    }

    /// Learns pCTR and frequency windows again from the events logged in the `replay_days` before
    /// `now_ms` (a starting server does this for the current time). Returns the events read.
    pub async fn learn_from_log(&self, now_ms: i64) -> Result<usize> {
        let events = self
            .store
            .events_since(now_ms - self.config.replay_days * DAY_MS)
            .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut model = self.model.write().map_err(lock_err)?;
        let mut live = self.live.lock().map_err(lock_err)?;
        let mut unreadable = 0usize;
        for e in &events {
            let Ok(f) = serde_json::from_str::<AdFeatures>(&e.features) else {
                unreadable += 1;
                continue;
            };
            match e.kind {
                EventKind::Impression => {
                    model.learn_impression(&f);
                    live.seen
                        .entry((e.user_id.clone(), e.campaign_id.clone()))
                        .or_default()
                        .push_back(e.ts_ms);
                }
                EventKind::Click => model.learn_click(&f),
            }
        }
        tracing::info!(
            events = events.len(),
            unreadable,
            "pCTR learned again from the event log"
        );
        Ok(events.len())
    }

    /// Decides the ads for one request at the current time.
    pub fn decide(&self, req: &DecideRequest) -> Result<Decision> {
        self.decide_at(req, now_ms(), &mut rand::thread_rng())
    }

    /// Decides the ads for one request at `now_ms`, drawing pacing from `rng`: context, then
    /// candidates, filters, the best creative of each group, and the auction.
    pub fn decide_at(
        &self,
        req: &DecideRequest,
        now_ms: i64,
        rng: &mut impl Rng,
    ) -> Result<Decision> {
        self.check_request(req)?;
        let ix = self.index.read().map_err(lock_err)?.clone();
        let mut times = StepTimes::default();
        let mut dropped = Dropped::default();

        let t0 = Instant::now();
        let ctx_terms = terms(&req.context.text);
        let vector = self.context_vector(req, &ix)?;
        times.embed_us = t0.elapsed().as_micros() as u64;
        let unsafe_probability = match (&self.safety, &vector) {
            (Some(s), Some(v)) => Some(s.unsafe_probability(v)),
            _ => None,
        };
        let mut decision = Decision {
            ads: vec![],
            keyword_candidates: 0,
            semantic_candidates: 0,
            dropped: Dropped::default(),
            unsafe_probability,
            times: StepTimes::default(),
        };
        if let (Some(s), Some(p)) = (&self.safety, unsafe_probability) {
            if p >= s.threshold {
                dropped.brand_safety = 1;
                decision.dropped = dropped;
                decision.times = times;
                return Ok(decision);
            }
        }

        let t1 = Instant::now();
        let (candidates, keyword_candidates) = self.candidates(&ix, &ctx_terms, vector.as_deref());
        let semantic_candidates = candidates.len() - keyword_candidates;
        times.candidates_us = t1.elapsed().as_micros() as u64;

        let t2 = Instant::now();
        let eligible = self.filter(&ix, req, candidates, &ctx_terms, now_ms, rng, &mut dropped)?;
        times.filters_us = t2.elapsed().as_micros() as u64;

        let t3 = Instant::now();
        let bidders =
            self.best_creatives(&ix, req, eligible, &ctx_terms, vector.as_deref(), rng)?;
        times.pctr_us = t3.elapsed().as_micros() as u64;

        let t4 = Instant::now();
        let ads = self.auction(&ix, req, &bidders, now_ms, rng);
        times.auction_us = t4.elapsed().as_micros() as u64;
        tracing::debug!(
            placement = req.placement.as_str(),
            keyword_candidates,
            semantic_candidates,
            filled = ads.len(),
            ?dropped,
            ?times,
            "ad decision"
        );
        Ok(Decision {
            ads,
            keyword_candidates,
            semantic_candidates,
            dropped,
            unsafe_probability,
            times,
        })
    }

    /// Records an event at the current time.
    pub async fn record(&self, ev: &EventInput) -> Result<EventResult> {
        self.record_at(ev, now_ms()).await
    }

    /// Records an impression or click at `now_ms`: verified against its sealed impression id,
    /// counted once, charged once within the budget; the pCTR model and caps learn from it.
    pub async fn record_at(&self, ev: &EventInput, now_ms: i64) -> Result<EventResult> {
        if ev.idempotency_key.is_empty() || ev.idempotency_key.len() > 200 {
            return Err(Error::invalid("idempotency_key", "1 to 200 bytes"));
        }
        let facts = self.sealer.open(&ev.impression_id)?;
        let age = now_ms - facts.ts_ms;
        let ttl = match ev.kind {
            EventKind::Impression => self.config.impression_ttl_ms,
            EventKind::Click => self.config.click_ttl_ms,
        };
        if age > ttl {
            return Err(Error::Event(format!(
                "the decision is {} s old; a {} must arrive within {} s",
                age / 1000,
                match ev.kind {
                    EventKind::Impression => "impression",
                    EventKind::Click => "click",
                },
                ttl / 1000
            )));
        }
        let cost = match ev.kind {
            EventKind::Impression => facts.impression_cost(),
            EventKind::Click => facts.click_cost(),
        };
        // Impressions are stored under the decision's nonce, so one decided slot counts once
        // whatever key the client retries with.
        let rec = EventRecord {
            idempotency_key: ev.idempotency_key.clone(),
            kind: ev.kind,
            impression_id: facts.nonce.clone(),
            advertiser_id: facts.advertiser.clone(),
            campaign_id: facts.campaign.clone(),
            group_id: facts.group.clone(),
            creative_id: facts.creative.clone(),
            user_id: facts.user.clone(),
            placement: facts.placement,
            position: facts.position as i64,
            ts_ms: now_ms,
            cost_micros: cost,
            features: serde_json::to_string(&facts.features).unwrap_or_default(),
        };
        let outcome = self.store.record_event(&rec).await?;
        if outcome != EventOutcome::Duplicate {
            let day = day_of(now_ms);
            {
                let ix = self.index.read().map_err(lock_err)?.clone();
                let mut live = self.live.lock().map_err(lock_err)?;
                if let EventOutcome::Counted { cost_micros } = outcome {
                    let e = live.spend.entry(facts.campaign.clone()).or_insert((day, 0));
                    if e.0 != day {
                        *e = (day, 0);
                    }
                    e.1 += cost_micros;
                    if ev.kind == EventKind::Click && cost_micros > 0 {
                        if let Some(g) = ix.group_by_id.get(&facts.group).map(|&i| &ix.groups[i]) {
                            if ix.campaigns[g.campaign].bid_type == BidType::TargetCpc {
                                let bid = g.group.bid_micros;
                                live.target
                                    .entry(facts.group.clone())
                                    .or_default()
                                    .charged(bid, cost_micros);
                            }
                        }
                    }
                }
                if let EventOutcome::Unbilled { .. } = outcome {
                    // The budget is spent: the store refused the charge, so the cache must say so.
                    if let Some(&ci) = ix.campaign_by_id.get(&facts.campaign) {
                        let budget = ix.campaigns[ci].daily_budget_micros;
                        let e = live.spend.entry(facts.campaign.clone()).or_insert((day, 0));
                        *e = (day, e.1.max(budget));
                    }
                }
                if ev.kind == EventKind::Impression {
                    let q = live
                        .seen
                        .entry((facts.user.clone(), facts.campaign.clone()))
                        .or_default();
                    q.push_back(now_ms);
                    while q.len() > 64 || q.front().is_some_and(|&t| t < now_ms - 30 * DAY_MS) {
                        q.pop_front();
                    }
                }
            }
            let mut model = self.model.write().map_err(lock_err)?;
            match ev.kind {
                EventKind::Impression => model.learn_impression(&facts.features),
                EventKind::Click => model.learn_click(&facts.features),
            }
        }
        Ok(EventResult {
            outcome,
            campaign_id: facts.campaign,
        })
    }

    /// Predicted click probability of `features` (for evaluation).
    pub fn predict(&self, features: &AdFeatures) -> Result<f64> {
        Ok(self.model.read().map_err(lock_err)?.predict(features))
    }

    /// The facts behind an impression id this server issued.
    pub fn impression_facts(&self, impression_id: &str) -> Result<ImpressionFacts> {
        self.sealer.open(impression_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_keep_hashtags_and_lowercase_words_once() {
        assert_eq!(
            terms("Running a #Marathon, running! l'été #ÉTÉ"),
            vec!["running", "a", "#marathon", "l'été", "#été"]
        );
        assert!(terms("  ,, # ").is_empty());
    }

    #[test]
    fn fast_dot_matches_the_plain_one() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        assert!((fast_dot(&a, &b) - starling_embed::dot(&a, &b)).abs() < 1e-3);
    }
}
