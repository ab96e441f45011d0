//! The ad store: inventory, event log and spend in SQLite (embedded, the default) or PostgreSQL,
//! through one code path (sqlx's `Any` driver, portable SQL, bound parameters only).
//!
//! Here: the store, its types, advertisers and row parsing; [`inventory`]: campaigns, ad groups
//! and creatives (one generic read path, [`InventoryItem`] for the CLI and HTTP); [`events`]: the
//! serving side (inventory snapshot, charged events, spend, reports).

use crate::error::{Error, Result};
use crate::types::*;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};
use std::borrow::Cow;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Who is asking: the operator sees everything, an advertiser only its own items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The platform (CLI, server API keys).
    Operator,
    /// One advertiser, by id.
    Advertiser(String),
}

impl Scope {
    fn owner(&self) -> Option<&str> {
        match self {
            Scope::Operator => None,
            Scope::Advertiser(id) => Some(id),
        }
    }
}

/// The schema, in order; the same SQL on both databases.
fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(vec![Migration::new(
            1,
            Cow::Borrowed("inventory"),
            MigrationType::Simple,
            Cow::Borrowed(include_str!("../../migrations/0001_inventory.sql")),
            false,
        )]),
        ..Migrator::DEFAULT
    }
}

/// How an event ended in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Counted; `cost_micros` charged (0 for events that are not charged).
    Counted {
        /// Charged.
        cost_micros: Micros,
    },
    /// Counted, but the budget was spent: delivered without charge.
    Unbilled {
        /// What it would have cost.
        unbilled_micros: Micros,
    },
    /// A retry of an event already counted (same idempotency key, or the same impression's event).
    Duplicate,
}

/// An impression or click to record (facts from the sealed impression id).
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Client-chosen key: a retry with the same key is counted once.
    pub idempotency_key: String,
    /// `impression` or `click`.
    pub kind: EventKind,
    /// The decision's impression id.
    pub impression_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Campaign charged.
    pub campaign_id: String,
    /// Ad group.
    pub group_id: String,
    /// Creative shown.
    pub creative_id: String,
    /// Viewer.
    pub user_id: String,
    /// Placement.
    pub placement: Placement,
    /// Slot, 0-based.
    pub position: i64,
    /// Event time (its UTC day is the budget's day).
    pub ts_ms: i64,
    /// What the event costs (0 when this kind is not charged).
    pub cost_micros: Micros,
    /// What the pCTR model saw, as JSON (replayed after a restart).
    pub features: String,
}

/// A logged event, as replayed into a restarted server.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Impression or click.
    pub kind: EventKind,
    /// Viewer.
    pub user_id: String,
    /// Campaign.
    pub campaign_id: String,
    /// Time.
    pub ts_ms: i64,
    /// The pCTR model's features, as JSON.
    pub features: String,
}

/// Event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The ad was shown.
    Impression,
    /// The ad was clicked.
    Click,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
        }
    }
}

/// A campaign's delivery over a span of days.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CampaignReport {
    /// Campaign.
    pub campaign_id: String,
    /// Name.
    pub name: String,
    /// True when the campaign is deleted (its delivery is still reported).
    pub deleted: bool,
    /// Daily budget.
    pub daily_budget_micros: Micros,
    /// Impressions counted.
    pub impressions: i64,
    /// Clicks counted.
    pub clicks: i64,
    /// Clicks per impression.
    pub ctr: f64,
    /// Charged.
    pub spend_micros: Micros,
    /// Spend per click (0 without clicks).
    pub average_cpc_micros: Micros,
    /// Delivered after the budget was spent, not charged.
    pub unbilled_micros: Micros,
    /// Charged per UTC hour of the day (24 values, summed over the days).
    pub spend_by_hour: Vec<Micros>,
}

/// The inventory and event log.
#[derive(Debug, Clone)]
pub struct AdStore {
    pool: AnyPool,
    backend: Backend,
}

/// SHA-256 hex of an API key: what the store keeps.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn json_list<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list<T: serde::de::DeserializeOwned>(field: &str, s: &str) -> Result<Vec<T>> {
    serde_json::from_str(s).map_err(|e| Error::invalid(field, format!("stored list: {e}")))
}

