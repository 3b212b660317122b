//! Routes of the analytics service; every route needs an admin token. Handlers validate and
//! send one [`Stats`] query to [`AnalyticsQueries`].

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::Event;
use serde::Deserialize;
use uuid::Uuid;

use super::query::{AnalyticsQueries, Stats, StatsQuery};
use super::store::TOP_BY;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::validate;

/// Registers the analytics routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/analytics/summary").route(web::get().to(summary)))
        .service(web::resource("/analytics/products/top").route(web::get().to(top)))
        .service(web::resource("/analytics/products/{id}").route(web::get().to(product)))
        .service(web::resource("/analytics/users/{id}").route(web::get().to(user)))
        .service(web::resource("/analytics/timeseries").route(web::get().to(timeseries)));
}

async fn ask(
    queries: &ObservedAddr<AnalyticsQueries>,
    query: StatsQuery,
) -> Result<HttpResponse, ApiError> {
    let value = queries.send(Stats(query)).await??;
    Ok(HttpResponse::Ok().json(value))
}

async fn summary(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::Summary).await
}

/// `?by=&limit=`.
#[derive(Debug, Deserialize)]
struct TopParams {
    by: Option<String>,
    limit: Option<i64>,
}

async fn top(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    params: web::Query<TopParams>,
) -> Result<HttpResponse, ApiError> {
    let by =
        match params.by.as_deref() {
            None => "views",
            Some(by) => TOP_BY.iter().copied().find(|b| *b == by).ok_or_else(|| {
                ApiError::invalid(format!("by must be one of {}", TOP_BY.join(", ")))
            })?,
        };
    let limit = validate::limit(params.limit, 10, 100)?;
    ask(&queries, StatsQuery::Top { by, limit }).await
}

async fn product(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::Product(id.into_inner())).await
}

async fn user(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::User(id.into_inner())).await
}

/// `?type=&from=&to=` (RFC 3339).
#[derive(Debug, Deserialize)]
struct SeriesParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn instant(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(format!("{name} is required (RFC 3339)")))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(format!("{name} is not an RFC 3339 timestamp")))
}

async fn timeseries(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params
        .event_type
        .as_deref()
        .ok_or_else(|| ApiError::invalid("type is required"))?;
    if !Event::TYPES.contains(&event_type) {
        return Err(ApiError::invalid(format!(
            "type must be one of {}",
            Event::TYPES.join(", ")
        )));
    }
    let from = instant("from", params.from.as_deref())?;
    let to = instant("to", params.to.as_deref())?;
    if from > to {
        return Err(ApiError::invalid("from is after to"));
    }
    if to - from > chrono::TimeDelta::days(31) {
        return Err(ApiError::invalid("the window is longer than 31 days"));
    }
    let query = StatsQuery::Series {
        event_type: event_type.to_string(),
        from,
        to,
    };
    ask(&queries, query).await
}
