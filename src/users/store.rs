//! SQL of the users service. Functions take a connection so callers compose them in one
//! transaction with the outbox write.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bytea, Double, Integer, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::tables::{outbox as outbox_table, users};
use uuid::Uuid;

use crate::idempotency::{self, Claim, Recorded};
use crate::outbox;

/// A row of `users`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    /// Lower case.
    pub email: String,
    pub password_hash: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns an update may set; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A row of `user_activity`.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub action: String,
    pub quantity: i32,
    pub occurred_at: DateTime<Utc>,
}

/// Inserts `row`.
pub async fn insert(conn: &mut AsyncPgConnection, row: &UserRow) -> QueryResult<()> {
    diesel::insert_into(users::table)
        .values(row.clone())
        .execute(conn)
        .await
        .map(|_| ())
}

/// The user with `id`, locked for update when `for_update`.
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    for_update: bool,
) -> QueryResult<Option<UserRow>> {
    let query = users::table.find(id).select(UserRow::as_select());
    if for_update {
        query.for_update().first(conn).await.optional()
    } else {
        query.first(conn).await.optional()
    }
}

/// The user with the (lower-case) `email`.
pub async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Applies `changes` to user `id` and answers the new row.
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &UserChanges,
) -> QueryResult<UserRow> {
    diesel::update(users::table.find(id))
        .set(changes.clone())
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

/// Records actions and their `user.activity` events in one statement (so atomically, without a
/// transaction around it, in one round trip): the `user_activity` rows of the users that exist,
/// and the outbox rows of those (`events`, in the order of `rows`). Answers the ids written. A
/// user removed while the statement runs fails it with a foreign-key violation.
///
/// `claims` (one per row, or empty: none) are the rows' `Idempotency-Key`s. A keyed row is
/// written only if the same statement takes its key's lock and records its event id as the
/// key's answer (a new key, or a dead one), so a key is recorded exactly when its row is; one
/// not written had its key held by another request, recorded already, or repeated earlier in
/// `rows` (see [`keyed_lookup`]).
pub async fn record_activities(
    conn: &mut AsyncPgConnection,
    rows: &[&ActivityRow],
    claims: &[Option<&Claim>],
    events: outbox::Events<'_>,
) -> QueryResult<HashSet<Uuid>> {
    // Without keys, the claims are left out: the group commit's usual statement.
    static PLAIN: LazyLock<String> = LazyLock::new(|| activity_statement(false));
    static KEYED: LazyLock<String> = LazyLock::new(|| activity_statement(true));
    #[derive(QueryableByName)]
    #[diesel(table_name = outbox_table)]
    struct Written {
        event_id: Uuid,
    }
    let column =
        |f: &dyn Fn(&ActivityRow) -> Uuid| -> Vec<Uuid> { rows.iter().map(|r| f(r)).collect() };
    let (ids, user_ids, product_ids) = (
        column(&|r| r.id),
        column(&|r| r.user_id),
        column(&|r| r.product_id),
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    let quantities: Vec<i32> = rows.iter().map(|r| r.quantity).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.occurred_at).collect();
    let keyed = Keyed::of(rows, claims);
    let sql = if keyed.all_ids.is_empty() {
        &PLAIN
    } else {
        &KEYED
    };
    let query = crate::db::prepared(sql.as_str())
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<SqlUuid>, _>(user_ids)
        .bind::<Array<SqlUuid>, _>(product_ids)
        .bind::<Array<Text>, _>(kinds)
        .bind::<Array<Integer>, _>(quantities)
        .bind::<Array<Timestamptz>, _>(times);
    if keyed.all_ids.is_empty() {
        let written: Vec<Written> = events.bind(query).load(conn).await?;
        return Ok(written.into_iter().map(|w| w.event_id).collect());
    }
    let query = query
        .bind::<Array<SqlUuid>, _>(keyed.ids)
        .bind::<Array<SqlUuid>, _>(keyed.user_ids)
        .bind::<Array<Text>, _>(keyed.callers)
        .bind::<Array<Text>, _>(keyed.keys)
        .bind::<Array<Bytea>, _>(keyed.fingerprints)
        .bind::<Array<BigInt>, _>(keyed.locks)
        .bind::<Double, _>(idempotency::retention_secs())
        .bind::<Array<SqlUuid>, _>(keyed.all_ids);
    let written: Vec<Written> = events.bind(query).load(conn).await?;
    Ok(written.into_iter().map(|w| w.event_id).collect())
}

/// The statement of [`record_activities`]: the rows ($1-$6), with `keyed` the claims
/// ($7-$12: row id, user, caller, key, fingerprint, lock; $13 the retention; $14 the ids of
/// every keyed row), then the outbox rows.
fn activity_statement(keyed: bool) -> String {
    let (claims, only_claimed, events) = if keyed {
        (
            "WITH claims AS MATERIALIZED ( \
                SELECT * FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], \
                                     $11::bytea[], $12::int8[]) \
                  AS c(id, user_id, caller, key, fingerprint, lock) \
                WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id) \
                  AND pg_try_advisory_xact_lock(c.lock)), \
             recorded AS ( \
                INSERT INTO idempotency_keys (caller, key, fingerprint, answer) \
                SELECT caller, key, fingerprint, to_jsonb(id::text) FROM claims \
                ON CONFLICT (caller, key) DO UPDATE \
                  SET fingerprint = EXCLUDED.fingerprint, answer = EXCLUDED.answer, \
                      created_at = EXCLUDED.created_at \
                  WHERE idempotency_keys.created_at <= now() - make_interval(secs => $13) \
                RETURNING caller, key), ",
            "AND (input.id <> ALL($14::uuid[]) \
                  OR input.id IN (SELECT c.id FROM claims c JOIN recorded r USING (caller, key)))",
            15,
        )
    } else {
        ("WITH ", "", 7)
    };
    format!(
        "{claims} \
         activity AS ( \
            INSERT INTO user_activity (id, user_id, product_id, action, quantity, occurred_at) \
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], \
                                 $5::int4[], $6::timestamptz[]) \
              AS input(id, user_id, product_id, action, quantity, occurred_at) \
            WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = input.user_id) {only_claimed} \
            RETURNING id) \
         {} \
         RETURNING event_id",
        outbox::Events::insert(events, Some("activity"))
    )
}

/// The keyed rows of a write, as the statement binds them: the first row of each key (the
/// ones that may claim it), and the ids of every keyed row.
struct Keyed<'a> {
    ids: Vec<Uuid>,
    user_ids: Vec<Uuid>,
    callers: Vec<&'a str>,
    keys: Vec<&'a str>,
    fingerprints: Vec<&'a [u8]>,
    locks: Vec<i64>,
    all_ids: Vec<Uuid>,
}

