//! SQL of the users service. Functions take a connection so callers compose them in one
//! transaction with the outbox write.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::tables::{outbox as outbox_table, users};
use uuid::Uuid;

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
pub async fn record_activities(
    conn: &mut AsyncPgConnection,
    rows: &[&ActivityRow],
    events: outbox::Events<'_>,
) -> QueryResult<HashSet<Uuid>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH activity AS ( \
                INSERT INTO user_activity (id, user_id, product_id, action, quantity, occurred_at) \
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], \
                                     $5::int4[], $6::timestamptz[]) \
                  AS input(id, user_id, product_id, action, quantity, occurred_at) \
                WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = input.user_id) \
                RETURNING id) \
             {} \
             RETURNING event_id",
            outbox::Events::insert(7, Some("activity"))
        )
    });
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
    let query = crate::db::prepared(SQL.as_str())
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<SqlUuid>, _>(user_ids)
        .bind::<Array<SqlUuid>, _>(product_ids)
        .bind::<Array<Text>, _>(kinds)
        .bind::<Array<Integer>, _>(quantities)
        .bind::<Array<Timestamptz>, _>(times);
    let written: Vec<Written> = events.bind(query).load(conn).await?;
    Ok(written.into_iter().map(|w| w.event_id).collect())
}
