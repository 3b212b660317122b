//! Idempotent writes: a write sent again with its `Idempotency-Key` (same caller, same request,
//! within 24 h) gets the first answer again with `Idempotent-Replayed: true` and writes and
//! publishes nothing more; the key with another request is 422, a key whose first request is
//! still running is 409. Above all: a request the server timed out, retried with its key, is
//! counted once in analytics and in the scores.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use recsys::config::{Secret, Service};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// The storefront key of the runtimes here.
const API_KEY: &str = "storefront-backend-key-0123456789abcdef";

/// How the test authenticates a request.
enum As<'a> {
    Nobody,
    Token(&'a str),
    ApiKey,
}

/// `POST path` on `service` with `body`, the `Idempotency-Key` `key` (if any) and `who`.
async fn post_keyed(
    app: &TestApp,
    service: Service,
    path: &str,
    body: &Value,
    key: Option<&str>,
    who: As<'_>,
) -> Reply {
    let mut request = app
        .client
        .post(format!("{}{path}", app.url(service)))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request = match who {
        As::Nobody => request,
        As::Token(token) => request.bearer_auth(token),
        As::ApiKey => request.header("X-API-Key", API_KEY),
    };
    read_reply(request.send().await.unwrap()).await
}

/// Whether the reply is marked as given again.
fn replayed(reply: &Reply) -> bool {
    reply
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// A runtime that accepts [`API_KEY`].
async fn spawn_with_key() -> TestApp {
    TestApp::builder()
        .with(|settings| settings.api_key = Some(Secret::new(API_KEY)))
        .spawn()
        .await
}

/// A transaction of the test's own holding a user's row `FOR UPDATE`: an action of that user
/// that gets as far as its insert waits until it ends (the insert's foreign-key check locks
/// the row), while a request whose key is held writes no row and is not held up.
struct UserLocked(AsyncPgConnection);

impl UserLocked {
    async fn take(app: &TestApp, user: Uuid) -> Self {
        let mut conn = AsyncPgConnection::establish(&app.database_url)
            .await
            .unwrap();
        conn.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM users WHERE id = '{user}' FOR UPDATE"
        ))
        .await
        .unwrap();
        Self(conn)
    }

    /// Waits until a write is blocked behind the lock (a keyed one then holds its key: the
    /// key's lock is taken before the row is written).
    async fn until_a_write_waits(&self, app: &TestApp) {
        let db = app.db();
        eventually(
            Duration::from_secs(20),
            "a write waiting on the lock",
            || async {
                let waiting = db
                    .number(
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .await;
                (waiting > 0).then_some(())
            },
        )
        .await;
    }

    async fn release(mut self) {
        self.0.batch_execute("COMMIT").await.unwrap();
    }
}

/// The popularity score of `product` in `category` (0 while unranked).
async fn score(app: &TestApp, category: &str, product: &str) -> f64 {
    let reply = app
        .get(
            Service::Recommendations,
            &format!("/recommendations?category={category}&limit=100"),
            None,
        )
        .await;
    reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["product_id"] == product)
        .and_then(|p| p["score"].as_f64())
        .unwrap_or(0.0)
}

