//! What the consuming services share: the decoder of record values into [`Fact`]s, and the
//! consumer bookkeeping in Postgres — stored positions per group/topic/partition and what each
//! group has seen of each publication stream. [`claim`] runs inside the sink's transaction, so
//! state, positions and the seen sequences commit together (exactly-once effect).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_actors::kafka_consumer::Batch;
use recsys_actors::sequence::Seen;
use recsys_schema::events::{
    Envelope, Event, EventType, ProductDeleted, ProductSnapshot, UserActivity, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::db::Pool;
use recsys_schema::tables::{consumer_offsets, consumer_sequences};

#[derive(QueryableByName)]
#[diesel(table_name = consumer_offsets)]
struct Position {
    topic: String,
    partition: i32,
    next_offset: i64,
}

#[derive(QueryableByName)]
#[diesel(table_name = consumer_sequences)]
struct StreamRow {
    topic: String,
    stream: i32,
    last_seq: i64,
    gaps: Vec<i64>,
}

/// The stored next offsets of `partitions` for `group` (partitions never consumed are absent).
pub async fn load_positions(
    pool: &Pool,
    group: &str,
    partitions: &[(String, i32)],
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let mut conn = pool.get().await?;
    let rows: Vec<Position> = crate::db::prepared(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind::<Text, _>(group)
    .load(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            partitions
                .iter()
                .any(|(t, p)| *t == r.topic && *p == r.partition)
        })
        .map(|r| (r.topic, r.partition, r.next_offset))
        .collect())
}

/// Inside the caller's transaction: decides which records of `batch` to apply, records what
/// the group has now seen and moves the positions. Answers one flag per record.
///
/// A record is applied when its offset is not below its partition's stored position and its
/// publication stamp is new to the group ([`Seen::admit`]: above the highest number of its
/// stream, or one of the missing numbers below it). Redeliveries, copies published again by
/// the relay and repeats within the batch are skipped.
pub async fn claim<T>(
    conn: &mut AsyncPgConnection,
    group: &str,
    batch: &Batch<T>,
) -> diesel::QueryResult<Vec<bool>> {
    // One batch of a group at a time, across processes too: two runtimes that briefly share
    // partitions during a rebalance must not both apply a record.
    crate::db::prepared("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
        .bind::<Text, _>(group)
        .execute(conn)
        .await?;
    let stored: HashMap<(Arc<str>, i32), i64> = crate::db::prepared(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind::<Text, _>(group)
    .load::<Position>(conn)
    .await?
    .into_iter()
    .map(|p| ((Arc::from(p.topic), p.partition), p.next_offset))
    .collect();
    let mut seen: HashMap<(Arc<str>, i32), Seen> = crate::db::prepared(
        "SELECT topic, stream, last_seq, gaps FROM consumer_sequences WHERE consumer_group = $1",
    )
    .bind::<Text, _>(group)
    .load::<StreamRow>(conn)
    .await?
    .into_iter()
    .map(|r| {
        let key = (Arc::from(r.topic), r.stream);
        (key, Seen::from_stored(r.last_seq, &r.gaps))
    })
    .collect();

    let mut touched = BTreeSet::new();
    let applied = batch
        .records
        .iter()
        .map(|r| {
            let position = stored
                .get(&(r.topic.clone(), r.partition))
                .copied()
                .unwrap_or(0);
            if r.offset < position {
                return false;
            }
            let key = (r.topic.clone(), r.stream);
            let new = seen.entry(key.clone()).or_default().admit(r.seq);
            if new {
                touched.insert(key);
            }
            new
        })
        .collect();

    if !touched.is_empty() {
        let (mut topics, mut streams, mut lasts, mut gaps) = (vec![], vec![], vec![], vec![]);
        for key in &touched {
            let state = &seen[key];
            topics.push(&*key.0);
            streams.push(key.1);
            lasts.push(state.last());
            gaps.push(crate::db::array_literal(&state.stored_gaps()));
        }
        crate::db::prepared(
            "INSERT INTO consumer_sequences (consumer_group, topic, stream, last_seq, gaps) \
             SELECT $1, t, s, l, g::int8[] FROM unnest($2::text[], $3::int4[], $4::int8[], $5::text[]) \
               AS x(t, s, l, g) \
             ON CONFLICT (consumer_group, topic, stream) DO UPDATE \
             SET last_seq = EXCLUDED.last_seq, gaps = EXCLUDED.gaps, updated_at = now()",
        )
        .bind::<Text, _>(group)
        .bind::<Array<Text>, _>(&topics)
        .bind::<Array<Integer>, _>(&streams)
        .bind::<Array<BigInt>, _>(&lasts)
        .bind::<Array<Text>, _>(&gaps)
        .execute(conn)
        .await?;
    }

    let (topics, partitions, offsets): (Vec<String>, Vec<i32>, Vec<i64>) =
        batch.positions.iter().cloned().fold(
            (vec![], vec![], vec![]),
            |(mut t, mut p, mut o), (topic, partition, offset)| {
                t.push(topic);
                p.push(partition);
                o.push(offset);
                (t, p, o)
            },
        );
    crate::db::prepared(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) \
         SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, o) \
         ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
         SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), \
             updated_at = now()",
    )
    .bind::<Text, _>(group)
    .bind::<Array<Text>, _>(&topics)
    .bind::<Array<Integer>, _>(&partitions)
    .bind::<Array<BigInt>, _>(&offsets)
    .execute(conn)
    .await?;
    Ok(applied)
}

