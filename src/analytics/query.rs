//! [`AnalyticsQueries`]: the analytics read side; answers statistics queries from Postgres.

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::AnalyticsError;
use super::store;
use crate::db::Pool;

/// The analytics read side: answers queries on the statistics.
pub struct AnalyticsQueries {
    pool: Pool,
}

impl AnalyticsQueries {
    /// Queries through `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl Actor for AnalyticsQueries {
    type Context = Context<Self>;
}

impl Supervised for AnalyticsQueries {}

/// One statistics query (already validated).
#[derive(Debug, Clone)]
pub enum StatsQuery {
    Summary,
    Top {
        by: &'static str,
        limit: i64,
        /// Only events since then (whole hours), or all time.
        since: Option<DateTime<Utc>>,
    },
    Product(Uuid),
    User(Uuid),
    Series {
        event_type: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// Answers a [`StatsQuery`] as JSON.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<serde_json::Value, AnalyticsError>")]
pub struct Stats(pub StatsQuery);

/// Runs the query; [`AnalyticsError::ProductNeverSeen`] or [`AnalyticsError::UserNeverSeen`]
/// for a product or user no event was counted about.
impl Handler<Stats> for AnalyticsQueries {
    type Result = ResponseFuture<Result<serde_json::Value, AnalyticsError>>;

    fn handle(&mut self, msg: Stats, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            let json = |v: &dyn erased::Json| v.to_value();
            Ok(match msg.0 {
                StatsQuery::Summary => json(&store::summary(&mut conn).await?),
                StatsQuery::Top { by, limit, since } => {
                    json(&store::top(&mut conn, by, limit, since).await?)
                }
                StatsQuery::Product(id) => json(
                    &store::product(&mut conn, id)
                        .await?
                        .ok_or_else(|| AnalyticsError::ProductNeverSeen)?,
                ),
                StatsQuery::User(id) => json(
                    &store::user(&mut conn, id)
                        .await?
                        .ok_or_else(|| AnalyticsError::UserNeverSeen)?,
                ),
                StatsQuery::Series {
                    event_type,
                    from,
                    to,
                } => json(&store::timeseries(&mut conn, &event_type, from, to).await?),
            })
        })
    }
}

mod erased {
    //! Serializing the different answer types through one function.
    pub trait Json {
        fn to_value(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("statistics serialize")
        }
    }
}

recsys_actors::observed_handlers!(AnalyticsQueries => Stats);
recsys_actors::restart_on_fail!(AnalyticsQueries);
