//! The ad store: inventory, event log and spend in SQLite (embedded, the default) or PostgreSQL,
//! through one code path (sqlx's `Any` driver, portable SQL, bound parameters only).

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
            Cow::Borrowed(include_str!("../migrations/0001_inventory.sql")),
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

    // ----- campaigns -----

    /// Creates a campaign owned by `scope`'s advertiser (operators name it in the spec).
    pub async fn create_campaign(&self, scope: &Scope, spec: &CampaignSpec) -> Result<Campaign> {
        let owner = match (scope.owner(), &spec.advertiser_id) {
            (Some(own), Some(asked)) if own != asked => {
                return Err(Error::not_found("advertiser", asked))
            }
            (Some(own), _) => own.to_string(),
            (None, Some(asked)) => asked.clone(),
            (None, None) => return Err(Error::invalid("advertiser_id", "required")),
        };
        if !self
            .advertisers(&Scope::Advertiser(owner.clone()))
            .await?
            .iter()
            .any(|a| a.id == owner)
        {
            return Err(Error::not_found("advertiser", &owner));
        }
        let now = now_ms();
        let mut c = Campaign {
            id: new_id("cmp"),
            advertiser_id: owner,
            name: spec.name.clone().unwrap_or_default(),
            status: Status::Active,
            bid_type: spec.bid_type.unwrap_or(BidType::MaxCpc),
            daily_budget_micros: spec
                .daily_budget_micros
                .ok_or_else(|| Error::invalid("daily_budget_micros", "required"))?,
            frequency_cap: 0,
            frequency_window_s: 86_400,
            start_ms: None,
            end_ms: None,
            excluded_terms: vec![],
            created_ms: now,
            updated_ms: now,
        };
        c.apply(spec)?;
        sqlx::query(
            "INSERT INTO campaigns (id, advertiser_id, name, status, bid_type, daily_budget_micros, frequency_cap, \
             frequency_window_s, start_ms, end_ms, excluded_terms, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&c.id)
        .bind(&c.advertiser_id)
        .bind(&c.name)
        .bind(c.status.as_str())
        .bind(c.bid_type.as_str())
        .bind(c.daily_budget_micros)
        .bind(c.frequency_cap)
        .bind(c.frequency_window_s)
        .bind(c.start_ms)
        .bind(c.end_ms)
        .bind(json_list(&c.excluded_terms))
        .bind(c.created_ms)
        .bind(c.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    /// The campaign `id`, if `scope` may see it (deleted ones included).
    pub async fn campaign(&self, scope: &Scope, id: &str) -> Result<Campaign> {
        let row = sqlx::query(
            "SELECT * FROM campaigns WHERE id = $1 AND ($2 = '' OR advertiser_id = $2)",
        )
        .bind(id)
        .bind(scope.owner().unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| campaign_row(&r))
            .transpose()?
            .ok_or_else(|| Error::not_found("campaign", id))
    }

    /// Campaigns `scope` may see, deleted ones left out.
    pub async fn campaigns(&self, scope: &Scope) -> Result<Vec<Campaign>> {
        let rows = sqlx::query("SELECT * FROM campaigns WHERE ($1 = '' OR advertiser_id = $1) AND status <> 'deleted' ORDER BY created_ms, id")
            .bind(scope.owner().unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(campaign_row).collect()
    }

    /// Changes a campaign (pause: status paused; delete: status deleted).
    pub async fn update_campaign(
        &self,
        scope: &Scope,
        id: &str,
        spec: &CampaignSpec,
    ) -> Result<Campaign> {
        let mut c = self.campaign(scope, id).await?;
        if c.status == Status::Deleted {
            return if only_deletes(spec, Campaign::status_spec(Status::Deleted)) {
                Ok(c)
            } else {
                Err(Error::deleted("campaign", id))
            };
        }
        if spec
            .advertiser_id
            .as_ref()
            .is_some_and(|a| *a != c.advertiser_id)
        {
            return Err(Error::invalid(
                "advertiser_id",
                "a campaign cannot change owner",
            ));
        }
        c.apply(spec)?;
        c.updated_ms = now_ms();
        sqlx::query(
            "UPDATE campaigns SET name = $1, status = $2, bid_type = $3, daily_budget_micros = $4, frequency_cap = $5, \
             frequency_window_s = $6, start_ms = $7, end_ms = $8, excluded_terms = $9, updated_ms = $10 WHERE id = $11",
        )
        .bind(&c.name)
        .bind(c.status.as_str())
        .bind(c.bid_type.as_str())
        .bind(c.daily_budget_micros)
        .bind(c.frequency_cap)
        .bind(c.frequency_window_s)
        .bind(c.start_ms)
        .bind(c.end_ms)
        .bind(json_list(&c.excluded_terms))
        .bind(c.updated_ms)
        .bind(&c.id)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    // ----- ad groups -----

    /// Creates an ad group in a campaign `scope` owns; `vector` is its targeting text's embedding.
    pub async fn create_group(
        &self,
        scope: &Scope,
        spec: &GroupSpec,
        vector: Option<(&str, &[f32])>,
    ) -> Result<AdGroup> {
        let cid = spec
            .campaign_id
            .as_deref()
            .ok_or_else(|| Error::invalid("campaign_id", "required"))?;
        let c = self.campaign(scope, cid).await?;
        if c.status == Status::Deleted {
            return Err(Error::deleted("campaign", cid));
        }
        let now = now_ms();
        let mut g = AdGroup {
            id: new_id("grp"),
            campaign_id: c.id,
            advertiser_id: c.advertiser_id,
            name: spec.name.clone().unwrap_or_default(),
            status: Status::Active,
            bid_micros: spec
                .bid_micros
                .ok_or_else(|| Error::invalid("bid_micros", "required"))?,
            keywords: vec![],
            description: String::new(),
            languages: vec![],
            placements: vec![],
            hour_start: 0,
            hour_end: 24,
            min_similarity: 0.35,
            created_ms: now,
            updated_ms: now,
        };
        g.apply(spec)?;
        sqlx::query(
            "INSERT INTO ad_groups (id, campaign_id, advertiser_id, name, status, bid_micros, keywords, description, \
             languages, placements, hour_start, hour_end, min_similarity, embedder_id, vector, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&g.id)
        .bind(&g.campaign_id)
        .bind(&g.advertiser_id)
        .bind(&g.name)
        .bind(g.status.as_str())
        .bind(g.bid_micros)
        .bind(json_list(&g.keywords))
        .bind(&g.description)
        .bind(json_list(&g.languages))
        .bind(json_list(&g.placements))
        .bind(g.hour_start)
        .bind(g.hour_end)
        .bind(g.min_similarity)
        .bind(vector.map(|v| v.0.to_string()))
        .bind(vector.map(|v| vector_bytes(v.1)))
        .bind(g.created_ms)
        .bind(g.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(g)
    }

    /// The ad group `id`, if `scope` may see it.
    pub async fn group(&self, scope: &Scope, id: &str) -> Result<AdGroup> {
        let row = sqlx::query(
            "SELECT * FROM ad_groups WHERE id = $1 AND ($2 = '' OR advertiser_id = $2)",
        )
        .bind(id)
        .bind(scope.owner().unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| group_row(&r))
            .transpose()?
            .ok_or_else(|| Error::not_found("ad group", id))
    }

    /// Ad groups `scope` may see (of one campaign when given), deleted ones left out.
    pub async fn groups(&self, scope: &Scope, campaign: Option<&str>) -> Result<Vec<AdGroup>> {
        let rows = sqlx::query("SELECT * FROM ad_groups WHERE ($1 = '' OR advertiser_id = $1) AND ($2 = '' OR campaign_id = $2) AND status <> 'deleted' ORDER BY created_ms, id")
            .bind(scope.owner().unwrap_or(""))
            .bind(campaign.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(group_row).collect()
    }

    /// Changes an ad group; `vector` replaces the stored targeting vector when given.
    pub async fn update_group(
        &self,
        scope: &Scope,
        id: &str,
        spec: &GroupSpec,
        vector: Option<(&str, &[f32])>,
    ) -> Result<AdGroup> {
        let mut g = self.group(scope, id).await?;
        if g.status == Status::Deleted {
            return if only_deletes(spec, AdGroup::status_spec(Status::Deleted)) {
                Ok(g)
            } else {
                Err(Error::deleted("ad group", id))
            };
        }
        if spec
            .campaign_id
            .as_ref()
            .is_some_and(|c| *c != g.campaign_id)
        {
            return Err(Error::invalid(
                "campaign_id",
                "an ad group cannot move to another campaign",
            ));
        }
        g.apply(spec)?;
        g.updated_ms = now_ms();
        sqlx::query(
            "UPDATE ad_groups SET name = $1, status = $2, bid_micros = $3, keywords = $4, description = $5, languages = $6, \
             placements = $7, hour_start = $8, hour_end = $9, min_similarity = $10, updated_ms = $11, \
             embedder_id = COALESCE($12, embedder_id), vector = COALESCE($13, vector) WHERE id = $14",
        )
        .bind(&g.name)
        .bind(g.status.as_str())
        .bind(g.bid_micros)
        .bind(json_list(&g.keywords))
        .bind(&g.description)
        .bind(json_list(&g.languages))
        .bind(json_list(&g.placements))
        .bind(g.hour_start)
        .bind(g.hour_end)
        .bind(g.min_similarity)
        .bind(g.updated_ms)
        .bind(vector.map(|v| v.0.to_string()))
        .bind(vector.map(|v| vector_bytes(v.1)))
        .bind(&g.id)
        .execute(&self.pool)
        .await?;
        Ok(g)
    }

    // ----- creatives -----

    /// Creates a creative in an ad group `scope` owns; `vector` is its text's embedding.
    pub async fn create_creative(
        &self,
        scope: &Scope,
        spec: &CreativeSpec,
        vector: Option<(&str, &[f32])>,
    ) -> Result<Creative> {
        let gid = spec
            .group_id
            .as_deref()
            .ok_or_else(|| Error::invalid("group_id", "required"))?;
        let g = self.group(scope, gid).await?;
        if g.status == Status::Deleted {
            return Err(Error::deleted("ad group", gid));
        }
        let now = now_ms();
        let mut c = Creative {
            id: new_id("cre"),
            group_id: g.id,
            advertiser_id: g.advertiser_id,
            status: Status::Active,
            text: String::new(),
            url: None,
            created_ms: now,
            updated_ms: now,
        };
        c.apply(spec)?;
        sqlx::query(
            "INSERT INTO creatives (id, group_id, advertiser_id, status, text, url, embedder_id, vector, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.group_id)
        .bind(&c.advertiser_id)
        .bind(c.status.as_str())
        .bind(&c.text)
        .bind(&c.url)
        .bind(vector.map(|v| v.0.to_string()))
        .bind(vector.map(|v| vector_bytes(v.1)))
        .bind(c.created_ms)
        .bind(c.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    /// The creative `id`, if `scope` may see it.
    pub async fn creative(&self, scope: &Scope, id: &str) -> Result<Creative> {
        let row = sqlx::query(
            "SELECT * FROM creatives WHERE id = $1 AND ($2 = '' OR advertiser_id = $2)",
        )
        .bind(id)
        .bind(scope.owner().unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| creative_row(&r))
            .transpose()?
            .ok_or_else(|| Error::not_found("creative", id))
    }

    /// Creatives `scope` may see (of one group when given), deleted ones left out.
    pub async fn creatives(&self, scope: &Scope, group: Option<&str>) -> Result<Vec<Creative>> {
        let rows = sqlx::query("SELECT * FROM creatives WHERE ($1 = '' OR advertiser_id = $1) AND ($2 = '' OR group_id = $2) AND status <> 'deleted' ORDER BY created_ms, id")
            .bind(scope.owner().unwrap_or(""))
            .bind(group.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(creative_row).collect()
    }

    /// Changes a creative; `vector` replaces the stored embedding when given.
    pub async fn update_creative(
        &self,
        scope: &Scope,
        id: &str,
        spec: &CreativeSpec,
        vector: Option<(&str, &[f32])>,
    ) -> Result<Creative> {
        let mut c = self.creative(scope, id).await?;
        if c.status == Status::Deleted {
            return if only_deletes(spec, Creative::status_spec(Status::Deleted)) {
                Ok(c)
            } else {
                Err(Error::deleted("creative", id))
            };
        }
        if spec.group_id.as_ref().is_some_and(|g| *g != c.group_id) {
            return Err(Error::invalid(
                "group_id",
                "a creative cannot move to another ad group",
            ));
        }
        c.apply(spec)?;
        c.updated_ms = now_ms();
        sqlx::query(
            "UPDATE creatives SET status = $1, text = $2, url = $3, updated_ms = $4, \
             embedder_id = COALESCE($5, embedder_id), vector = COALESCE($6, vector) WHERE id = $7",
        )
        .bind(c.status.as_str())
        .bind(&c.text)
        .bind(&c.url)
        .bind(c.updated_ms)
        .bind(vector.map(|v| v.0.to_string()))
        .bind(vector.map(|v| vector_bytes(v.1)))
        .bind(&c.id)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    // ----- serving -----

    /// Live inventory with stored vectors, and the spend of UTC day `day`.
    pub async fn inventory(&self, day: i64) -> Result<Inventory> {
        let campaigns = sqlx::query("SELECT * FROM campaigns WHERE status <> 'deleted'")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(campaign_row)
            .collect::<Result<Vec<_>>>()?;
        let groups = sqlx::query("SELECT * FROM ad_groups WHERE status <> 'deleted'")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((group_row(r)?, stored_vector(r)?)))
            .collect::<Result<Vec<_>>>()?;
        let creatives = sqlx::query("SELECT * FROM creatives WHERE status <> 'deleted'")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((creative_row(r)?, stored_vector(r)?)))
            .collect::<Result<Vec<_>>>()?;
        let spend =
            sqlx::query("SELECT campaign_id, spent_micros FROM campaign_spend WHERE day = $1")
                .bind(day)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("campaign_id")?, r.try_get("spent_micros")?)))
                .collect::<Result<Vec<_>>>()?;
        Ok(Inventory {
            campaigns,
            groups,
            creatives,
            spend,
        })
    }

    /// Stores vectors computed for groups and creatives that had none (or another embedder's).
    pub async fn store_vectors(
        &self,
        embedder_id: &str,
        groups: &[(String, Vec<f32>)],
        creatives: &[(String, Vec<f32>)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, v) in groups {
            sqlx::query("UPDATE ad_groups SET embedder_id = $1, vector = $2 WHERE id = $3")
                .bind(embedder_id)
                .bind(vector_bytes(v))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (id, v) in creatives {
            sqlx::query("UPDATE creatives SET embedder_id = $1, vector = $2 WHERE id = $3")
                .bind(embedder_id)
                .bind(vector_bytes(v))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Charged spend of a campaign on UTC day `day`.
    pub async fn spent(&self, campaign_id: &str, day: i64) -> Result<Micros> {
        let row = sqlx::query(
            "SELECT spent_micros FROM campaign_spend WHERE campaign_id = $1 AND day = $2",
        )
        .bind(campaign_id)
        .bind(day)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get("spent_micros"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Records an event once and charges its cost in the same transaction; the charge is a
    /// conditional update that never takes the day's spend past the campaign's budget.
    pub async fn record_event(&self, e: &EventRecord) -> Result<EventOutcome> {
        let day = day_of(e.ts_ms);
        let mut tx = self.pool.begin().await?;
        if e.kind == EventKind::Click {
            let shown = sqlx::query("SELECT idempotency_key FROM ad_events WHERE kind = 'impression' AND impression_id = $1")
                .bind(&e.impression_id)
                .fetch_optional(&mut *tx)
                .await?;
            if shown.is_none() {
                return Err(Error::Event(
                    "a click without its impression (record the impression first)".into(),
                ));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO ad_events (idempotency_key, kind, impression_id, advertiser_id, campaign_id, group_id, creative_id, \
             user_id, placement, position, day, ts_ms, cost_micros, unbilled_micros, features) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, $13) ON CONFLICT DO NOTHING",
        )
        .bind(&e.idempotency_key)
        .bind(e.kind.as_str())
        .bind(&e.impression_id)
        .bind(&e.advertiser_id)
        .bind(&e.campaign_id)
        .bind(&e.group_id)
        .bind(&e.creative_id)
        .bind(&e.user_id)
        .bind(e.placement.as_str())
        .bind(e.position)
        .bind(day)
        .bind(e.ts_ms)
        .bind(&e.features)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(EventOutcome::Duplicate);
        }
        let outcome = if e.cost_micros <= 0 {
            EventOutcome::Counted { cost_micros: 0 }
        } else {
            sqlx::query("INSERT INTO campaign_spend (campaign_id, day, spent_micros) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING")
                .bind(&e.campaign_id)
                .bind(day)
                .execute(&mut *tx)
                .await?;
            let charged = sqlx::query(
                "UPDATE campaign_spend SET spent_micros = spent_micros + $1 WHERE campaign_id = $2 AND day = $3 \
                 AND spent_micros + $1 <= (SELECT daily_budget_micros FROM campaigns WHERE id = $2)",
            )
            .bind(e.cost_micros)
            .bind(&e.campaign_id)
            .bind(day)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let (cost, unbilled) = if charged == 1 {
                (e.cost_micros, 0)
            } else {
                (0, e.cost_micros)
            };
            sqlx::query("UPDATE ad_events SET cost_micros = $1, unbilled_micros = $2 WHERE idempotency_key = $3")
                .bind(cost)
                .bind(unbilled)
                .bind(&e.idempotency_key)
                .execute(&mut *tx)
                .await?;
            if charged == 1 {
                EventOutcome::Counted { cost_micros: cost }
            } else {
                EventOutcome::Unbilled {
                    unbilled_micros: unbilled,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Events since `since_ms`, oldest first (an impression before its click).
    pub async fn events_since(&self, since_ms: i64) -> Result<Vec<LoggedEvent>> {
        let rows = sqlx::query(
            "SELECT kind, user_id, campaign_id, ts_ms, features FROM ad_events WHERE ts_ms >= $1 ORDER BY ts_ms, kind DESC",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(LoggedEvent {
                    kind: if kind == "click" {
                        EventKind::Click
                    } else {
                        EventKind::Impression
                    },
                    user_id: r.try_get("user_id")?,
                    campaign_id: r.try_get("campaign_id")?,
                    ts_ms: r.try_get("ts_ms")?,
                    features: r.try_get("features")?,
                })
            })
            .collect()
    }

    /// Delivery of the campaigns `scope` may see (one when `campaign` is given) over UTC days
    /// `from_day..=to_day`; deleted campaigns that delivered in those days are included,
    /// flagged `deleted`.
    pub async fn reports(
        &self,
        scope: &Scope,
        campaign: Option<&str>,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<CampaignReport>> {
        let campaigns: Vec<Campaign> = match campaign {
            Some(id) => vec![self.campaign(scope, id).await?],
            None => {
                let rows = sqlx::query(
                    "SELECT * FROM campaigns WHERE ($1 = '' OR advertiser_id = $1) ORDER BY created_ms, id",
                )
                .bind(scope.owner().unwrap_or(""))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(campaign_row).collect::<Result<Vec<_>>>()?
            }
        };
        let all = campaign.is_none();
        let mut out = Vec::with_capacity(campaigns.len());
        for c in campaigns {
            let rows = sqlx::query(
                "SELECT kind, ts_ms, cost_micros, unbilled_micros FROM ad_events WHERE campaign_id = $1 AND day >= $2 AND day <= $3",
            )
            .bind(&c.id)
            .bind(from_day)
            .bind(to_day)
            .fetch_all(&self.pool)
            .await?;
            let deleted = c.status == Status::Deleted;
            if all && deleted && rows.is_empty() {
                continue;
            }
            let mut r = CampaignReport {
                campaign_id: c.id.clone(),
                name: c.name.clone(),
                deleted,
                daily_budget_micros: c.daily_budget_micros,
                spend_by_hour: vec![0; 24],
                ..Default::default()
            };
            for row in &rows {
                let kind: String = row.try_get("kind")?;
                let ts: i64 = row.try_get("ts_ms")?;
                let cost: i64 = row.try_get("cost_micros")?;
                let unbilled: i64 = row.try_get("unbilled_micros")?;
                if kind == "impression" {
                    r.impressions += 1;
                } else {
                    r.clicks += 1;
                }
                r.spend_micros += cost;
                r.unbilled_micros += unbilled;
                let hour = ts.rem_euclid(DAY_MS) / 3_600_000;
                r.spend_by_hour[hour as usize] += cost;
            }
            r.ctr = if r.impressions > 0 {
                r.clicks as f64 / r.impressions as f64
            } else {
                0.0
            };
            r.average_cpc_micros = if r.clicks > 0 {
                r.spend_micros / r.clicks
            } else {
                0
            };
            out.push(r);
        }
        Ok(out)
    }
}

/// True when `spec` asks for nothing but deletion (deleting a deleted item again is a no-op).
fn only_deletes<S: serde::Serialize>(spec: &S, delete: S) -> bool {
    serde_json::to_value(spec).ok() == serde_json::to_value(delete).ok()
}

fn advertiser_row(r: &AnyRow) -> Result<Advertiser> {
    Ok(Advertiser {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        status: Status::parse(&r.try_get::<String, _>("status")?)?,
        created_ms: r.try_get("created_ms")?,
    })
}

/// One kind of inventory item, managed the same way everywhere (CLI, HTTP): created from a spec,
/// read, listed under a parent, changed (pause, resume and delete are status changes).
pub trait InventoryItem: Sized + serde::Serialize + Send + Sync + 'static {
    /// Fields of a new or changed item.
    type Spec: serde::de::DeserializeOwned + Default + Send + Sync + 'static;
    /// What it is called in messages.
    const KIND: &'static str;
    /// The query parameter naming its parent in listings.
    const PARENT: &'static str;
    /// Creates one (vectors, when the kind has them, are computed by the server later).
    fn create(
        store: &AdStore,
        scope: &Scope,
        spec: &Self::Spec,
    ) -> impl std::future::Future<Output = Result<Self>> + Send;
    /// Reads one `scope` may see.
    fn get(
        store: &AdStore,
        scope: &Scope,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Self>> + Send;
    /// Lists those `scope` may see, of one parent when given.
    fn list(
        store: &AdStore,
        scope: &Scope,
        parent: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Vec<Self>>> + Send;
    /// Changes one.
    fn update(
        store: &AdStore,
        scope: &Scope,
        id: &str,
        spec: &Self::Spec,
    ) -> impl std::future::Future<Output = Result<Self>> + Send;
    /// A spec that only sets the status.
    fn status_spec(status: Status) -> Self::Spec;
}

impl InventoryItem for Campaign {
    type Spec = CampaignSpec;
    const KIND: &'static str = "campaign";
    const PARENT: &'static str = "advertiser_id";
    async fn create(store: &AdStore, scope: &Scope, spec: &CampaignSpec) -> Result<Self> {
        store.create_campaign(scope, spec).await
    }
    async fn get(store: &AdStore, scope: &Scope, id: &str) -> Result<Self> {
        store.campaign(scope, id).await
    }
    async fn list(store: &AdStore, scope: &Scope, parent: Option<&str>) -> Result<Vec<Self>> {
        let all = store.campaigns(scope).await?;
        Ok(all
            .into_iter()
            .filter(|c| parent.is_none_or(|p| p == c.advertiser_id))
            .collect())
    }
    async fn update(store: &AdStore, scope: &Scope, id: &str, spec: &CampaignSpec) -> Result<Self> {
        store.update_campaign(scope, id, spec).await
    }
    fn status_spec(status: Status) -> CampaignSpec {
        CampaignSpec {
            status: Some(status),
            ..Default::default()
        }
    }
}

impl InventoryItem for AdGroup {
    type Spec = GroupSpec;
    const KIND: &'static str = "ad group";
    const PARENT: &'static str = "campaign_id";
    async fn create(store: &AdStore, scope: &Scope, spec: &GroupSpec) -> Result<Self> {
        store.create_group(scope, spec, None).await
    }
    async fn get(store: &AdStore, scope: &Scope, id: &str) -> Result<Self> {
        store.group(scope, id).await
    }
    async fn list(store: &AdStore, scope: &Scope, parent: Option<&str>) -> Result<Vec<Self>> {
        store.groups(scope, parent).await
    }
    async fn update(store: &AdStore, scope: &Scope, id: &str, spec: &GroupSpec) -> Result<Self> {
        store.update_group(scope, id, spec, None).await
    }
    fn status_spec(status: Status) -> GroupSpec {
        GroupSpec {
            status: Some(status),
            ..Default::default()
        }
    }
}

impl InventoryItem for Creative {
    type Spec = CreativeSpec;
    const KIND: &'static str = "creative";
    const PARENT: &'static str = "group_id";
    async fn create(store: &AdStore, scope: &Scope, spec: &CreativeSpec) -> Result<Self> {
        store.create_creative(scope, spec, None).await
    }
    async fn get(store: &AdStore, scope: &Scope, id: &str) -> Result<Self> {
        store.creative(scope, id).await
    }
    async fn list(store: &AdStore, scope: &Scope, parent: Option<&str>) -> Result<Vec<Self>> {
        store.creatives(scope, parent).await
    }
    async fn update(store: &AdStore, scope: &Scope, id: &str, spec: &CreativeSpec) -> Result<Self> {
        store.update_creative(scope, id, spec, None).await
    }
    fn status_spec(status: Status) -> CreativeSpec {
        CreativeSpec {
            status: Some(status),
            ..Default::default()
        }
    }
}