/// Buckets of the consumers' batch-size histograms (records per applied batch), up to the
/// largest `CONSUMER_MAX_BATCH` measured (100 000).
pub const BATCH_SIZE_BUCKETS: [f64; 15] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0,
    50000.0, 100000.0,
];

/// What the consuming services use of one event: the envelope (validated whole) without what
/// none of their folds reads — the event id, the key, the schema version, user names, the
/// changed fields, and product snapshots where the consumer keeps no catalog. At most 56 bytes
/// (a unit test holds it there) instead of the envelope's 176 and its strings: consumer
/// batches are held whole while they are applied, so their memory is this size times the
/// batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// The envelope's `occurred_at`.
    pub occurred_at: DateTime<Utc>,
    pub what: What,
}

/// The event of a [`Fact`].
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    UserRegistered { user_id: Uuid },
    UserUpdated { user_id: Uuid },
    Activity(UserActivity),
    ProductCreated(ProductChange),
    ProductUpdated(ProductChange),
    ProductDeleted(ProductDeleted),
}

/// `product.created` or `product.updated`: the product, and its new state when the consumer
/// keeps it ([`Snapshots::Keep`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductChange {
    pub product_id: Uuid,
    pub snapshot: Option<Box<ProductSnapshot>>,
}

/// Whether a consumer's [`Fact`]s carry product snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// Recommendations: it keeps a catalog projection.
    Keep,
    /// Analytics: it only counts product events.
    Drop,
}

impl What {
    /// The kind of the event.
    pub fn event_type(&self) -> EventType {
        match self {
            What::UserRegistered { .. } => EventType::UserRegistered,
            What::UserUpdated { .. } => EventType::UserUpdated,
            What::Activity(_) => EventType::UserActivity,
            What::ProductCreated(_) => EventType::ProductCreated,
            What::ProductUpdated(_) => EventType::ProductUpdated,
            What::ProductDeleted(_) => EventType::ProductDeleted,
        }
    }

    /// The envelope's `type`.
    pub fn type_name(&self) -> &'static str {
        self.event_type().name()
    }
}

