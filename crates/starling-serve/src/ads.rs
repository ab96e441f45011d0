//! `/v1/ads/*`: inventory management (advertisers, campaigns, groups, creatives), reports,
//! decisions and events, on the [`AdServer`] attached with `serve --ads-db`.
//!
//! Who may do what: a server API key (`--api-keys`) is the platform (operator): everything,
//! including creating advertisers, deciding and recording events. An advertiser's key (from
//! `POST /v1/ads/advertisers` or `starling ads advertiser create`) reads and changes only that
//! advertiser's own items and reports; anything else is answered as if it did not exist (404).
//! A server without `--api-keys` treats callers without a key as the operator.

use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::openai::{typed, ApiJson, Typed};
use crate::server::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use starling_ads::{
    day_from_date, day_of, now_ms, AdGroup, AdServer, Campaign, Creative, DecideRequest,
    EventInput, InventoryItem, Scope, Status,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The ad routes (answered 404 when no ad store is attached).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/ads/advertisers",
            post(create_advertiser).get(list_advertisers),
        )
        .merge(item_routes::<Campaign>("/v1/ads/campaigns"))
        .merge(item_routes::<AdGroup>("/v1/ads/groups"))
        .merge(item_routes::<Creative>("/v1/ads/creatives"))
        .route("/v1/ads/reports", get(reports))
        .route("/v1/ads/decide", post(decide))
        .route("/v1/ads/events", post(events))
}

/// The library's error as an API error.
fn api(e: starling_ads::Error) -> ApiError {
    use starling_ads::Error as E;
    match e {
        E::Invalid { field, reason } => ApiError::invalid(&field, format!("{field}: {reason}")),
        E::NotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            e.to_string(),
        )
        .with_code("not_found"),
        E::Deleted { .. } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
                .with_code("deleted")
        }
        E::Event(m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            format!("event refused: {m}"),
        )
        .with_code("event_refused"),
        other => {
            tracing::error!("ads: {other}");
            ApiError::internal(format!("ads: {other}"))
        }
    }
}

fn ads(s: &AppState) -> Result<Arc<AdServer>, ApiError> {
    s.ads().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this server has no ad store (start it with --ads-db)",
        )
    })
}

/// Who is calling, from the bearer key.
async fn scope(s: &AppState, ads: &AdServer, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(ApiKeys::bearer);
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or incorrect API key (send `Authorization: Bearer <key>`)",
        )
        .with_code("invalid_api_key")
    };
    match (s.api_keys(), token) {
        (Some(keys), Some(t)) if keys.accepts(t) => Ok(Scope::Operator),
        (_, Some(t)) => match ads.store().advertiser_by_key(t).await.map_err(api)? {
            Some(a) => Ok(Scope::Advertiser(a.id)),
            None => Err(unauthorized()),
        },
        (None, None) => Ok(Scope::Operator),
        (Some(_), None) => Err(unauthorized()),
    }
}

/// The ad server and who is calling it.
async fn caller(s: &AppState, headers: &HeaderMap) -> Result<(Arc<AdServer>, Scope), ApiError> {
    let ads = ads(s)?;
    let sc = scope(s, &ads, headers).await?;
    Ok((ads, sc))
}

/// The ad server, if the platform's operator is calling it.
async fn operator(s: &AppState, headers: &HeaderMap) -> Result<Arc<AdServer>, ApiError> {
    let (ads, sc) = caller(s, headers).await?;
    match sc {
        Scope::Operator => Ok(ads),
        Scope::Advertiser(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "only the platform's API keys may do this, not an advertiser's",
        )
        .with_code("forbidden")),
    }
}

async fn refresh(ads: &AdServer) -> Result<(), ApiError> {
    ads.reload(now_ms()).await.map_err(api)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdvertiser {
    name: String,
}

async fn create_advertiser(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Typed(req): Typed<NewAdvertiser>,
) -> Result<Response, ApiError> {
    let ads = operator(&s, &headers).await?;
    let (a, key) = ads
        .store()
        .create_advertiser(&req.name)
        .await
        .map_err(api)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"advertiser": a, "api_key": key})),
    )
        .into_response())
}

async fn list_advertisers(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (ads, sc) = caller(&s, &headers).await?;
    let list = ads.store().advertisers(&sc).await.map_err(api)?;
    Ok(Json(json!({"data": list})).into_response())
}

type Params = Query<HashMap<String, String>>;

