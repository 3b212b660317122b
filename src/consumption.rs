//! Consumer bookkeeping in Postgres, shared by the consuming services: stored positions per
//! group/topic/partition and the set of applied event ids. [`claim`] runs inside the sink's
//! transaction, so state, positions and applied ids commit together (exactly-once effect).

use std::collections::{HashMap, HashSet};

use diesel::sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_actors::kafka_consumer::Batch;
use recsys_schema::events::{Envelope, Event, SCHEMA_VERSION};
use uuid::Uuid;

use crate::db::Pool;

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    next_offset: i64,
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
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

/// Inside the caller's transaction: decides which records of `batch` to apply (offset not
/// below the stored position, event id not applied before, first occurrence within the batch),
/// records their ids and moves the positions. Answers one flag per record.
pub async fn claim<T>(
    conn: &mut AsyncPgConnection,
    group: &str,
    batch: &Batch<T>,
    event_id: impl Fn(&T) -> Uuid,
) -> diesel::QueryResult<Vec<bool>> {
    let stored: HashMap<(String, i32), i64> = crate::db::prepared(
        "SELECT topic, partition, next_offset FROM consumer_offsets \
         WHERE consumer_group = $1 FOR UPDATE",
    )
    .bind::<Text, _>(group)
    .load::<Position>(conn)
    .await?
    .into_iter()
    .map(|p| ((p.topic, p.partition), p.next_offset))
    .collect();

    let unread: Vec<bool> = batch
        .records
        .iter()
        .map(|r| {
            r.offset
                >= stored
                    .get(&(r.topic.clone(), r.partition))
                    .copied()
                    .unwrap_or(0)
        })
        .collect();
    let candidates: Vec<Uuid> = batch
        .records
        .iter()
        .zip(&unread)
        .filter(|(_, unread)| **unread)
        .map(|(r, _)| event_id(&r.item))
        .collect();
    let new_ids: HashSet<Uuid> = if candidates.is_empty() {
        HashSet::new()
    } else {
        crate::db::prepared(
            "INSERT INTO processed_events (consumer_group, event_id) \
             SELECT $1, id FROM unnest($2::uuid[]) AS t(id) \
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind::<Text, _>(group)
        .bind::<Array<SqlUuid>, _>(&candidates)
        .load::<NewId>(conn)
        .await?
        .into_iter()
        .map(|r| r.event_id)
        .collect()
    };
    let mut seen = HashSet::new();
    let applied = batch
        .records
        .iter()
        .zip(&unread)
        .map(|(r, unread)| {
            let id = event_id(&r.item);
            *unread && new_ids.contains(&id) && seen.insert(id)
        })
        .collect();

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

/// Forgets applied event ids older than `days` (the outbox republishes only recent events).
pub async fn prune(pool: &Pool, group: &str, days: i32) -> anyhow::Result<usize> {
    let mut conn = pool.get().await?;
    Ok(crate::db::prepared(
        "DELETE FROM processed_events WHERE consumer_group = $1 \
         AND processed_at < now() - make_interval(days => $2)",
    )
    .bind::<Text, _>(group)
    .bind::<Integer, _>(days)
    .execute(&mut *conn)
    .await?)
}

/// Decodes a record value into an [`Envelope`] and its type name, or says why it is poison:
/// not JSON, not an envelope, an unknown `type`, or a value outside the contract (schema
/// version, key, quantity, version).
pub fn decode_envelope(bytes: &[u8]) -> Result<(Envelope, &'static str), String> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid envelope: {e}"))?;
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "unsupported schema_version {}",
            envelope.schema_version
        ));
    }
    if envelope.key != envelope.event.key().to_string() {
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