impl Fact {
    /// The fact of `envelope`, with or without product snapshots.
    pub fn of(envelope: Envelope, snapshots: Snapshots) -> Self {
        let change = |p: ProductSnapshot| ProductChange {
            product_id: p.product_id,
            snapshot: (snapshots == Snapshots::Keep).then(|| Box::new(p)),
        };
        let what = match envelope.event {
            Event::UserRegistered(e) => What::UserRegistered { user_id: e.user_id },
            Event::UserUpdated(e) => What::UserUpdated { user_id: e.user_id },
            Event::UserActivity(a) => What::Activity(a),
            Event::ProductCreated(p) => What::ProductCreated(change(p)),
            Event::ProductUpdated(p) => What::ProductUpdated(change(p)),
            Event::ProductDeleted(d) => What::ProductDeleted(d),
        };
        Fact {
            occurred_at: envelope.occurred_at,
            what,
        }
    }
}

/// The full fact of `envelope`, snapshots kept.
impl From<Envelope> for Fact {
    fn from(envelope: Envelope) -> Self {
        Fact::of(envelope, Snapshots::Keep)
    }
}

/// The consumers' decoder: [`decode_envelope`], then the [`Fact`] of the envelope.
pub fn decode_fact(bytes: &[u8], snapshots: Snapshots) -> Result<(Fact, &'static str), String> {
    decode_envelope(bytes).map(|(envelope, label)| (Fact::of(envelope, snapshots), label))
}

/// Decodes a record value into an [`Envelope`] and its type name, or says why it is poison:
/// not JSON, not an envelope, an unknown `type`, or a value outside the contract (schema
/// version, key, quantity, version).
pub fn decode_envelope(bytes: &[u8]) -> Result<(Envelope, &'static str), String> {
    let envelope = Envelope::from_json(bytes).map_err(|e| format!("not a valid envelope: {e}"))?;
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "unsupported schema_version {}",
            envelope.schema_version
        ));
    }
    let mut key = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if envelope.key != *envelope.event.key().hyphenated().encode_lower(&mut key) {
        return Err("key does not match the entity id".into());
    }
    match &envelope.event {
        Event::UserActivity(a) if !(1..=1000).contains(&a.quantity) => {
            return Err(format!("quantity {} outside 1..=1000", a.quantity));
        }
        Event::ProductCreated(p) | Event::ProductUpdated(p) if p.version < 1 => {
            return Err(format!("version {} below 1", p.version));
        }
        _ => {}
    }
    let label = envelope.event.type_name();
    Ok((envelope, label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    /// The size `CONSUMER_MAX_BATCH`'s documentation gives for a record held in a batch.
    fn a_consumed_fact_takes_120_bytes() {
        assert_eq!(
            std::mem::size_of::<recsys_actors::kafka_consumer::Consumed<Fact>>(),
            120
        );
    }

    #[test]
    /// Valid envelopes decode; garbage, unknown types and contract violations are poison.
    fn decoding_separates_poison() {
        let user = Uuid::new_v4();
        let good = Envelope::new(Event::UserRegistered(
            recsys_schema::events::UserRegistered {
                user_id: user,
                name: "a".into(),
            },
        ));
        let (decoded, label) = decode_envelope(good.to_json().as_bytes()).unwrap();
        assert_eq!((decoded, label), (good.clone(), "user.registered"));
        let (fact, label) = decode_fact(good.to_json().as_bytes(), Snapshots::Drop).unwrap();
        let expected = Fact {
            occurred_at: good.occurred_at,
            what: What::UserRegistered { user_id: user },
        };
        assert_eq!((fact, label), (expected, "user.registered"));
        assert!(
            std::mem::size_of::<Fact>() <= 56,
            "{}",
            std::mem::size_of::<Fact>()
        );
        let mut value: serde_json::Value = serde_json::from_str(&good.to_json()).unwrap();
        let variants = [
            b"not json".to_vec(),
            b"{}".to_vec(),
            {
                value["type"] = "user.exploded".into();
                value.to_string().into_bytes()
            },
            {
                value["type"] = "user.registered".into();
                value["schema_version"] = 2.into();
                value.to_string().into_bytes()
            },
            {
                value["schema_version"] = 1.into();
                value["key"] = Uuid::new_v4().to_string().into();
                value.to_string().into_bytes()
            },
        ];
        for bad in variants {
            assert!(
                decode_envelope(&bad).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