/// A registration sent twice with its key is one account and one event: the second answer is
/// the first (the same token too) marked `Idempotent-Replayed: true`, given without hashing
/// the password again; the key with another
/// body is 422 and writes nothing; without a key, the second is the usual 409.
#[actix_web::test]
async fn a_retried_registration_is_answered_again_and_made_once() {
    let app = spawn_app().await;
    let body = json!({"name": "Ida", "email": "ida@example.com", "password": "ida-password"});
    let key = Uuid::new_v4().to_string();
    let register = |body: Value, key: Option<String>| {
        let app = &app;
        async move {
            post_keyed(
                app,
                Service::Users,
                "/users/register",
                &body,
                key.as_deref(),
                As::Nobody,
            )
            .await
        }
    };

    // Passwords hashed so far (the admin's at start-up included).
    let hashes = || async {
        crate::consumer::metric_sum(
            &app,
            "actor_messages_total",
            &["actor=\"HashWorker\"", "message=\"HashPassword\""],
        )
        .await
    };
    let before = hashes().await;
    let first = register(body.clone(), Some(key.clone())).await;
    let hashed_once = hashes().await;
    let again = register(body.clone(), Some(key.clone())).await;
    assert_eq!(hashed_once - before, 1.0, "the first registration hashes");
    assert_eq!(
        hashes().await,
        hashed_once,
        "a replay answers before hashing"
    );
    let other = register(
        json!({"name": "Ida", "email": "ida2@example.com", "password": "ida-password"}),
        Some(key.clone()),
    )
    .await;
    let other_password = register(
        json!({"name": "Ida", "email": "ida@example.com", "password": "another-password"}),
        Some(key.clone()),
    )
    .await;
    let unkeyed = register(body.clone(), None).await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(!replayed(&first));
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert!(replayed(&again), "no Idempotent-Replayed header");
    assert_eq!(again.body, first.body, "the replay is the first answer");
    other.assert_error(422, "unprocessable");
    other_password.assert_error(422, "unprocessable");
    unkeyed.assert_error(409, "conflict");
    // The replayed token works.
    let id = first.body["id"].as_str().unwrap();
    let profile = app
        .get(
            Service::Users,
            &format!("/users/{id}"),
            again.body["token"].as_str(),
        )
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
    assert_eq!(
        app.db()
            .number("SELECT count(*) FROM users WHERE email LIKE 'ida%'")
            .await,
        1
    );
    // Published once: the topic holds the admin's registration and Ida's, and no other.
    let records = consume(
        &brokers(),
        &[app.topic(recsys_schema::topics::USER_UPDATES)],
        2,
        Duration::from_secs(30),
    )
    .await;
    let idas = records.iter().filter(|r| r.value["key"] == id).count();
    assert_eq!((records.len(), idas), (2, 1), "{records:?}");
}

