//! Faults with exact accounting. A workload goes through the public APIs and every write the
//! API acknowledged is recorded; the fault is injected and healed; once the system settled
//! (outbox empty, both consumers caught up) the analytics counters and the recommendation
//! scores must equal what the acknowledged writes imply: nothing lost, nothing counted twice.
//!
//! Postgres is cut off for this test's runtime alone through a TCP proxy that the test controls
//! (the other tests share the server), so the suite still runs in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recsys::config::{Secret, Service};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::*;
use crate::observability::samples;

/// A TCP proxy in front of Postgres that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accept_cut, accept_links) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accept_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_links.lock().unwrap().push(link.abort_handle());
            }
        })
        .abort_handle();
        Self {
            port,
            cut,
            links,
            accept,
        }
    }

    /// Postgres becomes unreachable: open connections are reset, new ones closed at once.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What the acknowledged writes imply for one product.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Expected {
    /// views, cart_adds, cart_removes, purchases, units sold
    counters: [i64; 5],
    /// Σ weight × quantity with the default weights (no decay at a 10-year half-life).
    score: f64,
}

impl Expected {
    fn add(&mut self, action: &str, quantity: i64) {
        let (slot, weight) = match action {
            "view" => (0, 1.0),
            "cart_add" => (1, 3.0),
            "cart_remove" => (2, -3.0),
            _ => (3, 10.0),
        };
        self.counters[slot] += 1;
        if action == "purchase" {
            self.counters[4] += quantity;
        }
        self.score += weight * quantity as f64;
    }
}

const ACTIONS: [&str; 4] = ["view", "cart_add", "cart_remove", "purchase"];

/// A stream of activities of one user over three products, and the ledger of the ones the API
/// acknowledged.
struct Workload<'a> {
    app: &'a TestApp,
    products: Vec<String>,
    user: uuid::Uuid,
    token: String,
    step: usize,
    /// What the acknowledged writes imply, per product.
    ledger: HashMap<String, Expected>,
    acknowledged: i64,
}

impl<'a> Workload<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let mut products = Vec::new();
        for i in 0..3 {
            let product = app
                .create_product(&format!("Faulty {i}"), json!(i + 1), Some("faults"))
                .await;
            products.push(product["id"].as_str().unwrap().to_string());
        }
        let (user, token, _) = app.new_user().await;
        Self {
            app,
            products,
            user,
            token,
            step: 0,
            ledger: HashMap::new(),
            acknowledged: 0,
        }
    }

    /// Posts the next activity; a `202` goes in the ledger. Answers the reply.
    async fn write(&mut self) -> Reply {
        self.step += 1;
        let product = self.products[self.step % self.products.len()].clone();
        let action = ACTIONS[self.step % ACTIONS.len()];
        let quantity = (self.step % 3 + 1) as i64;
        let reply = self
            .app
            .post(
                Service::Users,
                &format!("/users/{}/activity", self.user),
                json!({"type": action, "product_id": product, "quantity": quantity}),
                Some(&self.token),
            )
            .await;
        if reply.status == 202 {
            self.ledger
                .entry(product)
                .or_default()
                .add(action, quantity);
            self.acknowledged += 1;
        }
        reply
    }

    /// Once the outbox is empty and both consumers caught up, every product's analytics
    /// counters and recommendation score equal the ledger, and the user's counters sum to the
    /// acknowledged writes.
    async fn assert_exact(&self) {
        let app = self.app;
        eventually(Duration::from_secs(60), "the outbox to drain", || async {
            (app.outbox_rows().await == 0).then_some(())
        })
        .await;
        for (product, want) in &self.ledger {
            let path = format!("/analytics/products/{product}");
            eventually(
                Duration::from_secs(60),
                "analytics and recommendations to match the acknowledged writes",
                || async {
                    let stats = app
                        .get(Service::Analytics, &path, Some(&app.admin_token))
                        .await;
                    let counters = [
                        "views",
                        "cart_adds",
                        "cart_removes",
                        "purchases",
                        "units_sold",
                    ]
                    .map(|k| stats.body[k].as_i64().unwrap_or(-1));
                    let ranked = app
                        .get(Service::Recommendations, "/recommendations?limit=100", None)
                        .await;
                    let score = ranked.body.as_array().and_then(|items| {
                        items
                            .iter()
                            .find(|i| i["product_id"] == product.as_str())
                            .and_then(|i| i["score"].as_f64())
                    });
                    let exact = counters == want.counters
                        && score.is_some_and(|s| {
                            (s - want.score).abs() < 1e-6 * want.score.abs().max(1.0)
                        });
                    exact.then_some(())
                },
            )
            .await;
        }
        let user = app
            .get(
                Service::Analytics,
                &format!("/analytics/users/{}", self.user),
                Some(&app.admin_token),
            )
            .await;
        let counted: i64 = ["views", "cart_adds", "cart_removes", "purchases"]
            .iter()
            .map(|k| user.body[k].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(counted, self.acknowledged, "{}", user.text);
    }
}

/// Sum of `actor_restarts_total` over every actor.
async fn restarts(app: &TestApp) -> f64 {
    samples(app, Service::Users)
        .await
        .iter()
        .filter(|s| s.name == "actor_restarts_total")
        .map(|s| s.value)
        .sum()
}

/// Settings every fault test shares: a 10-year half-life, so scores are plain sums.
fn exact_scores(settings: &mut recsys::config::Settings) {
    settings.ranking_half_life = "3650d".parse().unwrap();
}

