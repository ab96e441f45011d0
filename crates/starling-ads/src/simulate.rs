//! `starling ads simulate`: a day of synthetic traffic over synthetic campaigns, through the real
//! decision and event path (store, auction, pacing, charging), against a hidden click model.
//!
//! The generator draws users with latent topic interests, contexts about one topic, and
//! campaigns about one topic with a hidden appeal. Whether a shown ad is clicked depends only on
//! those latent variables and the slot (never on any embedding, which would make the lift of
//! semantic targeting circular). Each policy runs on a fresh database with the same traffic.

use crate::decide::{AdContext, AdServer, DecideConfig, DecideRequest, EventInput};
use crate::error::Result;
use crate::ftrl::auc;
use crate::store::{AdStore, EventKind, Scope};
use crate::types::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use starling_embed::Embedder;
use std::path::Path;
use std::sync::Arc;

/// Topics and their words: what users talk about and campaigns sell.
pub const TOPICS: &[(&str, &[&str])] = &[
    (
        "running",
        &[
            "marathon",
            "run",
            "runner",
            "sneakers",
            "pace",
            "trail",
            "10k",
            "training",
            "miles",
            "jog",
            "stride",
            "finish",
            "race",
            "hydration",
            "splits",
        ],
    ),
    (
        "cooking",
        &[
            "recipe", "kitchen", "bake", "oven", "dinner", "pasta", "chef", "flavor", "sauce",
            "garlic", "roast", "dough", "spices", "simmer", "meal",
        ],
    ),
    (
        "football",
        &[
            "goal", "match", "striker", "league", "keeper", "penalty", "derby", "transfer",
            "pitch", "midfield", "fans", "kickoff", "referee", "tactics", "cup",
        ],
    ),
    (
        "crypto",
        &[
            "bitcoin",
            "wallet",
            "token",
            "blockchain",
            "ethereum",
            "defi",
            "mining",
            "ledger",
            "coin",
            "exchange",
            "hodl",
            "altcoin",
            "staking",
            "nft",
            "gas",
        ],
    ),
    (
        "gaming",
        &[
            "console",
            "controller",
            "level",
            "boss",
            "quest",
            "multiplayer",
            "fps",
            "rpg",
            "stream",
            "loot",
            "patch",
            "speedrun",
            "esports",
            "pixel",
            "save",
        ],
    ),
    (
        "travel",
        &[
            "flight",
            "hotel",
            "beach",
            "passport",
            "itinerary",
            "luggage",
            "airport",
            "island",
            "backpacking",
            "resort",
            "visa",
            "cruise",
            "tour",
            "hostel",
            "journey",
        ],
    ),
    (
        "music",
        &[
            "album", "concert", "guitar", "playlist", "song", "drummer", "vinyl", "lyrics",
            "festival", "band", "chorus", "remix", "tour", "studio", "melody",
        ],
    ),
    (
        "pets",
        &[
            "puppy", "kitten", "dog", "cat", "vet", "leash", "treats", "adopt", "paws", "litter",
            "fetch", "groomer", "kibble", "shelter", "whiskers",
        ],
    ),
    (
        "gardening",
        &[
            "seeds",
            "soil",
            "compost",
            "tomatoes",
            "greenhouse",
            "pruning",
            "bulbs",
            "harvest",
            "mulch",
            "seedlings",
            "garden",
            "blooms",
            "watering",
            "perennials",
            "weeds",
        ],
    ),
    (
        "fitness",
        &[
            "gym", "workout", "squat", "protein", "deadlift", "reps", "cardio", "stretch", "yoga",
            "dumbbell", "abs", "trainer", "hiit", "bench", "gains",
        ],
    ),
    (
        "movies",
        &[
            "film",
            "director",
            "trailer",
            "cinema",
            "sequel",
            "actor",
            "screenplay",
            "premiere",
            "popcorn",
            "oscars",
            "scene",
            "cast",
            "blockbuster",
            "horror",
            "netflix",
        ],
    ),
    (
        "finance",
        &[
            "stocks",
            "savings",
            "budget",
            "invest",
            "portfolio",
            "dividend",
            "mortgage",
            "retirement",
            "index",
            "fund",
            "interest",
            "loan",
            "credit",
            "broker",
            "taxes",
        ],
    ),
];

