//! The transactional outbox on Postgres: [`enqueue`] writes an event in the caller's
//! transaction; [`PgOutbox`] is the store the generic relay actor publishes from, and stamps
//! each row with its publication sequence (`outbox_sequences`) before the row is first sent.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use recsys_actors::outbox_relay::{
    BatchOutcome, OutboxRecord, OutboxStore, PartitionCounts, Pending, Publish,
};
use recsys_actors::sequence;
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

/// An outbox row as the relay reads it: id, topic, key, payload, stream, seq.
type Row = (i64, String, String, String, Option<i32>, Option<i64>);

#[derive(QueryableByName)]
struct LastSeq {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    stream: i32,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

/// Stamps the unstamped `rows` (in their order: ascending id) and commits the stamps on a
/// connection of its own, before anything is sent: a record that reached the broker always has
/// its stamp stored, so a later copy of it carries the same one. Answers every row stamped.
async fn stamp(
    pool: &Pool,
    rows: Vec<Row>,
    partitions: &PartitionCounts,
) -> anyhow::Result<Vec<OutboxRecord>> {
    let mut records = Vec::with_capacity(rows.len());
    // (topic, stream) -> how many new numbers it needs.
    let mut wanted: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut fresh = Vec::new();
    for (id, topic, key, payload, stream, seq) in rows {
        let (stream, seq) = match (stream, seq) {
            (Some(stream), Some(seq)) => (stream, seq),
            _ => {
                let count = *partitions
                    .get(&topic)
                    .with_context(|| format!("no partition count for topic {topic}"))?;
                let stream = sequence::partition_for(key.as_bytes(), count);
                *wanted.entry((topic.clone(), stream)).or_default() += 1;
                fresh.push(records.len());
                (stream, 0)
            }
        };
        records.push(OutboxRecord {
            id,
            topic,
            key,
            payload,
            stream,
            seq,
        });
    }
    if fresh.is_empty() {
        return Ok(records);
    }
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| -> anyhow::Result<()> {
        let (topics, streams, counts): (Vec<&str>, Vec<i32>, Vec<i64>) = wanted
            .iter()
            .map(|((topic, stream), n)| (topic.as_str(), *stream, *n))
            .collect();
        let lasts: Vec<LastSeq> = crate::db::prepared(
            "INSERT INTO outbox_sequences AS s (topic, stream, last_seq) \
             SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[]) \
             ON CONFLICT (topic, stream) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq \
             RETURNING topic, stream, last_seq",
        )
        .bind::<Array<Text>, _>(&topics)
        .bind::<Array<Integer>, _>(&streams)
        .bind::<Array<BigInt>, _>(&counts)
        .load(conn)
        .await?;
        // The first new number of each stream.
        let mut next: HashMap<(String, i32), i64> = lasts
            .into_iter()
            .map(|l| {
                let n = wanted[&(l.topic.clone(), l.stream)];
                ((l.topic, l.stream), l.last_seq - n + 1)
            })
            .collect();
        let (mut ids, mut streams, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &fresh {
            let record = &mut records[i];
            let slot = next
                .get_mut(&(record.topic.clone(), record.stream))
                .context("a stream got no numbers")?;
            record.seq = *slot;
            *slot += 1;
            ids.push(record.id);
            streams.push(record.stream);
            seqs.push(record.seq);
        }
        let stamped = crate::db::prepared(
            "UPDATE outbox AS o SET stream = v.stream, seq = v.seq \
             FROM unnest($1::int8[], $2::int4[], $3::int8[]) AS v(id, stream, seq) \
             WHERE o.id = v.id AND o.seq IS NULL",
        )
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Integer>, _>(&streams)
        .bind::<Array<BigInt>, _>(&seqs)
        .execute(conn)
        .await?;
        // Only the relay holding the lock stamps, so this holds; if it did not, a number would
        // be given out without a row to carry it, and consumers would wait for it forever.
        anyhow::ensure!(
            stamped == ids.len(),
            "stamped {stamped} of {} rows",
            ids.len()
        );
        Ok(())
    })
    .await?;
    Ok(records)
}

diesel::define_sql_function! {
    /// Takes a transaction-scoped advisory lock if free.
    fn pg_try_advisory_xact_lock(key: diesel::sql_types::BigInt) -> diesel::sql_types::Bool;
}

impl OutboxStore for PgOutbox {
    fn relay_batch(
        &self,
        limit: i64,
        partitions: PartitionCounts,
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
                    let columns = (
                        outbox::id,
                        outbox::topic,
                        outbox::key,
                        outbox::payload,
                        outbox::stream,
                        outbox::seq,
                    );
                    // Rows sent before but not acknowledged keep their stamp and go first.
                    let mut rows: Vec<Row> = outbox::table
                        .select(columns)
                        .filter(outbox::seq.is_not_null())
                        .order(outbox::id.asc())
                        .limit(limit)
                        .load(conn)
                        .await?;
                    let room = limit - rows.len() as i64;
                    if room > 0 {
                        rows.extend(
                            outbox::table
                                .select(columns)
                                .filter(outbox::seq.is_null())
                                .order(outbox::id.asc())
                                .limit(room)
                                .load::<Row>(conn)
                                .await?,
                        );
                    }
                    let claimed = rows.len();
                    if claimed == 0 {
                        return Ok(BatchOutcome::Done {
                            claimed: 0,
                            published: 0,
                        });
                    }
                    let records = stamp(&pool, rows, &partitions).await?;
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