impl<'a> Keyed<'a> {
    fn of(rows: &[&ActivityRow], claims: &[Option<&'a Claim>]) -> Self {
        let mut keyed = Keyed {
            ids: Vec::new(),
            user_ids: Vec::new(),
            callers: Vec::new(),
            keys: Vec::new(),
            fingerprints: Vec::new(),
            locks: Vec::new(),
            all_ids: Vec::new(),
        };
        let mut seen = HashSet::new();
        for (row, claim) in rows.iter().zip(claims) {
            let Some(claim) = claim else { continue };
            keyed.all_ids.push(row.id);
            if !seen.insert((claim.owner(), claim.key())) {
                continue;
            }
            keyed.ids.push(row.id);
            keyed.user_ids.push(row.user_id);
            keyed.callers.push(claim.owner());
            keyed.keys.push(claim.key());
            keyed.fingerprints.push(claim.fingerprint());
            keyed.locks.push(claim.lock());
        }
        keyed
    }
}

/// For keyed actions a write did not write: whether the user exists, and the key's live
/// record, if any (in the order given).
pub async fn keyed_lookup(
    conn: &mut AsyncPgConnection,
    actions: &[(Uuid, &Claim)],
) -> QueryResult<Vec<(bool, Option<Recorded>)>> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        user_exists: bool,
        #[diesel(sql_type = diesel::sql_types::Nullable<Bytea>)]
        fingerprint: Option<Vec<u8>>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Jsonb>)]
        answer: Option<serde_json::Value>,
    }
    let found: Vec<Found> = crate::db::prepared(
        "SELECT EXISTS (SELECT 1 FROM users u WHERE u.id = a.user_id) AS user_exists, \
                r.fingerprint, r.answer \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY \
           AS a(user_id, caller, key, ord) \
         LEFT JOIN idempotency_keys r ON r.caller = a.caller AND r.key = a.key \
           AND r.created_at > now() - make_interval(secs => $4) \
         ORDER BY a.ord",
    )
    .bind::<Array<SqlUuid>, _>(actions.iter().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(actions.iter().map(|(_, c)| c.owner()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(actions.iter().map(|(_, c)| c.key()).collect::<Vec<_>>())
    .bind::<Double, _>(idempotency::retention_secs())
    .load(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|f| {
            let recorded = match (f.fingerprint, f.answer) {
                (Some(fingerprint), Some(answer)) => Some(Recorded {
                    fingerprint,
                    answer,
                }),
                _ => None,
            };
            (f.user_exists, recorded)
        })
        .collect())
}
