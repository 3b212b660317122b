//! Test harness: [`spawn_app`] (or [`TestApp::builder`]) starts a runtime on a fresh database and topic prefix and returns
//! a [`TestApp`] with typed request helpers; Kafka and polling helpers live here too.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::ClientConfig;
use recsys::config::{Service, Settings};
use recsys::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slog::{o, Discard, Drain, Logger};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Postgres server URL without a database (`TEST_DATABASE_URL`).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Broker bootstrap list for tests (`KAFKA_ADDRESS`, default the local stack's cluster).
pub fn brokers() -> String {
    std::env::var("KAFKA_ADDRESS")
        .unwrap_or_else(|_| "127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093".into())
}

/// A fresh database (migrated when a runtime starts on it); answers its URL and the topic
/// prefix that goes with it, `t<hex>.` for the database `recsys_test_<hex>`: once the database
/// is dropped, `scripts/stack.sh topics-clean` knows the topics are nobody's.
pub async fn fresh_database() -> (String, String) {
    let hex = Uuid::new_v4().simple().to_string();
    let name = format!("recsys_test_{hex}");
    let mut conn = AsyncPgConnection::establish(&format!("{}/postgres", server_url()))
        .await
        .expect("Postgres is reachable (scripts/stack.sh up)");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    (format!("{}/{name}", server_url()), format!("t{hex}."))
}

/// The newest installed Postgres's programs (`PG_BIN` to choose).
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres is installed: run scripts/stack.sh up")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        versions.last().expect("a Postgres version")
    ))
}

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    settings: Settings,
}

/// Settings for a test runtime: OS-picked ports on loopback, the given database and prefix.
/// Everything else is as deployed (the recommendation micro-cache included); a test that looks
/// at one layer of the cache turns the others off itself.
pub fn test_settings(database_url: &str, prefix: &str, brokers: &str) -> Settings {
    let admin_email = format!("admin-{}@example.com", Uuid::new_v4().simple());
    let redis_prefix = format!("t{}:", Uuid::new_v4().simple());
    TestCli::parse_from([
        "test",
        "--database-url",
        database_url,
        "--kafka-address",
        brokers,
        "--kafka-topic-prefix",
        prefix,
        "--kafka-partitions",
        "3",
        // One replica: these tests kill no broker (those that do set their own layout).
        "--kafka-replication-factor",
        "1",
        "--redis-key-prefix",
        &redis_prefix,
        "--jwt-secret",
        "test-secret-that-is-at-least-32-bytes-long",
        "--admin-email",
        &admin_email,
        "--admin-password",
        ADMIN_PASSWORD,
        "--bind-address",
        "127.0.0.1",
        "--users-port",
        "0",
        "--products-port",
        "0",
        "--recommendations-port",
        "0",
        "--analytics-port",
        "0",
        "--http-workers",
        "1",
        "--outbox-poll-ms",
        "100",
        "--db-pool-size",
        "5",
    ])
    .settings
}

/// Lockout settings for the tests that lock one email out: three failures of an email lock
/// it; the per-address limit (100) stays out of the way, since every test client comes from
/// 127.0.0.1.
pub fn email_lockout_after_three(settings: &mut Settings) {
    settings.login_max_failures = 3;
    settings.login_max_failures_per_ip = 100;
}

/// The admin password every test runtime uses.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A logger that drops everything, or prints with `TEST_LOG=1`.
pub fn test_logger() -> Logger {
    if std::env::var("TEST_LOG").is_ok() {
        recsys::telemetry::logger(recsys::config::LogFormat::Term, "debug")
    } else {
        Logger::root(Discard, o!())
    }
}

/// A running test runtime and a client for it.
pub struct TestApp {
    /// The runtime, when it runs in this process (see [`TestApp::runtime`]).
    pub app: Option<Application>,
    /// Where each service listens.
    pub ports: std::collections::BTreeMap<Service, u16>,
    pub settings: Settings,
    pub database_url: String,
    pub prefix: String,
    pub client: reqwest::Client,
    pub admin_token: String,
}

/// Starts all four services on a fresh database and topic prefix, against the shared broker:
/// `TestApp::builder().spawn()`.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// How a test runtime starts: all four services on a fresh database and topic prefix (see
/// [`test_settings`]), against the shared broker unless told otherwise.
pub struct TestAppBuilder<'a> {
    brokers: String,
    logger: Logger,
    adjust: Vec<Adjustment<'a>>,
}

/// A change to the settings of a test runtime before it starts.
type Adjustment<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

