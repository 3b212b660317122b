//! The transactional outbox on Postgres: [`enqueue`] writes an event in the caller's
//! transaction; [`PgOutbox`] is the store the generic relay actor publishes from.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use recsys_actors::outbox_relay::{BatchOutcome, OutboxRecord, OutboxStore, Pending, Publish};
use recsys_schema::events::Envelope;
use recsys_schema::tables::outbox;

use crate::db::Pool;

/// Arbitrary constant naming the advisory lock that makes one relay publish at a time.
const RELAY_LOCK: i64 = 0x7265_6373_7973; // "recsys"

/// Writes `envelope` to the outbox; call inside the transaction that makes the change. Takes
/// the connection shared, so the insert can be pipelined with the change's own statements.
pub async fn enqueue(mut conn: &AsyncPgConnection, envelope: &Envelope) -> diesel::QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::topic.eq(envelope.event.topic()),
            outbox::key.eq(&envelope.key),
            outbox::event_id.eq(envelope.event_id),
            outbox::payload.eq(envelope.to_json()),
            outbox::created_at.eq(envelope.occurred_at),
        ))
        .execute(&mut conn)
        .await
        .map(|_| ())
}

/// The outbox table as seen by the relay.
#[derive(Clone)]
pub struct PgOutbox {
    pool: Pool,
}

impl PgOutbox {
    /// The outbox behind `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

diesel::define_sql_function! {
    /// Takes a transaction-scoped advisory lock if free.
    fn pg_try_advisory_xact_lock(key: diesel::sql_types::BigInt) -> diesel::sql_types::Bool;
}

impl OutboxStore for PgOutbox {
    fn relay_batch(
        &self,
        limit: i64,
        publish: Publish,
    ) -> BoxFuture<'static, anyhow::Result<BatchOutcome>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get_owned().await?;
            let outcome: anyhow::Result<BatchOutcome> = conn
                .transaction(async move |conn| -> anyhow::Result<BatchOutcome> {
                    let locked: bool = diesel::select(pg_try_advisory_xact_lock(RELAY_LOCK))
                        .get_result(conn)
                        .await?;
                    if !locked {
                        return Ok(BatchOutcome::Busy);
                    }
                    let rows: Vec<(i64, String, String, String)> = outbox::table
                        .select((outbox::id, outbox::topic, outbox::key, outbox::payload))
                        .order(outbox::id.asc())
                        .limit(limit)
                        .load(conn)
                        .await?;
                    let claimed = rows.len();
                    if claimed == 0 {
                        return Ok(BatchOutcome::Done {
                            claimed: 0,
                            published: 0,
                        });
                    }
                    let records = rows
                        .into_iter()
                        .map(|(id, topic, key, payload)| OutboxRecord {
                            id,
                            topic,
                            key,
                            payload,
                        })
                        .collect();
                    let acknowledged = publish(records).await;
                    diesel::delete(outbox::table.filter(outbox::id.eq_any(&acknowledged)))
                        .execute(conn)
                        .await?;
                    Ok(BatchOutcome::Done {
                        claimed,
                        published: acknowledged.len(),
                    })
                })
                .await;
            outcome
        })
    }

    fn pending(&self) -> BoxFuture<'static, anyhow::Result<Pending>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get_owned().await?;
            let (rows, oldest): (i64, Option<DateTime<Utc>>) = outbox::table
                .select((
                    diesel::dsl::count_star(),
                    diesel::dsl::min(outbox::created_at),
                ))
                .get_result(&mut *conn)
                .await?;
            let oldest_age = oldest
                .and_then(|t| (Utc::now() - t).to_std().ok())
                .unwrap_or_default();
            Ok(Pending { rows, oldest_age })
        })
    }
}
