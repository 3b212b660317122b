//! The Redis cache stays bounded: every key recsys writes expires (the ranking generation too,
//! renewed while the ranking runs), a query's text never reaches a key whole, and a batch that
//! changes nothing a query reads keeps the generation, so cached answers stay valid. Global
//! answers are refreshed ahead of their readers: writes change them in Redis instead of
//! emptying it.

use std::time::Duration;

use recsys::config::Service;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// A connection to the stack's Redis (the one the test runtimes use).
async fn redis(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", app.settings.redis_address))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key under the app's own prefix, with its remaining life in milliseconds (`-1`: none).
async fn keys_and_ttls(app: &TestApp) -> Vec<(String, i64)> {
    let mut conn = redis(app).await;
    let pattern = format!("{}*", app.settings.redis_key_prefix);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((key, ttl));
    }
    out
}

/// The ranking generation stored in Postgres.
async fn generation(app: &TestApp) -> i64 {
    TestDb(app.database_url.clone())
        .number("SELECT generation FROM rec_state")
        .await
}

/// Records the recommendations group has applied from `user-updates` (its stored positions).
async fn applied_user_updates(app: &TestApp) -> i64 {
    let topic = app.topic(recsys_schema::topics::USER_UPDATES);
    TestDb(app.database_url.clone())
        .number(&format!(
            "SELECT sum(next_offset) FROM consumer_offsets \
             WHERE consumer_group = '{}recommendations' AND topic = '{topic}'",
            app.prefix
        ))
        .await
}

/// After a workload touching every kind of recommendation query (global, categories, a long
/// category list, personal with each `exclude`, similar), every key the runtime left in Redis
/// has an expiry, and no key holds a query's text.
#[actix_web::test]
async fn every_key_recsys_writes_expires() {
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let product = app
        .create_product("Kept", json!("5.00"), Some("keys"))
        .await;
    let product = product["id"].as_str().unwrap().to_string();
    app.post_activity(user, &token, &product, "purchase", 1)
        .await;
    let long: Vec<String> = (0..20)
        .map(|i| format!("category={}{i}", "x".repeat(98)))
        .collect();
    let paths = [
        "/recommendations".to_string(),
        "/recommendations?category=keys".to_string(),
        format!("/recommendations?{}", long.join("&")),
        format!("/recommendations/users/{user}"),
        format!("/recommendations/users/{user}?exclude=interacted"),
        format!("/recommendations/users/{user}?exclude=none&category=keys"),
        format!("/recommendations/products/{product}/similar"),
    ];
    eventually(
        Duration::from_secs(30),
        "every query answered from the cache",
        || async {
            let mut hits = 0;
            for path in &paths {
                let reply = app.get(Service::Recommendations, path, Some(&token)).await;
                if reply.headers.get("x-cache").is_some_and(|v| v == "hit") {
                    hits += 1;
                }
            }
            (hits == paths.len()).then_some(())
        },
    )
    .await;

    let keys = keys_and_ttls(&app).await;

    // The generation and one answer per query at least.
    assert!(keys.len() > paths.len(), "{keys:?}");
    for (key, ttl) in &keys {
        assert!(*ttl > 0, "{key} does not expire (PTTL {ttl})");
        assert!(
            key.len() <= app.settings.redis_key_prefix.len() + 57,
            "{key} is longer than a digest"
        );
        assert!(!key.contains("keys") && !key.contains("xxxx"), "{key}");
    }
}

/// A batch of registrations and profile updates changes nothing a query reads: once the
/// recommendations group has applied it, the generation is the same and the cached answer is
/// still served from Redis. An action then moves the generation on.
#[actix_web::test]
async fn a_batch_that_changes_nothing_keeps_the_generation() {
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let product = app.create_product("Steady", json!("5.00"), None).await;
    let product = product["id"].as_str().unwrap().to_string();
    app.post_activity(user, &token, &product, "view", 1).await;
    eventually(Duration::from_secs(30), "a cached answer", || async {
        let reply = app
            .get(Service::Recommendations, "/recommendations", None)
            .await;
        let scored = reply.body[0]["score"].as_f64().is_some_and(|s| s > 0.0);
        (scored && reply.headers["x-cache"] == "hit").then_some(())
    })
    .await;
    let (before, applied) = (generation(&app).await, applied_user_updates(&app).await);

    for i in 0..5 {
        app.register(
            "Quiet",
            &format!("quiet-{i}-{}@example.com", Uuid::new_v4().simple()),
            "quiet-password",
        )
        .await;
    }
    app.request(
        reqwest::Method::PATCH,
        Service::Users,
        &format!("/users/{user}"),
        Some(json!({"name": "Renamed"})),
        Some(&token),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the recommendations group to apply the six events",
        || async { (applied_user_updates(&app).await >= applied + 6).then_some(()) },
    )
    .await;

    assert_eq!(generation(&app).await, before);
    let again = app
        .get(Service::Recommendations, "/recommendations", None)
        .await;
    assert_eq!(again.headers["x-cache"], "hit", "{}", again.text);

    app.post_activity(user, &token, &product, "view", 1).await;
    eventually(Duration::from_secs(30), "a new generation", || async {
        (generation(&app).await > before).then_some(())
    })
    .await;
    let fresh: Value = app
        .get(Service::Recommendations, "/recommendations", None)
        .await
        .body;
    assert!(fresh[0]["score"].as_f64().unwrap() > 1.5, "{fresh}");
}