const FILLER: &[&str] = &[
    "the", "a", "today", "really", "so", "just", "my", "this", "is", "and", "love", "new", "best",
    "time", "good", "week", "lol", "great", "who", "else", "what", "think", "about", "got",
    "finally",
];

/// Words at the head of each topic's list: the keywords advertisers pick.
pub const HEAD_TERMS: usize = 3;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the traffic and inventory.
    pub seed: u64,
    /// Requests over the day.
    pub requests: usize,
    /// Campaigns (each with ad groups and creatives).
    pub campaigns: usize,
    /// Ad groups per campaign.
    pub groups_per_campaign: usize,
    /// Users.
    pub users: usize,
    /// Slots per request.
    pub slots: usize,
    /// Also run starling without pacing.
    pub compare_pacing: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            requests: 60_000,
            campaigns: 40,
            groups_per_campaign: 3,
            users: 20_000,
            slots: 2,
            compare_pacing: false,
        }
    }
}

/// Results of one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    /// Policy name.
    pub policy: String,
    /// Requests served.
    pub requests: usize,
    /// Impressions counted.
    pub impressions: u64,
    /// Clicks counted.
    pub clicks: u64,
    /// Clicks per impression.
    pub ctr: f64,
    /// Charged, micros.
    pub revenue_micros: Micros,
    /// Delivered after budgets were spent (not charged), micros.
    pub unbilled_micros: Micros,
    /// AUC of the pCTR at the slot, predicted before the impression was learned (progressive).
    pub pctr_auc: f64,
    /// Sum of predicted pCTR over clicks (1.0 is calibrated).
    pub calibration: f64,
    /// Clicks of shown ads whose topic is the context's (hidden truth), share of impressions.
    pub on_topic_share: f64,
    /// Campaigns that spent at least 95% of their budget.
    pub budgets_delivered: usize,
    /// Mean spend / budget over campaigns.
    pub mean_delivery: f64,
    /// Mean over budget-limited campaigns of the largest gap between the cumulative spend share
    /// and the even line (0: perfectly even), by hour.
    pub pacing_gap: f64,
    /// Largest spend / budget of any campaign (must be at most 1).
    pub max_spend_share: f64,
    /// Campaigns.
    pub campaigns: usize,
    /// Mean over campaigns that spent at least half their budget of the share of their day's spend
    /// charged by the end of each UTC hour (24 values; the even line is (h + 1) / 24).
    pub cumulative_spend_share: Vec<f64>,
}

struct World {
    campaign_ids: Vec<String>,
    users: Vec<Vec<(usize, f64)>>,
    campaign_topic: Vec<usize>,
    campaign_appeal: Vec<f64>,
}

