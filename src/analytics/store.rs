//! SQL of the analytics service: one upsert per table per batch, and the read queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::tables::{an_products, an_users};
use serde::Serialize;
use uuid::Uuid;

use super::fold::{Fold, HourDelta};

/// A column of `rows` for an `unnest` insert, in the map's iteration order (the same order as
/// its keys).
fn column<T, V>(rows: &HashMap<Uuid, T>) -> impl Fn(fn(&T) -> V) -> Vec<V> + '_ {
    move |field| rows.values().map(field).collect()
}

/// Writes one folded batch.
pub async fn apply(conn: &mut AsyncPgConnection, fold: &Fold) -> diesel::QueryResult<()> {
    if !fold.products.is_empty() {
        let ids: Vec<Uuid> = fold.products.keys().copied().collect();
        let (col, at) = (column(&fold.products), column(&fold.products));
        crate::db::prepared(
            "INSERT INTO an_products AS p (product_id, views, cart_adds, cart_removes, purchases, \
               units_sold, updates, created_at, deleted_at, last_event_at) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
               $6::int8[], $7::int8[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) \
             ON CONFLICT (product_id) DO UPDATE SET \
               views = p.views + EXCLUDED.views, cart_adds = p.cart_adds + EXCLUDED.cart_adds, \
               cart_removes = p.cart_removes + EXCLUDED.cart_removes, \
               purchases = p.purchases + EXCLUDED.purchases, \
               units_sold = p.units_sold + EXCLUDED.units_sold, updates = p.updates + EXCLUDED.updates, \
               created_at = LEAST(p.created_at, EXCLUDED.created_at), \
               deleted_at = GREATEST(p.deleted_at, EXCLUDED.deleted_at), \
               last_event_at = GREATEST(p.last_event_at, EXCLUDED.last_event_at)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<BigInt>, _>(col(|d| d.views))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_adds))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_removes))
        .bind::<Array<BigInt>, _>(col(|d| d.purchases))
        .bind::<Array<BigInt>, _>(col(|d| d.units_sold))
        .bind::<Array<BigInt>, _>(col(|d| d.updates))
        .bind::<Array<Nullable<Timestamptz>>, _>(at(|d| d.created_at))
        .bind::<Array<Nullable<Timestamptz>>, _>(at(|d| d.deleted_at))
        .bind::<Array<Nullable<Timestamptz>>, _>(at(|d| d.last_event_at))
        .execute(conn)
        .await?;
    }
    if !fold.users.is_empty() {
        let ids: Vec<Uuid> = fold.users.keys().copied().collect();
        let (col, at) = (column(&fold.users), column(&fold.users));
        crate::db::prepared(
            "INSERT INTO an_users AS u (user_id, registered_at, profile_updates, views, cart_adds, \
               cart_removes, purchases, units_bought, activity_count, last_active_at) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int8[], $4::int8[], $5::int8[], \
               $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::timestamptz[]) \
             ON CONFLICT (user_id) DO UPDATE SET \
               registered_at = LEAST(u.registered_at, EXCLUDED.registered_at), \
               profile_updates = u.profile_updates + EXCLUDED.profile_updates, \
               views = u.views + EXCLUDED.views, cart_adds = u.cart_adds + EXCLUDED.cart_adds, \
               cart_removes = u.cart_removes + EXCLUDED.cart_removes, \
               purchases = u.purchases + EXCLUDED.purchases, \
               units_bought = u.units_bought + EXCLUDED.units_bought, \
               activity_count = u.activity_count + EXCLUDED.activity_count, \
               last_active_at = GREATEST(u.last_active_at, EXCLUDED.last_active_at)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Nullable<Timestamptz>>, _>(at(|d| d.registered_at))
        .bind::<Array<BigInt>, _>(col(|d| d.profile_updates))
        .bind::<Array<BigInt>, _>(col(|d| d.views))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_adds))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_removes))
        .bind::<Array<BigInt>, _>(col(|d| d.purchases))
        .bind::<Array<BigInt>, _>(col(|d| d.units_bought))
        .bind::<Array<BigInt>, _>(col(|d| d.activity_count))
        .bind::<Array<Nullable<Timestamptz>>, _>(at(|d| d.last_active_at))
        .execute(conn)
        .await?;
    }
    if !fold.product_hours.is_empty() {
        let (keys, deltas): (Vec<_>, Vec<_>) = fold.product_hours.iter().unzip();
        let hours: Vec<DateTime<Utc>> = keys.iter().map(|(h, _)| *h).collect();
        let ids: Vec<Uuid> = keys.iter().map(|(_, p)| *p).collect();
        let col =
            |field: fn(&HourDelta) -> i64| deltas.iter().map(|d| field(d)).collect::<Vec<_>>();
        crate::db::prepared(
            "INSERT INTO an_product_hours AS h (hour, product_id, views, cart_adds, cart_removes, \
               purchases, units_sold, updates) \
             SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::int8[], $4::int8[], \
               $5::int8[], $6::int8[], $7::int8[], $8::int8[]) \
             ON CONFLICT (hour, product_id) DO UPDATE SET \
               views = h.views + EXCLUDED.views, cart_adds = h.cart_adds + EXCLUDED.cart_adds, \
               cart_removes = h.cart_removes + EXCLUDED.cart_removes, \
               purchases = h.purchases + EXCLUDED.purchases, \
               units_sold = h.units_sold + EXCLUDED.units_sold, updates = h.updates + EXCLUDED.updates",
        )
        .bind::<Array<Timestamptz>, _>(&hours)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<BigInt>, _>(col(|d| d.views))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_adds))
        .bind::<Array<BigInt>, _>(col(|d| d.cart_removes))
        .bind::<Array<BigInt>, _>(col(|d| d.purchases))
        .bind::<Array<BigInt>, _>(col(|d| d.units_sold))
        .bind::<Array<BigInt>, _>(col(|d| d.updates))
        .execute(conn)
        .await?;
    }
    if !fold.counts.is_empty() {
        let (keys, counts): (Vec<_>, Vec<i64>) = fold.counts.iter().map(|(k, v)| (*k, *v)).unzip();
        let minutes: Vec<DateTime<Utc>> = keys.iter().map(|(m, _)| *m).collect();
        let types: Vec<&str> = keys.iter().map(|(_, t)| *t).collect();
        crate::db::prepared(
            "INSERT INTO an_event_counts AS c (minute, event_type, count) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int8[]) \
             ON CONFLICT (minute, event_type) DO UPDATE SET count = c.count + EXCLUDED.count",
        )
        .bind::<Array<Timestamptz>, _>(&minutes)
        .bind::<Array<Text>, _>(&types)
        .bind::<Array<BigInt>, _>(&counts)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Statistics of one product.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = an_products, check_for_backend(diesel::pg::Pg))]
