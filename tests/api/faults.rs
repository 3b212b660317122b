//! Faults with exact accounting. A workload goes through the public APIs and every write the
//! API acknowledged is recorded; the fault is injected and healed; once the system settled
//! (outbox empty, both consumers caught up) the analytics counters and the recommendation
//! scores must equal what the acknowledged writes imply: nothing lost, nothing counted twice.
//!
//! Postgres is cut off for this test's runtime alone through a TCP proxy that the test controls
//! (the other tests share the server), so the suite still runs in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recsys::config::{Secret, Service};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::*;
use crate::kafka::{describe_group, KafkaCluster};
use crate::observability::{parse_samples, samples, Sample};

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

/// A stream of activities of some users over three products, and the ledger of the ones the
/// API acknowledged.
struct Workload<'a> {
    app: &'a TestApp,
    products: Vec<String>,
    /// `(id, token)` of each user; the writes take turns.
    users: Vec<(uuid::Uuid, String)>,
    step: usize,
    /// What the acknowledged writes imply, per product.
    ledger: HashMap<String, Expected>,
    acknowledged: i64,
    /// Event ids of the acknowledged writes.
    acknowledged_ids: HashSet<uuid::Uuid>,
    /// Writes whose answer was lost (the runtime died with the request in flight): each may or
    /// may not have been committed.
    in_doubt: usize,
}

impl<'a> Workload<'a> {
    /// One user's activities.
    async fn new(app: &'a TestApp) -> Self {
        Self::with_users(app, 1).await
    }

    /// The activities of `count` users (their events spread over the partitions by user id).
    async fn with_users(app: &'a TestApp, count: usize) -> Self {
        let mut products = Vec::new();
        for i in 0..3 {
            let product = app
                .create_product(&format!("Faulty {i}"), json!(i + 1), Some("faults"))
                .await;
            products.push(product["id"].as_str().unwrap().to_string());
        }
        let mut users = Vec::new();
        for _ in 0..count {
            let (user, token, _) = app.new_user().await;
            users.push((user, token));
        }
        Self {
            app,
            products,
            users,
            step: 0,
            ledger: HashMap::new(),
            acknowledged: 0,
            acknowledged_ids: HashSet::new(),
            in_doubt: 0,
        }
    }

    /// Posts the next activity; a `202` goes in the ledger. Answers the reply.
    async fn write(&mut self) -> Reply {
        self.try_write().await.expect("the runtime answers")
    }

    /// Posts `count` activities, each of which must be acknowledged (`202`).
    async fn write_acknowledged(&mut self, count: usize) {
        for _ in 0..count {
            let reply = self.write().await;
            assert_eq!(reply.status, 202, "{}", reply.text);
        }
    }

