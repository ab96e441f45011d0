//! `starling ads`: manage the ad inventory, decide, report, simulate a day, train brand safety.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use starling_ads::simulate::{self, SimConfig};
use starling_ads::*;
use starling_embed::{Embedder, HashingEmbedder};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where the ad store lives unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "out/ads.db";

/// Options every `ads` command takes.
#[derive(Args, Clone)]
pub struct DbArg {
    /// Database: a SQLite file path (created if missing) or postgres://user:pass@host/db.
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    pub db: String,
}

/// `starling ads ...`.
#[derive(Subcommand)]
pub enum AdsCommand {
    /// Advertisers and their API keys.
    Advertiser {
        #[command(subcommand)]
        which: AdvertiserCmd,
    },
    /// Campaigns: bid type, daily budget, frequency cap, flight, exclusions.
    Campaign {
        #[command(subcommand)]
        which: ItemCmd<CampaignFlags>,
    },
    /// Ad groups: bid and targeting (keywords, description, languages, placements, hours).
    Group {
        #[command(subcommand)]
        which: ItemCmd<GroupFlags>,
    },
    /// Creatives: the promoted posts.
    Creative {
        #[command(subcommand)]
        which: ItemCmd<CreativeFlags>,
    },
    /// Delivery per campaign: impressions, clicks, CTR, spend, average CPC, unbilled, spend by hour.
    Report {
        /// One campaign (all otherwise).
        #[arg(long)]
        campaign: Option<String>,
        /// First UTC day (YYYY-MM-DD; default today).
        #[arg(long)]
        from: Option<String>,
        /// Last UTC day (default: the first).
        #[arg(long)]
        to: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decide the ads for one context (prints the decision as JSON).
    Decide(DecideArgs),
    /// A day of synthetic traffic through the real decision path against a hidden click model.
    Simulate(SimulateArgs),
    /// Train the brand-safety classifier on TweetEval hate + offensive; report macro-F1 against TF-IDF + LR.
    TrainSafety(crate::safety_cmd::TrainSafetyArgs),
}

/// Advertiser commands.
#[derive(Subcommand)]
pub enum AdvertiserCmd {
    /// Create one; prints its id and API key (shown once).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// List them.
    List,
}

/// Commands shared by campaigns, groups and creatives.
#[derive(Subcommand)]
pub enum ItemCmd<F: Args> {
    /// Create one.
    Create(F),
    /// List them (of a parent with --parent).
    List {
        /// Campaign of the groups, group of the creatives.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Show one.
    Get {
        /// Id.
        id: String,
    },
    /// Change fields.
    Update {
        /// Id.
        id: String,
        /// Fields to change.
        #[command(flatten)]
        flags: F,
    },
    /// Stop serving (kept).
    Pause {
        /// Id.
        id: String,
    },
    /// Serve again.
    Resume {
        /// Id.
        id: String,
    },
    /// Delete (kept for reports).
    Delete {
        /// Id.
        id: String,
    },
}

/// Campaign fields.
#[derive(Args, Clone, Default)]
pub struct CampaignFlags {
    /// Owner (create).
    #[arg(long)]
    advertiser: Option<String>,
    /// Name.
    #[arg(long)]
    name: Option<String>,
    /// max_cpc, cpm or target_cpc.
    #[arg(long)]
    bid_type: Option<String>,
    /// Daily budget in USD (e.g. 50 or 12.75).
    #[arg(long)]
    daily_budget: Option<String>,
    /// Impressions per user per window (0: none).
    #[arg(long)]
    frequency_cap: Option<i64>,
    /// Frequency window, seconds.
    #[arg(long)]
    frequency_window_s: Option<i64>,
    /// Never beside contexts with these terms (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Option<Vec<String>>,
}

/// Ad group fields.
#[derive(Args, Clone, Default)]
pub struct GroupFlags {
    /// Campaign (create).
    #[arg(long)]
    campaign: Option<String>,
    /// Name.
    #[arg(long)]
    name: Option<String>,
    /// Bid in USD: max CPC, CPM or target CPC, as the campaign's bid type says.
    #[arg(long)]
    bid: Option<String>,
    /// Keywords and hashtags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    keywords: Option<Vec<String>>,
    /// Targeting description, matched semantically.
    #[arg(long)]
    description: Option<String>,
    /// Languages (comma-separated ISO codes).
    #[arg(long, value_delimiter = ',')]
    languages: Option<Vec<String>>,
    /// Placements: search, timeline, conversation (comma-separated).
    #[arg(long, value_delimiter = ',')]
    placements: Option<Vec<String>>,
    /// UTC hours served, START-END (END exclusive, e.g. 8-22).
    #[arg(long)]
    hours: Option<String>,
    /// Least context similarity for semantic targeting.
    #[arg(long)]
    min_similarity: Option<f64>,
}

/// Creative fields.
#[derive(Args, Clone, Default)]
pub struct CreativeFlags {
    /// Ad group (create).
    #[arg(long)]
    group: Option<String>,
    /// The promoted post's text.
    #[arg(long)]
    text: Option<String>,
    /// Landing page.
    #[arg(long)]
    url: Option<String>,
}

/// `starling ads decide`.
#[derive(Args)]
pub struct DecideArgs {
    /// search, timeline or conversation.
    #[arg(long, default_value = "search")]
    placement: String,
    /// The query or the posts being viewed.
    #[arg(long)]
    context: String,
    /// Viewer.
    #[arg(long, default_value = "cli-user")]
    user: String,
    /// Viewer's language.
    #[arg(long)]
    language: Option<String>,
    /// Slots.
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// Model for semantic targeting (run or exported directory); keyword-only without it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Brand-safety classifier (from `ads train-safety`).
    #[arg(long)]
    safety: Option<PathBuf>,
}

/// `starling ads simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// Model whose embeddings target semantically; without it, hashed word vectors stand in.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Requests over the day.
    #[arg(long, default_value_t = 60_000)]
    requests: usize,
    /// Campaigns.
    #[arg(long, default_value_t = 40)]
    campaigns: usize,
    /// Slots per request.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also run starling without pacing.
    #[arg(long)]
    compare_pacing: bool,
    /// Work directory (one SQLite database per policy) and results.json.
    #[arg(long, default_value = "out/ads-sim")]
    out: PathBuf,
}

/// An exact decimal USD amount in micros ("12.5" → 12,500,000).
pub fn parse_usd(field: &str, s: &str) -> Result<Micros> {
    let s = s.trim().trim_start_matches('$');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 6
        || whole.len() > 12
    {
        bail!("--{field} {s:?}: a non-negative USD amount with at most 6 decimals expected");
    }
    let w: i64 = if whole.is_empty() { 0 } else { whole.parse()? };
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse()?
    };
    Ok(w * 1_000_000 + f)
}