/// Little-endian f32 bytes of a vector.
pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of little-endian f32 bytes.
pub fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn campaign_row(r: &AnyRow) -> Result<Campaign> {
    Ok(Campaign {
        id: r.try_get("id")?,
        advertiser_id: r.try_get("advertiser_id")?,
        name: r.try_get("name")?,
        status: Status::parse(&r.try_get::<String, _>("status")?)?,
        bid_type: BidType::parse(&r.try_get::<String, _>("bid_type")?)?,
        daily_budget_micros: r.try_get("daily_budget_micros")?,
        frequency_cap: r.try_get("frequency_cap")?,
        frequency_window_s: r.try_get("frequency_window_s")?,
        start_ms: r.try_get("start_ms")?,
        end_ms: r.try_get("end_ms")?,
        excluded_terms: parse_list("excluded_terms", &r.try_get::<String, _>("excluded_terms")?)?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn group_row(r: &AnyRow) -> Result<AdGroup> {
    Ok(AdGroup {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        advertiser_id: r.try_get("advertiser_id")?,
        name: r.try_get("name")?,
        status: Status::parse(&r.try_get::<String, _>("status")?)?,
        bid_micros: r.try_get("bid_micros")?,
        keywords: parse_list("keywords", &r.try_get::<String, _>("keywords")?)?,
        description: r.try_get("description")?,
        languages: parse_list("languages", &r.try_get::<String, _>("languages")?)?,
        placements: parse_list("placements", &r.try_get::<String, _>("placements")?)?,
        hour_start: r.try_get("hour_start")?,
        hour_end: r.try_get("hour_end")?,
        min_similarity: r.try_get("min_similarity")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn creative_row(r: &AnyRow) -> Result<Creative> {
    Ok(Creative {
        id: r.try_get("id")?,
        group_id: r.try_get("group_id")?,
        advertiser_id: r.try_get("advertiser_id")?,
        status: Status::parse(&r.try_get::<String, _>("status")?)?,
        text: r.try_get("text")?,
        url: r.try_get("url")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn stored_vector(r: &AnyRow) -> Result<StoredVector> {
    let id: Option<String> = r.try_get("embedder_id")?;
    let v: Option<Vec<u8>> = r.try_get("vector")?;
    Ok(id.zip(v).map(|(id, v)| (id, bytes_vector(&v))))
}

/// A stored vector and the embedder that made it.
pub type StoredVector = Option<(String, Vec<f32>)>;

/// Everything the decision path needs, read in one go.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Live and paused campaigns (deleted ones are left out).
    pub campaigns: Vec<Campaign>,
    /// Their groups, with the stored targeting vector and the embedder that made it.
    pub groups: Vec<(AdGroup, StoredVector)>,
    /// Their creatives, with stored vectors.
    pub creatives: Vec<(Creative, StoredVector)>,
    /// Charged spend per campaign on the day asked for.
    pub spend: Vec<(String, Micros)>,
}

impl AdStore {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    /// `url` is `postgres://...`, `sqlite://PATH` or a plain file path (SQLite).
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), Backend::Postgres)
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            if path.is_empty() {
                return Err(Error::invalid("database", "empty SQLite path"));
            }
            let path = path.split('?').next().unwrap_or(path);
            (format!("sqlite://{path}?mode=rwc"), Backend::Sqlite)
        };
        let pool = match backend {
            // SQLite has one writer: one connection serializes charges without lock retries.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .connect(&url)
                    .await?
            }
        };
        migrator().run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The database in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The secret `name` (64 random hex digits), created on first use; every server sharing the
    /// database reads the same one.
    pub async fn secret(&self, name: &str) -> Result<String> {
        let fresh = {
            use rand::Rng;
            hex::encode(rand::thread_rng().gen::<[u8; 32]>())
        };
        sqlx::query("INSERT INTO ad_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM ad_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    // ----- advertisers -----

    /// Creates an advertiser; returns it with its API key (shown once, stored as a digest).
    pub async fn create_advertiser(&self, name: &str) -> Result<(Advertiser, String)> {
        check_name("name", name)?;
        let key = {
            use rand::Rng;
            let bytes: [u8; 24] = rand::thread_rng().gen();
            format!("sk-adv-{}", hex::encode(bytes))
        };
        let a = Advertiser {
            id: new_id("adv"),
            name: name.to_string(),
            status: Status::Active,
            created_ms: now_ms(),
        };
        sqlx::query("INSERT INTO advertisers (id, name, key_sha256, status, created_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(&a.id)
            .bind(&a.name)
            .bind(key_digest(&key))
            .bind(a.status.as_str())
            .bind(a.created_ms)
            .execute(&self.pool)
            .await?;
        Ok((a, key))
    }

    /// The active advertiser holding `key`.
    pub async fn advertiser_by_key(&self, key: &str) -> Result<Option<Advertiser>> {
        let row = sqlx::query("SELECT id, name, status, created_ms FROM advertisers WHERE key_sha256 = $1 AND status = 'active'")
            .bind(key_digest(key))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| advertiser_row(&r)).transpose()
    }

    /// Advertisers visible to `scope`.
    pub async fn advertisers(&self, scope: &Scope) -> Result<Vec<Advertiser>> {
        let rows = sqlx::query("SELECT id, name, status, created_ms FROM advertisers WHERE ($1 = '' OR id = $1) ORDER BY created_ms, id")
            .bind(scope.owner().unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(advertiser_row).collect()
    }
}

fn advertiser_row(r: &AnyRow) -> Result<Advertiser> {
    Ok(Advertiser {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        status: Status::parse(&r.try_get::<String, _>("status")?)?,
        created_ms: r.try_get("created_ms")?,
    })
}

mod events;
mod inventory;

pub use inventory::InventoryItem;
