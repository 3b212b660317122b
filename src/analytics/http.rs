//! Routes of the analytics service; every route needs an admin token. Handlers validate and
//! send one [`Stats`] query to [`AnalyticsQueries`], whose JSON answer is a serialized
//! [`store`](super::store) type ([`Summary`], [`ProductStats`], [`UserStats`], [`Bucket`]s);
//! [`routes`] registers and documents them through [`Api`].

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::EventType;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::AnalyticsError;
use super::query::{AnalyticsQueries, Stats, StatsQuery};
use super::store::{Bucket, ProductStats, Summary, UserStats, TOP_BY};
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{string_enum_schema, Api};
use crate::validate;

/// Registers (and documents) the analytics routes.
pub fn routes(api: &mut Api) {
    api.add(__path_summary, summary)
        .add(__path_top, top)
        .add(__path_product, product)
        .add(__path_user, user)
        .add(__path_timeseries, timeseries);
}

/// The counter `top` orders by without `by`.
const DEFAULT_BY: &str = "views";

string_enum_schema!(
    /// The `by` values: [`TOP_BY`], default [`DEFAULT_BY`].
    TopBy,
    TOP_BY,
    Some(DEFAULT_BY)
);

string_enum_schema!(
    /// The `type` values: [`EventType::NAMES`].
    EventTypeName,
    EventType::NAMES,
    None
);

async fn ask(
    queries: &ObservedAddr<AnalyticsQueries>,
    query: StatsQuery,
) -> Result<HttpResponse, ApiError> {
    let value = queries.send(Stats(query)).await??;
    Ok(HttpResponse::Ok().json(value))
}

/// Totals: users, live products, events by type, and activity in the last hour.
#[utoipa::path(
    get,
    path = "/analytics/summary",
    tag = "analytics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The summary figures", body = Summary),
    )
)]
async fn summary(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::Summary).await
}

/// The `window` values of `top`, and how far back each reaches.
const TOP_WINDOWS: [&str; 4] = ["1h", "24h", "7d", "30d"];

string_enum_schema!(
    /// The `window` values: [`TOP_WINDOWS`]; absent means all time.
    TopWindow,
    TOP_WINDOWS,
    None
);

/// How far back a `window` value reaches.
fn window_length(window: &str) -> Option<chrono::TimeDelta> {
    match window {
        "1h" => Some(chrono::TimeDelta::hours(1)),
        "24h" => Some(chrono::TimeDelta::hours(24)),
        "7d" => Some(chrono::TimeDelta::days(7)),
        "30d" => Some(chrono::TimeDelta::days(30)),
        _ => None,
    }
}

/// `?by=&limit=&window=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TopParams {
    /// The counter to order by, descending (ties by product id); default `views`.
    #[param(value_type = Option<TopBy>, inline)]
    by: Option<String>,
    /// Count only the events of the last hour, 24 hours, 7 or 30 days (whole hours of
    /// `occurred_at`: the window starts at the top of the hour it reaches back to); absent,
    /// every event since the first.
    #[param(value_type = Option<TopWindow>, inline)]
    window: Option<String>,
    /// How many products at most, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    limit: Option<i64>,
}

/// The products with the highest value of one counter.
#[utoipa::path(
    get,
    path = "/analytics/products/top",
    tag = "analytics",
    params(TopParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "At most `limit` products, by `by` descending, ties by \
            `product_id`; with `window`, the counters are those of the window and only products \
            with events in it are listed", body = Vec<ProductStats>),
    )
)]
async fn top(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    params: web::Query<TopParams>,
) -> Result<HttpResponse, ApiError> {
    let by =
        match params.by.as_deref() {
            None => DEFAULT_BY,
            Some(by) => TOP_BY.iter().copied().find(|b| *b == by).ok_or_else(|| {
                ApiError::invalid(format!("by must be one of {}", TOP_BY.join(", ")))
            })?,
        };
    let limit = validate::limit(params.limit, 10, 100)?;
    let since = match params.window.as_deref() {
        None => None,
        Some(window) => Some(
            Utc::now()
                - window_length(window).ok_or_else(|| {
                    ApiError::invalid(format!("window must be one of {}", TOP_WINDOWS.join(", ")))
                })?,
        ),
    };
    ask(&queries, StatsQuery::Top { by, limit, since }).await
}

/// The statistics of one product.
#[utoipa::path(
    get,
    path = "/analytics/products/{id}",
    tag = "analytics",
    params(("id" = Uuid, Path, description = "The product's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The product's statistics", body = ProductStats),
        (status = 404, description = "No event about this product was ever seen", body = ErrorBody),
    )
)]
async fn product(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::Product(id.into_inner())).await
}

/// The statistics of one user.
#[utoipa::path(
    get,
    path = "/analytics/users/{id}",
    tag = "analytics",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's statistics", body = UserStats),
        (status = 404, description = "No event about this user was ever seen", body = ErrorBody),
    )
)]
async fn user(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    ask(&queries, StatsQuery::User(id.into_inner())).await
}

/// `?type=&from=&to=` (RFC 3339). The fields are optional so that a missing one gets a precise
/// `400`; the document marks them required.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesParams {
    /// The event type to count.
    #[serde(rename = "type")]
    #[param(value_type = EventTypeName, inline)]
    event_type: Option<String>,
    /// The start of the window (RFC 3339, any offset; write `+` as `%2B`); its hour is the
    /// first bucket.
    #[param(value_type = DateTime<Utc>)]
    from: Option<String>,
    /// The end of the window, not before `from` and at most 31 days after it; its hour is the
    /// last bucket.
    #[param(value_type = DateTime<Utc>)]
    to: Option<String>,
}

fn instant(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(format!("{name} is required (RFC 3339)")))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(format!("{name} is not an RFC 3339 timestamp")))
}

/// Hourly counts of one event type over a window of at most 31 days.
#[utoipa::path(
    get,
    path = "/analytics/timeseries",
    tag = "analytics",
    params(SeriesParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One bucket per hour from the hour of `from` to the hour \
            of `to`, both included, oldest first; hours without events count 0",
            body = Vec<Bucket>),
        (status = 400, description = "`type`, `from` or `to` missing or invalid, `from` after \
            `to`, or a window longer than 31 days", body = ErrorBody),
    )
)]
async fn timeseries(
    queries: web::Data<ObservedAddr<AnalyticsQueries>>,
    _admin: Admin,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params
        .event_type
        .as_deref()
        .ok_or_else(|| ApiError::invalid("type is required"))?;
    if EventType::from_name(event_type).is_none() {
        return Err(ApiError::invalid(format!(
            "type must be one of {}",
            EventType::NAMES.join(", ")
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

/// What a client sees of each statistics failure.
impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::ProductNeverSeen | AnalyticsError::UserNeverSeen => {
                ApiError::NotFound(e.to_string())
            }
            AnalyticsError::Db(db) => db.into(),
        }
    }
}
