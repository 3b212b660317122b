//! The `recsys` binary itself: `serve --services` hosts a subset, SIGTERM drains and exits 0,
//! `migrate` applies the schema, and `--help` documents the environment without leaking secrets.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use recsys::config::Service;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_recsys");

/// `recsys serve` of `services` on `database_url` and topic `prefix`, every port 0 (picked by
/// the OS and reported in the JSON log on stderr).
fn serve(services: &[Service], database_url: &str, prefix: &str) -> tokio::process::Command {
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["serve", "--services", &names.join(",")])
        .env("DATABASE_URL", database_url)
        .env("KAFKA_ADDRESS", brokers())
        .env("KAFKA_TOPIC_PREFIX", prefix)
        .env("KAFKA_REPLICATION_FACTOR", "1")
        .env("JWT_SECRET", "binary-test-secret-of-at-least-32-bytes")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("USERS_PORT", "0")
        .env("PRODUCTS_PORT", "0")
        .env("RECOMMENDATIONS_PORT", "0")
        .env("ANALYTICS_PORT", "0")
        .env("LOG_FORMAT", "json");
    command
}

/// The binary serving `services` with a fresh database and topic prefix, on the ports it picks
/// and reports, logging (JSON) to a file of its own.
struct Binary {
    child: tokio::process::Child,
    ports: BTreeMap<Service, u16>,
    database_url: String,
    log: std::path::PathBuf,
}

impl Binary {
    /// Starts it; answers once it has reported a port for each of `services`.
    async fn start(services: &[Service]) -> Self {
        let (database_url, prefix) = fresh_database().await;
        let log = std::env::temp_dir().join(format!("recsys-binary-{}.log", Uuid::new_v4()));
        let output = std::fs::File::create(&log).unwrap();
        let child = serve(services, &database_url, &prefix)
            .stdout(Stdio::null())
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let ports = reported_ports(&log, 0, services).await;
        Self {
            child,
            ports,
            database_url,
            log,
        }
    }
}

