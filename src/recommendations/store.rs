//! SQL of the recommendations service: the catalog projection, the forward-decayed scores, what
//! each user did with each product, and the ranking state (t0, generation).

use std::sync::LazyLock;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use recsys_schema::events::ProductSnapshot;
use recsys_schema::tables::{rec_catalog, rec_scores, rec_state};
use uuid::Uuid;

use super::fold::{CatalogChange, Fold};
use super::query::{Exclude, Sort};
use super::score::Weights;

/// The ranking state row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rec_state, check_for_backend(diesel::pg::Pg))]
pub struct State {
    pub t0: DateTime<Utc>,
    pub generation: i64,
    /// The base time of the trending accumulators.
    pub trend_t0: DateTime<Utc>,
}

/// Reads and locks the ranking state (serializes flushes across processes).
pub async fn state_for_update(conn: &mut AsyncPgConnection) -> diesel::QueryResult<State> {
    rec_state::table
        .find(1)
        .select(State::as_select())
        .for_update()
        .first(conn)
        .await
}

/// Reads the ranking state.
pub async fn state(conn: &mut AsyncPgConnection) -> diesel::QueryResult<State> {
    rec_state::table
        .find(1)
        .select(State::as_select())
        .first(conn)
        .await
}

/// The categories `products` have in the catalog projection (a product without one, or not in
/// it, adds none), without duplicates.
pub async fn categories_of(
    conn: &mut AsyncPgConnection,
    products: &[Uuid],
) -> diesel::QueryResult<Vec<String>> {
    rec_catalog::table
        .filter(rec_catalog::product_id.eq_any(products))
        .filter(rec_catalog::category.is_not_null())
        .select(rec_catalog::category.assume_not_null())
        .distinct()
        .load(conn)
        .await
}

