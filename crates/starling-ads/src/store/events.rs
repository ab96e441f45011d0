//! The serving side of the store: the live inventory snapshot, stored vectors, charged events,
//! spend and reports.

use super::*;

impl AdStore {
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
