//! Campaigns, ad groups and creatives: create, read, list and change, one generic read path.

use super::*;

impl AdStore {
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
        self.fetch(scope, id).await
    }

    /// Campaigns `scope` may see, deleted ones left out.
    pub async fn campaigns(&self, scope: &Scope) -> Result<Vec<Campaign>> {
        self.fetch_live(scope, None).await
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
            return change_to_deleted(c, spec, id);
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
        let c: Campaign = self
            .live_parent(scope, "campaign_id", spec.campaign_id.as_deref())
            .await?;
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
        self.fetch(scope, id).await
    }

    /// Ad groups `scope` may see (of one campaign when given), deleted ones left out.
    pub async fn groups(&self, scope: &Scope, campaign: Option<&str>) -> Result<Vec<AdGroup>> {
        self.fetch_live(scope, campaign).await
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
            return change_to_deleted(g, spec, id);
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
        let g: AdGroup = self
            .live_parent(scope, "group_id", spec.group_id.as_deref())
            .await?;
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
        self.fetch(scope, id).await
    }

    /// Creatives `scope` may see (of one group when given), deleted ones left out.
    pub async fn creatives(&self, scope: &Scope, group: Option<&str>) -> Result<Vec<Creative>> {
        self.fetch_live(scope, group).await
    }

    /// The item `id` of table `T::TABLE`, if `scope` may see it (deleted ones included).
    async fn fetch<T: StoredItem>(&self, scope: &Scope, id: &str) -> Result<T> {
        let sql = format!(
            "SELECT * FROM {} WHERE id = $1 AND ($2 = '' OR advertiser_id = $2)",
            T::TABLE
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(scope.owner().unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| T::from_row(&r))
            .transpose()?
            .ok_or_else(|| Error::not_found(T::KIND, id))
    }

    /// The parent a new item names in `field` (required), if `scope` may see it and it is not
    /// deleted.
    async fn live_parent<T: StoredItem>(
        &self,
        scope: &Scope,
        field: &str,
        id: Option<&str>,
    ) -> Result<T> {
        let id = id.ok_or_else(|| Error::invalid(field, "required"))?;
        let parent: T = self.fetch(scope, id).await?;
        if parent.status() == Status::Deleted {
            return Err(Error::deleted(T::KIND, id));
        }
        Ok(parent)
    }

    /// The items `scope` may see (under `parent` when given), deleted ones left out, oldest first.
    async fn fetch_live<T: StoredItem>(
        &self,
        scope: &Scope,
        parent: Option<&str>,
    ) -> Result<Vec<T>> {
        let sql = format!(
            "SELECT * FROM {} WHERE ($1 = '' OR advertiser_id = $1) AND ($2 = '' OR {} = $2) AND status <> 'deleted' ORDER BY created_ms, id",
            T::TABLE,
            T::PARENT_COLUMN
        );
        let rows = sqlx::query(&sql)
            .bind(scope.owner().unwrap_or(""))
            .bind(parent.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(T::from_row).collect()
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
            return change_to_deleted(c, spec, id);
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
}

/// An inventory kind as stored: its table, parent column and row parser.
trait StoredItem: InventoryItem {
    /// Table name.
    const TABLE: &'static str;
    /// The column naming its parent.
    const PARENT_COLUMN: &'static str;
    /// Its status.
    fn status(&self) -> Status;
    /// The item of a row.
    fn from_row(r: &AnyRow) -> Result<Self>;
}

impl StoredItem for Campaign {
    fn status(&self) -> Status {
        self.status
    }
    const TABLE: &'static str = "campaigns";
    const PARENT_COLUMN: &'static str = "advertiser_id";
    fn from_row(r: &AnyRow) -> Result<Self> {
        campaign_row(r)
    }
}

impl StoredItem for AdGroup {
    fn status(&self) -> Status {
        self.status
    }
    const TABLE: &'static str = "ad_groups";
    const PARENT_COLUMN: &'static str = "campaign_id";
    fn from_row(r: &AnyRow) -> Result<Self> {
        group_row(r)
    }
}

impl StoredItem for Creative {
    fn status(&self) -> Status {
        self.status
    }
    const TABLE: &'static str = "creatives";
    const PARENT_COLUMN: &'static str = "group_id";
    fn from_row(r: &AnyRow) -> Result<Self> {
        creative_row(r)
    }
}

/// What a change to a deleted item gets: the item itself when the change is another delete (a
/// no-op), else [`Error::Deleted`].
fn change_to_deleted<T: InventoryItem>(item: T, spec: &T::Spec, id: &str) -> Result<T>
where
    T::Spec: serde::Serialize,
{
    let delete = T::status_spec(Status::Deleted);
    if serde_json::to_value(spec).ok() == serde_json::to_value(delete).ok() {
        Ok(item)
    } else {
        Err(Error::deleted(T::KIND, id))
    }
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

/// The store's verbs for an item under a parent (ad groups under campaigns, creatives under ad
/// groups): the same five calls with the item's own names.
macro_rules! child_item {
    ($item:ty, $spec:ident, $kind:literal, $parent:literal, $create:ident, $get:ident, $list:ident, $update:ident) => {
        impl InventoryItem for $item {
            type Spec = $spec;
            const KIND: &'static str = $kind;
            const PARENT: &'static str = $parent;
            async fn create(store: &AdStore, scope: &Scope, spec: &$spec) -> Result<Self> {
                store.$create(scope, spec, None).await
            }
            async fn get(store: &AdStore, scope: &Scope, id: &str) -> Result<Self> {
                store.$get(scope, id).await
            }
            async fn list(
                store: &AdStore,
                scope: &Scope,
                parent: Option<&str>,
            ) -> Result<Vec<Self>> {
                store.$list(scope, parent).await
            }
            async fn update(
                store: &AdStore,
                scope: &Scope,
                id: &str,
                spec: &$spec,
            ) -> Result<Self> {
                store.$update(scope, id, spec, None).await
            }
            fn status_spec(status: Status) -> $spec {
                $spec {
                    status: Some(status),
                    ..Default::default()
                }
            }
        }
    };
}

child_item!(
    AdGroup,
    GroupSpec,
    "ad group",
    "campaign_id",
    create_group,
    group,
    groups,
    update_group
);
child_item!(
    Creative,
    CreativeSpec,
    "creative",
    "group_id",
    create_creative,
    creative,
    creatives,
    update_creative
);
