//! The soak: a steady mixed load on the local stack for `minutes` minutes while one fault a
//! minute is injected, in turn: the runtime killed (SIGKILL) and started again, a broker
//! killed and restarted, Redis restarted, Postgres restarted. Written to `bench/soak.json`:
//! per minute, requests and answers by status, p99, the runtime's RSS and open files, the most
//! consumer lag; per fault, when it began and how long until a write and a read succeeded
//! again; at the end, the exact accounting of every accepted action.
//!
//! Every write carries an `Idempotency-Key`: a write whose answer was lost (a 5xx, a refused
//! connection, a timeout) is sent again with its key until it gets a definite answer, so each
//! action is either accepted once or refused, and the accounting can be exact.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::runtime::{metric_sum, psql_value, Config, Paths, Runtime};

/// What the soak is asked to do.
pub struct Soak {
    pub minutes: u64,
    /// Requests per second the load aims at.
    pub rate: u32,
    /// `scripts/stack.sh`, which starts what a fault stopped.
    pub stack: std::path::PathBuf,
    /// Where the stack keeps the Kafka nodes' pid files.
    pub kafka_dir: std::path::PathBuf,
}

/// The four faults, in the order they come round.
const FAULTS: [&str; 4] = [
    "runtime killed",
    "broker killed",
    "redis restarted",
    "postgres restarted",
];

/// Products and users the load works with.
const PRODUCTS: usize = 20;
const USERS: usize = 40;

/// One minute of the run.
#[derive(Debug, Default, Clone, Serialize)]
struct Minute {
    minute: u64,
    requests: u64,
    /// Answers by status (`200`, `202`, `503`, ... and `error` for no answer).
    statuses: BTreeMap<String, u64>,
    p99_ms: f64,
    /// Highest resident set size of the runtime sampled in the minute, MiB.
    rss_mib: f64,
    open_fds: u64,
    /// The most records any consumer was behind, sampled every 5 s.
    max_lag: f64,
    /// The runtime process this minute ended with (it changes when one is killed).
    runtime_pid: u32,
    #[serde(skip)]
    histogram: Option<Histogram<u64>>,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
struct Fault {
    kind: &'static str,
    /// Seconds from the start of the run.
    at_s: f64,
    /// Seconds from the fault's healing (the process, node or server started again) until a
    /// write and a read both succeeded.
    recovery_s: f64,
    /// How long the fault lasted: from taking hold (the process gone, the server down) to the
    /// restart's return (the runtime ready; for a broker, `scripts/stack.sh up`, which waits
    /// for the node to rejoin).
    outage_s: f64,
}

/// An action the service accepted.
#[derive(Debug, Clone)]
struct Accepted {
    product: usize,
    action: &'static str,
    quantity: u32,
}

/// What every task of the load shares.
struct Shared {
    client: reqwest::Client,
    /// `users`, `products`, `recommendations`, `analytics` base URLs of the current runtime.
    urls: RwLock<BTreeMap<&'static str, String>>,
    started: Instant,
    minutes: Mutex<Vec<Minute>>,
    /// 5xx answers and failed requests: seconds from the start.
    failures: Mutex<Vec<f64>>,
    accepted: Mutex<BTreeMap<String, Accepted>>,
    products: Vec<String>,
    users: Vec<(String, String)>,
    admin: String,
    /// When writes and reads got a 2xx (seconds from the start).
    write_ok: Mutex<Vec<f64>>,
    read_ok: Mutex<Vec<f64>>,
    next_key: AtomicU64,
}

impl Shared {
    fn url(&self, service: &str) -> String {
        self.urls.read().unwrap()[service].clone()
    }

    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    /// Records one answer (`None`: no answer) and its latency.
    fn record(&self, status: Option<u16>, took: Duration) {
        let minute = self.minute();
        let mut minutes = self.minutes.lock().unwrap();
        let last = minutes.len() as u64 - 1;
        let m = &mut minutes[minute.min(last) as usize];
        m.requests += 1;
        let label = status.map_or("error".to_string(), |s| s.to_string());
        *m.statuses.entry(label).or_default() += 1;
        if let Some(h) = m.histogram.as_mut() {
            let _ = h.record(took.as_micros() as u64);
        }
        if status.is_none_or(|s| s >= 500) {
            self.failures.lock().unwrap().push(self.now_s());
        }
    }
}

/// A small xorshift generator: the load needs variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Sends one request; answers the status and body (`None` when no answer came).
async fn send(shared: &Shared, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let started = Instant::now();
    // Longer than the runtime's own bounds (DB_TIMEOUT_MS, REQUEST_TIMEOUT_MS: 5 s), so that
    // what it answers in an outage (503) is seen, not a client-side timeout.
    let answer = request.timeout(Duration::from_secs(10)).send().await;
    let answer = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            Some((status, body))
        }
        Err(_) => None,
    };
    shared.record(answer.as_ref().map(|a| a.0), started.elapsed());
    answer
}