impl<'a> TestAppBuilder<'a> {
    /// Another broker list (e.g. a cluster of the test's own, or one that is not up yet).
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = brokers.into();
        self
    }

    /// Logs to `logger` instead of [`test_logger`].
    pub fn logger(mut self, logger: Logger) -> Self {
        self.logger = logger;
        self
    }

    /// Adjusts the settings before start (after the earlier adjustments).
    pub fn with(mut self, adjust: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.adjust.push(Box::new(adjust));
        self
    }

    /// Starts the runtime in this process and logs the admin in.
    pub async fn spawn(self) -> TestApp {
        let (database_url, prefix) = fresh_database().await;
        let mut settings = test_settings(&database_url, &prefix, &self.brokers);
        for adjust in self.adjust {
            adjust(&mut settings);
        }
        let app = Application::build(settings.clone(), &Service::ALL, self.logger)
            .await
            .expect("runtime starts")
            .spawn();
        let ports = Service::ALL
            .iter()
            .map(|&s| (s, app.port(s).expect("service hosted")))
            .collect();
        TestApp::attach(Some(app), ports, settings, database_url, prefix).await
    }
}

impl TestApp {
    /// A test runtime to start; see [`TestAppBuilder`].
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            brokers: brokers(),
            logger: test_logger(),
            adjust: Vec::new(),
        }
    }

    /// A client for a runtime that is up on `ports` with `settings`; logs the admin in.
    pub async fn attach(
        app: Option<Application>,
        ports: std::collections::BTreeMap<Service, u16>,
        settings: Settings,
        database_url: String,
        prefix: String,
    ) -> Self {
        // The runtime closes a connection idle for 5 s (actix-web's keep-alive): a pooled one
        // reused at that moment fails with `IncompleteMessage`. Idle connections are dropped
        // well before.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut test_app = TestApp {
            app,
            ports,
            settings,
            database_url,
            prefix,
            client,
            admin_token: String::new(),
        };
        test_app.admin_token = test_app.admin_login().await;
        test_app
    }

    /// A second runtime hosting `services` beside this one (same database, topic prefix, Redis
    /// key prefix and settings), as a second instance behind one load balancer.
    pub async fn another_instance(&self, services: &[Service]) -> TestApp {
        let runtime = Application::build(self.settings.clone(), services, test_logger())
            .await
            .expect("another runtime starts")
            .spawn();
        let ports = services
            .iter()
            .map(|&s| (s, runtime.port(s).expect("service hosted")))
            .collect();
        TestApp::attach(
            Some(runtime),
            ports,
            self.settings.clone(),
            self.database_url.clone(),
            self.prefix.clone(),
        )
        .await
    }

    /// Logs the configured admin in; answers the token.
    pub async fn admin_login(&self) -> String {
        let email = self.settings.admin_email.clone().unwrap();
        let response = self.login(&email, ADMIN_PASSWORD).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "admin login: {}",
            response.body
        );
        response.body["token"].as_str().unwrap().to_string()
    }

    /// The in-process runtime (its actors).
    pub fn runtime(&self) -> &Application {
        self.app.as_ref().expect("the runtime runs in this process")
    }
}

/// A response: status and JSON body (`Value::Null` when the body is empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the JSON error shape with `status` and `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["error"]["code"], code,
            "unexpected body: {}",
            self.text
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
    }
}

