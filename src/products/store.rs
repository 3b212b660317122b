//! SQL of the products service. Deleted products keep their row (`deleted_at` set) and are
//! invisible to every read here.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::tables::products;
use uuid::Uuid;

/// A row of `products`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = products)]
pub struct ProductRow {
    pub id: Uuid,
    pub name: String,
    pub price: BigDecimal,
    pub category: Option<String>,
    pub description: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The columns an update may set; `None` leaves a column as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub price: Option<BigDecimal>,
    pub category: Option<Option<String>>,
    pub description: Option<Option<String>>,
}

/// Inserts `row`.
pub async fn insert(conn: &mut AsyncPgConnection, row: &ProductRow) -> QueryResult<()> {
    diesel::insert_into(products::table)
        .values(row.clone())
        .execute(conn)
        .await
        .map(|_| ())
}

/// The live (not deleted) product `id`.
pub async fn find_live(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ProductRow>> {
    products::table
        .find(id)
        .filter(products::deleted_at.is_null())
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Up to `limit` live products with ids after `after`, in id (= creation) order, only of
/// `categories` unless it is empty.
pub async fn list(
    conn: &mut AsyncPgConnection,
    categories: &[String],
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ProductRow>> {
    let mut query = products::table
        .filter(products::deleted_at.is_null())
        .select(ProductRow::as_select())
        .order(products::id.asc())
        .limit(limit)
        .into_boxed();
    if !categories.is_empty() {
        query = query.filter(products::category.eq_any(categories));
    }
    if let Some(after) = after {
        query = query.filter(products::id.gt(after));
    }
    query.load(conn).await
}

/// Applies `changes` to the live product `id`, bumping its version; `None` when there is none.
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &ProductChanges,
    now: DateTime<Utc>,
) -> QueryResult<Option<ProductRow>> {
    diesel::update(
        products::table
            .find(id)
            .filter(products::deleted_at.is_null()),
    )
    .set((
        changes.clone(),
        products::version.eq(products::version + 1),
        products::updated_at.eq(now),
    ))
    .returning(ProductRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Soft-deletes the live product `id`; answers its new version, `None` when there is none.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<Option<i32>> {
    diesel::update(
        products::table
            .find(id)
            .filter(products::deleted_at.is_null()),
    )
    .set((
        products::deleted_at.eq(now),
        products::updated_at.eq(now),
        products::version.eq(products::version + 1),
    ))
    .returning(products::version)
    .get_result(conn)
    .await
    .optional()
}
