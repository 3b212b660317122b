//! The transactional outbox: writes succeed while the broker is unreachable, and once it is
//! back every event arrives exactly once, in write order per key.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use recsys::config::Service;
use recsys_schema::topics;
use serde_json::json;

use crate::helpers::*;
use crate::kafka::KafkaCluster;

/// With no broker listening, writes answer 2xx, `/readyz` says why it is not ready and
/// `outbox_pending` (and the oldest row's age) count the backlog; a broker coming up receives
/// every event once, in order.
#[actix_web::test]
async fn outbox_delivers_each_event_once_in_order_after_a_broker_outage() {
    // A broker of the test's own, killed before the runtime starts: nothing listens on its port
    // until it is started again.
    let mut cluster = KafkaCluster::start(1).await;
    let brokers = cluster.bootstrap();
    cluster.kill(0).await;
    let app = TestApp::builder().brokers(&brokers).spawn().await;

    let ready = app.get(Service::Users, "/readyz", None).await;
    ready.assert_error(503, "unavailable");
    assert!(ready.text.contains("kafka"), "{}", ready.text);

    let mut written: Vec<(String, String)> = Vec::new(); // (key, event type) in write order
    written.push(("admin".into(), "user.registered".into()));
    for i in 0..3 {
        let (id, token) = app
            .register(
                &format!("User {i}"),
                &format!("outage-{i}@example.com"),
                "password-123",
            )
            .await;
        written.push((id.to_string(), "user.registered".into()));
        for kind in ["view", "cart_add"] {
            let reply = app
                .post(
                    Service::Users,
                    &format!("/users/{id}/activity"),
                    json!({"type": kind, "product_id": uuid::Uuid::new_v4()}),
                    Some(&token),
                )
                .await;
            assert_eq!(reply.status, 202, "{}", reply.text);
            written.push((id.to_string(), "user.activity".into()));
        }
    }
    for i in 0..2 {
        let product = app
            .create_product(&format!("P{i}"), json!(i + 1), None)
            .await;
        let id = product["id"].as_str().unwrap().to_string();
        let reply = app
            .request(
                reqwest::Method::PATCH,
                Service::Products,
                &format!("/products/{id}"),
                Some(json!({"name": format!("P{i} v2")})),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(reply.status, 200);
        written.push((id.clone(), "product.created".into()));
        written.push((id, "product.updated".into()));
    }
    let total = written.len();
    assert_eq!(app.outbox_rows().await, total as i64);
    eventually(
        Duration::from_secs(10),
        "outbox_pending to show the backlog",
        || async {
            (app.metric("outbox_pending").await == Some(total as f64)
                && app.metric("outbox_oldest_pending_age_seconds").await > Some(0.0))
            .then_some(())
        },
    )
    .await;

    cluster.restart(0).await;
    let names = [
        app.topic(topics::USER_UPDATES),
        app.topic(topics::PRODUCT_UPDATES),
    ];
    let mut records = consume(&brokers, &names, total, Duration::from_secs(90)).await;
    assert_eq!(
        records.len(),
        total,
        "every event exactly once: {records:#?}"
    );
    let ids: HashSet<_> = records
        .iter()
        .map(|r| r.value["event_id"].clone())
        .collect();
    assert_eq!(ids.len(), total, "no duplicates");

    records.sort_by_key(|r| (r.topic.clone(), r.partition, r.offset));
    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    for r in &records {
        received
            .entry(r.key.clone())
            .or_default()
            .push(r.value["type"].as_str().unwrap().into());
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for (key, kind) in written.iter().filter(|(k, _)| k != "admin") {
        expected.entry(key.clone()).or_default().push(kind.clone());
    }
    for (key, kinds) in &expected {
        assert_eq!(&received[key], kinds, "order of {key}");
    }

    eventually(Duration::from_secs(10), "the outbox to empty", || async {
        (app.outbox_rows().await == 0
            && app.metric("outbox_pending").await == Some(0.0)
            && app.metric("outbox_oldest_pending_age_seconds").await == Some(0.0))
        .then_some(())
    })
    .await;
    // The stamps go with their rows; the numbers given out are exactly the records sent.
    assert_eq!(app.count("outbox_stamps").await, 0);
    assert_eq!(
        app.db()
            .number("SELECT sum(last_seq) FROM outbox_sequences")
            .await,
        total as i64
    );
    let ready = app.get(Service::Users, "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
}

/// The relay vacuums the outbox tables itself each time it has removed `OUTBOX_VACUUM_ROWS`
/// rows (autovacuum comes at most once a minute): with a threshold of 5, twelve published
/// events make at least one vacuum of `outbox` (`vacuum_count` counts manual vacuums only).
/// How many dead rows a vacuum leaves is not asserted: rows deleted while another transaction
/// of the database (a consumer's batch) may still see them survive until the next vacuum.
#[actix_web::test]
async fn the_relay_vacuums_the_rows_it_removed() {
    let app = TestApp::builder()
        .with(|settings| {
            settings.outbox_vacuum_rows = 5;
        })
        .spawn()
        .await;
    let (id, token) = app
        .register("Vacuum", "vacuum@example.com", "password-123")
        .await;
    for _ in 0..10 {
        let reply = app
            .post(
                Service::Users,
                &format!("/users/{id}/activity"),
                json!({"type": "view", "product_id": uuid::Uuid::new_v4()}),
                Some(&token),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    // The admin's and this user's registrations and ten actions: twelve rows published.
    // Table statistics reach pg_stat_user_tables up to a second or so after the fact.
    eventually(
        Duration::from_secs(30),
        "the relay to publish and vacuum",
        || async {
            let vacuums = app
                .db()
                .number("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'")
                .await;
            (app.outbox_rows().await == 0 && vacuums >= 1).then_some(())
        },
    )
    .await;
}

/// A runtime whose relay polls once a minute, so that only wake-ups publish promptly, and a
/// user whose registration the relay has published (the outbox is empty).
async fn app_with_an_idle_poll(
    adjust: impl FnOnce(&mut recsys::config::Settings),
) -> (TestApp, uuid::Uuid, String) {
    let app = TestApp::builder()
        .with(|settings| {
            settings.outbox_poll_ms = 60_000;
            adjust(settings);
        })
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    outbox_emptied(&app, Duration::from_secs(30), "the registration published").await;
    (app, user, token)
}

/// Waits up to `deadline` for the relay to have published every outbox row.
async fn outbox_emptied(app: &TestApp, deadline: Duration, what: &str) {
    eventually(deadline, what, || async {
        (app.outbox_rows().await == 0).then_some(())
    })
    .await;
}

/// The relay lock held by a session of the test: another process's relay, as far as the
/// runtime's can tell.
struct RelayLockHolder(diesel_async::AsyncPgConnection);

impl RelayLockHolder {
    async fn take(app: &TestApp) -> Self {
        use diesel_async::AsyncConnection;
        let mut holder = Self(
            diesel_async::AsyncPgConnection::establish(&app.database_url)
                .await
                .unwrap(),
        );
        holder.call("pg_advisory_lock").await;
        holder
    }

    async fn release(mut self) {
        self.call("pg_advisory_unlock").await;
    }

    async fn call(&mut self, function: &str) {
        use diesel_async::RunQueryDsl;
        let sql = format!("SELECT {function}({})::text", recsys::outbox::RELAY_LOCK);
        diesel::sql_query(sql).execute(&mut self.0).await.unwrap();
    }
}

/// A relay woken by a write while another process's relay holds the outbox tries again shortly
/// instead of waiting for its next poll: with the poll at 60 s, an action written while the test
/// holds the relay lock is published soon after the lock is released.
#[actix_web::test]
async fn a_woken_relay_that_finds_the_outbox_busy_tries_again_without_waiting_for_its_poll() {
    let (app, user, token) = app_with_an_idle_poll(|_| {}).await;
    let holder = RelayLockHolder::take(&app).await;
    let busy = app.metric("outbox_relay_busy_total").await.unwrap_or(0.0);
    app.post_activity(user, &token, uuid::Uuid::new_v4(), "view", 1)
        .await;
    eventually(
        Duration::from_secs(10),
        "the relay to find the outbox busy",
        || async { (app.metric("outbox_relay_busy_total").await > Some(busy)).then_some(()) },
    )
    .await;
    assert_eq!(
        app.outbox_rows().await,
        1,
        "nothing published while the lock is held"
    );
    holder.release().await;

    outbox_emptied(
        &app,
        Duration::from_secs(10),
        "the action published after the release",
    )
    .await;
}

/// Under load the relay gathers: after a batch of at least `GATHER_ROWS` rows, the next one
/// waits until `OUTBOX_GATHER_MS` after that batch started; after a full batch (a backlog) or a
/// small one, the next goes at once. The load is made by holding the relay lock while a full
/// batch and `GATHER_ROWS` + 8 more actions are written: after the release the relay sends
/// the full batch, at once the rest, then holds the next.
#[actix_web::test]
async fn under_load_the_relay_gathers_rows_and_a_quiet_one_publishes_at_once() {
    use recsys_actors::outbox_relay::GATHER_ROWS;

    const GATHER: Duration = Duration::from_secs(6);
    let (app, user, token) =
        app_with_an_idle_poll(|settings| settings.outbox_gather_ms = GATHER.as_millis() as u64)
            .await;

    let holder = RelayLockHolder::take(&app).await;
    let burst = recsys::outbox::RELAY_BATCH + GATHER_ROWS as i64 + 8;
    for _ in 0..burst / 16 + 1 {
        futures_util::future::join_all(
            (0..16).map(|_| app.post_activity(user, &token, uuid::Uuid::new_v4(), "view", 1)),
        )
        .await;
    }
    let written = app.outbox_rows().await;
    assert!(written >= burst, "held back by the lock: {written}");
    holder.release().await;
    let released = std::time::Instant::now();
    outbox_emptied(
        &app,
        GATHER / 2,
        "the burst published in two batches, the second right after the full first",
    )
    .await;
    assert!(released.elapsed() < GATHER / 2);
    let after_burst = std::time::Instant::now();

    // The batch after a large one is held: this action waits in the outbox for the first
    // third of the gathering time (a relay that does not gather publishes it in milliseconds).
    app.post_activity(user, &token, uuid::Uuid::new_v4(), "view", 1)
        .await;
    while after_burst.elapsed() < GATHER / 3 {
        assert_eq!(app.outbox_rows().await, 1, "published while gathering");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It goes at the end of the gathering time, not at the next poll (a minute away).
    outbox_emptied(
        &app,
        GATHER + Duration::from_secs(10),
        "the held action published",
    )
    .await;

    // That batch carried one row: the relay is quiet again and the next action goes at once.
    let quiet = std::time::Instant::now();
    app.post_activity(user, &token, uuid::Uuid::new_v4(), "view", 1)
        .await;
    outbox_emptied(
        &app,
        GATHER / 2,
        "a quiet relay's action published without gathering",
    )
    .await;
    assert!(quiet.elapsed() < GATHER / 2);
}