/// A write sent with its key until it gets a definite answer (2xx or 4xx other than 409).
async fn write_until_definite(
    shared: &Shared,
    build: impl Fn(&Shared) -> reqwest::RequestBuilder,
) -> Option<(u16, Value)> {
    let key = format!("soak-{}", shared.next_key.fetch_add(1, Ordering::Relaxed));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let answer = send(shared, build(shared).header("Idempotency-Key", &key)).await;
        match &answer {
            Some((status, _)) if *status < 500 && *status != 409 => return answer,
            _ if Instant::now() > deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// One operation of the mix: 55 % reads, 35 % actions, 5 % registrations, 5 % product updates.
async fn operate(shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed | 1);
    let roll = rng.below(100);
    let ok = |s: &Shared, which: &Mutex<Vec<f64>>| which.lock().unwrap().push(s.now_s());
    if roll < 55 {
        let path = match rng.below(3) {
            0 => format!("/recommendations?category=c{}", rng.below(5)),
            1 => {
                let (id, _) = &shared.users[rng.below(USERS)];
                format!("/recommendations/users/{id}")
            }
            _ => "/recommendations?sort=trending".to_string(),
        };
        let url = format!("{}{path}", shared.url("recommendations"));
        let request = shared.client.get(url).bearer_auth(&shared.admin);
        if let Some((200, _)) = send(&shared, request).await {
            ok(&shared, &shared.read_ok);
        }
    } else if roll < 90 {
        let (user, token) = shared.users[rng.below(USERS)].clone();
        let product = rng.below(PRODUCTS);
        let (action, quantity) = match rng.below(10) {
            0..=4 => ("view", 1),
            5..=6 => ("cart_add", 1 + rng.below(3) as u32),
            7 => ("cart_remove", 1),
            _ => ("purchase", 1 + rng.below(2) as u32),
        };
        let body =
            json!({"type": action, "product_id": shared.products[product], "quantity": quantity});
        let answer = write_until_definite(&shared, |s| {
            s.client
                .post(format!("{}/users/{user}/activity", s.url("users")))
                .bearer_auth(&token)
                .json(&body)
        })
        .await;
        if let Some((202, body)) = answer {
            ok(&shared, &shared.write_ok);
            if let Some(id) = body["event_id"].as_str() {
                shared.accepted.lock().unwrap().insert(
                    id.to_string(),
                    Accepted {
                        product,
                        action,
                        quantity,
                    },
                );
            }
        }
    } else if roll < 95 {
        let email = format!(
            "soak-{}-{}@example.com",
            rng.next() % 1_000_000_000,
            shared.now_s() as u64
        );
        let body = json!({"name": "Soak", "email": email, "password": "soak-password"});
        let _ = write_until_definite(&shared, |s| {
            s.client
                .post(format!("{}/users/register", s.url("users")))
                .json(&body)
        })
        .await;
    } else {
        let product = &shared.products[rng.below(PRODUCTS)];
        let price = format!("{}.{:02}", 1 + rng.below(90), rng.below(100));
        let url = format!("{}/products/{product}", shared.url("products"));
        let request = shared
            .client
            .patch(url)
            .bearer_auth(&shared.admin)
            .json(&json!({"price": price}));
        let _ = send(&shared, request).await;
    }
}

/// Open file descriptors of `pid`.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Runs `scripts/stack.sh up`, which starts whatever is not running.
async fn stack_up(stack: &std::path::Path) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .arg(stack)
        .arg("up")
        .output()
        .await
        .context("scripts/stack.sh up")?;
    anyhow::ensure!(
        out.status.success(),
        "stack.sh up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn shell(command: &str) -> anyhow::Result<()> {
    let out = Command::new("bash").args(["-c", command]).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs the soak; answers the report.
pub async fn run(soak: &Soak, paths: &Paths, config: &Config) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let services = ["users", "products", "recommendations", "analytics"];
    let mut runtime = Runtime::start(paths, config, &services, "soak-runtime-0.log").await?;
    let urls: BTreeMap<&'static str, String> =
        services.iter().map(|&s| (s, runtime.url(s))).collect();

    // The catalog, the users and the admin token.
    let admin: Value = client
        .post(format!("{}/users/login", urls["users"]))
        .json(&json!({"email": config.admin_email, "password": config.admin_password}))
        .send()
        .await?
        .json()
        .await?;
    let admin = admin["token"].as_str().context("admin token")?.to_string();
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let body: Value = client
            .post(format!("{}/products", urls["products"]))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("Soak {i}"), "price": "9.99", "category": format!("c{}", i % 5)}))
            .send()
            .await?
            .json()
            .await?;
        products.push(body["id"].as_str().context("product id")?.to_string());
    }
    let mut users = Vec::new();
    for i in 0..USERS {
        let body: Value = client
            .post(format!("{}/users/register", urls["users"]))
            .json(&json!({"name": "Soak", "email": format!("soak-user-{i}-{}@example.com", config.topic_prefix.trim_end_matches('.')), "password": "soak-password"}))
            .send()
            .await?
            .json()
            .await?;
        users.push((
            body["id"].as_str().context("user id")?.to_string(),
            body["token"].as_str().context("user token")?.to_string(),
        ));
    }

    let shared = Arc::new(Shared {
        client: client.clone(),
        urls: RwLock::new(urls),
        started: Instant::now(),
        minutes: Mutex::new(
            (0..soak.minutes)
                .map(|m| Minute {
                    minute: m + 1,
                    histogram: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
                    ..Minute::default()
                })
                .collect(),
        ),
        failures: Mutex::new(Vec::new()),
        accepted: Mutex::new(BTreeMap::new()),
        products,
        users,
        admin,
        write_ok: Mutex::new(Vec::new()),
        read_ok: Mutex::new(Vec::new()),
        next_key: AtomicU64::new(0),
    });

    // The load: `rate` operations a second, at most 256 at once.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let rate = soak.rate.max(1);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(256));
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut tasks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue;
                };
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    operate(shared, seed).await;
                    drop(permit);
                }));
                tasks.retain(|t| !t.is_finished());
            }
            futures_util::future::join_all(tasks).await;
        })
    };

    let mut faults: Vec<Fault> = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let end = Duration::from_secs(soak.minutes * 60);
    let mut fault_index = 0usize;
    let mut incarnation = 1;
    while shared.started.elapsed() < end {
        let elapsed = shared.started.elapsed();
        let minute = elapsed.as_secs() / 60;
        // One fault a minute, 20 s into minutes 1, 2, ... (not in the first or the last).
        if minute >= 1
            && minute < soak.minutes - 1
            && elapsed.as_secs() % 60 >= 20
            && faults.len() < minute as usize
        {
            let kind = FAULTS[fault_index % FAULTS.len()];
            fault_index += 1;
            let at = shared.now_s();
            eprintln!("soak: {kind} at {at:.0} s");
            // `effect`: when the fault has taken hold (the process is gone, the server down).
            let effect = match kind {
                "runtime killed" => {
                    shell(&format!("kill -9 {}", runtime.pid())).await?;
                    let effect = shared.now_s();
                    runtime = Runtime::start(
                        paths,
                        config,
                        &services,
                        &format!("soak-runtime-{incarnation}.log"),
                    )
                    .await?;
                    incarnation += 1;
                    *shared.urls.write().unwrap() =
                        services.iter().map(|&s| (s, runtime.url(s))).collect();
                    effect
                }
                "broker killed" => {
                    let pid_file = soak
                        .kafka_dir
                        .join(format!("node{}.pid", 1 + fault_index % 3));
                    shell(&format!("kill -9 $(cat {})", pid_file.display())).await?;
                    let effect = shared.now_s();
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    stack_up(&soak.stack).await?;
                    effect
                }
                "redis restarted" => {
                    shell("redis-cli -p 6379 shutdown nosave || true").await?;
                    let effect = shared.now_s();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    stack_up(&soak.stack).await?;
                    effect
                }
                _ => {
                    let cluster = "pg_ctlcluster --skip-systemctl-redirect \"$(ls /etc/postgresql | sort -V | tail -n1)\" main";
                    shell(&format!("{cluster} stop -m immediate")).await?;
                    let effect = shared.now_s();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    shell(&format!("{cluster} start")).await?;
                    effect
                }
            };
            let healed = shared.now_s();
            // Recovered once a write and a read succeeded after the fault was healed.
            let first_after = |which: &Mutex<Vec<f64>>| {
                which.lock().unwrap().iter().copied().find(|t| *t > healed)
            };
            let recovered = loop {
                if let (Some(w), Some(r)) =
                    (first_after(&shared.write_ok), first_after(&shared.read_ok))
                {
                    break w.max(r);
                }
                if shared.now_s() - healed > 120.0 {
                    break f64::NAN;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            faults.push(Fault {
                kind,
                at_s: at,
                recovery_s: recovered - healed,
                outage_s: healed - effect,
            });
        }
        if last_sample.elapsed() >= Duration::from_secs(5) {
            last_sample = Instant::now();
            let pid = runtime.pid();
            let rss = runtime.rss().unwrap_or(0) as f64 / 1048576.0;
            let fds = open_fds(pid);
            let mut lag = 0f64;
            for service in ["recommendations", "analytics"] {
                lag = lag.max(
                    metric_sum(&client, &runtime.url(service), "kafka_consumer_lag", &[]).await,
                );
            }
            let mut minutes = shared.minutes.lock().unwrap();
            let index = (minute as usize).min(minutes.len() - 1);
            let m = &mut minutes[index];
            m.rss_mib = m.rss_mib.max(rss);
            m.open_fds = m.open_fds.max(fds);
            m.max_lag = m.max_lag.max(lag);
            m.runtime_pid = pid;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await?;

    // The accounting, once the outbox is drained and the consumers have caught up.
    let accepted: Vec<Accepted> = shared.accepted.lock().unwrap().values().cloned().collect();
    let ids: Vec<String> = shared.accepted.lock().unwrap().keys().cloned().collect();
    let accounting = account(&shared, config, &accepted, &ids).await?;
    runtime.stop().await;

    let mut minutes = shared.minutes.lock().unwrap().clone();
    for m in &mut minutes {
        m.p99_ms = m
            .histogram
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
    }
    // A failure counts against the budget unless it falls in a fault's window: from the fault
    // to 5 s after its recovery.
    let failures = shared.failures.lock().unwrap().clone();
    let outside: Vec<f64> = failures
        .iter()
        .copied()
        .filter(|t| {
            !faults.iter().any(|f| {
                let lasted = f.outage_s
                    + if f.recovery_s.is_nan() {
                        120.0
                    } else {
                        f.recovery_s
                    };
                let until = f.at_s + lasted + 5.0;
                *t >= f.at_s && *t <= until
            })
        })
        .collect();
    // Memory: per runtime process, its RSS at the end of its last full minute against the end
    // of its first full minute.
    let mut growth: f64 = 0.0;
    let mut by_pid: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for m in &minutes {
        by_pid.entry(m.runtime_pid).or_default().push(m.rss_mib);
    }
    for series in by_pid.values().filter(|s| s.len() >= 3) {
        growth = growth.max(series[series.len() - 1] / series[1] - 1.0);
    }
    let max_lag = minutes.iter().map(|m| m.max_lag).fold(0.0, f64::max);
    let budget = json!({
        "failures_outside_fault_windows": outside.len(),
        "rss_growth_after_first_minute": growth,
        "exact_accounting": accounting["exact"],
        "met": outside.is_empty() && growth < 0.10 && accounting["exact"] == true,
    });
    Ok(json!({
        "minutes": soak.minutes,
        "rate_per_s": soak.rate,
        "per_minute": minutes,
        "faults": faults,
        "max_lag": max_lag,
        "failures_outside_fault_windows_at_s": outside,
        "accounting": accounting,
        "budget": budget,
    }))
}

/// Waits until every accepted action is counted, then compares: the accepted event ids with
/// `user_activity`, the analytics counters and the popularity scores with what was accepted.
async fn account(
    shared: &Shared,
    config: &Config,
    accepted: &[Accepted],
    ids: &[String],
) -> anyhow::Result<Value> {
    let db = &config.database_url;
    let soak_users: Vec<String> = shared
        .users
        .iter()
        .map(|(id, _)| format!("'{id}'"))
        .collect();
    let rows = psql_value(
        db,
        &format!(
            "SELECT count(*) FROM user_activity WHERE user_id IN ({})",
            soak_users.join(",")
        ),
    )
    .await?;
    let rows: i64 = rows.trim().parse().unwrap_or(-1);
    let listed = psql_value(
        db,
        &format!(
            "SELECT count(*) FROM user_activity WHERE id IN ({})",
            if ids.is_empty() {
                "NULL".to_string()
            } else {
                ids.iter()
                    .map(|i| format!("'{i}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        ),
    )
    .await?;
    let listed: i64 = listed.trim().parse().unwrap_or(-1);

    // Expected counters per product: views, cart_adds, cart_removes, purchases, units.
    let mut expected = vec![[0i64; 5]; PRODUCTS];
    for a in accepted {
        let e = &mut expected[a.product];
        match a.action {
            "view" => e[0] += 1,
            "cart_add" => e[1] += 1,
            "cart_remove" => e[2] += 1,
            _ => {
                e[3] += 1;
                e[4] += i64::from(a.quantity);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut mismatches = Vec::new();
    loop {
        mismatches.clear();
        for (i, product) in shared.products.iter().enumerate() {
            let body: Value = match shared
                .client
                .get(format!(
                    "{}/analytics/products/{product}",
                    shared.url("analytics")
                ))
                .bearer_auth(&shared.admin)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let got = [
                "views",
                "cart_adds",
                "cart_removes",
                "purchases",
                "units_sold",
            ]
            .map(|k| body[k].as_i64().unwrap_or(-1));
            if got != expected[i] {
                mismatches
                    .push(json!({"product": product, "expected": expected[i], "analytics": got}));
            }
        }
        if mismatches.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Scores: what the rows in Postgres say each product is worth now, against the ranking.
    let score_check = psql_value(
        db,
        "WITH w AS (SELECT product_id, sum(CASE action WHEN 'view' THEN 1 WHEN 'cart_add' THEN 3 \
           WHEN 'cart_remove' THEN -3 ELSE 10 END * quantity \
           * power(2, extract(epoch FROM occurred_at - now()) / 86400.0)) AS expected \
           FROM user_activity GROUP BY product_id), \
         s AS (SELECT r.product_id, r.acc * power(2, extract(epoch FROM st.t0 - now()) / 86400.0) AS score \
           FROM rec_scores r, rec_state st) \
         SELECT count(*) FILTER (WHERE abs(coalesce(s.score, 0) - w.expected) > 1e-6 * greatest(abs(w.expected), 1)) \
         FROM w LEFT JOIN s USING (product_id)",
    )
    .await?;
    let score_mismatches: i64 = score_check.trim().parse().unwrap_or(-1);
    let exact = rows == accepted.len() as i64
        && listed == accepted.len() as i64
        && mismatches.is_empty()
        && score_mismatches == 0;
    Ok(json!({
        "accepted_actions": accepted.len(),
        "user_activity_rows": rows,
        "accepted_ids_found": listed,
        "analytics_mismatches": mismatches,
        "score_mismatches": score_mismatches,
        "exact": exact,
    }))
}