async fn create<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Typed(spec): Typed<T::Spec>,
) -> Result<Response, ApiError> {
    let (ads, sc) = caller(&s, &headers).await?;
    let item = T::create(ads.store(), &sc, &spec).await.map_err(api)?;
    refresh(&ads).await?;
    Ok((StatusCode::CREATED, Json(item)).into_response())
}

async fn list<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (ads, sc) = caller(&s, &headers).await?;
    let items = T::list(ads.store(), &sc, q.get(T::PARENT).map(String::as_str))
        .await
        .map_err(api)?;
    Ok(Json(json!({"data": items})).into_response())
}

async fn get_one<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (ads, sc) = caller(&s, &headers).await?;
    Ok(Json(T::get(ads.store(), &sc, &id).await.map_err(api)?).into_response())
}

async fn change<T: InventoryItem>(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    spec: T::Spec,
) -> Result<Response, ApiError> {
    let ads = ads(s)?;
    let sc = scope(s, &ads, headers).await?;
    let item = T::update(ads.store(), &sc, id, &spec).await.map_err(api)?;
    refresh(&ads).await?;
    Ok(Json(item).into_response())
}

async fn update<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Typed(spec): Typed<T::Spec>,
) -> Result<Response, ApiError> {
    change::<T>(&s, &headers, &id, spec).await
}

async fn delete<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change::<T>(&s, &headers, &id, T::status_spec(Status::Deleted)).await
}

async fn action<T: InventoryItem>(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let status = match action.as_str() {
        "pause" => Status::Paused,
        "resume" => Status::Active,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("no action {action:?} for a {} (pause, resume)", T::KIND),
            ))
        }
    };
    change::<T>(&s, &headers, &id, T::status_spec(status)).await
}

/// The five routes of one kind of item under `base` (`/v1/ads/campaigns`, ...).
fn item_routes<T: InventoryItem>(base: &str) -> Router<Arc<AppState>> {
    Router::new()
        .route(base, post(create::<T>).get(list::<T>))
        .route(
            &format!("{base}/{{id}}"),
            get(get_one::<T>).patch(update::<T>).delete(delete::<T>),
        )
        .route(&format!("{base}/{{id}}/{{action}}"), post(action::<T>))
}

async fn reports(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (ads, sc) = caller(&s, &headers).await?;
    let from = match q.get("from") {
        Some(d) => day_from_date("from", d).map_err(api)?,
        None => day_of(now_ms()),
    };
    let to = match q.get("to") {
        Some(d) => day_from_date("to", d).map_err(api)?,
        None => from,
    };
    if to < from || to - from > 366 {
        return Err(ApiError::invalid("to", "to must be from..from + 366 days"));
    }
    let r = ads
        .store()
        .reports(&sc, q.get("campaign_id").map(String::as_str), from, to)
        .await
        .map_err(api)?;
    Ok(Json(json!({"data": r})).into_response())
}

async fn decide(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Typed(mut req): Typed<DecideRequest>,
) -> Result<Response, ApiError> {
    let ads = operator(&s, &headers).await?;
    if req.context.post_ids.len() > 100 {
        return Err(ApiError::invalid("context.post_ids", "at most 100 posts"));
    }
    let index = s.index().cloned();
    // Embedding a fresh context runs the model, reading stored vectors touches the index: off the
    // async threads.
    let d = tokio::task::spawn_blocking(move || {
        if req.context.vector.is_none() && !req.context.post_ids.is_empty() {
            if let Some(index) = index {
                let vs = index.post_vectors(&req.context.post_ids).map_err(|e| {
                    starling_ads::Error::Event(format!("reading post vectors: {e}"))
                })?;
                if let Some(first) = vs.first() {
                    let mut mean = vec![0f32; first.len()];
                    for v in &vs {
                        mean.iter_mut().zip(v).for_each(|(m, x)| *m += x);
                    }
                    starling_embed::normalize(&mut mean);
                    req.context.vector = Some(mean);
                }
            }
        }
        ads.decide(&req)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(api)?;
    Ok(Json(d).into_response())
}

async fn events(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(mut v): ApiJson,
) -> Result<Response, ApiError> {
    let ads = operator(&s, &headers).await?;
    // The key may come as the `Idempotency-Key` header instead of a field.
    if let (Some(k), Some(obj)) = (
        headers.get("idempotency-key").and_then(|h| h.to_str().ok()),
        v.as_object_mut(),
    ) {
        obj.entry("idempotency_key").or_insert(json!(k));
    }
    let ev: EventInput = typed(&v)?;
    let r = ads.record(&ev).await.map_err(api)?;
    Ok(Json(r).into_response())
}