/// Each flush that changes the ranking replaces the cached global answers that were asked for
/// instead of dropping them: while purchases keep changing the scores, every read of the same
/// global queries (the home page, a category page, trending) is answered from Redis, and each
/// purchase shows in them.
#[actix_web::test]
async fn flushes_refresh_cached_global_answers_instead_of_dropping_them() {
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let product = app
        .create_product("Refreshed", json!("5.00"), Some("fresh"))
        .await;
    let product = product["id"].as_str().unwrap().to_string();
    let paths = [
        "/recommendations",
        "/recommendations?category=fresh",
        "/recommendations?sort=trending&limit=5",
    ];
    // The product's score in each answer (0 until it has one), and whether it came from Redis.
    let read = |path: &'static str| {
        let app = &app;
        let product = product.clone();
        async move {
            let reply = app.get(Service::Recommendations, path, None).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            let score = reply
                .body
                .as_array()
                .unwrap()
                .iter()
                .find(|item| item["product_id"] == product.as_str())
                .and_then(|item| item["score"].as_f64())
                .unwrap_or(0.0);
            (score, reply.headers["x-cache"] == "hit")
        }
    };
    eventually(Duration::from_secs(30), "every answer cached", || async {
        let mut hits = 0;
        for path in paths {
            hits += usize::from(read(path).await.1);
        }
        (hits == paths.len()).then_some(())
    })
    .await;

    let mut seen = [0.0; 3];
    for round in 1..=3 {
        app.post_activity(user, &token, &product, "purchase", 1)
            .await;
        for (i, path) in paths.into_iter().enumerate() {
            let before = seen[i];
            seen[i] = eventually(Duration::from_secs(30), "the purchase shown", || async {
                let (score, hit) = read(path).await;
                assert!(
                    hit,
                    "round {round}: {path} was a miss: the flush dropped it"
                );
                (score > before).then_some(score)
            })
            .await;
        }
    }
}

/// The generation stamped on the cached global answer under `key` (`<generation>\n<json>`).
async fn stamp(app: &TestApp, key: &str) -> u64 {
    let value: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis(app).await)
        .await
        .unwrap();
    value.split_once('\n').unwrap().0.parse().unwrap()
}

/// A refresh recomputes only the global answers a flush can alter: a purchase in one category
/// rewrites that category's answer and the unfiltered one, and leaves another category's as it
/// was (same stamp), still served from Redis.
#[actix_web::test]
async fn a_refresh_recomputes_only_the_categories_a_flush_changed() {
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let alpha = app
        .create_product("In alpha", json!("5.00"), Some("alpha"))
        .await;
    let alpha = alpha["id"].as_str().unwrap().to_string();
    app.create_product("In beta", json!("5.00"), Some("beta"))
        .await;
    let db = app.db();
    eventually(
        Duration::from_secs(30),
        "both products projected",
        || async { (db.count("rec_catalog").await == 2).then_some(()) },
    )
    .await;
    let top_keys = || async {
        keys_and_ttls(&app)
            .await
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| key.contains("rec:top:"))
            .collect::<Vec<_>>()
    };
    let cached = |path: &'static str| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(30), path, || async {
                let reply = app.get(Service::Recommendations, path, None).await;
                (reply.headers["x-cache"] == "hit").then_some(reply.body)
            })
            .await
        }
    };
    cached("/recommendations?category=beta").await;
    let beta_key = top_keys().await;
    assert_eq!(beta_key.len(), 1, "{beta_key:?}");
    let beta_key = beta_key[0].clone();
    cached("/recommendations?category=alpha").await;
    cached("/recommendations").await;
    let beta_before = stamp(&app, &beta_key).await;
    let others: Vec<String> = top_keys()
        .await
        .into_iter()
        .filter(|k| *k != beta_key)
        .collect();
    assert_eq!(others.len(), 2, "{others:?}");

    app.post_activity(user, &token, &alpha, "purchase", 1).await;
    eventually(
        Duration::from_secs(30),
        "the purchase in both answers it alters",
        || async {
            let shown = |body: Value| body[0]["score"].as_f64().is_some_and(|s| s > 0.0);
            let alpha = app
                .get(
                    Service::Recommendations,
                    "/recommendations?category=alpha",
                    None,
                )
                .await;
            let all = app
                .get(Service::Recommendations, "/recommendations", None)
                .await;
            (shown(alpha.body) && shown(all.body)).then_some(())
        },
    )
    .await;
    for key in &others {
        assert!(stamp(&app, key).await > beta_before, "{key} was refreshed");
    }
    assert_eq!(
        stamp(&app, &beta_key).await,
        beta_before,
        "beta was left as it was"
    );
    let beta = app
        .get(
            Service::Recommendations,
            "/recommendations?category=beta",
            None,
        )
        .await;
    assert_eq!(beta.headers["x-cache"], "hit");
}