impl TestApp {
    /// `http://127.0.0.1:<port>` of `service`.
    pub fn url(&self, service: Service) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.ports.get(&service).expect("service hosted")
        )
    }

    /// Any request; `token` goes in `Authorization: Bearer`.
    pub async fn request(
        &self,
        method: Method,
        service: Service,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        self.try_request(method, service, path, body, token)
            .await
            .expect("request sent")
    }

    /// Like [`TestApp::request`], answering the transport error instead of panicking (for a
    /// runtime a test kills).
    pub async fn try_request(
        &self,
        method: Method,
        service: Service,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url(service)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Ok(read_reply(request.send().await?).await)
    }

    /// `GET`.
    pub async fn get(&self, service: Service, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, service, path, None, token).await
    }

    /// `POST` with a JSON body.
    pub async fn post(
        &self,
        service: Service,
        path: &str,
        body: Value,
        token: Option<&str>,
    ) -> Reply {
        self.request(Method::POST, service, path, Some(body), token)
            .await
    }

    /// Registers a user with a password; answers `(id, token)`.
    pub async fn register(&self, name: &str, email: &str, password: &str) -> (Uuid, String) {
        let reply = self
            .post(
                Service::Users,
                "/users/register",
                json!({"name": name, "email": email, "password": password}),
                None,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "register: {}",
            reply.text
        );
        (
            reply.body["id"].as_str().unwrap().parse().unwrap(),
            reply.body["token"].as_str().unwrap().to_string(),
        )
    }

    /// `POST /users/login` with these credentials.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            Service::Users,
            "/users/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// Registers a user with a unique email; answers `(id, token, email)`.
    pub async fn new_user(&self) -> (Uuid, String, String) {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let (id, token) = self.register("Test User", &email, "user-password").await;
        (id, token, email)
    }

    /// Records `kind` (`view`, `cart_add`, `cart_remove`, `purchase`) of `quantity` units of
    /// `product` as `user`; asserts `202`.
    pub async fn post_activity(
        &self,
        user: Uuid,
        token: &str,
        product: impl std::fmt::Display,
        kind: &str,
        quantity: u32,
    ) {
        let product = product.to_string();
        let reply = self
            .post(
                Service::Users,
                &format!("/users/{user}/activity"),
                json!({"type": kind, "product_id": product, "quantity": quantity}),
                Some(token),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{kind} of {product}: {}",
            reply.text
        );
    }

    /// Creates a product as admin; answers its JSON.
    pub async fn create_product(&self, name: &str, price: Value, category: Option<&str>) -> Value {
        let reply = self
            .post(
                Service::Products,
                "/products",
                json!({"name": name, "price": price, "category": category}),
                Some(&self.admin_token),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create product: {}",
            reply.text
        );
        reply.body
    }

    /// The value of an unlabelled gauge or counter on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get(Service::Users, "/metrics", None).await.text;
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Rows in the outbox.
    pub async fn outbox_rows(&self) -> i64 {
        self.count("outbox").await
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.db().count(table).await
    }

    /// This app's database.
    pub fn db(&self) -> TestDb {
        TestDb(self.database_url.clone())
    }

    /// Publishes `envelope` the way the services do: an outbox row, which the app's relay
    /// stamps and sends (within its poll interval).
    pub async fn publish(&self, envelope: &recsys_schema::events::Envelope) {
        let mut conn = AsyncPgConnection::establish(&self.database_url)
            .await
            .unwrap();
        recsys::outbox::enqueue(&mut conn, [envelope])
            .await
            .unwrap();
    }

    /// The physical name of a logical topic.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// The consumer groups of the recommendations and analytics services.
    pub fn groups(&self) -> [String; 2] {
        ["recommendations", "analytics"].map(|service| format!("{}{service}", self.prefix))
    }

    /// Every `(topic, partition)` both groups consume.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        let topics = [
            self.topic(recsys_schema::topics::USER_UPDATES),
            self.topic(recsys_schema::topics::PRODUCT_UPDATES),
        ];
        crate::kafka::all_partitions(&topics, self.settings.kafka_partitions)
    }
}

/// A response as a [`Reply`].
pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        text,
        headers,
    }
}

/// Polls `check` every 50 ms until it answers `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Value,
    pub raw: String,
    /// Header names and (UTF-8) values.
    pub headers: Vec<(String, String)>,
}

/// Reads `topics` from the beginning with a fresh consumer group until `expected` records
/// arrived or `deadline` passed; answers what arrived (in per-partition order).
pub async fn consume(
    brokers: &str,
    topics: &[String],
    expected: usize,
    deadline: Duration,
) -> Vec<Record> {
    let brokers = brokers.to_string();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("test-{}", Uuid::new_v4().simple()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .expect("consumer");
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).expect("subscribe");
        let until = Instant::now() + deadline;
        let mut records = Vec::new();
        // Keep polling a little after reaching `expected` to catch duplicates.
        let mut grace_until: Option<Instant> = None;
        while Instant::now() < until && grace_until.is_none_or(|g| Instant::now() < g) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let raw =
                        String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();

                    records.push(Record {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
                        value: serde_json::from_str(&raw).unwrap_or(Value::Null),
                        raw,
                        headers: message
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        let value = h
                                            .value
                                            .map(String::from_utf8_lossy)
                                            .unwrap_or_default();
                                        (h.key.to_string(), value.into_owned())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Some(Err(e)) => eprintln!("consumer error (retrying): {e}"),
                None => {}
            }
            if records.len() >= expected && grace_until.is_none() {
                grace_until = Some(Instant::now() + Duration::from_millis(1500));
            }
        }
        records
    })
    .await
    .unwrap()
}

/// A program from `$var`, or by name from `PATH`.
pub fn tool(var: &str, name: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| name.to_string())
}