fn usd(m: Micros) -> String {
    format!("{:.2}", m as f64 / 1e6)
}

fn campaign_spec(f: &CampaignFlags) -> Result<CampaignSpec> {
    Ok(CampaignSpec {
        advertiser_id: f.advertiser.clone(),
        name: f.name.clone(),
        bid_type: f.bid_type.as_deref().map(BidType::parse).transpose()?,
        daily_budget_micros: f
            .daily_budget
            .as_deref()
            .map(|s| parse_usd("daily-budget", s))
            .transpose()?,
        frequency_cap: f.frequency_cap,
        frequency_window_s: f.frequency_window_s,
        excluded_terms: f.exclude.clone(),
        ..Default::default()
    })
}

fn group_spec(f: &GroupFlags) -> Result<GroupSpec> {
    let (hour_start, hour_end) = match &f.hours {
        Some(h) => {
            let (a, b) = h
                .split_once('-')
                .with_context(|| format!("--hours {h:?}: START-END expected, e.g. 8-22"))?;
            (
                Some(a.trim().parse().with_context(|| format!("--hours {h:?}"))?),
                Some(b.trim().parse().with_context(|| format!("--hours {h:?}"))?),
            )
        }
        None => (None, None),
    };
    Ok(GroupSpec {
        campaign_id: f.campaign.clone(),
        name: f.name.clone(),
        bid_micros: f.bid.as_deref().map(|s| parse_usd("bid", s)).transpose()?,
        keywords: f.keywords.clone(),
        description: f.description.clone(),
        languages: f.languages.clone(),
        placements: f
            .placements
            .as_ref()
            .map(|p| {
                p.iter()
                    .map(|s| Placement::parse(s))
                    .collect::<starling_ads::Result<Vec<_>>>()
            })
            .transpose()?,
        hour_start,
        hour_end,
        min_similarity: f.min_similarity,
        ..Default::default()
    })
}

fn creative_spec(f: &CreativeFlags) -> CreativeSpec {
    CreativeSpec {
        group_id: f.group.clone(),
        text: f.text.clone(),
        url: f.url.clone(),
        ..Default::default()
    }
}