    /// Like [`Workload::write`]; `None` when no answer came. A request that reached the runtime
    /// and lost its answer is counted as in doubt (a refused connection is not).
    async fn try_write(&mut self) -> Option<Reply> {
        self.step += 1;
        let product = self.products[self.step % self.products.len()].clone();
        let action = ACTIONS[self.step % ACTIONS.len()];
        let quantity = (self.step % 3 + 1) as i64;
        let (user, token) = &self.users[self.step % self.users.len()];
        let reply = self
            .app
            .try_request(
                reqwest::Method::POST,
                Service::Users,
                &format!("/users/{user}/activity"),
                Some(json!({"type": action, "product_id": product, "quantity": quantity})),
                Some(token),
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                if !e.is_connect() {
                    self.in_doubt += 1;
                }
                return None;
            }
        };
        if reply.status == 202 {
            self.ledger
                .entry(product)
                .or_default()
                .add(action, quantity);
            self.acknowledged += 1;
            let id = reply.body["event_id"].as_str().expect("event_id");
            self.acknowledged_ids.insert(id.parse().unwrap());
        }
        Some(reply)
    }

    /// Settles the writes in doubt from the users database: every acknowledged write must be
    /// there (nothing lost), and at most the in-doubt ones besides; those that committed join
    /// the ledger (they will be counted, once).
    async fn reconcile(&mut self) {
        use diesel::prelude::*;
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        use recsys_schema::tables::user_activity::dsl as ua;
        let mut conn = AsyncPgConnection::establish(&self.app.database_url)
            .await
            .unwrap();
        let rows: Vec<(uuid::Uuid, uuid::Uuid, String, i32)> = ua::user_activity
            .filter(ua::user_id.eq_any(self.users.iter().map(|u| u.0).collect::<Vec<_>>()))
            .select((ua::id, ua::product_id, ua::action, ua::quantity))
            .load(&mut conn)
            .await
            .unwrap();
        let committed: HashSet<uuid::Uuid> = rows.iter().map(|r| r.0).collect();
        let lost: Vec<_> = self.acknowledged_ids.difference(&committed).collect();
        assert!(lost.is_empty(), "acknowledged but not committed: {lost:?}");
        let extra: Vec<_> = rows
            .iter()
            .filter(|r| !self.acknowledged_ids.contains(&r.0))
            .collect();
        assert!(
            extra.len() <= self.in_doubt,
            "{} committed writes were never sent ({} in doubt)",
            extra.len(),
            self.in_doubt
        );
        for (id, product, action, quantity) in extra {
            self.ledger
                .entry(product.to_string())
                .or_default()
                .add(action, i64::from(*quantity));
            self.acknowledged += 1;
            self.acknowledged_ids.insert(*id);
        }
        self.in_doubt = 0;
    }

    /// Once the outbox is empty and both consumers caught up, every product's analytics
    /// counters and recommendation score equal the ledger, and the user's counters sum to the
    /// acknowledged writes.
    async fn assert_exact(&mut self) {
        self.reconcile().await;
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
        let mut counted = 0;
        for (user, _) in &self.users {
            let stats = app
                .get(
                    Service::Analytics,
                    &format!("/analytics/users/{user}"),
                    Some(&app.admin_token),
                )
                .await;
            counted += ["views", "cart_adds", "cart_removes", "purchases"]
                .iter()
                .map(|k| stats.body[k].as_i64().unwrap_or(0))
                .sum::<i64>();
        }
        assert_eq!(counted, self.acknowledged, "the users' counters");
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
    settings.ranking_half_life = "3650d".into();
}

/// Postgres unreachable for 20 s in the middle of a workload: writes answer 503 with the JSON
/// error within the request bound (never hang), `/readyz` fails naming postgres, the consumers
/// hold their positions; after recovery, with no actor restarted, every acknowledged write is
/// counted exactly once by analytics and in the recommendation scores.
#[actix_web::test]
async fn postgres_outage_loses_nothing_and_counts_nothing_twice() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied_port = proxy.port;
    let app = TestApp::builder()
        .with(|settings| {
            let direct = settings.postgres.database_url.as_ref().unwrap().expose();
            let proxied = direct.replace(":5432/", &format!(":{proxied_port}/"));
            assert_ne!(direct, proxied);
            settings.postgres.database_url = Some(Secret::new(proxied));
            settings.postgres.db_timeout_ms = 1000;
            exact_scores(settings);
        })
        .spawn()
        .await;
    let mut load = Workload::new(&app).await;

    // Before: every write acknowledged.
    load.write_acknowledged(24).await;

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
    let app = TestApp::builder().with(exact_scores).spawn().await;
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
        load.write_acknowledged(6).await;
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

/// One broker of a three-node cluster killed (SIGKILL) during the load, and started again once
/// the consumers applied what was written while it was down. The topics have three replicas and
/// `min.insync.replicas=2`: writes keep answering 202, records keep being published and
/// applied by both groups with the node down, and after its return nothing is lost or counted
/// twice.
#[actix_web::test]
async fn one_broker_of_three_killed_and_restarted_loses_nothing() {
    let mut cluster = KafkaCluster::start(3).await;
    let app = TestApp::builder()
        .brokers(cluster.bootstrap())
        .with(|settings| {
            exact_scores(settings);
            settings.kafka_replication_factor = 3;
            settings.kafka_min_insync_replicas = 2;
        })
        .spawn()
        .await;
    // Six users: their activities land on every partition, whichever the dead node led.
    let mut load = Workload::with_users(&app, 6).await;
    load.write_acknowledged(24).await;

    cluster.kill(0).await;
    let down_at = Instant::now();
    let mut down_writes = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while down_at.elapsed() < Duration::from_secs(10) {
        pace.tick().await;
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "writes keep succeeding: {}", reply.text);
        down_writes += 1;
    }
    // Still down: every write so far is published and applied by both groups.
    load.assert_exact().await;
    let applied_while_down = down_at.elapsed();

    cluster.restart(0).await;
    load.write_acknowledged(24).await;
    load.assert_exact().await;
    eprintln!(
        "one broker of three killed: {} acknowledged actions ({down_writes} while it was down, \
         all applied {applied_while_down:?} after the kill with the node still down), all \
         counted once",
        load.acknowledged
    );
}

