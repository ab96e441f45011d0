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
        self.insert(&c, None).await?;
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
        self.change(scope, id, spec, None).await
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
        self.insert(&g, vector).await?;
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
        self.change(scope, id, spec, vector).await
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
        self.insert(&c, vector).await?;
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

    /// Writes a new item's row (with its embedder id and vector, for kinds that have them).
    async fn insert<T: StoredItem>(&self, item: &T, vector: Option<(&str, &[f32])>) -> Result<()> {
        let mut cols = item.created_columns();
        cols.extend(item.changed_columns());
        if T::HAS_VECTOR {
            cols.extend(vector_columns(vector));
        }
        let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
        let places: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            T::TABLE,
            names.join(", "),
            places.join(", ")
        );
        bind_all(sqlx::query(&sql), cols)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Changes the item `id` by `spec` (a change of parent is refused; deleted items take only
    /// another delete); `vector`, when given, replaces the stored one.
    async fn change<T: StoredItem>(
        &self,
        scope: &Scope,
        id: &str,
        spec: &T::Spec,
        vector: Option<(&str, &[f32])>,
    ) -> Result<T>
    where
        T::Spec: serde::Serialize,
    {
        let mut item: T = self.fetch(scope, id).await?;
        if item.status() == Status::Deleted {
            return change_to_deleted(item, spec, id);
        }
        if T::asked_parent(spec).is_some_and(|p| p != item.parent_id()) {
            return Err(Error::invalid(T::PARENT_COLUMN, T::MOVE_REFUSED));
        }
        item.apply_spec(spec)?;
        item.touch(now_ms());
        let mut cols = item.changed_columns();
        let mut sets: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", c.0, i + 1))
            .collect();
        if T::HAS_VECTOR {
            for c in vector_columns(vector) {
                sets.push(format!("{0} = COALESCE(${1}, {0})", c.0, cols.len() + 1));
                cols.push(c);
            }
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE id = ${}",
            T::TABLE,
            sets.join(", "),
            cols.len() + 1
        );
        bind_all(sqlx::query(&sql), cols)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(item)
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
        self.change(scope, id, spec, vector).await
    }
}

/// A column's value as bound to the store's SQL.
enum Value {
    Text(String),
    MaybeText(Option<String>),
    Int(i64),
    MaybeInt(Option<i64>),
    Real(f64),
    MaybeBytes(Option<Vec<u8>>),
}

/// A column and its value.
type Column = (&'static str, Value);

/// `q` with `cols`' values bound in order.
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    cols: Vec<Column>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for (_, v) in cols {
        q = match v {
            Value::Text(v) => q.bind(v),
            Value::MaybeText(v) => q.bind(v),
            Value::Int(v) => q.bind(v),
            Value::MaybeInt(v) => q.bind(v),
            Value::Real(v) => q.bind(v),
            Value::MaybeBytes(v) => q.bind(v),
        };
    }
    q
}

/// The embedder id and vector columns (null when no vector is given).
fn vector_columns(vector: Option<(&str, &[f32])>) -> [Column; 2] {
    [
        (
            "embedder_id",
            Value::MaybeText(vector.map(|v| v.0.to_string())),
        ),
        (
            "vector",
            Value::MaybeBytes(vector.map(|v| vector_bytes(v.1))),
        ),
    ]
}

/// An inventory kind as stored: its table, columns, parent and row parser.
trait StoredItem: InventoryItem {
    /// Table name.
    const TABLE: &'static str;
    /// The column naming its parent.
    const PARENT_COLUMN: &'static str;
    /// Why a change of parent is refused.
    const MOVE_REFUSED: &'static str;
    /// Whether its rows carry an embedder id and vector.
    const HAS_VECTOR: bool;
    /// Its id.
    fn id(&self) -> &str;
    /// Its owner.
    fn owner(&self) -> &str;
    /// Its creation time.
    fn created_ms(&self) -> i64;
    /// Its status.
    fn status(&self) -> Status;
    /// Its parent's id.
    fn parent_id(&self) -> &str;
    /// The parent a change names, if any.
    fn asked_parent(spec: &Self::Spec) -> Option<&str>;
    /// Applies a change's fields.
    fn apply_spec(&mut self, spec: &Self::Spec) -> Result<()>;
    /// Sets the time of the last change.
    fn touch(&mut self, ms: i64);
    /// The columns written once, at creation: id, owner, parent and creation time.
    fn created_columns(&self) -> Vec<Column> {
        let mut cols = vec![
            ("id", Value::Text(self.id().to_string())),
            ("advertiser_id", Value::Text(self.owner().to_string())),
            ("created_ms", Value::Int(self.created_ms())),
        ];
        if Self::PARENT_COLUMN != "advertiser_id" {
            cols.push((
                Self::PARENT_COLUMN,
                Value::Text(self.parent_id().to_string()),
            ));
        }
        cols
    }
    /// The columns a change writes.
    fn changed_columns(&self) -> Vec<Column>;
    /// The item of a row.
    fn from_row(r: &AnyRow) -> Result<Self>;
}