/// Runs one of the shared item commands on an item of kind `T`, printing JSON (or a line per
/// item for `list`).
async fn item_cmd<T: InventoryItem, F: Args>(
    store: &AdStore,
    cmd: &ItemCmd<F>,
    spec: impl Fn(&F) -> Result<T::Spec>,
    line: impl Fn(&T) -> String,
) -> Result<()> {
    let op = Scope::Operator;
    let item = match cmd {
        ItemCmd::Create(f) => T::create(store, &op, &spec(f)?).await?,
        ItemCmd::List { parent } => {
            for item in T::list(store, &op, parent.as_deref()).await? {
                println!("{}", line(&item));
            }
            return Ok(());
        }
        ItemCmd::Get { id } => T::get(store, &op, id).await?,
        ItemCmd::Update { id, flags } => T::update(store, &op, id, &spec(flags)?).await?,
        ItemCmd::Pause { id } => T::update(store, &op, id, &T::status_spec(Status::Paused)).await?,
        ItemCmd::Resume { id } => {
            T::update(store, &op, id, &T::status_spec(Status::Active)).await?
        }
        ItemCmd::Delete { id } => {
            T::update(store, &op, id, &T::status_spec(Status::Deleted)).await?
        }
    };
    print_json(&item)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn embedder_for(model: Option<&Path>) -> Result<Option<Arc<dyn Embedder>>> {
    match model {
        Some(m) => Ok(Some(Arc::new(crate::search_cmd::load_embedder(
            m,
            crate::search_cmd::DEFAULT_POOLING,
        )?))),
        None => Ok(None),
    }
}

/// Runs `starling ads ...`.
pub fn run(db: &DbArg, cmd: &AdsCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(db, cmd))
}

async fn open(db: &DbArg) -> Result<AdStore> {
    open_store(&db.db).await
}

/// Opens the ad store at `db` (a SQLite path, its folder created, or a postgres:// URL).
pub async fn open_store(db: &str) -> Result<AdStore> {
    if !db.contains("://") {
        if let Some(dir) = Path::new(db).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    AdStore::open(db)
        .await
        .with_context(|| format!("opening the ad store {db}"))
}

async fn run_async(db: &DbArg, cmd: &AdsCommand) -> Result<()> {
    let op = Scope::Operator;
    match cmd {
        AdsCommand::Advertiser { which } => {
            let store = open(db).await?;
            match which {
                AdvertiserCmd::Create { name } => {
                    let (a, key) = store.create_advertiser(name).await?;
                    println!(
                        "advertiser {} ({})\napi key (shown once): {key}",
                        a.id, a.name
                    );
                }
                AdvertiserCmd::List => {
                    for a in store.advertisers(&op).await? {
                        println!("{}\t{}\t{}", a.id, a.status.as_str(), a.name);
                    }
                }
            }
        }
        AdsCommand::Campaign { which } => {
            item_cmd::<Campaign, _>(&open(db).await?, which, campaign_spec, |c| {
                format!(
                    "{}\t{}\t{}\t{} USD/day\t{}",
                    c.id,
                    c.status.as_str(),
                    c.bid_type.as_str(),
                    usd(c.daily_budget_micros),
                    c.name
                )
            })
            .await?
        }
        AdsCommand::Group { which } => {
            item_cmd::<AdGroup, _>(&open(db).await?, which, group_spec, |g| {
                format!(
                    "{}\t{}\t{}\tbid {} USD\t{}\t{}",
                    g.id,
                    g.campaign_id,
                    g.status.as_str(),
                    usd(g.bid_micros),
                    g.keywords.join(","),
                    g.name
                )
            })
            .await?
        }
        AdsCommand::Creative { which } => {
            item_cmd::<Creative, _>(
                &open(db).await?,
                which,
                |f| Ok(creative_spec(f)),
                |c| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        c.id,
                        c.group_id,
                        c.status.as_str(),
                        c.text
                    )
                },
            )
            .await?
        }
        AdsCommand::Report {
            campaign,
            from,
            to,
            json,
        } => {
            let store = open(db).await?;
            let from = match from {
                Some(s) => day_from_date("--from", s)?,
                None => day_of(now_ms()),
            };
            let to = match to {
                Some(s) => day_from_date("--to", s)?,
                None => from,
            };
            let reports = store.reports(&op, campaign.as_deref(), from, to).await?;
            if *json {
                return print_json(&reports);
            }
            println!("| campaign | name | impressions | clicks | CTR | spend (USD) | avg CPC | unbilled | budget/day |\n|---|---|---|---|---|---|---|---|---|");
            for r in &reports {
                println!(
                    "| {} | {} | {} | {} | {:.2}% | {} | {} | {} | {} |",
                    r.campaign_id,
                    r.name,
                    r.impressions,
                    r.clicks,
                    100.0 * r.ctr,
                    usd(r.spend_micros),
                    usd(r.average_cpc_micros),
                    usd(r.unbilled_micros),
                    usd(r.daily_budget_micros)
                );
            }
        }
        AdsCommand::Decide(a) => {
            let store = open(db).await?;
            let embedder = embedder_for(a.model.as_deref())?;
            let safety = a.safety.as_deref().map(BrandSafety::load).transpose()?;
            let server = AdServer::new(store, embedder, safety, DecideConfig::default()).await?;
            let d = server.decide(&DecideRequest {
                placement: Placement::parse(&a.placement)?,
                context: AdContext {
                    text: a.context.clone(),
                    vector: None,
                    post_ids: vec![],
                },
                user_id: a.user.clone(),
                language: a.language.clone(),
                slots: a.slots,
                exclude_advertisers: vec![],
            })?;
            print_json(&d)?;
        }
        AdsCommand::Simulate(a) => simulate_cmd(a).await?,
        AdsCommand::TrainSafety(a) => crate::safety_cmd::train_safety(a)?,
    }
    Ok(())
}