/// An action sent again with its key is answered its first event id and counted once; the
/// same key from another user is another key; a batch and a product creation replay the same
/// way (a product's replay is the product as created, even after it changed).
#[actix_web::test]
async fn keyed_actions_batches_and_products_are_written_once() {
    let app = spawn_with_key().await;
    let (ann, ann_token, _) = app.new_user().await;
    let (bob, bob_token, _) = app.new_user().await;
    let product = app
        .create_product("Kettle", json!("30.00"), Some("idem"))
        .await;
    let product_id = product["id"].as_str().unwrap().to_string();
    let key = "order-17/attempt";
    let view = json!({"type": "view", "product_id": product_id});

    let ann_first = post_keyed(
        &app,
        Service::Users,
        &format!("/users/{ann}/activity"),
        &view,
        Some(key),
        As::Token(&ann_token),
    )
    .await;
    let ann_again = post_keyed(
        &app,
        Service::Users,
        &format!("/users/{ann}/activity"),
        &view,
        Some(key),
        As::Token(&ann_token),
    )
    .await;
    let ann_other = post_keyed(
        &app,
        Service::Users,
        &format!("/users/{ann}/activity"),
        &json!({"type": "purchase", "product_id": product_id}),
        Some(key),
        As::Token(&ann_token),
    )
    .await;
    let bob_same_key = post_keyed(
        &app,
        Service::Users,
        &format!("/users/{bob}/activity"),
        &view,
        Some(key),
        As::Token(&bob_token),
    )
    .await;

    assert_eq!(ann_first.status, StatusCode::ACCEPTED, "{}", ann_first.text);
    assert_eq!(ann_again.status, StatusCode::ACCEPTED, "{}", ann_again.text);
    assert!(replayed(&ann_again) && !replayed(&ann_first));
    assert_eq!(ann_again.body, ann_first.body);
    ann_other.assert_error(422, "unprocessable");
    assert_eq!(bob_same_key.status, StatusCode::ACCEPTED);
    assert!(!replayed(&bob_same_key));
    assert_ne!(bob_same_key.body["event_id"], ann_first.body["event_id"]);
    assert_eq!(app.count("user_activity").await, 2);

    let batch = json!({"actions": [
        {"user_id": ann, "type": "cart_add", "product_id": product_id},
        {"user_id": bob, "type": "purchase", "product_id": product_id, "quantity": 2},
    ]});
    // The same members in another order are the same request.
    let reordered = json!({"actions": [
        {"product_id": product_id, "type": "cart_add", "user_id": ann},
        {"quantity": 2, "product_id": product_id, "type": "purchase", "user_id": bob},
    ]});
    let first = post_keyed(
        &app,
        Service::Users,
        "/activity/batch",
        &batch,
        Some("b-1"),
        As::ApiKey,
    )
    .await;
    let again = post_keyed(
        &app,
        Service::Users,
        "/activity/batch",
        &reordered,
        Some("b-1"),
        As::ApiKey,
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert!(replayed(&again), "{}", again.text);
    assert_eq!(again.body, first.body);
    assert_eq!(app.count("user_activity").await, 4);

    let create = json!({"name": "Teapot", "price": "12.50", "category": "idem"});
    let created = post_keyed(
        &app,
        Service::Products,
        "/products",
        &create,
        Some("p-1"),
        As::Token(&app.admin_token),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let teapot = created.body["id"].as_str().unwrap();
    let renamed = app
        .request(
            reqwest::Method::PATCH,
            Service::Products,
            &format!("/products/{teapot}"),
            Some(json!({"name": "Big teapot"})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    let again = post_keyed(
        &app,
        Service::Products,
        "/products",
        &create,
        Some("p-1"),
        As::Token(&app.admin_token),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert!(replayed(&again));
    assert_eq!(again.body, created.body, "the product as it was created");
    assert_eq!(app.count("products").await, 2);
}

/// While a keyed write runs (here: held behind a row lock), the same key is 409 at once; when
/// the write has committed, the key answers its result. Two activity writers, as two runtimes
/// would be: with one (the default), the retry of an action queues behind its first request
/// in the same runtime and is answered the first's result once that has committed.
#[actix_web::test]
async fn a_key_whose_first_request_runs_is_a_conflict() {
    let app = TestApp::builder()
        .with(|settings| settings.activity_writers = 2)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let path = format!("/users/{user}/activity");
    let body = json!({"type": "cart_add", "product_id": Uuid::new_v4()});

    let send = || {
        post_keyed(
            &app,
            Service::Users,
            &path,
            &body,
            Some("k"),
            As::Token(&token),
        )
    };

    let lock = UserLocked::take(&app, user).await;
    let second = async {
        lock.until_a_write_waits(&app).await;
        let second = send().await;
        lock.release().await;
        second
    };
    let (first, second) = tokio::join!(send(), second);

    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    second.assert_error(409, "conflict");
    let third = send().await;
    assert!(replayed(&third));
    assert_eq!(third.body, first.body);
    assert_eq!(app.count("user_activity").await, 1);
}

/// The reason for keys: the server times a purchase out (its write is held up past
/// `REQUEST_TIMEOUT_MS`, the client gets 503) but the write commits afterwards; the client
/// retries with the key until it is answered: the purchase counts once in analytics and once
/// in the score. A second product's view, recorded after the retry by the same user (same
/// partition, so applied after it), marks when everything before it has been applied.
#[actix_web::test]
async fn a_request_timed_out_by_the_server_and_retried_counts_once() {
    let app = TestApp::builder()
        .with(|settings| settings.request_timeout_ms = 2_000)
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let lamp = app
        .create_product("Lamp", json!("40.00"), Some("retry"))
        .await;
    let lamp = lamp["id"].as_str().unwrap().to_string();
    let marker = app
        .create_product("Bulb", json!("2.00"), Some("retry"))
        .await;
    let marker = marker["id"].as_str().unwrap().to_string();
    let path = format!("/users/{user}/activity");
    let purchase = json!({"type": "purchase", "product_id": lamp});
    let key = Uuid::new_v4().to_string();
    let send = || {
        post_keyed(
            &app,
            Service::Users,
            &path,
            &purchase,
            Some(&key),
            As::Token(&token),
        )
    };

    let lock = UserLocked::take(&app, user).await;
    let timed_out = send().await;
    timed_out.assert_error(503, "unavailable");
    lock.until_a_write_waits(&app).await;
    // The client retries at once: the first write still holds the key (409), or the retry
    // waits behind it in the runtime's one activity writer and times out too (503).
    let early = send().await;
    assert!(
        [StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE].contains(&early.status),
        "{}",
        early.text
    );
    lock.release().await;
    let answered = eventually(Duration::from_secs(20), "the retry answered", || async {
        let reply = send().await;
        (reply.status != StatusCode::CONFLICT).then_some(reply)
    })
    .await;
    assert_eq!(answered.status, StatusCode::ACCEPTED, "{}", answered.text);
    assert!(replayed(&answered), "the retry wrote again");
    app.post_activity(user, &token, &marker, "view", 1).await;

    eventually(Duration::from_secs(30), "the marker ranked", || async {
        (score(&app, "retry", &marker).await > 0.0).then_some(())
    })
    .await;
    let lamp_score = score(&app, "retry", &lamp).await;
    assert!(
        (lamp_score - 10.0).abs() < 0.05,
        "one purchase weighs 10: {lamp_score}"
    );
    let stats = eventually(
        Duration::from_secs(30),
        "the marker in analytics",
        || async {
            let reply = app
                .get(
                    Service::Analytics,
                    &format!("/analytics/users/{user}"),
                    Some(&app.admin_token),
                )
                .await;
            (reply.body["views"] == 1).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(stats["purchases"], 1, "{stats}");
    let lamp_stats = app
        .get(
            Service::Analytics,
            &format!("/analytics/products/{lamp}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(lamp_stats.body["purchases"], 1, "{}", lamp_stats.text);
    assert_eq!(app.count("user_activity").await, 2);
}

/// A key is kept 24 hours: past that, its record is dead (the key may carry another request)
/// and the purge removes it. A malformed key is 400 and writes nothing.
#[actix_web::test]
async fn keys_expire_after_a_day_and_malformed_keys_are_refused() {
    let app = spawn_app().await;
    let (user, token, _) = app.new_user().await;
    let path = format!("/users/{user}/activity");
    let view = json!({"type": "view", "product_id": Uuid::new_v4()});
    let first = post_keyed(
        &app,
        Service::Users,
        &path,
        &view,
        Some("day"),
        As::Token(&token),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);

    app.db()
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    let other = json!({"type": "purchase", "product_id": Uuid::new_v4()});
    let reused = post_keyed(
        &app,
        Service::Users,
        &path,
        &other,
        Some("day"),
        As::Token(&token),
    )
    .await;
    assert_eq!(reused.status, StatusCode::ACCEPTED, "{}", reused.text);
    assert!(!replayed(&reused));
    assert_ne!(reused.body["event_id"], first.body["event_id"]);
    assert_eq!(app.count("idempotency_keys").await, 1);

    app.db()
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    let pool = recsys::db::pool(&app.settings.postgres).unwrap();
    assert_eq!(recsys::idempotency::purge(&pool).await.unwrap(), 1);
    assert_eq!(app.count("idempotency_keys").await, 0);

    for bad in ["", &"k".repeat(256), "tab\tinside"] {
        let reply = app
            .client
            .post(format!("{}{path}", app.url(Service::Users)))
            .header("Idempotency-Key", bad)
            .bearer_auth(&token)
            .json(&view)
            .send()
            .await
            .unwrap();
        read_reply(reply).await.assert_error(400, "invalid_request");
    }
    let non_ascii = app
        .client
        .post(format!("{}{path}", app.url(Service::Users)))
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        )
        .bearer_auth(&token)
        .json(&view)
        .send()
        .await
        .unwrap();
    read_reply(non_ascii)
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(app.count("user_activity").await, 2);
}

/// The documents of both ports declare the header, its pattern, the replay header and the
/// 409 and 422 answers on exactly the four writes that take a key.
#[actix_web::test]
async fn the_documents_declare_the_key_on_the_keyed_writes() {
    let app = spawn_app().await;
    let mut keyed = Vec::new();
    for service in [Service::Users, Service::Products] {
        let doc = app.get(service, "/openapi.json", None).await.body;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let header = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == "Idempotency-Key");
                let Some(header) = header else { continue };
                assert_eq!(header["in"], "header");
                assert_eq!(header["schema"]["maxLength"], 255);
                assert_eq!(
                    header["schema"]["pattern"],
                    recsys::idempotency::KEY_PATTERN
                );
                let responses = &operation["responses"];
                assert!(responses["409"].is_object() && responses["422"].is_object());
                let success = responses
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(status, _)| status.starts_with('2'))
                    .unwrap()
                    .1;
                assert!(success["headers"]["Idempotent-Replayed"].is_object());
                keyed.push(format!("{method} {path}"));
            }
        }
    }
    keyed.sort();
    assert_eq!(
        keyed,
        [
            "post /activity/batch",
            "post /products",
            "post /products/create",
            "post /users",
            "post /users/register",
            "post /users/{id}/activity",
        ]
    );
}
