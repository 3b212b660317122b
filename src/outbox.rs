//! The transactional outbox on Postgres: [`enqueue`] writes events in the caller's
//! transaction, [`Events`] in the caller's own statement; [`PgOutbox`] is the store the generic relay actor publishes from. Before a row
//! is first sent it gets its publication stamp: the next number of its (topic, stream) from
//! `outbox_sequences`, recorded per batch and stream in `outbox_stamps` until the row is
//! acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use recsys_actors::metrics::OUTBOX_BATCH_STEP;
use recsys_actors::outbox_relay::{
    BatchOutcome, OutboxRecord, OutboxStore, PartitionCounts, Pending, Publish, Published,
    Reconciled,
};
use recsys_actors::sequence;
use recsys_schema::events::Envelope;
use recsys_schema::tables::{outbox, outbox_stamps};
use slog::{debug, warn, Logger};

use crate::db::Pool;

/// Rows the relay reads, stamps and sends in one batch at most.
pub const RELAY_BATCH: i64 = 500;

/// Arbitrary constant naming the advisory lock that makes one relay publish at a time.
pub const RELAY_LOCK: i64 = 0x7265_6373_7973; // "recsys"

/// Writes `envelopes` to the outbox, in their order, in one statement; call inside the
/// transaction that makes the change. Every event recsys publishes is written by this module,
/// here or through [`Events`].
pub async fn enqueue<'a>(
    conn: &mut AsyncPgConnection,
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> diesel::QueryResult<()> {
    static INSERT: LazyLock<String> = LazyLock::new(|| Events::insert(1, None));
    let events = Events::of(envelopes);
    if events.is_empty() {
        return Ok(());
    }
    events
        .bind(crate::db::prepared(INSERT.as_str()))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The outbox rows of some events, as the five arrays a statement binds (in the events'
/// order). [`enqueue`] inserts them on their own; a statement that makes a change and writes
/// its events at once (one round trip, one implicit transaction) appends
/// [`Events::insert`] to its own SQL and binds them after its own parameters.
pub struct Events<'a> {
    topics: Vec<&'static str>,
    keys: Vec<&'a str>,
    ids: Vec<uuid::Uuid>,
    payloads: Vec<String>,
    times: Vec<DateTime<Utc>>,
}

impl<'a> Events<'a> {
    /// The rows of `envelopes`.
    pub fn of(envelopes: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut events = Events {
            topics: Vec::new(),
            keys: Vec::new(),
            ids: Vec::new(),
            payloads: Vec::new(),
            times: Vec::new(),
        };
        for envelope in envelopes {
            events.topics.push(envelope.event.topic());
            events.keys.push(envelope.key.as_str());
            events.ids.push(envelope.event_id);
            events.payloads.push(envelope.to_json());
            events.times.push(envelope.occurred_at);
        }
        events
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `INSERT` of the rows, its five placeholders numbered from `first`. With `written`,
    /// the name of a common table expression of the same statement with a column `id`, only
    /// the events whose id it returns are inserted (the changes the statement really made).
    /// Rows are inserted in the order given, so their ids (the relay's order) follow it.
    pub fn insert(first: usize, written: Option<&str>) -> String {
        let [t, k, i, p, c] = [first, first + 1, first + 2, first + 3, first + 4];
        let only_written = written
            .map(|cte| format!("WHERE e.event_id IN (SELECT id FROM {cte}) "))
            .unwrap_or_default();
        format!(
            "INSERT INTO outbox (topic, key, event_id, payload, created_at) \
             SELECT topic, key, event_id, payload, created_at \
             FROM unnest(${t}::text[], ${k}::text[], ${i}::uuid[], ${p}::text[], \
                         ${c}::timestamptz[]) \
               WITH ORDINALITY AS e(topic, key, event_id, payload, created_at, ord) \
             {only_written}ORDER BY ord"
        )
    }

    /// Binds the rows to the next five placeholders of `query`.
    pub fn bind(self, query: crate::db::Prepared<'a>) -> crate::db::Prepared<'a> {
        query
            .bind::<Array<Text>, _>(self.topics)
            .bind::<Array<Text>, _>(self.keys)
            .bind::<Array<diesel::sql_types::Uuid>, _>(self.ids)
            .bind::<Array<Text>, _>(self.payloads)
            .bind::<Array<diesel::sql_types::Timestamptz>, _>(self.times)
    }
}

/// The outbox table as seen by the relay.
#[derive(Clone)]
pub struct PgOutbox {
    pool: Pool,
    /// Where the next read starts: the highest id read so far (see [`ReadCursor`]).
    cursor: Arc<Mutex<ReadCursor>>,
    /// Rows removed since the outbox was last vacuumed.
    removed: Arc<AtomicU64>,
    /// Whether a vacuum is running.
    vacuuming: Arc<AtomicBool>,
    /// Vacuum once this many were removed (`OUTBOX_VACUUM_ROWS`).
    vacuum_every: u64,
    logger: Logger,
}

/// Reading the outbox from the highest id already read skips the index entries of the rows
/// deleted since the last vacuum (at thousands of writes a second, tens of thousands of them,
/// which every read from the start walks through). A row whose transaction commits after the
/// relay has read past its id is found by a read from the start, done at least every
/// [`FULL_READ_EVERY`].
#[derive(Debug)]
struct ReadCursor {
    after: i64,
    last_full_read: Instant,
}

/// How long a row that committed late (behind the cursor) may wait for its relay.
const FULL_READ_EVERY: Duration = Duration::from_millis(500);

impl PgOutbox {
    /// The outbox behind `pool`; the relay vacuums `outbox` and `outbox_stamps` itself each
    /// time it has removed `vacuum_every` rows.
    ///
    /// Every recorded action inserts an outbox row and the relay deletes it moments later; the
    /// dead rows stay until a vacuum, and autovacuum visits a table at most once a minute
    /// (`autovacuum_naptime`), so under a sustained write load the table fills with dead rows
    /// that every relay read walks. A vacuum every `vacuum_every` rows costs a few
    /// milliseconds and keeps the table near its live size (docs/benchmarks.md, "Figures behind the
    /// settings").
    pub fn new(pool: Pool, vacuum_every: u64, logger: Logger) -> Self {
        Self {
            pool,
            cursor: Arc::new(Mutex::new(ReadCursor {
                after: 0,
                last_full_read: Instant::now(),
            })),
            removed: Arc::new(AtomicU64::new(0)),
            vacuuming: Arc::new(AtomicBool::new(false)),
            vacuum_every: vacuum_every.max(1),
            logger,
        }
    }

    /// Counts `removed` rows; once `vacuum_every` were removed since the last vacuum, starts
    /// one in a task of its own, one at a time: the relay goes on publishing meanwhile (a vacuum
    /// waits for a table's lock, and holding the relay until then held every event behind it).
    /// `SKIP_LOCKED` leaves a table that autovacuum is working on to autovacuum. A failed vacuum
    /// is logged and tried again after the next batch.
    fn vacuum_if_due(&self, removed: usize) {
        let total = self.removed.fetch_add(removed as u64, Ordering::Relaxed) + removed as u64;
        if total < self.vacuum_every || self.vacuuming.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let vacuumed = async {
                let mut conn = this.pool.get().await?;
                diesel::sql_query("VACUUM (SKIP_LOCKED) outbox, outbox_stamps")
                    .execute(&mut *conn)
                    .await?;
                anyhow::Ok(())
            }
            .await;
            match vacuumed {
                Ok(()) => {
                    this.removed.fetch_sub(total, Ordering::Relaxed);
                    debug!(this.logger, "outbox vacuumed"; "removed_rows" => total, "ms" => started.elapsed().as_millis() as u64);
                }
                Err(e) => warn!(this.logger, "outbox vacuum failed"; "error" => format!("{e:#}")),
            }
            this.vacuuming.store(false, Ordering::Release);
        });
    }

    /// Where this read starts: from the cursor, or from the start when a full read is due.
    fn read_from(&self) -> i64 {
        let mut cursor = self.cursor.lock().expect("cursor lock");
        if cursor.last_full_read.elapsed() >= FULL_READ_EVERY {
            cursor.last_full_read = Instant::now();
            return 0;
        }
        cursor.after
    }

    /// Moves the cursor past `id`.
    fn read_up_to(&self, id: i64) {
        let mut cursor = self.cursor.lock().expect("cursor lock");
        cursor.after = cursor.after.max(id);
    }
}

/// Times the steps of one relay batch into `outbox_batch_step_seconds`.
struct Step(Instant);

impl Step {
    fn start() -> Self {
        Self(Instant::now())
    }

    /// Records the step that just ended; the next starts now.
    fn done(&mut self, step: &str) {
        let now = Instant::now();
        OUTBOX_BATCH_STEP
            .with_label_values(&[step])
            .observe((now - self.0).as_secs_f64());
        self.0 = now;
    }
}

/// An outbox row as the relay reads it: id, topic, key, payload, written at.
type Row = (i64, String, String, String, DateTime<Utc>);

/// One row of `outbox_stamps`: outbox row `outbox_ids[i]` carries number `first_seq + i` of
/// its topic's `stream`.
#[derive(QueryableByName)]
#[diesel(table_name = outbox_stamps)]
struct Stamps {
    id: i64,
    stream: i32,
    first_seq: i64,
    outbox_ids: Vec<i64>,
}

/// A new `outbox_stamps` row: its id and the first number it gives its (topic, stream).
#[derive(QueryableByName)]
#[diesel(table_name = outbox_stamps)]
struct NewStamp {
    id: i64,
    topic: String,
    stream: i32,
    first_seq: i64,
}

/// Stamps the `fresh` rows (in their order: ascending id) and commits the stamps on a
/// connection of its own, before anything is sent: a record that reached the broker always has
/// its stamp stored, so a later copy of it carries the same one. One `outbox_stamps` row per
/// (topic, stream) holds the numbers of the whole batch; the outbox rows are not rewritten.
/// Answers the stamped records and the ids of the new `outbox_stamps` rows.
async fn stamp(
    pool: &Pool,
    fresh: Vec<Row>,
    partitions: &PartitionCounts,
) -> anyhow::Result<(Vec<OutboxRecord>, Vec<i64>)> {
    // (topic, stream) -> the outbox ids getting its next numbers, in order.
    let mut streams: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    let mut records = Vec::with_capacity(fresh.len());
    for (id, topic, key, payload, written_at) in fresh {
        let count = *partitions
            .get(&topic)
            .with_context(|| format!("no partition count for topic {topic}"))?;
        let stream = sequence::partition_for(key.as_bytes(), count);
        streams.entry((topic.clone(), stream)).or_default().push(id);
        records.push(OutboxRecord {
            id,
            topic,
            key,
            payload,
            stream,
            seq: 0,
            written_at: written_at.into(),
        });
    }
    if records.is_empty() {
        return Ok((records, Vec::new()));
    }
    let (topics, stream_ids, counts): (Vec<&str>, Vec<i32>, Vec<i64>) = streams
        .iter()
        .map(|((topic, stream), ids)| (topic.as_str(), *stream, ids.len() as i64))
        .collect();
    let ids: Vec<String> = streams
        .values()
        .map(|ids| crate::db::array_literal(ids))
        .collect();
    // One statement, so one transaction committed (and flushed) before it answers: each
    // stream's counter moves past the batch's rows and the stamp row records where they start.
    let mut conn = pool.get().await?;
    let stamped: Vec<NewStamp> = crate::db::prepared(
        "WITH batch AS ( \
            SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::text[]) \
              AS b(topic, stream, n, ids)), \
         counters AS ( \
            INSERT INTO outbox_sequences AS s (topic, stream, last_seq) \
            SELECT topic, stream, n FROM batch \
            ON CONFLICT (topic, stream) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq \
            RETURNING topic, stream, last_seq) \
         INSERT INTO outbox_stamps (topic, stream, first_seq, outbox_ids) \
         SELECT b.topic, b.stream, c.last_seq - b.n + 1, b.ids::int8[] \
         FROM batch b JOIN counters c USING (topic, stream) \
         RETURNING id, topic, stream, first_seq",
    )
    .bind::<Array<Text>, _>(&topics)
    .bind::<Array<Integer>, _>(&stream_ids)
    .bind::<Array<BigInt>, _>(&counts)
    .bind::<Array<Text>, _>(&ids)
    .load(&mut conn)
    .await?;
    if stamped.len() != streams.len() {
        anyhow::bail!("{} streams stamped of {}", stamped.len(), streams.len());
    }
    // Numbers in id order within each stream.
    let mut next: HashMap<(String, i32), i64> = stamped
        .iter()
        .map(|s| ((s.topic.clone(), s.stream), s.first_seq))
        .collect();
    for record in &mut records {
        let slot = next
            .get_mut(&(record.topic.clone(), record.stream))
            .context("a stream got no numbers")?;
        record.seq = *slot;
        *slot += 1;
    }
    Ok((records, stamped.into_iter().map(|s| s.id).collect()))
}

/// Removes the `outbox_stamps` rows `ids`.
async fn forget_stamps(conn: &mut AsyncPgConnection, ids: Vec<i64>) -> diesel::QueryResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    crate::db::prepared("DELETE FROM outbox_stamps WHERE id = ANY($1)")
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)
        .await
        .map(|_| ())
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
        let this = self.clone();
        let vacuum = self.clone();
        Box::pin(async move {
            let pool = this.pool.clone();
            let mut step = Step::start();
            let mut conn = pool.get_owned().await?;
            let outcome: anyhow::Result<BatchOutcome> = conn
                .transaction(async move |conn| -> anyhow::Result<BatchOutcome> {
                    // This transaction only deletes what the broker acknowledged (the stamps
                    // were committed durably before anything was sent). If Postgres loses it in
                    // a crash, the rows are published again with the same stamps and consumers
                    // skip the copies; so its commit need not wait for the WAL flush, which the
                    // writers' commits are waiting for. (Set with the lock, in one round trip;
                    // without the lock the transaction ends at once.)
                    #[derive(QueryableByName)]
                    struct Locked {
                        #[diesel(sql_type = diesel::sql_types::Bool)]
                        locked: bool,
                    }
                    let Locked { locked } = crate::db::prepared(
                        "SELECT pg_try_advisory_xact_lock($1) AS locked, \
                                set_config('synchronous_commit', 'off', true)",
                    )
                    .bind::<BigInt, _>(RELAY_LOCK)
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
                        outbox::created_at,
                    );
                    // Rows stamped before but not acknowledged keep their stamp and go first.
                    // Normally there are none: a batch whose rows were all acknowledged removes
                    // its stamps with them.
                    let stamps: Vec<Stamps> = crate::db::prepared(
                        "SELECT id, stream, first_seq, outbox_ids FROM outbox_stamps",
                    )
                    .load(conn)
                    .await?;
                    let stamped: HashMap<i64, (i32, i64)> = stamps
                        .iter()
                        .flat_map(|s| {
                            s.outbox_ids
                                .iter()
                                .enumerate()
                                .map(|(i, id)| (*id, (s.stream, s.first_seq + i as i64)))
                        })
                        .collect();
                    let stamped_ids: Vec<i64> = stamped.keys().copied().collect();
                    let mut records: Vec<OutboxRecord> = Vec::new();
                    if !stamped_ids.is_empty() {
                        // All of them, whatever the limit: a stamp row may only go once none of
                        // its rows is left, so every one left must be known.
                        let rows: Vec<Row> = outbox::table
                            .select(columns)
                            .filter(outbox::id.eq_any(&stamped_ids))
                            .order(outbox::id.asc())
                            .load(conn)
                            .await?;
                        records.extend(rows.into_iter().map(
                            |(id, topic, key, payload, written_at)| {
                                let (stream, seq) = stamped[&id];
                                OutboxRecord {
                                    id,
                                    topic,
                                    key,
                                    payload,
                                    stream,
                                    seq,
                                    written_at: written_at.into(),
                                }
                            },
                        ));
                    }
                    let room = limit - records.len() as i64;
                    let mut new_stamps = Vec::new();
                    if room > 0 {
                        let mut from = this.read_from();
                        let fresh: Vec<Row> = loop {
                            let rows: Vec<Row> = outbox::table
                                .select(columns)
                                .filter(outbox::id.gt(from))
                                .filter(diesel::dsl::not(outbox::id.eq_any(&stamped_ids)))
                                .order(outbox::id.asc())
                                .limit(room)
                                .load(conn)
                                .await?;
                            // Nothing past the cursor: look from the start (a late row, or
                            // none at all; either way the read is cheap now).
                            if rows.is_empty() && from > 0 {
                                from = 0;
                                continue;
                            }
                            break rows;
                        };
                        if let Some(last) = fresh.last() {
                            this.read_up_to(last.0);
                        }
                        step.done("read");
                        let (stamped, ids) = stamp(&pool, fresh, &partitions).await?;
                        step.done("stamp");
                        records.extend(stamped);
                        new_stamps = ids;
                    }
                    let claimed = records.len();
                    if claimed == 0 {
                        // Stamps whose rows are all gone (acknowledged by an earlier relay that
                        // stopped before removing them) go too.
                        forget_stamps(conn, stamps.iter().map(|s| s.id).collect()).await?;
                        return Ok(BatchOutcome::Done {
                            claimed: 0,
                            published: 0,
                        });
                    }
                    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
                    // With room, the read was timed before stamping.
                    if room <= 0 {
                        step.done("read");
                    }
                    let acknowledged = publish(records).await;
                    step.done("publish");
                    // A stamp row goes once none of its rows is left: every row still in the
                    // outbox was read above, so what was read and not acknowledged is left.
                    let acked: HashSet<i64> = acknowledged.iter().copied().collect();
                    let left: HashSet<i64> =
                        ids.into_iter().filter(|id| !acked.contains(id)).collect();
                    let done: Vec<i64> = stamps
                        .iter()
                        .filter(|s| !s.outbox_ids.iter().any(|id| left.contains(id)))
                        .map(|s| s.id)
                        .chain(new_stamps.iter().copied().filter(|_| left.is_empty()))
                        .collect();
                    // The acknowledged rows and their finished stamps, in one statement.
                    crate::db::prepared(
                        "WITH sent AS (DELETE FROM outbox WHERE id = ANY($1)) \
                         DELETE FROM outbox_stamps WHERE id = ANY($2)",
                    )
                    .bind::<Array<BigInt>, _>(&acknowledged)
                    .bind::<Array<BigInt>, _>(&done)
                    .execute(conn)
                    .await?;
                    step.done("remove");
                    Ok(BatchOutcome::Done {
                        claimed,
                        published: acknowledged.len(),
                    })
                })
                .await;
            if let Ok(BatchOutcome::Done { published, .. }) = &outcome {
                // The pooled connection goes back first: the vacuum takes one of its own.
                drop(conn);
                vacuum.vacuum_if_due(*published);
            }
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

    fn reconcile(
        &self,
        published: Published,
    ) -> BoxFuture<'static, anyhow::Result<Option<Reconciled>>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get_owned().await?;
            conn.transaction(async move |conn| -> anyhow::Result<Option<Reconciled>> {
                let locked: bool = diesel::select(pg_try_advisory_xact_lock(RELAY_LOCK))
                    .get_result(conn)
                    .await?;
                if !locked {
                    return Ok(None);
                }
                let mut done = Reconciled::default();
                if !published.last_seq.is_empty() {
                    let (mut topics, mut streams, mut lasts) = (vec![], vec![], vec![]);
                    for ((topic, stream), last) in &published.last_seq {
                        topics.push(topic.as_str());
                        streams.push(*stream);
                        lasts.push(*last);
                    }
                    done.raised = crate::db::prepared(
                        "INSERT INTO outbox_sequences AS s (topic, stream, last_seq) \
                         SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[]) \
                         ON CONFLICT (topic, stream) DO UPDATE SET last_seq = EXCLUDED.last_seq \
                         WHERE s.last_seq < EXCLUDED.last_seq",
                    )
                    .bind::<Array<Text>, _>(&topics)
                    .bind::<Array<Integer>, _>(&streams)
                    .bind::<Array<BigInt>, _>(&lasts)
                    .execute(conn)
                    .await?;
                }
                if !published.payloads.is_empty() {
                    let rows: Vec<(i64, String, String)> = outbox::table
                        .select((outbox::id, outbox::topic, outbox::payload))
                        .load(conn)
                        .await?;
                    let gone: Vec<i64> = rows
                        .into_iter()
                        .filter(|(_, topic, payload)| {
                            published
                                .payloads
                                .get(topic)
                                .is_some_and(|p| p.contains(payload))
                        })
                        .map(|(id, _, _)| id)
                        .collect();
                    if !gone.is_empty() {
                        done.removed =
                            diesel::delete(outbox::table.filter(outbox::id.eq_any(&gone)))
                                .execute(conn)
                                .await?;
                        // A stamp row goes once none of its rows is left.
                        crate::db::prepared(
                            "DELETE FROM outbox_stamps s WHERE NOT EXISTS \
                             (SELECT 1 FROM outbox o WHERE o.id = ANY(s.outbox_ids))",
                        )
                        .execute(conn)
                        .await?;
                    }
                }
                Ok(Some(done))
            })
            .await
        })
    }
}
