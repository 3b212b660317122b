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

/// Postgres unreachable for 20 s in the middle of a workload: writes answer 503 with the JSON
/// error within the request bound (never hang), `/readyz` fails naming postgres, the consumers
/// hold their positions; after recovery, with no actor restarted, every acknowledged write is
/// counted exactly once by analytics and in the recommendation scores.
#[actix_web::test]
async fn postgres_outage_loses_nothing_and_counts_nothing_twice() {
    const OUTAGE: Duration = Duration::from_secs(20);
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied_port = proxy.port;
    let app = spawn_app_configured(&brokers(), test_logger(), |settings| {
        let direct = settings.postgres.database_url.as_ref().unwrap().expose();
        let proxied = direct.replace(":5432/", &format!(":{proxied_port}/"));
        assert_ne!(direct, proxied);
        settings.postgres.database_url = Some(Secret::new(proxied));
        settings.postgres.db_timeout_ms = 1000;
        settings.ranking_half_life = "3650d".parse().unwrap();
    })
    .await;
    let mut products = Vec::new();
    for i in 0..3 {
        let product = app
            .create_product(&format!("Faulty {i}"), json!(i + 1), Some("faults"))
            .await;
        products.push(product["id"].as_str().unwrap().to_string());
    }
    let (user, token, _) = app.new_user().await;
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut step = 0usize;
    let mut next = || {
        step += 1;
        (
            products[step % products.len()].clone(),
            ACTIONS[step % ACTIONS.len()],
            (step % 3 + 1) as i64,
        )
    };
    let path = format!("/users/{user}/activity");
    let activity = |product: &str, action: &str, quantity: i64| {
        app.post(
            Service::Users,
            &path,
            json!({"type": action, "product_id": product, "quantity": quantity}),
            Some(&token),
        )
    };

    // Before: every write acknowledged.
    for _ in 0..24 {
        let (product, action, quantity) = next();
        let reply = activity(&product, action, quantity).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        expected.entry(product).or_default().add(action, quantity);
    }

    // During: every write refused quickly with the JSON error; readiness names postgres.
    proxy.cut();
    let cut_at = Instant::now();
    let mut refused = 0;
    while cut_at.elapsed() < OUTAGE {
        let (product, action, quantity) = next();
        let started = Instant::now();
        let reply = activity(&product, action, quantity).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a write took {:?}",
            started.elapsed()
        );
        if reply.status == 202 {
            // Accepted before the cut reached the pool: it counts.
            expected.entry(product).or_default().add(action, quantity);
            continue;
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
        let (product, action, quantity) = next();
        let reply = activity(&product, action, quantity).await;
        match reply.status.as_u16() {
            202 => {
                expected.entry(product).or_default().add(action, quantity);
                after += 1;
            }
            503 => reply.assert_error(503, "unavailable"),
            other => panic!("{other}: {}", reply.text),
        }
    }

    // Settled, stage by stage (so a failure says which stage stalled): the outbox drained,
    // both consumers caught up, then every product's counters and score match.
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        (app.outbox_rows().await == 0).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "both consumers to catch up",
        || async {
            let samples = samples(&app, Service::Analytics).await;
            let lag = |service: &str| {
                let lags: Vec<f64> = samples
                    .iter()
                    .filter(|s| {
                        s.name == "kafka_consumer_lag" && s.label("service") == Some(service)
                    })
                    .map(|s| s.value)
                    .collect();
                (!lags.is_empty()).then(|| lags.iter().sum::<f64>())
            };
            (lag("analytics") == Some(0.0) && lag("recommendations") == Some(0.0)).then_some(())
        },
    )
    .await;
    for (product, want) in &expected {
        let path = format!("/analytics/products/{product}");
        eventually(
            Duration::from_secs(30),
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
                    && score
                        .is_some_and(|s| (s - want.score).abs() < 1e-6 * want.score.abs().max(1.0));
                if !exact {
                    eprintln!("{product}: {counters:?} / {score:?}, want {want:?}");
                }
                exact.then_some(())
            },
        )
        .await;
    }
    let restarts: f64 = samples(&app, Service::Users)
        .await
        .iter()
        .filter(|s| s.name == "actor_restarts_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(restarts, 0.0, "recovery needed no restart");
    let user_events = app
        .get(
            Service::Analytics,
            &format!("/analytics/users/{user}"),
            Some(&app.admin_token),
        )
        .await;
    let acknowledged: i64 = expected
        .values()
        .map(|e| e.counters[..4].iter().sum::<i64>())
        .sum();
    let counted: i64 = ["views", "cart_adds", "cart_removes", "purchases"]
        .iter()
        .map(|k| user_events.body[k].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(counted, acknowledged, "{}", user_events.text);
    eprintln!("postgres outage: {acknowledged} acknowledged actions, {refused} refused with 503, all counted once");
}
