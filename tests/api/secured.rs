//! Encrypted, authenticated connections: a certificate authority the test makes, one Kafka node
//! whose only listener is SASL_SSL (SCRAM-SHA-512), a Postgres that refuses connections
//! without TLS and wants a password, and a Redis with only a TLS port and a password. The
//! runtime reaches all three through them (Kafka properties, `sslmode=verify-full`,
//! `rediss://` with `REDIS_CA_FILE`), the events scenario goes through, and no password reaches
//! a log line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use recsys::config::{Secret, Service};
use reqwest::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::*;
use crate::kafka::{KafkaCluster, Secured};

/// A certificate authority of the test's own and a server certificate it signed for
/// `127.0.0.1` and `localhost`, in a directory of the test's own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// The key then the certificate, one PEM file (a Kafka PEM keystore).
    fn keystore(&self) -> PathBuf {
        self.dir.join("keystore.pem")
    }

    async fn make() -> Self {
        let dir = std::env::temp_dir().join(format!("recsys-pki-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let dir = dir.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            async move {
                let out = Command::new("openssl")
                    .args(&args)
                    .current_dir(&dir)
                    .output()
                    .await
                    .expect("openssl runs");
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=recsys test authority",
        ])
        .await;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])
        .await;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])
        .await;
        let pki = Self { dir };
        let keystore = std::fs::read_to_string(pki.key()).unwrap()
            + &std::fs::read_to_string(pki.cert()).unwrap();
        std::fs::write(pki.keystore(), keystore).unwrap();
        pki
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (Postgres then runs as the `postgres` user).
fn root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args` as the `postgres` user when this process is root.
fn as_postgres(program: PathBuf) -> Command {
    if root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A Postgres of the test's own: TLS only (`hostnossl` rejected), a password for `recsys`.
struct SecuredPostgres {
    dir: PathBuf,
    child: Child,
    port: u16,
    password: String,
}

impl SecuredPostgres {
    async fn start(pki: &Pki) -> Self {
        let dir = std::env::temp_dir().join(format!("recsys-pg-{}", Uuid::new_v4()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let password = format!("pg-{}", Uuid::new_v4().simple());
        std::fs::write(dir.join("pw"), &password).unwrap();
        for (from, to) in [(pki.cert(), "server.pem"), (pki.key(), "server.key")] {
            std::fs::copy(from, dir.join(to)).unwrap();
        }
        if root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        std::fs::set_permissions(
            dir.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let out = as_postgres(pg_bin().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "recsys",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .output()
            .await
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        let log = dir.join("postgres.log");
        let (child, port) = retry_on_taken_port(
            "the TLS-only Postgres",
            |port| {
                as_postgres(pg_bin().join("postgres"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                    .arg("-c")
                    .arg(format!("unix_socket_directories={}", dir.display()))
                    .args([
                        "-c",
                        "ssl=on",
                        "-c",
                        "fsync=off",
                        "-c",
                        "max_connections=40",
                    ])
                    .arg("-c")
                    .arg(format!(
                        "ssl_cert_file={}",
                        dir.join("server.pem").display()
                    ))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("postgres starts")
            },
            |_| async {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("database system is ready to accept connections")
            },
        )
        .await;
        Self {
            dir,
            child,
            port,
            password,
        }
    }

    /// The URL of its `postgres` database with `sslmode` and the authority's certificate.
    fn url(&self, sslmode: &str, ca: &Path) -> String {
        format!(
            "postgres://recsys:{}@127.0.0.1:{}/postgres?sslmode={sslmode}&sslrootcert={}",
            self.password,
            self.port,
            ca.display()
        )
    }
}

impl Drop for SecuredPostgres {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis of the test's own with only a TLS port and a password.
struct SecuredRedis {
    child: Child,
    port: u16,
    password: String,
}

impl SecuredRedis {
    async fn start(pki: &Pki) -> Self {
        let password = format!("redis-{}", Uuid::new_v4().simple());
        let (child, port) = retry_on_taken_port(
            "the TLS-only Redis",
            |port| {
                Command::new(tool("REDIS_SERVER_BIN", "redis-server"))
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(pki.cert())
                    .arg("--tls-key-file")
                    .arg(pki.key())
                    .arg("--tls-ca-cert-file")
                    .arg(pki.ca())
                    .args(["--tls-auth-clients", "no", "--requirepass", &password])
                    .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("redis-server starts")
            },
            |port| async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
        )
        .await;
        Self {
            child,
            port,
            password,
        }
    }
}

impl Drop for SecuredRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Registration, a product, purchases: written through TLS Postgres, published and consumed
/// over SASL_SSL, counted by analytics and ranked (and cached in TLS Redis) by recommendations.
/// No password of the three reaches a log line.
#[actix_web::test]
async fn the_runtime_works_over_tls_with_passwords_to_kafka_postgres_and_redis() {
    let pki = Pki::make().await;
    let secured = Secured {
        keystore: pki.keystore(),
        ca: pki.ca(),
        username: "recsys".into(),
        password: format!("kafka-{}", Uuid::new_v4().simple()),
    };
    let (kafka, postgres, redis) = tokio::join!(
        KafkaCluster::start_secured(secured.clone()),
        SecuredPostgres::start(&pki),
        SecuredRedis::start(&pki),
    );
    let (logger, logs) = captured_logger();
    let database_url = postgres.url("verify-full", &pki.ca());
    let redis_url = format!("rediss://:{}@127.0.0.1:{}/", redis.password, redis.port);
    let properties: Vec<String> = secured
        .client_properties()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let app = TestApp::builder()
        .brokers(kafka.bootstrap())
        .logger(logger)
        .with(|settings| {
            settings.postgres.database_url = Some(Secret::new(database_url.clone()));
            settings.redis_address = redis_url.clone();
            settings.redis_ca_file = Some(pki.ca());
            // A TLS handshake on a busy two-core machine can take longer than the default.
            settings.redis_timeout_ms = 1000;
            settings.kafka_properties = properties;
        })
        .spawn()
        .await;

    let product = app
        .create_product("Sealed", json!("9.99"), Some("tls"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (user, token, email) = app.new_user().await;
    assert_eq!(
        app.login(&email, "user-password").await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        app.post_activity(user, &token, &product, "purchase", 1)
            .await;
    }
    let stats = format!("/analytics/products/{product}");
    eventually(Duration::from_secs(60), "2 purchases counted", || async {
        let reply = app
            .get(Service::Analytics, &stats, Some(&app.admin_token))
            .await;
        (reply.body["purchases"] == 2).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "the product ranked", || async {
        let reply = app
            .get(
                Service::Recommendations,
                "/recommendations?category=tls",
                None,
            )
            .await;
        (reply.body[0]["product_id"] == product.as_str()).then_some(())
    })
    .await;
    let cached = app
        .get(
            Service::Recommendations,
            "/recommendations?category=tls",
            None,
        )
        .await;
    assert_eq!(cached.status, StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "a cache write to the TLS Redis",
        || async {
            let metrics = app
                .get(Service::Recommendations, "/metrics", None)
                .await
                .text;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("redis_requests_total{operation=\"set_newer\",status=\"ok\"}")
                })
                .then_some(())
        },
    )
    .await;
    let lines = logs.lock().unwrap().join("\n");
    for secret in [&secured.password, &postgres.password, &redis.password] {
        assert!(!lines.contains(secret.as_str()), "a password in the logs");
    }
    assert!(
        lines.contains("sasl.password"),
        "the property names are logged: {lines}"
    );
}