/// Postgres unreachable for 20 s in the middle of a workload: writes answer 503 with the JSON
/// error within the request bound (never hang), `/readyz` fails naming postgres, the consumers
/// hold their positions; after recovery, with no actor restarted, every acknowledged write is
/// counted exactly once by analytics and in the recommendation scores.
#[actix_web::test]
async fn postgres_outage_loses_nothing_and_counts_nothing_twice() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied_port = proxy.port;
    let app = spawn_app_configured(&brokers(), test_logger(), |settings| {
        let direct = settings.postgres.database_url.as_ref().unwrap().expose();
        let proxied = direct.replace(":5432/", &format!(":{proxied_port}/"));
        assert_ne!(direct, proxied);
        settings.postgres.database_url = Some(Secret::new(proxied));
        settings.postgres.db_timeout_ms = 1000;
        exact_scores(settings);
    })
    .await;
    let mut load = Workload::new(&app).await;

    // Before: every write acknowledged.
    for _ in 0..24 {
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }

    // During: every write refused quickly with the JSON error; readiness names postgres.
    proxy.cut();
    let cut_at = Instant::now();
    let mut refused = 0;
    while cut_at.elapsed() < OUTAGE {
        let started = Instant::now();
        let reply = load.write().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a write took {:?}",
            started.elapsed()
        );
        if reply.status == 202 {
            continue; // accepted before the cut reached the pool: it is in the ledger
        }
        reply.assert_error(503, "unavailable");
        refused += 1;
        let ready = app.get(Service::Users, "/readyz", None).await;
        assert_eq!(ready.status, 503, "{}", ready.text);
        assert_ne!(ready.body["checks"]["postgres"], "ok", "{}", ready.text);
    }
    assert!(refused >= 5, "only {refused} writes were refused");
    proxy.heal();

    // After: writes are acknowledged again without restarting anything.
    let mut after = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while after < 24 {
        assert!(Instant::now() < deadline, "writes did not recover");
        let reply = load.write().await;
        match reply.status.as_u16() {
            202 => after += 1,
            503 => reply.assert_error(503, "unavailable"),
            other => panic!("{other}: {}", reply.text),
        }
    }

    load.assert_exact().await;
    assert_eq!(restarts(&app).await, 0.0, "recovery needed no restart");
    eprintln!(
        "postgres outage: {} acknowledged actions, {refused} refused with 503, all counted once",
        load.acknowledged
    );
}

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(20);

/// Poison records written straight into both topics while the load runs (not JSON, an unknown
/// type, a schema violation, a JSON array): each consumer group sends every one to the
/// dead-letter topic and keeps going, and every acknowledged write is counted exactly once.
#[actix_web::test]
async fn poison_records_during_the_load_are_dead_lettered_and_the_rest_counts_exactly() {
    const ROUNDS: usize = 6;
    let app = spawn_app_configured(&brokers(), test_logger(), exact_scores).await;
    let mut load = Workload::new(&app).await;
    let kafka = crate::consumer::producer();
    let topics = [
        app.topic(recsys_schema::topics::USER_UPDATES),
        app.topic(recsys_schema::topics::PRODUCT_UPDATES),
    ];
    let poisons = [
        "not json at all".to_string(),
        json!({"event_id": uuid::Uuid::new_v4(), "type": "user.teleported", "data": {}})
            .to_string(),
        json!({"event_id": uuid::Uuid::new_v4(), "type": "user.activity", "data": {"quantity": 0}})
            .to_string(),
        "[1, 2, 3]".to_string(),
    ];
    let mut injected = 0;
    for round in 0..ROUNDS {
        for _ in 0..6 {
            let reply = load.write().await;
            assert_eq!(reply.status, 202, "{}", reply.text);
        }
        let topic = &topics[round % topics.len()];
        let poison = &poisons[round % poisons.len()];
        crate::consumer::produce(&kafka, topic, &format!("poison-{round}"), poison).await;
        injected += 1;
    }

    load.assert_exact().await;
    let dlq: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    // Both groups (recommendations and analytics) dead-letter each poison record.
    let dead = consume(&brokers(), &dlq, 2 * injected, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2 * injected, "{dead:#?}");
    eprintln!(
        "poison: {} acknowledged actions counted once, {injected} poison records dead-lettered by both groups",
        load.acknowledged
    );
}

/// A tansu broker of this test's own on `port`, storing in `dir` (durable across restarts).
fn durable_broker(port: u16, dir: &std::path::Path) -> tokio::process::Child {
    start_tansu(port, "sqlite://tansu.db", dir)
}

/// The broker killed (SIGKILL) during the load and restarted on its durable store: writes keep
/// answering 202 while it is down, and once it is back every acknowledged write is counted
/// exactly once.
#[actix_web::test]
async fn a_broker_killed_and_restarted_on_its_store_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("recsys-broker-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let mut broker = durable_broker(port, &dir);
    let app = spawn_app_configured(&brokers, test_logger(), exact_scores).await;
    let mut load = Workload::new(&app).await;
    for _ in 0..24 {
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }

    broker.start_kill().expect("SIGKILL");
    broker.wait().await.unwrap();
    let down_at = Instant::now();
    let mut down_writes = 0;
    while down_at.elapsed() < Duration::from_secs(5) {
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "writes keep succeeding: {}", reply.text);
        down_writes += 1;
    }
    let _broker = durable_broker(port, &dir);
    for _ in 0..24 {
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }

    load.assert_exact().await;
    eprintln!(
        "killed broker: {} acknowledged actions ({down_writes} while it was down), all counted once",
        load.acknowledged
    );
    let _ = std::fs::remove_dir_all(&dir);
}