/// The `recsys` binary in a child process hosting `services`, configured by environment
/// variables from `settings`, logging to `log` (appended), on `ports` when given (a restart
/// takes back the ports it had) and otherwise on the ports it picks and reports; answers the
/// child and its ports once each hosted service is ready.
async fn start_process(
    settings: &recsys::config::Settings,
    services: &[Service],
    ports: Option<&BTreeMap<Service, u16>>,
    log: &std::path::Path,
) -> (tokio::process::Child, BTreeMap<Service, u16>) {
    let from = std::fs::metadata(log).map_or(0, |m| m.len());
    let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string()).unwrap();
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_recsys"));
    command.env_clear();
    for service in services {
        let port = ports.map_or(0, |ports| ports[service]);
        let var = format!("{}_PORT", service.name().to_uppercase());
        command.env(var, port.to_string());
    }
    if let Some(instance) = &settings.kafka_group_instance_id {
        command.env("KAFKA_GROUP_INSTANCE_ID", instance);
    }
    let child = command
        .args(["serve", "--services", &names.join(",")])
        .env("DATABASE_URL", secret(&settings.postgres.database_url))
        .env("KAFKA_ADDRESS", &settings.kafka_address)
        .env("KAFKA_TOPIC_PREFIX", &settings.kafka_topic_prefix)
        .env("KAFKA_PARTITIONS", settings.kafka_partitions.to_string())
        .env(
            "KAFKA_REPLICATION_FACTOR",
            settings.kafka_replication_factor.to_string(),
        )
        .env(
            "KAFKA_MIN_INSYNC_REPLICAS",
            settings.kafka_min_insync_replicas.to_string(),
        )
        .env("REDIS_ADDRESS", &settings.redis_address)
        .env("REDIS_KEY_PREFIX", &settings.redis_key_prefix)
        .env("JWT_SECRET", secret(&settings.jwt_secret))
        .env("ADMIN_EMAIL", settings.admin_email.as_deref().unwrap())
        .env("ADMIN_PASSWORD", secret(&settings.admin_password))
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("RANKING_HALF_LIFE", "3650d")
        .env(
            "KAFKA_SESSION_TIMEOUT_MS",
            settings.kafka_session_timeout_ms.to_string(),
        )
        .env(
            "KAFKA_FETCH_WAIT_MS",
            settings.kafka_fetch_wait_ms.to_string(),
        )
        .env("LOG_FORMAT", "json")
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .expect("the recsys binary starts");
    let ports = match ports {
        Some(ports) => ports.clone(),
        None => reported_ports(log, from, services).await,
    };
    let client = reqwest::Client::new();
    for &service in services {
        let url = format!("http://127.0.0.1:{}/readyz", ports[&service]);
        eventually(Duration::from_secs(60), "the runtime to be ready", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let reply = client.get(url).send().await.ok()?;
                reply.status().is_success().then_some(())
            }
        })
        .await;
    }
    (child, ports)
}