/// The ports a `recsys` process reports in its JSON log (`"service listening"` lines, one per
/// hosted service): the process binds port 0 and says which port it got, so no other process
/// can take the port between a test choosing it and the runtime binding it.
pub fn listening_ports(log: &str) -> BTreeMap<Service, u16> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["msg"] == "service listening")
        .filter_map(|entry| {
            let service = Service::ALL
                .into_iter()
                .find(|s| entry["service"] == s.name())?;
            let port = u16::try_from(entry["port"].as_u64()?).ok()?;
            Some((service, port))
        })
        .collect()
}

/// Waits (60 s at most) until the log file `log`, from byte `from` on, reports a port for each
/// of `services` (see [`listening_ports`]).
pub async fn reported_ports(
    log: &std::path::Path,
    from: u64,
    services: &[Service],
) -> BTreeMap<Service, u16> {
    eventually(
        Duration::from_secs(60),
        "the runtime to report its ports",
        || async {
            let bytes = std::fs::read(log).ok()?;
            let text = String::from_utf8_lossy(bytes.get(from as usize..)?);
            let ports = listening_ports(&text);
            services
                .iter()
                .all(|s| ports.contains_key(s))
                .then_some(ports)
        },
    )
    .await
}

/// A free TCP port on loopback (bound then released), for programs that cannot bind port 0
/// and report it (Redis, Prometheus, a Kafka controller named in its quorum). Another process
/// may take it first: start such a program with [`retry_on_taken_port`].
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Log messages captured by [`captured_logger`].
pub type Captured = Arc<Mutex<Vec<String>>>;

/// A logger that records every message (with its key-values, `request_id` included as the
/// runtime's own loggers add it) for assertions.
pub fn captured_logger() -> (Logger, Captured) {
    let lines: Captured = Arc::default();
    let drain = recsys::telemetry::RequestIds(Capture(lines.clone()));
    (Logger::root(drain.fuse(), o!()), lines)
}

struct Capture(Captured);

impl Drain for Capture {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        struct Kv(String);
        impl slog::Serializer for Kv {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                val: &std::fmt::Arguments,
            ) -> slog::Result {
                self.0.push_str(&format!(" {key}={val}"));
                Ok(())
            }
        }
        let mut kv = Kv(format!(
            "{} {}",
            record.level().as_short_str(),
            record.msg()
        ));
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        self.0.lock().unwrap().push(kv.0);
        Ok(())
    }
}

/// A test database by URL.
pub struct TestDb(pub String);

impl TestDb {
    /// Runs one statement.
    pub async fn execute(&self, sql: &str) {
        let mut conn = AsyncPgConnection::establish(&self.0).await.unwrap();
        diesel::sql_query(sql).execute(&mut conn).await.unwrap();
    }

    /// Every row of `table` in `order`, as JSON objects.
    pub async fn rows(&self, table: &str, order: &str) -> Value {
        #[derive(QueryableByName)]
        struct Rows {
            #[diesel(sql_type = diesel::sql_types::Text)]
            j: String,
        }
        let mut conn = AsyncPgConnection::establish(&self.0).await.unwrap();
        let rows = diesel::sql_query(format!(
            "SELECT coalesce(json_agg(t ORDER BY {order}), '[]')::text AS j FROM {table} t"
        ))
        .get_result::<Rows>(&mut conn)
        .await
        .unwrap();
        serde_json::from_str(&rows.j).unwrap()
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.number(&format!("SELECT count(*) FROM {table}")).await
    }

    /// The one value of a query that answers one number (NULL reads as 0).
    pub async fn number(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Number {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = AsyncPgConnection::establish(&self.0).await.unwrap();
        diesel::sql_query(format!("SELECT coalesce(({sql}), 0)::int8 AS n"))
            .get_result::<Number>(&mut conn)
            .await
            .unwrap()
            .n
    }
}

/// Percent-encodes every byte outside the unreserved set.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Starts a program that cannot bind port 0 and report it, on a free port: `start(port)`
/// spawns it; when it exits before `ready(port)` holds (another process took the port
/// between [`free_port`] and the program's bind), it starts again on another port, five times
/// at most. Answers the running child and its port.
pub async fn retry_on_taken_port<R>(
    what: &str,
    mut start: impl FnMut(u16) -> tokio::process::Child,
    ready: impl Fn(u16) -> R,
) -> (tokio::process::Child, u16)
where
    R: Future<Output = bool>,
{
    for _ in 0..5 {
        let port = free_port();
        let mut child = start(port);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("child status").is_some() {
                break;
            }
            if ready(port).await {
                return (child, port);
            }
            assert!(
                Instant::now() < until,
                "timed out after 60 s waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("{what}: exited at start on five free ports in a row");
}

/// The sorted keys of a JSON object.
pub fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
