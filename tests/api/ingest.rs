//! Server-side ingestion: a storefront back end with `X-API-Key` (`API_KEY`) records actions for
//! any user, one at a time or in batches of up to 1000, all or nothing; a backfilled action
//! counts at its `occurred_at` in the rankings and in analytics; a wrong key is 401 and the key
//! reaches no log line.

use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use recsys::config::{Secret, Service};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// The key of the runtimes here (at least 32 bytes).
const KEY: &str = "storefront-backend-key-0123456789abcdef";

/// A runtime that accepts [`KEY`].
async fn spawn_with_key() -> TestApp {
    TestApp::builder()
        .with(|settings| settings.api_key = Some(Secret::new(KEY)))
        .spawn()
        .await
}

/// `POST` with `X-API-Key: key` and no token.
async fn post_with_key(app: &TestApp, path: &str, body: Value, key: &str) -> Reply {
    read_reply(
        app.client
            .post(format!("{}{path}", app.url(Service::Users)))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Rows of `user_activity`.
async fn activity_rows(app: &TestApp) -> i64 {
    app.count("user_activity").await
}

/// The key records an action for any user, without the user's token; a wrong key, or any key
/// when `API_KEY` is unset, is 401; the key appears in no log line.
#[actix_web::test]
async fn the_key_records_an_action_for_any_user() {
    let (logger, lines) = captured_logger();
    let app = TestApp::builder()
        .logger(logger)
        .with(|settings| settings.api_key = Some(Secret::new(KEY)))
        .spawn()
        .await;
    let (user, _, _) = app.new_user().await;
    let product = Uuid::new_v4();
    let path = format!("/users/{user}/activity");
    let body = json!({"type": "view", "product_id": product});

    let accepted = post_with_key(&app, &path, body.clone(), KEY).await;
    let wrong = post_with_key(&app, &path, body.clone(), &KEY.replace('0', "1")).await;
    let short = post_with_key(&app, &path, body.clone(), "storefront").await;
    let unknown_user = post_with_key(
        &app,
        &format!("/users/{}/activity", Uuid::new_v4()),
        body.clone(),
        KEY,
    )
    .await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert!(accepted.body["event_id"].as_str().is_some());
    wrong.assert_error(401, "unauthorized");
    short.assert_error(401, "unauthorized");
    unknown_user.assert_error(404, "not_found");
    assert_eq!(activity_rows(&app).await, 1);
    let log = lines.lock().unwrap().join("\n");
    assert!(!log.contains(KEY), "the key reached the log");

    let without = spawn_app().await;
    let (user, _, _) = without.new_user().await;
    post_with_key(&without, &format!("/users/{user}/activity"), body, KEY)
        .await
        .assert_error(401, "unauthorized");
}

/// A batch is recorded in order and answered with one event id per action; a backfilled
/// purchase counts at its `occurred_at`: half its weight a popularity half-life (24 h) ago in
/// the ranking, and the user's last activity in analytics is that time.
#[actix_web::test]
async fn a_batch_counts_each_action_at_its_time() {
    let app = spawn_with_key().await;
    let (ann, _, _) = app.new_user().await;
    let (bob, _, _) = app.new_user().await;
    let lamp = app
        .create_product("Lamp", json!("9.00"), Some("batch"))
        .await;
    let lamp = lamp["id"].as_str().unwrap().to_string();
    let day_ago = Utc::now() - TimeDelta::hours(24);
    let stamp = day_ago.to_rfc3339_opts(SecondsFormat::Micros, true);

    let reply = post_with_key(
        &app,
        "/activity/batch",
        json!({"actions": [
            {"user_id": ann, "type": "purchase", "product_id": lamp, "occurred_at": stamp},
            {"user_id": bob, "type": "view", "product_id": lamp, "quantity": 2, "occurred_at": stamp},
            {"user_id": bob, "type": "cart_add", "product_id": lamp, "occurred_at": stamp},
        ]}),
        KEY,
    )
    .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["accepted"], 3);
    let ids: Vec<&str> = reply.body["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    // (10 + 2 + 3) one half-life ago: 7.5. Ann's and Bob's actions are keyed apart, so they may
    // land on different partitions and be applied in different batches: wait for both.
    eventually(
        Duration::from_secs(30),
        "the backfill ranked at 7.5",
        || async {
            let reply = app
                .get(
                    Service::Recommendations,
                    "/recommendations?category=batch",
                    None,
                )
                .await;
            let score = reply.body[0]["score"].as_f64()?;
            ((score - 7.5).abs() < 0.01).then_some(())
        },
    )
    .await;
    let stats = eventually(Duration::from_secs(30), "Ann in analytics", || async {
        let reply = app
            .get(
                Service::Analytics,
                &format!("/analytics/users/{ann}"),
                Some(&app.admin_token),
            )
            .await;
        (reply.status == StatusCode::OK && reply.body["purchases"] == 1).then_some(reply.body)
    })
    .await;
    let last: chrono::DateTime<Utc> =
        serde_json::from_value(stats["last_active_at"].clone()).unwrap();
    assert!((last - day_ago).num_milliseconds().abs() < 1, "{stats}");
}

/// Validation is all or nothing: every bad action is named by its index and field, and nothing
/// of the batch is written; an unknown user is named the same way; 0 or 1001 actions, or no
/// key, are refused too.
#[actix_web::test]
async fn a_bad_batch_writes_nothing_and_names_every_problem() {
    let app = spawn_with_key().await;
    let (user, token, _) = app.new_user().await;
    let product = Uuid::new_v4();
    let good = json!({"user_id": user, "type": "view", "product_id": product});
    let future = (Utc::now() + TimeDelta::minutes(10)).to_rfc3339();
    let ancient = (Utc::now() - TimeDelta::days(31)).to_rfc3339();
    let rows = activity_rows(&app).await;

    let cases = [
        (
            "bad fields",
            json!({"actions": [
                good,
                {"user_id": "nobody", "type": "like", "product_id": product, "quantity": 0},
                good,
                {"user_id": user, "type": "view", "product_id": product, "occurred_at": future},
                {"user_id": user, "type": "view", "product_id": product, "occurred_at": ancient},
                {"user_id": user, "type": "view", "occurred_at": "yesterday"},
                "not an object",
            ]}),
            vec![
                "actions[1].user_id",
                "actions[1].type",
                "actions[1].quantity",
                "actions[3].occurred_at",
                "actions[4].occurred_at",
                "actions[5].product_id",
                "actions[5].occurred_at",
                "actions[6]",
            ],
        ),
        (
            "unknown users",
            json!({"actions": [
                good,
                {"user_id": Uuid::new_v4(), "type": "view", "product_id": product},
                good,
                {"user_id": Uuid::new_v4(), "type": "purchase", "product_id": product},
            ]}),
            vec![
                "actions[1].user_id: no such user",
                "actions[3].user_id: no such user",
            ],
        ),
        ("empty", json!({"actions": []}), vec!["1 to 1000"]),
        (
            "too many",
            json!({"actions": vec![good.clone(); 1001]}),
            vec!["1 to 1000"],
        ),
    ];
    for (case, body, named) in cases {
        let reply = post_with_key(&app, "/activity/batch", body, KEY).await;
        reply.assert_error(400, "invalid_request");
        let message = reply.body["error"]["message"].as_str().unwrap();
        for name in named {
            assert!(message.contains(name), "{case}: {name} in {message}");
        }
        assert!(!message.contains("actions[0]"), "{case}: {message}");
        assert!(!message.contains("actions[2]"), "{case}: {message}");
    }
    // A user's token is not a key.
    app.post(
        Service::Users,
        "/activity/batch",
        json!({"actions": [good]}),
        Some(&token),
    )
    .await
    .assert_error(401, "unauthorized");

    assert_eq!(
        activity_rows(&app).await,
        rows,
        "a refused batch wrote activity"
    );
    // Nor was any of its events published: the user's actions reach analytics in order, so
    // once a later action of theirs is counted, an earlier published one would be too.
    let marker = post_with_key(
        &app,
        &format!("/users/{user}/activity"),
        json!({"type": "view", "product_id": product}),
        KEY,
    )
    .await;
    assert_eq!(marker.status, StatusCode::ACCEPTED, "{}", marker.text);
    let counted = eventually(Duration::from_secs(30), "the marker counted", || async {
        let reply = app
            .get(
                Service::Analytics,
                &format!("/analytics/users/{user}"),
                Some(&app.admin_token),
            )
            .await;
        let count = reply.body["activity_count"].as_i64()?;
        (count >= 1).then_some(count)
    })
    .await;
    assert_eq!(counted, 1, "a refused batch published events");
}

/// The top products of a window count only the actions whose `occurred_at` falls in it: a
/// backfill three days and thirty hours old is in the 7-day window and not in the 24-hour
/// one; all time counts everything; an unknown window is a 400.
#[actix_web::test]
async fn top_products_of_a_window_count_actions_by_their_time() {
    let app = spawn_with_key().await;
    let (ann, _, _) = app.new_user().await;
    let id = |p: Value| p["id"].as_str().unwrap().to_string();
    let old = id(app.create_product("Old", json!("1.00"), Some("w")).await);
    let mid = id(app.create_product("Mid", json!("1.00"), Some("w")).await);
    let new = id(app.create_product("New", json!("1.00"), Some("w")).await);
    let ago = |delta: TimeDelta| (Utc::now() - delta).to_rfc3339_opts(SecondsFormat::Micros, true);
    let (days3, hours30, hours20, now) = (
        ago(TimeDelta::days(3)),
        ago(TimeDelta::hours(30)),
        ago(TimeDelta::hours(20)),
        ago(TimeDelta::minutes(1)),
    );
    let buy = |product: &str, at: &str| json!({"user_id": ann, "type": "purchase", "product_id": product, "occurred_at": at});
    let reply = post_with_key(
        &app,
        "/activity/batch",
        json!({"actions": [
            buy(&old, &days3), buy(&old, &days3), buy(&old, &days3),
            buy(&mid, &hours30), buy(&mid, &hours30),
            buy(&new, &hours20),
            {"user_id": ann, "type": "view", "product_id": new, "occurred_at": now},
        ]}),
        KEY,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);

    let top = |query: &'static str| {
        let app = &app;
        async move {
            let reply = app
                .get(
                    Service::Analytics,
                    &format!("/analytics/products/top?{query}"),
                    Some(&app.admin_token),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
            reply
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let by = if query.contains("by=views") {
                        "views"
                    } else {
                        "purchases"
                    };
                    (
                        p["product_id"].as_str().unwrap().to_string(),
                        p[by].as_i64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let all_time = vec![(old.clone(), 3), (mid.clone(), 2), (new.clone(), 1)];
    eventually(Duration::from_secs(30), "the batch counted", || async {
        (top("by=purchases").await == all_time).then_some(())
    })
    .await;
    assert_eq!(top("by=purchases&window=30d").await, all_time);
    assert_eq!(top("by=purchases&window=7d").await, all_time);
    assert_eq!(top("by=purchases&window=24h").await, vec![(new.clone(), 1)]);
    assert_eq!(top("by=views&window=1h").await, vec![(new.clone(), 1)]);
    assert_eq!(top("by=purchases&window=1h").await, vec![(new.clone(), 0)]);

    for bad in ["2h", "", "7D", "all"] {
        let reply = app
            .get(
                Service::Analytics,
                &format!("/analytics/products/top?window={bad}"),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "window={bad}");
        assert_eq!(reply.body["error"]["code"], "invalid_request");
    }
}