/// The runtime killed with SIGKILL in the middle of the load and started again under the same
/// group instance name (static membership): it takes its partitions back, the outbox rows it
/// had not deleted are published again (duplicates the consumers recognise), and every
/// committed write — the acknowledged ones and whichever in-flight one committed — is counted
/// exactly once.
#[actix_web::test]
async fn a_runtime_killed_mid_load_and_restarted_counts_exactly() {
    let (database_url, prefix) = fresh_database().await;
    let mut settings = test_settings(&database_url, &prefix, &brokers());
    exact_scores(&mut settings);
    settings.kafka_group_instance_id = Some(format!("fault-{}", uuid::Uuid::new_v4().simple()));
    let log = std::env::temp_dir().join(format!("recsys-killed-{}.log", uuid::Uuid::new_v4()));
    let (mut child, ports) = start_process(&settings, &Service::ALL, None, &log).await;
    let app = TestApp::attach(None, ports.clone(), settings.clone(), database_url, prefix).await;
    let mut load = Workload::new(&app).await;
    load.write_acknowledged(24).await;

    // SIGKILL from another task while this one keeps writing.
    let pid = child.id().expect("running");
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
    });
    let mut during = 0;
    while load.try_write().await.is_some() {
        during += 1;
        assert!(during < 100_000, "the runtime (pid {pid}) was not killed");
    }
    killer.await.unwrap();
    let in_doubt = load.in_doubt;

    let restarted_at = Instant::now();
    let _child = start_process(&settings, &Service::ALL, Some(&ports), &log).await;
    let restart = restarted_at.elapsed();
    load.write_acknowledged(24).await;
    let settle = Instant::now();
    load.assert_exact().await;
    eprintln!(
        "killed runtime: {} committed actions ({during} written in the 0.7 s before SIGKILL, \
         {in_doubt} in doubt), restart to ready {restart:?}, settled {:?} after the last \
         write, all counted once",
        load.acknowledged,
        settle.elapsed()
    );
    let _ = std::fs::remove_file(&log);
}

/// Sends `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The only broker paused (SIGSTOP) for 20 s, longer than the consumers' 6 s session timeout,
/// during the load: writes keep answering 202 while the outbox grows; after SIGCONT the
/// consumers' sessions have expired, both groups rejoin (new members that own every partition),
/// the outbox drains and every acknowledged write counts once.
#[actix_web::test]
async fn a_broker_paused_longer_than_the_session_timeout_loses_nothing() {
    let cluster = KafkaCluster::start(1).await;
    let brokers = cluster.bootstrap();
    let app = TestApp::builder()
        .brokers(&brokers)
        .with(|settings| {
            exact_scores(settings);
            settings.kafka_session_timeout_ms = 6_000;
        })
        .spawn()
        .await;
    let mut load = Workload::with_users(&app, 6).await;
    load.write_acknowledged(24).await;
    eventually(Duration::from_secs(30), "the outbox to drain", || async {
        (app.outbox_rows().await == 0).then_some(())
    })
    .await;
    let partitions = app.partitions();
    let mut members_before = Vec::new();
    for group in app.groups() {
        let described = eventually(Duration::from_secs(30), "the group to settle", || async {
            describe_group(&brokers, &group)
                .await
                .filter(|g| g.covers(1, &partitions))
        })
        .await;
        members_before.push(described.members[0].id.clone());
    }

    signal(cluster.pid(0), "STOP");
    let paused_at = Instant::now();
    let mut paused_writes = 0;
    let mut slowest = Duration::ZERO;
    // At most 100 writes a second, so the backlog (and the time to drain it) does not depend
    // on how fast this machine is.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while paused_at.elapsed() < OUTAGE {
        pace.tick().await;
        let started = Instant::now();
        let reply = load.write().await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.status, 202, "writes keep succeeding: {}", reply.text);
        paused_writes += 1;
    }
    let pending = app.outbox_rows().await;
    assert!(
        pending >= paused_writes,
        "the outbox holds {pending} rows after {paused_writes} writes with the broker paused"
    );
    signal(cluster.pid(0), "CONT");
    let resumed_at = Instant::now();
    for (group, before) in app.groups().iter().zip(&members_before) {
        eventually(
            Duration::from_secs(60),
            "the group to rejoin with a new member owning every partition",
            || async {
                describe_group(&brokers, group)
                    .await
                    .filter(|g| g.covers(1, &partitions) && g.members[0].id != *before)
            },
        )
        .await;
    }
    let rejoined = resumed_at.elapsed();
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        (app.outbox_rows().await == 0).then_some(())
    })
    .await;
    let drained = resumed_at.elapsed();
    load.write_acknowledged(24).await;
    load.assert_exact().await;
    eprintln!(
        "paused broker: {} acknowledged actions ({paused_writes} during the pause, slowest \
         {slowest:?}; outbox peaked at >= {pending}); after SIGCONT both groups rejoined in \
         {rejoined:?} and the outbox drained in {drained:?}; all counted once",
        load.acknowledged
    );
}