/// A product moved to another category alters both categories' answers: once the move is
/// consumed, the cached answer of its old category no longer lists it and that of its new one
/// does, both still served from Redis.
#[actix_web::test]
async fn a_product_moved_to_another_category_leaves_one_cached_answer_and_joins_the_other() {
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let product = app
        .create_product("Mover", json!("5.00"), Some("from"))
        .await;
    let id = product["id"].as_str().unwrap().to_string();
    let listed = |path: &'static str| {
        let (app, id) = (&app, id.clone());
        async move {
            let reply = app.get(Service::Recommendations, path, None).await;
            let ids: Vec<Value> = reply
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["product_id"].clone())
                .collect();
            (ids.contains(&json!(id)), reply.headers["x-cache"] == "hit")
        }
    };
    eventually(
        Duration::from_secs(30),
        "the product cached in its category",
        || async { (listed("/recommendations?category=from").await == (true, true)).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the empty category cached",
        || async { (listed("/recommendations?category=to").await == (false, true)).then_some(()) },
    )
    .await;

    let moved = app
        .request(
            reqwest::Method::PATCH,
            Service::Products,
            &format!("/products/{id}"),
            Some(json!({"category": "to"})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    eventually(
        Duration::from_secs(30),
        "both categories refreshed",
        || async {
            let from = listed("/recommendations?category=from").await;
            let to = listed("/recommendations?category=to").await;
            (from == (false, true) && to == (true, true)).then_some(())
        },
    )
    .await;
}

/// Requests that miss the same answer while it is being computed wait for that one computation
/// instead of each running the statement: eight concurrent reads of a similar-items answer not
/// cached yet, held in Postgres by a lock on the table it reads, are seven joins of one
/// computation, and all eight get its answer.
#[actix_web::test]
async fn misses_of_one_answer_share_one_computation() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let id = |p: Value| p["id"].as_str().unwrap().to_string();
    let tent = id(app.create_product("Tent", json!("80.00"), None).await);
    let lamp = id(app.create_product("Lamp", json!("9.00"), None).await);
    app.post_activity(user, &token, &tent, "purchase", 1).await;
    app.post_activity(user, &token, &lamp, "purchase", 1).await;
    let listed = format!("/recommendations/products/{tent}/similar");
    eventually(
        Duration::from_secs(30),
        "the lamp similar to the tent",
        || async {
            let reply = app.get(Service::Recommendations, &listed, None).await;
            (reply.body[0]["product_id"] == json!(lamp)).then_some(())
        },
    )
    .await;
    let joined = || async {
        app.metric("recommendation_joined_computations_total")
            .await
            .unwrap_or(0.0)
    };
    let before = joined().await;

    // An answer no one asked for yet (its own limit), computed while the table is locked.
    let path = format!("{listed}?limit=7");
    let mut lock = AsyncPgConnection::establish(&app.database_url)
        .await
        .unwrap();
    for sql in [
        "BEGIN",
        "LOCK TABLE rec_user_products IN ACCESS EXCLUSIVE MODE",
    ] {
        diesel::sql_query(sql).execute(&mut lock).await.unwrap();
    }
    let reads = futures_util::future::join_all(
        (0..8).map(|_| app.get(Service::Recommendations, &path, None)),
    );
    let release = async {
        eventually(
            Duration::from_secs(4),
            "seven reads to join the first",
            || async { (joined().await - before >= 7.0).then_some(()) },
        )
        .await;
        diesel::sql_query("COMMIT")
            .execute(&mut lock)
            .await
            .unwrap();
    };
    let (replies, ()) = futures_util::future::join(reads, release).await;

    assert_eq!(joined().await - before, 7.0);
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body, replies[0].body);
    }
    assert_eq!(replies[0].body[0]["product_id"], json!(lamp));
}