/// The accessors every stored kind has alike, over its fields of the same names.
macro_rules! common_accessors {
    ($parent:ident, $spec:ty) => {
        fn id(&self) -> &str {
            &self.id
        }
        fn owner(&self) -> &str {
            &self.advertiser_id
        }
        fn created_ms(&self) -> i64 {
            self.created_ms
        }
        fn status(&self) -> Status {
            self.status
        }
        fn parent_id(&self) -> &str {
            &self.$parent
        }
        fn asked_parent(spec: &$spec) -> Option<&str> {
            spec.$parent.as_deref()
        }
        fn apply_spec(&mut self, spec: &$spec) -> Result<()> {
            self.apply(spec)
        }
        fn touch(&mut self, ms: i64) {
            self.updated_ms = ms;
        }
    };
}

impl StoredItem for Campaign {
    const TABLE: &'static str = "campaigns";
    const PARENT_COLUMN: &'static str = "advertiser_id";
    const MOVE_REFUSED: &'static str = "a campaign cannot change owner";
    const HAS_VECTOR: bool = false;
    common_accessors!(advertiser_id, CampaignSpec);
    fn changed_columns(&self) -> Vec<Column> {
        vec![
            ("name", Value::Text(self.name.clone())),
            ("status", Value::Text(self.status.as_str().into())),
            ("bid_type", Value::Text(self.bid_type.as_str().into())),
            ("daily_budget_micros", Value::Int(self.daily_budget_micros)),
            ("frequency_cap", Value::Int(self.frequency_cap)),
            ("frequency_window_s", Value::Int(self.frequency_window_s)),
            ("start_ms", Value::MaybeInt(self.start_ms)),
            ("end_ms", Value::MaybeInt(self.end_ms)),
            (
                "excluded_terms",
                Value::Text(json_list(&self.excluded_terms)),
            ),
            ("updated_ms", Value::Int(self.updated_ms)),
        ]
    }
    fn from_row(r: &AnyRow) -> Result<Self> {
        campaign_row(r)
    }
}

impl StoredItem for AdGroup {
    const TABLE: &'static str = "ad_groups";
    const PARENT_COLUMN: &'static str = "campaign_id";
    const MOVE_REFUSED: &'static str = "an ad group cannot move to another campaign";
    const HAS_VECTOR: bool = true;
    common_accessors!(campaign_id, GroupSpec);
    fn changed_columns(&self) -> Vec<Column> {
        vec![
            ("name", Value::Text(self.name.clone())),
            ("status", Value::Text(self.status.as_str().into())),
            ("bid_micros", Value::Int(self.bid_micros)),
            ("keywords", Value::Text(json_list(&self.keywords))),
            ("description", Value::Text(self.description.clone())),
            ("languages", Value::Text(json_list(&self.languages))),
            ("placements", Value::Text(json_list(&self.placements))),
            ("hour_start", Value::Int(self.hour_start)),
            ("hour_end", Value::Int(self.hour_end)),
            ("min_similarity", Value::Real(self.min_similarity)),
            ("updated_ms", Value::Int(self.updated_ms)),
        ]
    }
    fn from_row(r: &AnyRow) -> Result<Self> {
        group_row(r)
    }
}

impl StoredItem for Creative {
    const TABLE: &'static str = "creatives";
    const PARENT_COLUMN: &'static str = "group_id";
    const MOVE_REFUSED: &'static str = "a creative cannot move to another ad group";
    const HAS_VECTOR: bool = true;
    common_accessors!(group_id, CreativeSpec);
    fn changed_columns(&self) -> Vec<Column> {
        vec![
            ("status", Value::Text(self.status.as_str().into())),
            ("text", Value::Text(self.text.clone())),
            ("url", Value::MaybeText(self.url.clone())),
            ("updated_ms", Value::Int(self.updated_ms)),
        ]
    }
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
