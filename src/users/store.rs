//! SQL of the users service. Functions take a connection so callers compose them in one
//! transaction with the outbox write.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::tables::{user_activity, users};
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
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = user_activity)]
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

/// Inserts one recorded action.
pub async fn insert_activity(mut conn: &AsyncPgConnection, row: &ActivityRow) -> QueryResult<()> {
    diesel::insert_into(user_activity::table)
        .values(row.clone())
        .execute(&mut conn)
        .await
        .map(|_| ())
}