/// Redis unreachable for 20 s during the load: every recommendation read (global, for the
/// user, similar products) keeps answering 200 from Postgres, never 5xx; writes keep being
/// acknowledged; once Redis is back answers are cached again and every write counts once.
#[actix_web::test]
async fn redis_unreachable_for_20_s_reads_keep_answering_from_postgres() {
    let (mut redis, port) = crate::consumer::start_redis_on_free_port().await;
    let app = TestApp::builder()
        .with(|settings| {
            settings.redis_address = format!("127.0.0.1:{port}");
            // X-Cache here says whether Redis answered: no worker micro-cache in front.
            settings.recommendation_local_ttl_ms = 0;
            exact_scores(settings);
        })
        .spawn()
        .await;
    let mut load = Workload::new(&app).await;
    load.write_acknowledged(24).await;
    eventually(Duration::from_secs(30), "a cache hit", || async {
        (crate::consumer::x_cache(&app).await == "hit").then_some(())
    })
    .await;
    // The recommendations service knows the products before Redis goes (else `similar` is a
    // correct 404).
    let similar = format!("/recommendations/products/{}/similar", load.products[0]);
    eventually(
        Duration::from_secs(30),
        "the catalog to have the products",
        || async {
            let reply = app.get(Service::Recommendations, &similar, None).await;
            (reply.status == 200).then_some(())
        },
    )
    .await;

    redis.kill().await.unwrap();
    let reads = [
        ("/recommendations".to_string(), None),
        (
            format!("/recommendations/users/{}", load.users[0].0),
            Some(load.users[0].1.clone()),
        ),
        (
            format!("/recommendations/products/{}/similar", load.products[0]),
            None,
        ),
    ];
    let down_at = Instant::now();
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    while down_at.elapsed() < OUTAGE {
        let reply = load.write().await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        for (path, token) in &reads {
            let started = Instant::now();
            let reply = app
                .get(Service::Recommendations, path, token.as_deref())
                .await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(reply.status, 200, "{path} without Redis: {}", reply.text);
            assert!(reply.body.is_array(), "{path}: {}", reply.text);
            answered += 1;
        }
    }

    let _redis = crate::consumer::start_redis(port);
    eventually(
        Duration::from_secs(30),
        "hits after Redis is back",
        || async { (crate::consumer::x_cache(&app).await == "hit").then_some(()) },
    )
    .await;
    load.assert_exact().await;
    eprintln!(
        "redis outage: {answered} recommendation reads answered 200 without Redis (slowest \
         {slowest:?}), {} acknowledged actions counted once",
        load.acknowledged
    );
}

/// The samples on `/metrics` of the runtime listening on `port` (none while it does not answer).
async fn metrics_of(port: u16) -> Vec<Sample> {
    let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    parse_samples(&text)
}

