//! SQL of the users service. Functions take a connection so callers compose them in one
//! transaction with the outbox write.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::events::Envelope;
use recsys_schema::tables::users;
use uuid::Uuid;

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

/// Records actions and their `user.activity` events in one statement (so atomically, without
/// a transaction around it): each `(row, envelope)` becomes a `user_activity` row and an outbox
/// row (as [`crate::outbox::enqueue`] writes them), in the given order. Actions of users that
/// do not exist are skipped; answers the ids written. A user removed while the statement runs
/// fails it with a foreign-key violation.
pub async fn record_activities(
    conn: &mut AsyncPgConnection,
    actions: &[(ActivityRow, Envelope)],
) -> QueryResult<HashSet<Uuid>> {
    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = SqlUuid)]
        event_id: Uuid,
    }
    let column = |f: &dyn Fn(&(ActivityRow, Envelope)) -> Uuid| -> Vec<Uuid> {
        actions.iter().map(f).collect()
    };
    let (ids, user_ids, product_ids) = (
        column(&|(r, _)| r.id),
        column(&|(r, _)| r.user_id),
        column(&|(r, _)| r.product_id),
    );
    let kinds: Vec<&str> = actions.iter().map(|(r, _)| r.action.as_str()).collect();
    let quantities: Vec<i32> = actions.iter().map(|(r, _)| r.quantity).collect();
    let times: Vec<DateTime<Utc>> = actions.iter().map(|(r, _)| r.occurred_at).collect();
    let topics: Vec<&str> = actions.iter().map(|(_, e)| e.event.topic()).collect();
    let keys: Vec<&str> = actions.iter().map(|(_, e)| e.key.as_str()).collect();
    let payloads: Vec<String> = actions.iter().map(|(_, e)| e.to_json()).collect();
    let rows: Vec<Written> = crate::db::prepared(
        "WITH input AS ( \
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int4[], \
                                 $6::timestamptz[], $7::text[], $8::text[], $9::text[]) \
              WITH ORDINALITY AS t(id, user_id, product_id, action, quantity, occurred_at, \
                                   topic, key, payload, ord)), \
         activity AS ( \
            INSERT INTO user_activity (id, user_id, product_id, action, quantity, occurred_at) \
            SELECT id, user_id, product_id, action, quantity, occurred_at FROM input \
            WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = input.user_id) \
            RETURNING id) \
         INSERT INTO outbox (topic, key, event_id, payload, created_at) \
         SELECT i.topic, i.key, i.id, i.payload, i.occurred_at \
         FROM input i JOIN activity a ON a.id = i.id ORDER BY i.ord \
         RETURNING event_id",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<SqlUuid>, _>(&user_ids)
    .bind::<Array<SqlUuid>, _>(&product_ids)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Integer>, _>(&quantities)
    .bind::<Array<Timestamptz>, _>(&times)
    .bind::<Array<Text>, _>(&topics)
    .bind::<Array<Text>, _>(&keys)
    .bind::<Array<Text>, _>(&payloads)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}