async fn healthy(client: &reqwest::Client, port: u16) -> bool {
    client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// `serve --services users` serves the users port and no other.
#[actix_web::test]
async fn serve_hosts_only_the_named_services() {
    let binary = Binary::start(&[Service::Users]).await;
    let client = reqwest::Client::new();
    let users = binary.ports[&Service::Users];
    eventually(Duration::from_secs(60), "users to answer", || async {
        healthy(&client, users).await.then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&binary.log).unwrap();
    assert_eq!(
        listening_ports(&log).into_keys().collect::<Vec<_>>(),
        [Service::Users],
        "{log}"
    );
}

/// On SIGTERM the runtime stops serving, publishes its outbox and exits 0.
#[actix_web::test]
async fn sigterm_drains_the_outbox_and_exits_zero() {
    let Binary {
        mut child,
        ports,
        database_url,
        log,
    } = Binary::start(&Service::ALL).await;
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), "all ports to answer", || async {
        for &port in ports.values() {
            if !healthy(&client, port).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    let reply = client
        .post(format!(
            "http://127.0.0.1:{}/users/register",
            ports[&Service::Users]
        ))
        .json(&json!({"name": "Term", "email": "term@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("outbox drained"), "{stderr}");
    assert!(
        !stderr.contains("binary-test-secret-of-at-least-32-bytes"),
        "the JWT secret reached the log"
    );
    let app_db = TestDb(database_url);
    assert_eq!(app_db.count("outbox").await, 0);
    assert_eq!(app_db.count("users").await, 1);
}

/// A runtime hosting recommendations does not start on ranking settings it cannot read: it
/// exits 1 without serving, and its last log line names the variable.
#[actix_web::test]
async fn unreadable_ranking_settings_stop_the_start() {
    for (var, value) in [("RANKING_WEIGHTS", "like=1"), ("RANKING_HALF_LIFE", "soon")] {
        let (database_url, prefix) = fresh_database().await;
        let mut command = serve(&[Service::Recommendations], &database_url, &prefix);
        command.env(var, value);
        let (log, error) = refused_start(command).await;
        assert!(error.starts_with(var), "{var}={value}: {log}");
    }
}

/// Runs `command` (a `serve` that must not start): asserts it exits 1 without serving, its
/// last log line the fatal error; answers the log and that error.
async fn refused_start(mut command: tokio::process::Command) -> (String, String) {
    let run = command.stdout(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("exits")
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(listening_ports(&log).is_empty(), "{log}");
    let last: serde_json::Value =
        serde_json::from_str(log.lines().last().expect("a log line")).unwrap();
    assert_eq!(last["msg"], "fatal", "{log}");
    let error = last["error"].as_str().unwrap().to_string();
    (log, error)
}

/// Without `JWT_SECRET` the runtime does not start (two instances would reject each other's
/// tokens, and every restart would log everyone out): it exits 1 naming the variable and the
/// way out; with `RECSYS_DEV=true` it starts on a random development key.
#[actix_web::test]
async fn serve_requires_a_jwt_secret_unless_in_development_mode() {
    let (database_url, prefix) = fresh_database().await;
    let mut command = serve(&[Service::Users], &database_url, &prefix);
    command.env_remove("JWT_SECRET");
    let (log, error) = refused_start(command).await;
    assert!(
        error.starts_with("JWT_SECRET is not set") && error.contains("RECSYS_DEV"),
        "{log}"
    );

    let log = std::env::temp_dir().join(format!("recsys-dev-{}.log", Uuid::new_v4()));
    let mut child = serve(&[Service::Users], &database_url, &prefix)
        .env_remove("JWT_SECRET")
        .env("RECSYS_DEV", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ports = reported_ports(&log, 0, &[Service::Users]).await;
    assert!(ports.contains_key(&Service::Users));
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("development mode without JWT_SECRET"),
        "{text}"
    );
}

/// Three runtimes started at the same moment on one empty database all start: they migrate
/// one after the other under the migration lock, and each migration is applied once.
/// `serve --no-migrate` refuses an unmigrated database (naming what is pending) and serves a
/// migrated one.
#[actix_web::test]
async fn runtimes_started_together_migrate_once_and_no_migrate_only_checks() {
    let (database_url, prefix) = fresh_database().await;
    let db = TestDb(database_url.clone());
    let services = [Service::Users, Service::Products];
    let run = |flags: &[&str]| {
        let log = std::env::temp_dir().join(format!("recsys-migrate-{}.log", Uuid::new_v4()));
        let child = serve(&services, &database_url, &prefix)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        (child, log)
    };

    let mut refused = serve(&services, &database_url, &prefix);
    refused.arg("--no-migrate");
    let (log, error) = refused_start(refused).await;
    assert!(error.contains("schema is not current"), "{log}");
    assert!(
        error.contains("create_users"),
        "names the pending migrations: {log}"
    );

    let runtimes: Vec<_> = (0..3).map(|_| run(&[])).collect();
    for (_, log) in &runtimes {
        let ports = reported_ports(log, 0, &services).await;
        assert_eq!(ports.len(), 2, "{}", std::fs::read_to_string(log).unwrap());
    }
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!(
        db.number("SELECT count(*) FROM __diesel_schema_migrations")
            .await,
        migrations
    );
    let applied: Vec<u64> = runtimes
        .iter()
        .filter_map(|(_, log)| {
            std::fs::read_to_string(log)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["msg"] == "database migrated")
                .and_then(|l| l["applied"].as_u64())
        })
        .collect();
    let mut sorted = applied.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [0, 0, migrations as u64],
        "one runtime applied them all"
    );

    let (mut checked, log) = run(&["--no-migrate"]);
    reported_ports(&log, 0, &services).await;
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("database schema is current"));
    checked.kill().await.unwrap();
}

/// A fresh database that `recsys migrate` (exiting 0) gave the schema.
async fn migrated_database() -> TestDb {
    let (database_url, _) = fresh_database().await;
    let status = tokio::process::Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    TestDb(database_url)
}

/// `recsys migrate` creates every table on an empty database and exits 0.
#[actix_web::test]
async fn migrate_creates_the_schema() {
    let db = migrated_database().await;
    for table in ["users", "user_activity", "products", "outbox"] {
        assert_eq!(db.count(table).await, 0, "{table} exists and is empty");
    }
}

/// The counter tables every consumer batch rewrites leave room on their pages: after one update
/// of every row, each new version is on the page of the old one (an in-place, HOT update, which
/// adds no index entries). On full pages (fillfactor 100) none would be.
#[actix_web::test]
async fn counter_rows_are_rewritten_on_their_own_page() {
    let db = migrated_database().await;
    // (table, its key columns, the key of a new row, a counter)
    let tables = [
        (
            "rec_user_products",
            "user_id, product_id",
            "gen_random_uuid(), gen_random_uuid()",
            "views = views + 1",
        ),
        (
            "rec_scores",
            "product_id, acc",
            "gen_random_uuid(), 1",
            "acc = acc + 1",
        ),
        (
            "an_products",
            "product_id",
            "gen_random_uuid()",
            "views = views + 1",
        ),
        (
            "an_users",
            "user_id",
            "gen_random_uuid()",
            "views = views + 1",
        ),
    ];
    for (table, columns, values, counter) in tables {
        db.execute(&format!(
            "INSERT INTO {table} ({columns}) SELECT {values} FROM generate_series(1, 2000)"
        ))
        .await;
        let key = columns.split(", ").next().unwrap();
        db.execute(&format!(
            "CREATE TABLE pages_of_{table} AS SELECT {key} AS key, (ctid::text::point)[0] AS page \
             FROM {table}"
        ))
        .await;
        db.execute(&format!("UPDATE {table} SET {counter}")).await;
        let moved = db
            .number(&format!(
                "SELECT count(*) FROM {table} t JOIN pages_of_{table} b ON b.key = t.{key} \
                 WHERE (t.ctid::text::point)[0] <> b.page"
            ))
            .await;
        assert_eq!(
            moved, 0,
            "{table}: {moved} of 2000 updated rows left their page"
        );
    }
}

/// `serve --help` names every environment variable and never prints a secret's value.
#[actix_web::test]
async fn help_documents_the_environment_without_secrets() {
    let output = tokio::process::Command::new(BIN)
        .args(["serve", "--help"])
        .env("JWT_SECRET", "do-not-print-me")
        .env("ADMIN_PASSWORD", "nor-me-please")
        .env("POSTGRES_PASSWORD", "nor-this-one")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for var in [
        "KAFKA_ADDRESS",
        "KAFKA_TOPIC_PREFIX",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "DATABASE_URL",
        "REDIS_ADDRESS",
        "JWT_SECRET",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
        "USERS_PORT",
        "PRODUCTS_PORT",
        "RECOMMENDATIONS_PORT",
        "ANALYTICS_PORT",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    for secret in ["do-not-print-me", "nor-me-please", "nor-this-one"] {
        assert!(!help.contains(secret), "--help printed a secret");
    }
}

/// `recsys healthcheck --port P` exits 0 when the service on P is ready and 1 (saying why)
/// when nothing answers there: what the compose health checks run.
#[actix_web::test]
async fn healthcheck_exits_zero_only_when_the_service_is_ready() {
    let app = spawn_app().await;
    let port = app.ports[&Service::Users];
    let ok = tokio::process::Command::new(BIN)
        .args(["healthcheck", "--port", &port.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let closed = free_port();
    let down = tokio::process::Command::new(BIN)
        .args(["healthcheck", "--port", &closed.to_string()])
        .output()
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
    let missing = tokio::process::Command::new(BIN)
        .args([
            "healthcheck",
            "--port",
            &port.to_string(),
            "--path",
            "/nowhere",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "a 404 is not healthy");
}