pub struct ProductStats {
    pub product_id: Uuid,
    pub views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub purchases: i64,
    pub units_sold: i64,
    pub updates: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// Statistics of one user.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = an_users, check_for_backend(diesel::pg::Pg))]
pub struct UserStats {
    pub user_id: Uuid,
    pub registered_at: Option<DateTime<Utc>>,
    pub profile_updates: i64,
    pub views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub purchases: i64,
    pub units_bought: i64,
    pub activity_count: i64,
    pub last_active_at: Option<DateTime<Utc>>,
}

/// The statistics of `id`, if it was ever seen.
pub async fn product(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> diesel::QueryResult<Option<ProductStats>> {
    an_products::table
        .find(id)
        .select(ProductStats::as_select())
        .first(conn)
        .await
        .optional()
}

/// The statistics of user `id`, if ever seen.
pub async fn user(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> diesel::QueryResult<Option<UserStats>> {
    an_users::table
        .find(id)
        .select(UserStats::as_select())
        .first(conn)
        .await
        .optional()
}

/// The counters `top` may order by.
pub const TOP_BY: [&str; 5] = ["views", "cart_adds", "purchases", "units_sold", "updates"];

/// Products ordered by `by` (one of [`TOP_BY`]) descending, ties by id: over all time, or
/// over the hours since `since` (counters summed over those hours; the lifecycle stamps are
/// the product's own). A product without events in the window is not listed.
pub async fn top(
    conn: &mut AsyncPgConnection,
    by: &'static str,
    limit: i64,
    since: Option<DateTime<Utc>>,
) -> diesel::QueryResult<Vec<ProductStats>> {
    use an_products::dsl as p;
    if !TOP_BY.contains(&by) {
        return Err(diesel::result::Error::QueryBuilderError(
            format!("{by} is not one of the top counters").into(),
        ));
    }
    if let Some(since) = since {
        // `by` is one of TOP_BY (checked above): a column name, never client text.
        return diesel::sql_query(format!(
            "SELECT h.product_id, SUM(h.views)::int8 AS views, \
               SUM(h.cart_adds)::int8 AS cart_adds, SUM(h.cart_removes)::int8 AS cart_removes, \
               SUM(h.purchases)::int8 AS purchases, SUM(h.units_sold)::int8 AS units_sold, \
               SUM(h.updates)::int8 AS updates, \
               p.created_at, p.deleted_at, p.last_event_at \
             FROM an_product_hours h JOIN an_products p ON p.product_id = h.product_id \
             WHERE h.hour >= date_trunc('hour', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
             GROUP BY h.product_id, p.created_at, p.deleted_at, p.last_event_at \
             ORDER BY {by} DESC, h.product_id LIMIT $2"
        ))
        .bind::<Timestamptz, _>(since)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await;
    }
    let query = p::an_products
        .select(ProductStats::as_select())
        .into_boxed();
    let query = match by {
        "views" => query.order_by(p::views.desc()),
        "cart_adds" => query.order_by(p::cart_adds.desc()),
        "purchases" => query.order_by(p::purchases.desc()),
        "units_sold" => query.order_by(p::units_sold.desc()),
        "updates" => query.order_by(p::updates.desc()),
        other => {
            return Err(diesel::result::Error::QueryBuilderError(
                format!("{other} is not one of the top counters").into(),
            ))
        }
    };
    query
        .then_order_by(p::product_id)
        .limit(limit)
        .load(conn)
        .await
}

#[derive(QueryableByName)]
struct TypeCount {
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The summary figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Users with a `user.registered`.
    pub users: i64,
    /// Products created and not deleted.
    pub products: i64,
    pub events_total: i64,
    pub events_by_type: std::collections::BTreeMap<String, i64>,
    /// Events that occurred in the last 60 minutes (minute resolution).
    pub events_last_hour: i64,
    /// Users with activity in the last 60 minutes.
    pub active_users_last_hour: i64,
}

async fn number(conn: &mut AsyncPgConnection, sql: &str) -> diesel::QueryResult<i64> {
    diesel::sql_query(sql)
        .get_result::<Number>(conn)
        .await
        .map(|n| n.n)
}

/// Reads the summary.
pub async fn summary(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Summary> {
    let by_type: Vec<TypeCount> = crate::db::prepared(
        "SELECT event_type, SUM(count)::int8 AS count FROM an_event_counts GROUP BY event_type",
    )
    .load(conn)
    .await?;
    let mut events_by_type: std::collections::BTreeMap<String, i64> =
        recsys_schema::events::EventType::NAMES
            .iter()
            .map(|t| (t.to_string(), 0))
            .collect();
    for t in by_type {
        events_by_type.insert(t.event_type, t.count);
    }
    Ok(Summary {
        users: number(conn, "SELECT count(*) AS n FROM an_users WHERE registered_at IS NOT NULL").await?,
        products: number(
            conn,
            "SELECT count(*) AS n FROM an_products WHERE created_at IS NOT NULL AND deleted_at IS NULL",
        )
        .await?,
        events_total: events_by_type.values().sum(),
        events_by_type,
        events_last_hour: number(
            conn,
            "SELECT COALESCE(SUM(count), 0)::int8 AS n FROM an_event_counts \
             WHERE minute > now() - interval '1 hour'",
        )
        .await?,
        active_users_last_hour: number(
            conn,
            "SELECT count(*) AS n FROM an_users WHERE last_active_at > now() - interval '1 hour'",
        )
        .await?,
    })
}

/// One hourly bucket.
#[derive(Debug, Clone, QueryableByName, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    #[diesel(sql_type = Timestamptz)]
    pub hour: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Hourly counts of `event_type` from the hour of `from` to the hour of `to`, zero-filled.
pub async fn timeseries(
    conn: &mut AsyncPgConnection,
    event_type: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> diesel::QueryResult<Vec<Bucket>> {
    crate::db::prepared(
        "SELECT h.hour, COALESCE(SUM(c.count), 0)::int8 AS count \
         FROM generate_series(date_trunc('hour', $2 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
                              date_trunc('hour', $3 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
                              interval '1 hour') AS h(hour) \
         LEFT JOIN an_event_counts c ON c.event_type = $1 \
              AND c.minute >= h.hour AND c.minute < h.hour + interval '1 hour' \
         GROUP BY h.hour ORDER BY h.hour",
    )
    .bind::<Text, _>(event_type)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(conn)
    .await
}