/// `n` words about `topic`: each a topic word with probability `topical`, else filler.
pub fn words(rng: &mut impl Rng, topic: usize, n: usize, topical: f64) -> String {
    (0..n)
        .map(|_| {
            if rng.gen::<f64>() < topical {
                *TOPICS[topic].1.choose(rng).unwrap_or(&"")
            } else {
                *FILLER.choose(rng).unwrap_or(&"")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ground truth: the click probability of an ad of `campaign` in `position` for `user` beside a
/// context about `topic`.
fn true_ctr(w: &World, campaign: usize, user: usize, topic: usize, position: usize) -> f64 {
    let ad_topic = w.campaign_topic[campaign];
    let affinity = if ad_topic == topic {
        1.0
    } else {
        w.users[user]
            .iter()
            .find(|(t, _)| *t == ad_topic)
            .map_or(0.0, |(_, s)| 0.3 * s)
    };
    let position_factor = [1.0, 0.6, 0.45, 0.35][position.min(3)];
    (0.003 * w.campaign_appeal[campaign] * (1.0 + 14.0 * affinity) * position_factor).min(0.5)
}

async fn build_inventory(store: &AdStore, cfg: &SimConfig, rng: &mut ChaCha8Rng) -> Result<World> {
    let mut campaign_topic = Vec::new();
    let mut campaign_ids = Vec::new();
    let mut campaign_appeal = Vec::new();
    let (adv, _) = store.create_advertiser("simulated advertisers").await?;
    let scope = Scope::Operator;
    for c in 0..cfg.campaigns {
        let topic = c % TOPICS.len();
        let appeal = 0.5 + 1.5 * rng.gen::<f64>();
        let kind = match rng.gen_range(0..10) {
            0..=5 => BidType::MaxCpc,
            6..=7 => BidType::Cpm,
            _ => BidType::TargetCpc,
        };
        // $20-150 a day at 60,000 requests, scaled with the traffic so any size is budget-bound alike.
        let scale = cfg.requests as f64 / 60_000.0;
        let budget = ((rng.gen_range(20..=150) as f64 * scale).max(1.0) * 1e6) as Micros;
        let camp = store
            .create_campaign(
                &scope,
                &CampaignSpec {
                    advertiser_id: Some(adv.id.clone()),
                    name: Some(format!("{} #{c}", TOPICS[topic].0)),
                    bid_type: Some(kind),
                    daily_budget_micros: Some(budget),
                    frequency_cap: Some(5),
                    frequency_window_s: Some(86_400),
                    ..Default::default()
                },
            )
            .await?;
        for g in 0..cfg.groups_per_campaign {
            let vocab = TOPICS[topic].1;
            // Advertisers bid on the obvious head terms; conversations use the whole vocabulary.
            let keywords: Vec<String> = vec![vocab[rng.gen_range(0..HEAD_TERMS)].to_string()];
            let bid = match kind {
                BidType::Cpm => rng.gen_range(2_000_000..12_000_000),
                _ => rng.gen_range(200_000..2_500_000),
            };
            let group = store
                .create_group(
                    &scope,
                    &GroupSpec {
                        campaign_id: Some(camp.id.clone()),
                        name: Some(format!("group {g}")),
                        bid_micros: Some(bid),
                        keywords: Some(keywords),
                        description: Some(words(rng, topic, 12, 1.0)),
                        min_similarity: Some(0.3),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
            store
                .create_creative(
                    &scope,
                    &CreativeSpec {
                        group_id: Some(group.id.clone()),
                        text: Some(format!("Brand{c}: {}", words(rng, topic, 10, 0.8))),
                        url: Some(format!("https://example.com/{c}/{g}")),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
        }
        campaign_topic.push(topic);
        campaign_ids.push(camp.id.clone());
        campaign_appeal.push(appeal);
    }
    let users = (0..cfg.users)
        .map(|_| {
            let main = rng.gen_range(0..TOPICS.len());
            let second = rng.gen_range(0..TOPICS.len());
            vec![(main, 0.7), (second, 0.3)]
        })
        .collect();
    Ok(World {
        campaign_ids,
        users,
        campaign_topic,
        campaign_appeal,
    })
}

/// One request of the day's traffic.
struct Request {
    ts_ms: i64,
    user: usize,
    topic: usize,
    placement: Placement,
    text: String,
}

fn traffic(cfg: &SimConfig, world: &World, day_start: i64, rng: &mut ChaCha8Rng) -> Vec<Request> {
    // Arrivals follow a daily curve (quiet at night, peak in the evening).
    let mut times: Vec<i64> = Vec::with_capacity(cfg.requests);
    while times.len() < cfg.requests {
        let t = rng.gen::<f64>();
        let load = 1.0 + 0.6 * (std::f64::consts::TAU * (t - 0.375)).sin();
        if rng.gen::<f64>() * 1.6 < load {
            times.push(day_start + (t * DAY_MS as f64) as i64);
        }
    }
    times.sort_unstable();
    times
        .into_iter()
        .map(|ts_ms| {
            let user = rng.gen_range(0..world.users.len());
            let interests = &world.users[user];
            let topic = if rng.gen::<f64>() < interests[0].1 {
                interests[0].0
            } else {
                interests[1].0
            };
            let placement = Placement::ALL[rng.gen_range(0..3)];
            let n = rng.gen_range(8..16);
            let text = words(rng, topic, n, 0.35);
            Request {
                ts_ms,
                user,
                topic,
                placement,
                text,
            }
        })
        .collect()
}

/// Runs one policy over the day; `progress` hears requests done.
async fn run_policy(
    name: &str,
    cfg: &SimConfig,
    dir: &Path,
    embedder: Option<Arc<dyn Embedder>>,
    decide: DecideConfig,
    progress: &(dyn Fn(&str, usize) + Sync),
) -> Result<PolicyResult> {
    let db = dir.join(format!("{}.db", name.replace([' ', ','], "-")));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let store = AdStore::open(&db.display().to_string()).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let world = build_inventory(&store, cfg, &mut rng).await?;
    let day_start = 20_000 * DAY_MS;
    let reqs = traffic(cfg, &world, day_start, &mut rng);
    let index_of: std::collections::HashMap<String, usize> = world
        .campaign_ids
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect();
    let server = AdServer::new(store, embedder.clone(), None, decide).await?;
    server.reload(day_start).await?;
    // Contexts are embedded in batches up front, as a search page's results would arrive with
    // their vectors; the decision then reads the vector.
    let vectors: Vec<Option<Vec<f32>>> = match &embedder {
        Some(e) => {
            let mut out = Vec::with_capacity(reqs.len());
            for chunk in reqs.chunks(256) {
                let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
                out.extend(e.embed(&texts)?.into_iter().map(Some));
            }
            out
        }
        None => vec![None; reqs.len()],
    };
    let mut click_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let (mut imps, mut clicks, mut on_topic) = (0u64, 0u64, 0u64);
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    for (i, (r, v)) in reqs.iter().zip(vectors).enumerate() {
        let req = DecideRequest {
            placement: r.placement,
            context: AdContext {
                text: r.text.clone(),
                vector: v,
                post_ids: vec![],
            },
            user_id: format!("u{}", r.user),
            language: Some("en".into()),
            slots: cfg.slots,
            exclude_advertisers: vec![],
        };
        let d = server.decide_at(&req, r.ts_ms, &mut click_rng)?;
        for ad in &d.ads {
            let facts = server.impression_facts(&ad.impression_id)?;
            let predicted = if server.config.random_pctr {
                ad.pctr
            } else {
                server.predict(&facts.features)?
            };
            server
                .record_at(
                    &EventInput {
                        kind: EventKind::Impression,
                        impression_id: ad.impression_id.clone(),
                        idempotency_key: format!("imp-{i}-{}", ad.position),
                    },
                    r.ts_ms,
                )
                .await?;
            imps += 1;
            let ci = index_of.get(&ad.campaign_id).copied().unwrap_or(0);
            if world.campaign_topic[ci] == r.topic {
                on_topic += 1;
            }
            let clicked =
                click_rng.gen::<f64>() < true_ctr(&world, ci, r.user, r.topic, ad.position);
            preds.push(predicted);
            labels.push(clicked);
            if clicked {
                clicks += 1;
                server
                    .record_at(
                        &EventInput {
                            kind: EventKind::Click,
                            impression_id: ad.impression_id.clone(),
                            idempotency_key: format!("clk-{i}-{}", ad.position),
                        },
                        r.ts_ms + 5_000,
                    )
                    .await?;
            }
        }
        if i % 1000 == 999 {
            progress(name, i + 1);
        }
    }
    progress(name, reqs.len());
    let day = day_of(day_start);
    let reports = server
        .store()
        .reports(&Scope::Operator, None, day, day)
        .await?;
    let (mut delivered, mut share_sum, mut max_share, mut gaps) = (0usize, 0.0, 0.0f64, Vec::new());
    let (mut revenue, mut unbilled) = (0, 0);
    let (mut curve, mut curved) = (vec![0.0; 24], 0usize);
    for rep in &reports {
        if rep.spend_micros * 2 >= rep.daily_budget_micros {
            let mut cum = 0;
            for (h, s) in rep.spend_by_hour.iter().enumerate() {
                cum += s;
                curve[h] += cum as f64 / rep.spend_micros as f64;
            }
            curved += 1;
        }
        let share = rep.spend_micros as f64 / rep.daily_budget_micros as f64;
        revenue += rep.spend_micros;
        unbilled += rep.unbilled_micros;
        share_sum += share;
        max_share = max_share.max(share);
        if share >= 0.95 {
            delivered += 1;
            let mut cum = 0;
            let gap = rep
                .spend_by_hour
                .iter()
                .enumerate()
                .map(|(h, s)| {
                    cum += s;
                    (cum as f64 / rep.spend_micros.max(1) as f64 - (h + 1) as f64 / 24.0).abs()
                })
                .fold(0.0, f64::max);
            gaps.push(gap);
        }
    }
    let predicted_clicks: f64 = preds.iter().sum();
    server.store().close().await;
    Ok(PolicyResult {
        policy: name.to_string(),
        requests: reqs.len(),
        impressions: imps,
        clicks,
        ctr: clicks as f64 / imps.max(1) as f64,
        revenue_micros: revenue,
        unbilled_micros: unbilled,
        pctr_auc: auc(&preds, &labels),
        calibration: predicted_clicks / (clicks.max(1) as f64),
        on_topic_share: on_topic as f64 / imps.max(1) as f64,
        budgets_delivered: delivered,
        mean_delivery: share_sum / reports.len().max(1) as f64,
        pacing_gap: if gaps.is_empty() {
            0.0
        } else {
            gaps.iter().sum::<f64>() / gaps.len() as f64
        },
        max_spend_share: max_share,
        campaigns: reports.len(),
        cumulative_spend_share: if curved == 0 {
            vec![]
        } else {
            curve.iter().map(|c| c / curved as f64).collect()
        },
    })
}

/// Runs every policy (starling: keyword + semantic with learned pCTR; keyword-only; random pCTR;
/// optionally starling unpaced) on fresh databases under `dir`.
pub async fn simulate(
    cfg: &SimConfig,
    dir: &Path,
    embedder: Arc<dyn Embedder>,
    progress: &(dyn Fn(&str, usize) + Sync),
) -> Result<Vec<PolicyResult>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let base = DecideConfig {
        max_slots: cfg.slots.max(1),
        ..DecideConfig::default()
    };
    let mut out = vec![
        run_policy(
            "starling",
            cfg,
            dir,
            Some(embedder.clone()),
            base.clone(),
            progress,
        )
        .await?,
        run_policy(
            "keyword-only",
            cfg,
            dir,
            None,
            DecideConfig {
                semantic: false,
                ..base.clone()
            },
            progress,
        )
        .await?,
        run_policy(
            "random pCTR",
            cfg,
            dir,
            Some(embedder.clone()),
            DecideConfig {
                random_pctr: true,
                ..base.clone()
            },
            progress,
        )
        .await?,
    ];
    if cfg.compare_pacing {
        out.push(
            run_policy(
                "starling, unpaced",
                cfg,
                dir,
                Some(embedder),
                DecideConfig {
                    pace: false,
                    ..base
                },
                progress,
            )
            .await?,
        );
    }
    Ok(out)
}

/// The results as a Markdown table.
pub fn table(results: &[PolicyResult]) -> String {
    let mut s = String::from(
        "| policy | impressions | clicks | CTR | revenue (USD) | unbilled (USD) | pCTR AUC | pred/actual clicks | on-topic ads | budgets delivered | mean spend/budget | pacing gap | max spend/budget |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2}% | {:.2} | {:.2} | {:.3} | {:.2} | {:.0}% | {}/{} | {:.2} | {:.3} | {:.4} |\n",
            r.policy,
            r.impressions,
            r.clicks,
            100.0 * r.ctr,
            r.revenue_micros as f64 / 1e6,
            r.unbilled_micros as f64 / 1e6,
            r.pctr_auc,
            r.calibration,
            100.0 * r.on_topic_share,
            r.budgets_delivered,
            r.campaigns,
            r.mean_delivery,
            r.pacing_gap,
            r.max_spend_share,
        ));
    }
    s
}

/// Draws each policy's mean cumulative spend share by hour against the even line into `path`
/// (PNG, written to a temp file and renamed).
pub fn pacing_png(results: &[PolicyResult], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
    let tmp = starling_artifacts::temp_path_keeping_extension(path);
    let fail =
        |e: &dyn std::fmt::Display| crate::Error::io(path, std::io::Error::other(e.to_string()));
    {
        let root = BitMapBackend::new(&tmp, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Pacing: share of the day's spend charged by each hour",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..24.0, 0.0..1.02)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("UTC hour of the simulated day")
            .y_desc("cumulative spend / day's spend (campaigns that spent half their budget)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (24.0, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| fail(&e))?
            .label("even")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK));
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN];
        for (i, r) in results.iter().enumerate() {
            let color = colors[i % colors.len()];
            let points = std::iter::once((0.0, 0.0)).chain(
                r.cumulative_spend_share
                    .iter()
                    .enumerate()
                    .map(|(h, v)| ((h + 1) as f64, *v)),
            );
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(r.policy.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    starling_artifacts::commit(&tmp, path).map_err(|e| crate::Error::io(&e.path, e.source))
}