async fn simulate_cmd(a: &SimulateArgs) -> Result<()> {
    let started = Instant::now();
    let embedder: Arc<dyn Embedder> = match embedder_for(a.model.as_deref())? {
        Some(e) => e,
        None => Arc::new(HashingEmbedder::new(256)),
    };
    let cfg = SimConfig {
        seed: a.seed,
        requests: a.requests,
        campaigns: a.campaigns,
        slots: a.slots,
        compare_pacing: a.compare_pacing,
        ..SimConfig::default()
    };
    if cfg.requests == 0 || cfg.campaigns == 0 || cfg.slots == 0 || cfg.slots > 10 {
        bail!("--requests and --campaigns must be positive, --slots 1 to 10");
    }
    let policies = if a.compare_pacing { 4 } else { 3 };
    let bar = ProgressBar::new((cfg.requests * policies) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {pos}/{len} requests ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let done = std::sync::Mutex::new((String::new(), 0usize));
    let progress = |name: &str, n: usize| {
        if let Ok(mut d) = done.lock() {
            if d.0 != name {
                d.0 = name.to_string();
                d.1 += 1;
            }
            bar.set_message(name.to_string());
            bar.set_position(((d.1 - 1) * cfg.requests + n) as u64);
        }
    };
    let results = simulate::simulate(&cfg, &a.out, embedder.clone(), &progress).await?;
    bar.finish_and_clear();
    println!(
        "ads simulate: {} requests x {} slots, {} campaigns x {} ad groups, embedder {} [SYNTHETIC]",
        cfg.requests,
        cfg.slots,
        cfg.campaigns,
        cfg.groups_per_campaign,
        embedder.id()
    );
    print!("{}", simulate::table(&results));
    if let (Some(s), Some(k)) = (results.first(), results.get(1)) {
        println!(
            "semantic targeting over keyword-only: revenue x{:.2}, clicks x{:.2}, CTR x{:.2}",
            s.revenue_micros as f64 / k.revenue_micros.max(1) as f64,
            s.clicks as f64 / k.clicks.max(1) as f64,
            s.ctr / k.ctr.max(1e-12)
        );
    }
    let worst = results
        .iter()
        .map(|r| r.max_spend_share)
        .fold(0.0, f64::max);
    println!(
        "budgets: no campaign charged past its budget (largest spend/budget {worst:.4}); unbilled delivery is reported, never charged"
    );
    if worst > 1.0 {
        bail!("a campaign was charged past its budget ({worst:.4})");
    }
    let png = a.out.join("pacing.png");
    simulate::pacing_png(&results, &png)?;
    let path = a.out.join("results.json");
    starling_artifacts::write_atomic(&path, &serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "ads simulate: done in {:.0}s → {} and {}",
        started.elapsed().as_secs_f64(),
        path.display(),
        png.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_amounts_parse_exactly() {
        assert_eq!(parse_usd("x", "12").unwrap(), 12_000_000);
        assert_eq!(parse_usd("x", "0.000001").unwrap(), 1);
        assert_eq!(parse_usd("x", "$1.5").unwrap(), 1_500_000);
        assert_eq!(parse_usd("x", ".25").unwrap(), 250_000);
        for bad in ["-1", "1.0000001", "abc", "", "1e3", "1.2.3"] {
            assert!(parse_usd("x", bad).is_err(), "{bad}");
        }
    }
}