/// Moves the base times to `t0` (popularity) and `trend_t0` (trending), multiplying every
/// accumulator by its factor (`1.0` for one whose base time stays), so that no score changes.
pub async fn rebase(
    conn: &mut AsyncPgConnection,
    [popular, trending]: [f64; 2],
    t0: DateTime<Utc>,
    trend_t0: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::update(rec_scores::table)
        .set((
            rec_scores::acc.eq(rec_scores::acc * popular),
            rec_scores::trend.eq(rec_scores::trend * trending),
        ))
        .execute(conn)
        .await?;
    diesel::update(rec_state::table.find(1))
        .set((rec_state::t0.eq(t0), rec_state::trend_t0.eq(trend_t0)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Bumps and answers the generation.
pub async fn bump_generation(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
    diesel::update(rec_state::table.find(1))
        .set(rec_state::generation.eq(rec_state::generation + 1))
        .returning(rec_state::generation)
        .get_result(conn)
        .await
}

/// Writes one folded batch: score deltas, user-product counters, catalog changes.
pub async fn apply(conn: &mut AsyncPgConnection, fold: &Fold) -> diesel::QueryResult<()> {
    if !fold.scores.is_empty() {
        let ids: Vec<Uuid> = fold.scores.keys().copied().collect();
        let popular: Vec<f64> = fold.scores.values().map(|d| d.popular).collect();
        let trending: Vec<f64> = fold.scores.values().map(|d| d.trending).collect();
        crate::db::prepared(
            "INSERT INTO rec_scores (product_id, acc, trend, category) \
             SELECT u.id, u.acc, u.trend, c.category \
             FROM unnest($1::uuid[], $2::float8[], $3::float8[]) AS u(id, acc, trend) \
             LEFT JOIN rec_catalog c ON c.product_id = u.id \
             ON CONFLICT (product_id) DO UPDATE SET acc = rec_scores.acc + EXCLUDED.acc, \
               trend = rec_scores.trend + EXCLUDED.trend",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Double>, _>(&popular)
        .bind::<Array<Double>, _>(&trending)
        .execute(conn)
        .await?;
    }
    if !fold.user_products.is_empty() {
        let (users, products): (Vec<Uuid>, Vec<Uuid>) = fold.user_products.keys().copied().unzip();
        let counter =
            |slot: usize| -> Vec<i64> { fold.user_products.values().map(|c| c[slot]).collect() };
        let (views, cart_adds, cart_removes, purchases) =
            (counter(0), counter(1), counter(2), counter(3));
        crate::db::prepared(
            "INSERT INTO rec_user_products (user_id, product_id, views, cart_adds, cart_removes, purchases) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
             ON CONFLICT (user_id, product_id) DO UPDATE SET \
               views = rec_user_products.views + EXCLUDED.views, \
               cart_adds = rec_user_products.cart_adds + EXCLUDED.cart_adds, \
               cart_removes = rec_user_products.cart_removes + EXCLUDED.cart_removes, \
               purchases = rec_user_products.purchases + EXCLUDED.purchases",
        )
        .bind::<Array<SqlUuid>, _>(&users)
        .bind::<Array<SqlUuid>, _>(&products)
        .bind::<Array<BigInt>, _>(&views)
        .bind::<Array<BigInt>, _>(&cart_adds)
        .bind::<Array<BigInt>, _>(&cart_removes)
        .bind::<Array<BigInt>, _>(&purchases)
        .execute(conn)
        .await?;
    }
    let mut upserts: Vec<(Uuid, &ProductSnapshot, Option<DateTime<Utc>>)> = Vec::new();
    let (mut deleted, mut deleted_versions): (Vec<Uuid>, Vec<i32>) = (Vec::new(), Vec::new());
    for (product_id, change) in fold.catalog.iter().chain(&fold.superseded) {
        match change {
            CatalogChange::Upsert {
                snapshot,
                created_at,
            } => upserts.push((*product_id, snapshot, *created_at)),
            CatalogChange::Deleted { version } => {
                deleted.push(*product_id);
                deleted_versions.push(*version);
            }
        }
    }
    // Written before the deletions (see `Fold::superseded`).
    if !upserts.is_empty() {
        let ids: Vec<Uuid> = upserts.iter().map(|u| u.0).collect();
        let names: Vec<&str> = upserts.iter().map(|u| u.1.name.as_str()).collect();
        let prices: Vec<&BigDecimal> = upserts.iter().map(|u| &u.1.price).collect();
        let categories: Vec<Option<&str>> =
            upserts.iter().map(|u| u.1.category.as_deref()).collect();
        let versions: Vec<i32> = upserts.iter().map(|u| u.1.version).collect();
        let created: Vec<Option<DateTime<Utc>>> = upserts.iter().map(|u| u.2).collect();
        crate::db::prepared(
            "INSERT INTO rec_catalog (product_id, name, price, category, version, deleted, created_at) \
             SELECT id, name, price, category, version, false, created_at \
             FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::text[], $5::int4[], $6::timestamptz[]) \
               AS t(id, name, price, category, version, created_at) \
             ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, \
               category = EXCLUDED.category, version = EXCLUDED.version, deleted = false, \
               created_at = COALESCE(rec_catalog.created_at, EXCLUDED.created_at) \
             WHERE rec_catalog.version < EXCLUDED.version",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Numeric>, _>(&prices)
        .bind::<Array<Nullable<Text>>, _>(&categories)
        .bind::<Array<Integer>, _>(&versions)
        .bind::<Array<Nullable<Timestamptz>>, _>(&created)
        .execute(conn)
        .await?;
    }
    if !deleted.is_empty() {
        crate::db::prepared(
            "INSERT INTO rec_catalog (product_id, version, deleted) \
             SELECT * , true FROM unnest($1::uuid[], $2::int4[]) \
             ON CONFLICT (product_id) DO UPDATE SET deleted = true, version = EXCLUDED.version \
             WHERE rec_catalog.version < EXCLUDED.version",
        )
        .bind::<Array<SqlUuid>, _>(&deleted)
        .bind::<Array<Integer>, _>(&deleted_versions)
        .execute(conn)
        .await?;
    }
    // A product scored before its catalog row, or moved to another category, takes its
    // category into its scores' row in the same transaction.
    let catalogued = fold.catalog_products();
    if !catalogued.is_empty() {
        crate::db::prepared(
            "UPDATE rec_scores s SET category = c.category FROM rec_catalog c \
             WHERE c.product_id = s.product_id AND s.product_id = ANY($1::uuid[]) \
               AND s.category IS DISTINCT FROM c.category",
        )
        .bind::<Array<SqlUuid>, _>(&catalogued)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// One recommended product as read from the database.
#[derive(Debug, Clone, QueryableByName)]
pub struct Ranked {
    #[diesel(sql_type = SqlUuid)]
    pub product_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Numeric)]
    pub price: BigDecimal,
    #[diesel(sql_type = Nullable<Text>)]
    pub category: Option<String>,
    /// Accumulator (global, personal: boosted) or co-occurrence weight (similar); `None` for a
    /// product without activity.
    #[diesel(sql_type = Nullable<Double>)]
    pub weight: Option<f64>,
}

/// Live products of the catalog (only of `categories` unless it is empty), scored first by the
/// accumulator `sort` names (`acc` or `trend`), then products without activity, newest first;
/// ties by id.
///
/// The scored products are read in the accumulator's order ([`top_scored_sql`]: at most `limit`
/// rows of each index list); only when fewer than `limit` of them are live in `categories` does
/// it read the whole catalog ([`top_sql`]) for the ones without activity.
pub async fn top(
    conn: &mut AsyncPgConnection,
    categories: &[String],
    sort: Sort,
    limit: i64,
) -> diesel::QueryResult<Vec<Ranked>> {
    // One text per accumulator, each prepared once: the column is part of the plan.
    static SCORED: LazyLock<[String; 2]> =
        LazyLock::new(|| [top_scored_sql("acc"), top_scored_sql("trend")]);
    static ALL: LazyLock<[String; 2]> = LazyLock::new(|| [top_sql("acc"), top_sql("trend")]);
    let column = match sort {
        Sort::Popular => 0,
        Sort::Trending => 1,
    };
    let scored: Vec<Ranked> = crate::db::prepared(SCORED[column].as_str())
        .bind::<Array<Text>, _>(categories)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
    if scored.len() as i64 >= limit {
        return Ok(scored);
    }
    crate::db::prepared(ALL[column].as_str())
        .bind::<Array<Text>, _>(categories)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await
}

/// The live scored products of one category (`{category}`: an expression), best `{limit}` by
/// the accumulator `column`, read in the order of its index.
fn category_list(column: &str, category: &str, limit: &str) -> String {
    format!(
        "SELECT c.product_id, c.name, c.price, c.category, s.{column} AS weight \
         FROM rec_scores s JOIN rec_catalog c ON c.product_id = s.product_id \
         WHERE s.category = {category} AND c.category = {category} \
           AND NOT c.deleted AND c.name IS NOT NULL \
         ORDER BY s.{column} DESC, s.product_id LIMIT {limit}"
    )
}

/// The statement of [`top`]'s scored products (`$1` categories, `$2` limit): the best `$2` of
/// each category's list, or of the whole ranking when `$1` is empty, merged.
pub fn top_scored_sql(column: &str) -> String {
    format!(
        "SELECT t.* FROM unnest($1::text[]) AS k(category) \
           CROSS JOIN LATERAL ({per_category}) t \
         UNION ALL \
         (SELECT c.product_id, c.name, c.price, c.category, s.{column} AS weight \
          FROM rec_scores s JOIN rec_catalog c ON c.product_id = s.product_id \
          WHERE cardinality($1::text[]) = 0 AND NOT c.deleted AND c.name IS NOT NULL \
          ORDER BY s.{column} DESC, s.product_id LIMIT $2) \
         ORDER BY weight DESC, product_id LIMIT $2",
        per_category = category_list(column, "k.category", "$2"),
    )
}

/// The statement of [`top`] over the whole catalog, with the products without activity
/// (`$1` categories, `$2` limit).
pub fn top_sql(column: &str) -> String {
    format!(
        "SELECT c.product_id, c.name, c.price, c.category, s.{column} AS weight \
         FROM rec_catalog c LEFT JOIN rec_scores s ON s.product_id = c.product_id \
         WHERE NOT c.deleted AND c.name IS NOT NULL \
           AND (cardinality($1::text[]) = 0 OR c.category = ANY($1::text[])) \
         ORDER BY (s.{column} IS NULL), s.{column} DESC, \
                  CASE WHEN s.{column} IS NULL THEN c.created_at END DESC NULLS LAST, \
                  c.product_id \
         LIMIT $2"
    )
}

/// A yes-or-no answer (whether a product is live).
#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// The user's rows (`mine`), the user's total weight and the share of each category in it, and
/// the products `$8` excludes: the common part of [`FOR_USER_SQL`] and [`FOR_USER_SCORED_SQL`].
macro_rules! personal_ctes {
    () => {
        "WITH mine AS ( \
            SELECT p.product_id, c.category, p.purchases, p.views, p.cart_adds, \
                   GREATEST(p.views * $2 + p.cart_adds * $3 + p.cart_removes * $4 + p.purchases * $5, 0) AS w \
            FROM rec_user_products p LEFT JOIN rec_catalog c ON c.product_id = p.product_id \
            WHERE p.user_id = $1), \
         total AS (SELECT NULLIF(SUM(w), 0) AS total FROM mine), \
         shares AS (SELECT category, SUM(w) / (SELECT total FROM total) AS share \
                    FROM mine WHERE category IS NOT NULL GROUP BY category), \
         excluded AS (SELECT product_id, category FROM mine \
               WHERE CASE $8 WHEN 'purchased' THEN purchases > 0 \
                             WHEN 'interacted' THEN purchases > 0 OR views > 0 OR cart_adds > 0 \
                             ELSE false END) "
    };
}

/// The statement of [`for_user`] over the whole catalog: `$1` the user, `$2`-`$5` the weights
/// of a view, a cart add, a cart removal and a purchase, `$6` the limit, `$7` the categories,
/// `$8` `exclude`.
pub const FOR_USER_SQL: &str = concat!(
    personal_ctes!(),
    "SELECT c.product_id, c.name, c.price, c.category, \
            s.acc * (1 + COALESCE(sh.share, 0)) AS weight \
     FROM rec_catalog c \
     LEFT JOIN rec_scores s ON s.product_id = c.product_id \
     LEFT JOIN shares sh ON sh.category = c.category \
     WHERE NOT c.deleted AND c.name IS NOT NULL \
       AND c.product_id NOT IN (SELECT product_id FROM excluded) \
       AND (cardinality($7::text[]) = 0 OR c.category = ANY($7::text[])) \
     ORDER BY (s.acc IS NULL), weight DESC, \
              CASE WHEN s.acc IS NULL THEN COALESCE(sh.share, 0) END DESC, \
              CASE WHEN s.acc IS NULL THEN c.created_at END DESC NULLS LAST, c.product_id \
     LIMIT $6"
);

/// The statement of [`for_user`]'s scored products (the parameters of [`FOR_USER_SQL`]), from
/// bounded lists read in the order of `acc`. A product's weight is `acc × (1 + share)` with the
/// share of its category, so inside a category the order is that of `acc`, and each list is
/// deep enough (`$6` plus the user's products it excludes there) to hold the best `$6` of its
/// part that are not excluded. With `$7`: one list per category asked for. Without: one per
/// category the user has a share in, and the best `$6` plus every excluded by `acc` overall
/// (`top`), which holds the best of every other product (weight = `acc`) as long as its last
/// `acc` is not negative (a boosted weight is then at least its `acc`); when it is, the list of
/// the other products proper (`rest`: the whole ranking without the user's categories).
pub const FOR_USER_SCORED_SQL: &str = concat!(
    personal_ctes!(),
    ", named AS (SELECT category FROM shares WHERE cardinality($7::text[]) = 0 AND share > 0 \
               UNION SELECT unnest($7::text[])), \
     lists AS (SELECT category, $6 + (SELECT count(*) FROM excluded e \
                                      WHERE e.category = named.category) AS n FROM named), \
     depth AS (SELECT $6 + count(*) AS n FROM excluded), \
     top AS MATERIALIZED ( \
       SELECT c.product_id, c.name, c.price, c.category, s.acc \
       FROM rec_scores s JOIN rec_catalog c ON c.product_id = s.product_id \
       WHERE cardinality($7::text[]) = 0 AND NOT c.deleted AND c.name IS NOT NULL \
       ORDER BY s.acc DESC, s.product_id LIMIT (SELECT n FROM depth)), \
     rest AS (SELECT $6 + count(*) AS n FROM excluded e \
              WHERE e.category IS NULL OR e.category NOT IN (SELECT category FROM named)), \
     candidates AS ( \
       SELECT t.* FROM lists k CROSS JOIN LATERAL ( \
         SELECT c.product_id, c.name, c.price, c.category, s.acc \
         FROM rec_scores s JOIN rec_catalog c ON c.product_id = s.product_id \
         WHERE s.category = k.category AND c.category = k.category \
           AND NOT c.deleted AND c.name IS NOT NULL \
         ORDER BY s.acc DESC, s.product_id LIMIT k.n) t \
       UNION SELECT * FROM top \
       UNION (SELECT c.product_id, c.name, c.price, c.category, s.acc \
        FROM rec_scores s JOIN rec_catalog c ON c.product_id = s.product_id \
        WHERE (SELECT count(*) FROM top) = (SELECT n FROM depth) \
          AND (SELECT min(acc) FROM top) < 0 \
          AND NOT c.deleted AND c.name IS NOT NULL \
          AND (c.category IS NULL OR c.category NOT IN (SELECT category FROM named)) \
        ORDER BY s.acc DESC, s.product_id LIMIT (SELECT n FROM rest))) \
     SELECT k.product_id, k.name, k.price, k.category, \
            k.acc * (1 + COALESCE(sh.share, 0)) AS weight \
     FROM candidates k LEFT JOIN shares sh ON sh.category = k.category \
     WHERE k.product_id NOT IN (SELECT product_id FROM excluded) \
     ORDER BY weight DESC, k.product_id \
     LIMIT $6"
);

/// The catalog size (Postgres's estimate) below which [`for_user`] reads the whole catalog
/// instead of the ordered lists: at 1 000 products and 20 categories the whole catalog takes
/// 1.2 ms and the lists 2.0 ms, at 100 000 products 108 ms and 8.5 ms (docs/benchmarks.md,
/// "Growth").
const SMALL_CATALOG: f64 = 2_000.0;

/// Personal ranking: the global order without the user's products that `exclude` names
/// (purchased ones by default) and each product's accumulator multiplied by (1 + the user's
/// weighted activity share in its category). Only products of `categories` unless it is
/// empty. `None` when the user has no history (callers fall back to the global ranking).
pub async fn for_user(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    categories: &[String],
    exclude: Exclude,
    weights: &Weights,
    limit: i64,
) -> diesel::QueryResult<Option<Vec<Ranked>>> {
    #[derive(QueryableByName)]
    struct Known {
        #[diesel(sql_type = Bool)]
        known: bool,
        /// Postgres's estimate of the catalog's rows (`-1` before its first analysis).
        #[diesel(sql_type = Double)]
        products: f64,
    }
    let known: Known = crate::db::prepared(
        "SELECT EXISTS (SELECT 1 FROM rec_user_products WHERE user_id = $1) AS known, \
                (SELECT reltuples::float8 FROM pg_class \
                 WHERE oid = 'rec_catalog'::regclass) AS products",
    )
    .bind::<SqlUuid, _>(user_id)
    .get_result(conn)
    .await?;
    if !known.known {
        return Ok(None);
    }
    // Reading the whole of a small catalog costs less than an index lookup per listed row.
    // Otherwise, fewer than `limit` scored products means every list was read to its end: the
    // rest of the answer are products without activity, which only the whole catalog orders.
    if !(0.0..SMALL_CATALOG).contains(&known.products) {
        let scored = personal(
            conn,
            FOR_USER_SCORED_SQL,
            user_id,
            categories,
            exclude,
            weights,
            limit,
        )
        .await?;
        if scored.len() as i64 >= limit {
            return Ok(Some(scored));
        }
    }
    personal(
        conn,
        FOR_USER_SQL,
        user_id,
        categories,
        exclude,
        weights,
        limit,
    )
    .await
    .map(Some)
}

/// Runs one of the personal statements.
async fn personal(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
    user_id: Uuid,
    categories: &[String],
    exclude: Exclude,
    weights: &Weights,
    limit: i64,
) -> diesel::QueryResult<Vec<Ranked>> {
    crate::db::prepared(sql)
        .bind::<SqlUuid, _>(user_id)
        .bind::<Double, _>(weights.view)
        .bind::<Double, _>(weights.cart_add)
        .bind::<Double, _>(weights.cart_remove)
        .bind::<Double, _>(weights.purchase)
        .bind::<BigInt, _>(limit)
        .bind::<Array<Text>, _>(categories)
        .bind::<Text, _>(exclude.as_str())
        .load(conn)
        .await
}

/// The buyers of a product whose other products [`similar`] weighs: its most engaged ones (by
/// purchases, then cart adds), so that one answer reads at most this many users' rows, however
/// popular the product.
pub const SIMILAR_BUYERS: i64 = 500;

/// The statement of [`similar`]: `$1` the product, `$2` and `$3` the weights of a purchase
/// and a cart add, `$4` the limit, `$5` the categories, `$6` [`SIMILAR_BUYERS`].
pub const SIMILAR_SQL: &str = "WITH buyers AS (SELECT user_id FROM rec_user_products \
                         WHERE product_id = $1 AND (purchases > 0 OR cart_adds > 0) \
                         ORDER BY purchases DESC, cart_adds DESC, user_id LIMIT $6), \
         together AS (SELECT q.product_id, SUM(q.purchases * $2 + q.cart_adds * $3) AS weight \
                      FROM buyers b CROSS JOIN LATERAL ( \
                        SELECT product_id, purchases, cart_adds FROM rec_user_products q \
                        WHERE q.user_id = b.user_id AND q.product_id <> $1 \
                          AND (q.purchases > 0 OR q.cart_adds > 0)) q \
                      GROUP BY q.product_id) \
         SELECT c.product_id, c.name, c.price, c.category, t.weight \
         FROM together t \
         JOIN rec_catalog c ON c.product_id = t.product_id AND NOT c.deleted AND c.name IS NOT NULL \
         WHERE cardinality($5::text[]) = 0 OR c.category = ANY($5::text[]) \
         ORDER BY t.weight DESC, c.product_id \
         LIMIT $4";

/// "Users who bought or carted this also bought or carted": other live products, weighted by
/// purchases and cart adds of the users who purchased or carted `product_id` (its
/// [`SIMILAR_BUYERS`] most engaged ones). `None` when the
/// product is unknown or deleted. Only products of `categories` unless it is empty.
pub async fn similar(
    conn: &mut AsyncPgConnection,
    product_id: Uuid,
    categories: &[String],
    weights: &Weights,
    limit: i64,
) -> diesel::QueryResult<Option<Vec<Ranked>>> {
    let live: Flag = crate::db::prepared(
        "SELECT EXISTS (SELECT 1 FROM rec_catalog WHERE product_id = $1 AND NOT deleted \
         AND name IS NOT NULL) AS flag",
    )
    .bind::<SqlUuid, _>(product_id)
    .get_result(conn)
    .await?;
    if !live.flag {
        return Ok(None);
    }
    crate::db::prepared(SIMILAR_SQL)
        .bind::<SqlUuid, _>(product_id)
        .bind::<Double, _>(weights.purchase)
        .bind::<Double, _>(weights.cart_add)
        .bind::<BigInt, _>(limit)
        .bind::<Array<Text>, _>(categories)
        .bind::<BigInt, _>(SIMILAR_BUYERS)
        .load(conn)
        .await
        .map(Some)
}
