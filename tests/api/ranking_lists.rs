//! The ordered rankings against the whole-catalog statements they replace: on a catalog of 400
//! products in three categories and none (some deleted, some unnamed, a quarter without
//! activity, scores negative and tied, scores of products not catalogued), every global
//! answer (both sorts) and every personal answer (three users: shares in several categories,
//! activity whose weights sum to zero, activity only in products without a category) of
//! `store::top` and `store::for_user` equals the statement that reads the whole catalog
//! (`top_sql`, `FOR_USER_SQL`), for every limit, category filter and `exclude`; and where the
//! ordered statement alone answers (`limit` rows), it is that answer too. The pool's
//! connections run without JIT.

use diesel::sql_types::{Array, BigInt, Double, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use recsys::config::Secret;
use recsys::recommendations::query::{Exclude, Sort};
use recsys::recommendations::score::Weights;
use recsys::recommendations::store::{self, Ranked};
use uuid::Uuid;

use crate::helpers::{fresh_database, TestDb};

/// The catalog, its scores and three users' activity, all derived from the row number.
const SEED: &str = "
INSERT INTO rec_catalog (product_id, name, price, category, version, deleted, created_at)
SELECT md5('p' || i)::uuid, CASE WHEN i % 37 = 0 THEN NULL ELSE 'P' || i END, 1.00,
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'a' WHEN 2 THEN 'b' ELSE 'c' END,
       1, i % 23 = 0, CASE WHEN i % 11 = 0 THEN NULL ELSE now() - i * interval '1 minute' END
FROM generate_series(1, 400) i;
INSERT INTO rec_scores (product_id, acc, trend, category)
SELECT md5('p' || i)::uuid, (abs(hashint4(i)) % 60 - 12)::float8 / 4,
       (abs(hashint4(i + 7)) % 300 - 40)::float8, c.category
FROM generate_series(1, 400) i JOIN rec_catalog c ON c.product_id = md5('p' || i)::uuid
WHERE i % 4 <> 3;
INSERT INTO rec_scores (product_id, acc, trend, category)
SELECT md5('q' || i)::uuid, 1000 + i, 1000 + i, 'a' FROM generate_series(1, 5) i;
INSERT INTO rec_user_products (user_id, product_id, views, cart_adds, cart_removes, purchases)
SELECT md5('u1')::uuid, md5('p' || i)::uuid, i % 4, i % 3, CASE WHEN i % 7 = 0 THEN 2 ELSE 0 END,
       i % 2
FROM generate_series(3, 90, 3) i;
INSERT INTO rec_user_products (user_id, product_id, views, cart_adds, cart_removes, purchases)
SELECT md5('u2')::uuid, md5('p' || i)::uuid, 0, 1, 1, 0 FROM generate_series(1, 12) i;
INSERT INTO rec_user_products (user_id, product_id, views, cart_adds, cart_removes, purchases)
SELECT md5('u3')::uuid, md5('p' || i)::uuid, 2, 0, 0, i % 2 FROM generate_series(5, 100, 5) i;
";

/// A ranked row as compared: product and weight.
fn rows(ranked: &[Ranked]) -> Vec<(Uuid, Option<f64>)> {
    ranked.iter().map(|r| (r.product_id, r.weight)).collect()
}

/// A fresh migrated database with [`SEED`]; answers a connection to it.
async fn seeded() -> AsyncPgConnection {
    let (url, _) = fresh_database().await;
    recsys::db::migrate(&Secret::new(url.clone()))
        .await
        .expect("migrations apply");
    let db = TestDb(url.clone());
    for statement in SEED.split(';').filter(|s| !s.trim().is_empty()) {
        db.execute(statement).await;
    }
    AsyncPgConnection::establish(&url).await.unwrap()
}

fn filters() -> Vec<Vec<String>> {
    [&[][..], &["a"], &["a", "c"], &["b", "zzz"], &["zzz"]]
        .iter()
        .map(|f| f.iter().map(|c| c.to_string()).collect())
        .collect()
}

const LIMITS: [i64; 10] = [1, 2, 5, 10, 40, 100, 200, 230, 260, 300];

/// Asserts that the store function's `answer` is the whole-catalog statement's, and so is the
/// ordered statement's where it answered alone (`limit` rows); answers whether it did.
fn agree(case: &str, limit: i64, whole: &[Ranked], answer: &[Ranked], scored: &[Ranked]) -> bool {
    assert_eq!(rows(answer), rows(whole), "{case}");
    let alone = scored.len() as i64 == limit;
    if alone {
        assert_eq!(rows(scored), rows(whole), "ordered, {case}");
    }
    alone
}

#[actix_web::test]
async fn global_answers_read_in_order_equal_the_whole_catalogs() {
    let mut conn = seeded().await;
    let mut ordered = 0;
    for (sort, column) in [(Sort::Popular, "acc"), (Sort::Trending, "trend")] {
        for categories in filters() {
            for limit in LIMITS {
                let case = format!("{column} {categories:?} limit {limit}");
                let statement = |sql: String| {
                    diesel::sql_query(sql)
                        .bind::<Array<Text>, _>(categories.clone())
                        .bind::<BigInt, _>(limit)
                };
                let whole: Vec<Ranked> = statement(store::top_sql(column))
                    .load(&mut conn)
                    .await
                    .unwrap();
                let answer = store::top(&mut conn, &categories, sort, limit)
                    .await
                    .unwrap();
                let scored: Vec<Ranked> = statement(store::top_scored_sql(column))
                    .load(&mut conn)
                    .await
                    .unwrap();
                ordered += usize::from(agree(&case, limit, &whole, &answer, &scored));
            }
        }
    }
    assert!(
        ordered >= 30,
        "the ordered statement answered only {ordered} cases"
    );
}

#[actix_web::test]
async fn personal_answers_read_in_order_equal_the_whole_catalogs() {
    let mut conn = seeded().await;
    let weights = Weights::default();
    let mut ordered = 0;
    for user in ["u1", "u2", "u3"] {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
        }
        let id: Id = diesel::sql_query(format!("SELECT md5('{user}')::uuid AS id"))
            .get_result(&mut conn)
            .await
            .unwrap();
        for exclude in Exclude::ALL {
            for categories in filters() {
                for limit in LIMITS {
                    let case = format!("{user} {exclude:?} {categories:?} limit {limit}");
                    let statement = |sql: &'static str| {
                        diesel::sql_query(sql)
                            .bind::<SqlUuid, _>(id.id)
                            .bind::<Double, _>(weights.view)
                            .bind::<Double, _>(weights.cart_add)
                            .bind::<Double, _>(weights.cart_remove)
                            .bind::<Double, _>(weights.purchase)
                            .bind::<BigInt, _>(limit)
                            .bind::<Array<Text>, _>(categories.clone())
                            .bind::<Text, _>(exclude.as_str())
                    };
                    let whole: Vec<Ranked> = statement(store::FOR_USER_SQL)
                        .load(&mut conn)
                        .await
                        .unwrap();
                    let answer =
                        store::for_user(&mut conn, id.id, &categories, exclude, &weights, limit)
                            .await
                            .unwrap()
                            .expect("the user has activity");
                    let scored: Vec<Ranked> = statement(store::FOR_USER_SCORED_SQL)
                        .load(&mut conn)
                        .await
                        .unwrap();
                    ordered += usize::from(agree(&case, limit, &whole, &answer, &scored));
                }
            }
        }
    }
    assert!(
        ordered >= 100,
        "the ordered statement answered only {ordered} cases"
    );
}

/// The service's connections run without JIT compilation: the personal statement's generic
/// plan is estimated above the JIT threshold and would compile for longer than it runs.
#[actix_web::test]
async fn pooled_connections_run_without_jit() {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        jit: String,
    }
    let (url, prefix) = fresh_database().await;
    let settings = crate::helpers::test_settings(&url, &prefix, &crate::helpers::brokers());
    let pool = recsys::db::pool(&settings.postgres).unwrap();
    let mut conn = pool.get().await.unwrap();
    let setting: Setting = diesel::sql_query("SELECT current_setting('jit') AS jit")
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(setting.jit, "off");
}