/// Per consuming service, `[recommendations, analytics]`: the sum of the samples of `name` whose
/// labels include `labels`.
fn per_consumer(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> [f64; 2] {
    ["recommendations", "analytics"].map(|service| {
        samples
            .iter()
            .filter(|s| s.name == name && s.label("service") == Some(service))
            .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    })
}

/// Partitions the runtime listening on `port` holds, per consuming service.
async fn assigned_partitions(port: u16) -> [f64; 2] {
    per_consumer(
        &metrics_of(port).await,
        "kafka_consumer_assigned_partitions",
        &[],
    )
}

/// User activities the runtime listening on `port` applied since it started, per consuming
/// service.
async fn applied(port: u16) -> [f64; 2] {
    per_consumer(
        &metrics_of(port).await,
        "kafka_messages_consumed_total",
        &[("type", "user.activity"), ("status", "ok")],
    )
}

/// Records behind the log end in `groups`, summed over every partition, as the runtime listening
/// on `port` last measured them (`kafka_consumer_lag`).
async fn lag(port: u16, groups: &[String]) -> f64 {
    metrics_of(port)
        .await
        .iter()
        .filter(|s| s.name == "kafka_consumer_lag")
        .filter(|s| {
            s.label("group")
                .is_some_and(|g| groups.iter().any(|x| x == g))
        })
        .map(|s| s.value)
        .sum()
}

/// Both consumer groups of a test runtime, as the broker describes them.
#[derive(Clone)]
struct Groups {
    brokers: String,
    names: [String; 2],
    partitions: Vec<(String, i32)>,
}

impl Groups {
    fn of(app: &TestApp) -> Self {
        Self {
            brokers: app.settings.kafka_address.clone(),
            names: app.groups(),
            partitions: app.partitions(),
        }
    }

    /// Waits until both groups are stable with `members` members that own every partition
    /// between them; answers how long that took.
    async fn settle(&self, members: usize, deadline: Duration) -> Duration {
        let started = Instant::now();
        for group in &self.names {
            eventually(
                deadline,
                &format!("{group} to be stable with {members} members owning every partition"),
                || async {
                    describe_group(&self.brokers, group)
                        .await
                        .filter(|g| g.covers(members, &self.partitions))
                        .map(|_| ())
                },
            )
            .await;
        }
        started.elapsed()
    }
}

/// Two runtimes hosting recommendations and analytics share both consumer groups (a third hosts
/// users and products), and each holds partitions in both; one is killed with SIGKILL in the
/// middle of the load. The broker expires the dead member's session and the survivor owns every
/// partition of both groups within the session timeout plus one rebalance; every write counts
/// once.
#[actix_web::test]
async fn a_second_runtime_takes_over_from_a_killed_one_as_survivor() {
    use Service::{Analytics, Products, Recommendations, Users};
    const SESSION: Duration = Duration::from_secs(6);
    let (database_url, prefix) = fresh_database().await;
    let mut settings = test_settings(&database_url, &prefix, &brokers());
    exact_scores(&mut settings);
    // Dynamic membership: the dead member must be expired, not replaced.
    settings.kafka_group_instance_id = None;
    settings.kafka_session_timeout_ms = SESSION.as_millis() as u64;
    let dir = std::env::temp_dir().join(format!("recsys-survivor-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_front, front) =
        start_process(&settings, &[Users, Products], None, &dir.join("front.log")).await;
    let back = [Recommendations, Analytics];
    let (mut a, ports_a) = start_process(&settings, &back, None, &dir.join("a.log")).await;
    let (_b, ports_b) = start_process(&settings, &back, None, &dir.join("b.log")).await;
    let mut ports = front.clone();
    ports.extend(ports_b.clone());
    let app = TestApp::attach(None, ports, settings.clone(), database_url, prefix).await;
    // Twelve users: their activities land on every partition.
    let mut load = Workload::with_users(&app, 12).await;
    load.write_acknowledged(48).await;

    // Both groups are shared: each runtime holds partitions in both.
    let groups = Groups::of(&app);
    groups.settle(2, Duration::from_secs(60)).await;
    let (metrics_a, metrics_b) = (ports_a[&Recommendations], ports_b[&Recommendations]);
    for (name, port) in [("a", metrics_a), ("b", metrics_b)] {
        let held = assigned_partitions(port).await;
        assert!(
            held.iter().all(|&n| n > 0.0),
            "runtime {name} holds partitions in both groups: {held:?}"
        );
    }
    let total = app.partitions().len() as f64;

    // SIGKILL from another task while this one keeps writing.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.start_kill().expect("SIGKILL");
        a.wait().await.unwrap();
        Instant::now()
    });
    while !killer.is_finished() {
        load.write_acknowledged(1).await;
    }
    let killed_at = killer.await.unwrap();
    let mut during = 0;
    let takeover = loop {
        // The load goes on while the survivor takes over.
        load.write_acknowledged(1).await;
        during += 1;
        if assigned_partitions(metrics_b).await == [total; 2] {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < SESSION + Duration::from_secs(30),
            "the survivor holds {:?} of {total} partitions {:?} after the kill",
            assigned_partitions(metrics_b).await,
            killed_at.elapsed()
        );
    };
    // The broker agrees: one member per group, owning every partition.
    groups.settle(1, Duration::from_secs(30)).await;
    load.write_acknowledged(48).await;
    load.assert_exact().await;
    eprintln!(
        "survivor: each runtime held partitions in both groups; after SIGKILL of one the other \
         owned all {total} partitions of both groups in {takeover:?} (session timeout \
         {SESSION:?}; {during} writes meanwhile); {} acknowledged actions counted once, settled \
         {:?} after the kill",
        load.acknowledged,
        killed_at.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three runtimes host recommendations and analytics (a fourth users and products). Under a
/// steady write load each is stopped with SIGTERM and started again, in turn: while it is down
/// the other two own every partition of both groups, and once it is back all three do; at the
/// end every write counts once and both groups' lag is back to 0.
#[actix_web::test]
async fn a_rolling_restart_under_load_counts_exactly_and_leaves_no_partition_unowned() {
    use Service::{Analytics, Products, Recommendations, Users};
    let (database_url, prefix) = fresh_database().await;
    let mut settings = test_settings(&database_url, &prefix, &brokers());
    exact_scores(&mut settings);
    settings.kafka_group_instance_id = None;
    settings.kafka_session_timeout_ms = 6_000;
    let dir = std::env::temp_dir().join(format!("recsys-rolling-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_front, front) =
        start_process(&settings, &[Users, Products], None, &dir.join("front.log")).await;
    let mut children = Vec::new();
    let mut backs = Vec::new();
    for i in 0..3 {
        let log = dir.join(format!("back-{i}.log"));
        let (child, ports) =
            start_process(&settings, &[Recommendations, Analytics], None, &log).await;
        children.push(Some(child));
        backs.push(ports);
    }
    let mut ports = front.clone();
    ports.extend(backs[0].clone());
    let app = TestApp::attach(None, ports, settings.clone(), database_url, prefix).await;
    let mut load = Workload::with_users(&app, 12).await;
    load.write_acknowledged(24).await;
    let groups = Groups::of(&app);
    groups.settle(3, Duration::from_secs(60)).await;

    // The restarts run in a task of their own; this one keeps writing, 50 a second, meanwhile.
    let restarts = {
        let (groups, settings, backs, dir) =
            (groups.clone(), settings.clone(), backs.clone(), dir.clone());
        tokio::spawn(async move {
            let mut steps = Vec::new();
            for (i, ports) in backs.iter().enumerate() {
                let mut child = children[i].take().expect("running");
                let stopping = Instant::now();
                signal(child.id().expect("running"), "TERM");
                let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
                    .await
                    .expect("the runtime exits after SIGTERM")
                    .unwrap();
                assert!(status.success(), "runtime {i} exited with {status}");
                let stopped = stopping.elapsed();
                let to_two = groups.settle(2, Duration::from_secs(60)).await;
                let starting = Instant::now();
                let log = dir.join(format!("back-{i}.log"));
                let (restarted, _) =
                    start_process(&settings, &[Recommendations, Analytics], Some(ports), &log)
                        .await;
                children[i] = Some(restarted);
                let ready = starting.elapsed();
                let to_three = groups.settle(3, Duration::from_secs(60)).await;
                // The restarted runtime applies its share of the load in both groups.
                let port = ports[&Recommendations];
                eventually(
                    Duration::from_secs(30),
                    "the restarted runtime to apply activity in both groups",
                    || async { (applied(port).await.iter().all(|&n| n > 0.0)).then_some(()) },
                )
                .await;
                steps.push(format!(
                    "runtime {i}: exited {stopped:.1?} after SIGTERM, two owned everything \
                     {to_two:.1?} later; restarted ready in {ready:.1?}, three owned everything \
                     {to_three:.1?} later"
                ));
            }
            (steps, children)
        })
    };
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut during = 0;
    while !restarts.is_finished() {
        pace.tick().await;
        load.write_acknowledged(1).await;
        during += 1;
    }
    let (steps, _children) = restarts.await.unwrap();
    load.write_acknowledged(24).await;
    load.assert_exact().await;
    for ports in &backs {
        let port = ports[&Recommendations];
        eventually(Duration::from_secs(30), "the lag to be 0", || async {
            (lag(port, &groups.names).await == 0.0).then_some(())
        })
        .await;
    }
    eprintln!(
        "rolling restart: {} acknowledged actions ({during} during the restarts) counted once, \
         lag back to 0 on every runtime; {}",
        load.acknowledged,
        steps.join("; ")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
