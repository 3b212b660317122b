//! Settings: one tree, read from the environment (the seed's names and defaults) or flags.
//!
//! Every field is a clap argument with an `env` name, so `recsys serve --help` is the reference
//! and tests build settings from flags. Secrets are wrapped in [`Secret`] and never printed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// A value that must never reach a log line, a response or `--help`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// The four services the runtime can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Service {
    /// Accounts, login, profiles, user actions (:8080).
    Users,
    /// The product catalog (:8081).
    Products,
    /// Popularity rankings (:8082).
    Recommendations,
    /// Statistics (:8083).
    Analytics,
}

impl Service {
    /// All services, in port order.
    pub const ALL: [Service; 4] = [
        Service::Users,
        Service::Products,
        Service::Recommendations,
        Service::Analytics,
    ];

    /// The `service` label value.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Products => "products",
            Service::Recommendations => "recommendations",
            Service::Analytics => "analytics",
        }
    }

    /// HTTP worker threads when `HTTP_WORKERS` is unset. The users service's handlers only
    /// check a request and hand it to the users actor, which writes on a thread of its own: one
    /// worker keeps up, and a second only adds thread switches on the cores the actor and the
    /// relay need. The other services serve reads from their handlers (the recommendations
    /// micro-cache) and get two.
    pub fn http_workers(self) -> usize {
        match self {
            Service::Users => 1,
            Service::Products | Service::Recommendations | Service::Analytics => 2,
        }
    }

    /// Whether this service writes to the outbox (and so needs a relay).
    pub fn writes_events(self) -> bool {
        matches!(self, Service::Users | Service::Products)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (slog-term).
    Term,
    /// One JSON object per line.
    Json,
}

/// Everything the runtime reads from its environment.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Kafka bootstrap servers, comma separated.
    #[arg(
        long,
        env = "KAFKA_ADDRESS",
        default_value = "localhost:9091,localhost:9092,localhost:9093"
    )]
    pub kafka_address: String,

    /// Prefix put before every topic name (tests use it to isolate topics).
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,

    /// Partitions of a topic created at startup.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    pub kafka_partitions: i32,

    /// Replicas per partition of a topic created at startup (the local stack and the compose
    /// file run three brokers; a single-broker cluster needs 1).
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 3)]
    pub kafka_replication_factor: i32,

    /// `min.insync.replicas` of a topic created at startup (at most the replication factor):
    /// with `acks=all`, a record is acknowledged once this many replicas hold it, so with 3
    /// replicas and 2 one broker may be down without losing a write or refusing one.
    #[arg(long, env = "KAFKA_MIN_INSYNC_REPLICAS", default_value_t = 2)]
    pub kafka_min_insync_replicas: i32,

    /// `retention.ms` of a topic created at startup; -1 keeps every record: the topics are the
    /// event log `recsys rebuild` replays, which refuses to run once records are gone.
    #[arg(long, env = "KAFKA_RETENTION_MS", default_value_t = -1, allow_negative_numbers = true)]
    pub kafka_retention_ms: i64,

    /// How long the broker waits without a heartbeat before it gives a consumer's partitions to
    /// another member (librdkafka `session.timeout.ms`). A broker pause shorter than this costs
    /// no rebalance; a crashed runtime's partitions wait this long for a successor.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub kafka_session_timeout_ms: u64,

    /// Longest time the broker may hold a consumer's fetch while no record is there (librdkafka
    /// `fetch.wait.max.ms`). Kafka answers a fetch as soon as records arrive, so this adds no
    /// latency; it only sets how often an idle consumer asks.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS", default_value_t = 500)]
    pub kafka_fetch_wait_ms: u64,

    /// Static group membership (KIP-345): a stable name for this runtime in its consumer groups
    /// (e.g. the container name). A runtime restarted under the same name takes its partitions
    /// back at once instead of waiting for a rebalance. Unset: dynamic membership.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_group_instance_id: Option<String>,

    /// A file of librdkafka properties (`name=value` per line, `#` comments) given to every
    /// Kafka client: producer, consumers and admin (TLS, SASL, ...).
    #[arg(long, env = "KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<std::path::PathBuf>,

    /// One librdkafka property for every Kafka client, `name=value`; repeatable, wins over the
    /// file and the `KAFKA_PROPERTY_<name>` variables. Prefer those for secrets: arguments are
    /// visible to other users of the machine.
    #[arg(long = "kafka-property", value_name = "NAME=VALUE")]
    pub kafka_properties: Vec<String>,

    #[command(flatten)]
    pub postgres: PostgresSettings,

    /// Redis address: `host:port`, or a `redis://` or `rediss://` (TLS) URL, which may carry a
    /// password (`rediss://:password@host:port/`; never logged).
    #[arg(
        long,
        env = "REDIS_ADDRESS",
        default_value = "localhost:6379",
        hide_env_values = true
    )]
    pub redis_address: String,

    /// A PEM file of the certificate authority a `rediss://` server's certificate chains to,
    /// when the system does not trust it.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// HS256 key for JWTs, at least 32 bytes; required (`serve` refuses to start without it)
    /// unless `--dev` is given. Every instance behind one load balancer needs the same one.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// The key JWT_SECRET replaced, at least 32 bytes: tokens signed with it are still accepted
    /// (until they expire), none is signed with it. Rotation: set the old key here and a new
    /// JWT_SECRET; remove it 24 hours later.
    #[arg(long, env = "JWT_SECRET_PREVIOUS", hide_env_values = true)]
    pub jwt_secret_previous: Option<Secret>,

    /// `serve` only: do not migrate, only check that every migration is applied and refuse to
    /// start otherwise (for deployments that run `recsys migrate` as a step of their own).
    #[arg(long, env = "NO_MIGRATE", default_value_t = false)]
    pub no_migrate: bool,

    /// Development mode: without JWT_SECRET, a random key per start (tokens die with the
    /// process, and instances reject each other's). Never in a deployment.
    #[arg(long, env = "RECSYS_DEV", default_value_t = false)]
    pub dev: bool,

    /// Key a storefront back end sends in `X-API-Key` to record actions for any user
    /// (`POST /users/{id}/activity`, `POST /activity/batch`), at least 32 bytes. Unset: no
    /// request is accepted by key.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// Email of the admin account ensured at startup (with ADMIN_PASSWORD).
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the admin account ensured at startup.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,

    /// Address the HTTP servers bind to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,

    /// Origins (`https://shop.example`, comma separated) whose pages may call recsys from a
    /// browser: they get the CORS headers on every port and their preflight is answered. Empty
    /// (the default): no CORS headers at all.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<String>,

    /// Where the admin's browser reaches the users service (`scheme://host[:port]`), for the
    /// login of the analytics page (`GET /` on the analytics port); this origin must allow the
    /// page's in CORS_ORIGINS. Unset: the host the page was loaded from, with the port of the
    /// users service (the one this runtime listens on, else USERS_PORT).
    #[arg(long, env = "ANALYTICS_USERS_URL", value_parser = origin)]
    pub analytics_users_url: Option<String>,

    /// Port of the users service (0 picks a free one).
    #[arg(long, env = "USERS_PORT", default_value_t = 8080)]
    pub users_port: u16,

    /// Port of the products service.
    #[arg(long, env = "PRODUCTS_PORT", default_value_t = 8081)]
    pub products_port: u16,

    /// Port of the recommendations service.
    #[arg(long, env = "RECOMMENDATIONS_PORT", default_value_t = 8082)]
    pub recommendations_port: u16,

    /// Port of the analytics service.
    #[arg(long, env = "ANALYTICS_PORT", default_value_t = 8083)]
    pub analytics_port: u16,

    /// HTTP worker threads per service; unset, 1 for users and 2 for each other service.
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "term")]
    pub log_format: LogFormat,

    /// Minimum log level (trace, debug, info, warning, error, critical).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Weight of each action in the popularity score (read by the recommendations service).
    #[arg(
        long,
        env = "RANKING_WEIGHTS",
        default_value = "view=1,cart_add=3,cart_remove=-3,purchase=10"
    )]
    pub ranking_weights: String,

    /// Half-life of the popularity decay (`24h`, `90m`, `30s`, `2d`; read by the
    /// recommendations service).
    #[arg(long, env = "RANKING_HALF_LIFE", default_value = "24h")]
    pub ranking_half_life: String,

    /// Half-life of the trending score (`GET /recommendations?sort=trending`), in the same
    /// format; read by the recommendations service.
    #[arg(long, env = "RANKING_TRENDING_HALF_LIFE", default_value = "1h")]
    pub ranking_trending_half_life: String,

    /// Prefix of every Redis key (tests use it to isolate themselves).
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "recsys:")]
    pub redis_key_prefix: String,

    /// Bound on one Redis operation; slower counts as a miss (milliseconds).
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// Backstop TTL of a cached recommendation answer, and how long a global query is refreshed
    /// after it was last computed on a miss (seconds).
    #[arg(long, env = "RECOMMENDATION_CACHE_TTL_SECS", default_value_t = 60)]
    pub recommendation_cache_ttl_secs: u64,

    /// How long each HTTP worker reuses a recommendation answer without asking the query actor
    /// or Redis (milliseconds; 0: never). Answers may be this much older than the ranking.
    #[arg(long, env = "RECOMMENDATION_LOCAL_TTL_MS", default_value_t = 25)]
    pub recommendation_local_ttl_ms: u64,

    /// Group commits of recorded actions written at once (each on its own pooled connection);
    /// while all are busy, further actions queue and go out together in the next one. A commit
    /// waits for its WAL flush, and one writer puts every waiting action behind a single
    /// flush, which makes one the fastest (docs/benchmarks.md, "Figures behind the settings").
    #[arg(long, env = "ACTIVITY_WRITERS", default_value_t = 1)]
    pub activity_writers: usize,

    /// Most recorded actions one group commit writes.
    #[arg(long, env = "ACTIVITY_MAX_BATCH", default_value_t = 256)]
    pub activity_max_batch: usize,

    /// Largest batch a consumer applies in one transaction. A batch takes what arrives while
    /// the previous one is being applied (and at least `CONSUMER_MAX_WAIT_MS` after its first
    /// record), so batches only grow this large when a backlog waits; each is folded per
    /// product and user before it is written, so large ones write far fewer rows per event.
    /// Each consumer reserves room for two batches of this many records (120 bytes each).
    #[arg(long, env = "CONSUMER_MAX_BATCH", default_value_t = 50_000)]
    pub consumer_max_batch: usize,

    /// How long a consumer batch waits for more records after its first (milliseconds): every
    /// event of a trickle waits up to this long before it is applied, and the shorter it is,
    /// the smaller (and costlier per event) the batches under a moderate load.
    #[arg(long, env = "CONSUMER_MAX_WAIT_MS", default_value_t = 10)]
    pub consumer_max_wait_ms: u64,

    /// Messages an actor may have in flight; beyond it requests are refused with 503.
    #[arg(long, env = "ACTOR_MAILBOX_LIMIT", default_value_t = 1024)]
    pub actor_mailbox_limit: usize,

    /// How long a request waits for its actor's answer before it gets 503 (milliseconds).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Failed logins of one email within the lockout window before it is locked.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Failed logins from one client address within the lockout window before it is locked.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_IP", default_value_t = 50)]
    pub login_max_failures_per_ip: u32,

    /// How long a failed login counts (seconds).
    #[arg(long, env = "LOGIN_LOCKOUT_SECS", default_value_t = 900)]
    pub login_lockout_secs: u64,

    /// How often the outbox relay polls for rows it was not woken for (milliseconds).
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 500)]
    pub outbox_poll_ms: u64,

    /// Under load (a relay batch of 32 rows or more), the next batch starts no sooner than this
    /// after the last one started, carrying the rows written meanwhile in one produce request
    /// per broker (milliseconds; 0: as soon as the last one is done).
    #[arg(long, env = "OUTBOX_GATHER_MS", default_value_t = 0)]
    pub outbox_gather_ms: u64,

    /// The relay vacuums the outbox tables after removing this many rows (autovacuum visits a
    /// table at most once a minute, and every recorded action leaves a dead outbox row).
    #[arg(long, env = "OUTBOX_VACUUM_ROWS", default_value_t = 10_000)]
    pub outbox_vacuum_rows: u64,

    /// How long a record may wait for an unreachable broker before its delivery is retried
    /// (milliseconds).
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 120_000)]
    pub kafka_delivery_timeout_ms: u64,
}

/// The environment variables that pass a librdkafka property: `KAFKA_PROPERTY_<name>`, the name
/// as librdkafka spells it (`KAFKA_PROPERTY_security.protocol`) or upper case with `_` for `.`
/// (`KAFKA_PROPERTY_SECURITY_PROTOCOL`).
pub const KAFKA_PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

/// `name=value` (or `name: value`), trimmed; `None` for anything else.
fn property(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(['=', ':'])?;
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), value.trim().to_string()))
}

impl Settings {
    /// The brokers and the librdkafka properties every client gets, later sources winning: the
    /// file (`KAFKA_PROPERTIES_FILE`), then the `KAFKA_PROPERTY_*` variables of `env`, then
    /// `--kafka-property`. Refuses an unreadable file or a malformed line, naming the file and
    /// line (never a value: values may be secrets).
    pub fn brokers(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<recsys_actors::kafka::Brokers> {
        let mut properties: Vec<(String, String)> = Vec::new();
        let mut set = |name: String, value: String| {
            properties.retain(|(n, _)| *n != name);
            properties.push((name, value));
        };
        if let Some(path) = &self.kafka_properties_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("KAFKA_PROPERTIES_FILE {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (name, value) = property(line).ok_or_else(|| {
                    anyhow::anyhow!(
                        "KAFKA_PROPERTIES_FILE {} line {}: not name=value",
                        path.display(),
                        n + 1
                    )
                })?;
                set(name, value);
            }
        }
        let mut variables: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(KAFKA_PROPERTY_PREFIX)?;
                let name = if name.contains('.') {
                    name.to_string()
                } else {
                    name.to_ascii_lowercase().replace('_', ".")
                };
                (!name.is_empty()).then_some((name, v))
            })
            .collect();
        variables.sort();
        for (name, value) in variables {
            set(name, value);
        }
        for given in &self.kafka_properties {
            let (name, value) = property(given).ok_or_else(|| {
                anyhow::anyhow!("--kafka-property takes name=value (one of them is not)")
            })?;
            set(name, value);
        }
        Ok(recsys_actors::kafka::Brokers::new(&self.kafka_address).with_properties(properties))
    }

    /// Port of `service`.
    pub fn port(&self, service: Service) -> u16 {
        match service {
            Service::Users => self.users_port,
            Service::Products => self.products_port,
            Service::Recommendations => self.recommendations_port,
            Service::Analytics => self.analytics_port,
        }
    }

    /// HTTP worker threads of `service`: `HTTP_WORKERS` if set (at least 1), else the
    /// service's default.
    pub fn http_workers(&self, service: Service) -> usize {
        self.http_workers
            .map_or_else(|| service.http_workers(), |n| n.max(1))
    }

    /// How long a request handler waits for an actor's answer.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// How topics are created when missing.
    pub fn topic_layout(&self) -> recsys_actors::kafka::TopicLayout {
        let replication = self.kafka_replication_factor.max(1);
        recsys_actors::kafka::TopicLayout {
            partitions: self.kafka_partitions,
            replication,
            min_insync_replicas: self.kafka_min_insync_replicas.clamp(1, replication),
            retention_ms: self.kafka_retention_ms,
        }
    }

    /// How often the relay polls.
    pub fn outbox_poll_interval(&self) -> Duration {
        Duration::from_millis(self.outbox_poll_ms.max(10))
    }
}

/// Where Postgres is.
#[derive(Debug, Clone, Args)]
pub struct PostgresSettings {
    /// Full connection URL; overrides the POSTGRES_* parts.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Postgres host.
    #[arg(long, env = "POSTGRES_HOST", default_value = "localhost")]
    pub postgres_host: String,

    /// Postgres port.
    #[arg(long, env = "POSTGRES_PORT", default_value_t = 5432)]
    pub postgres_port: u16,

    /// Postgres user.
    #[arg(long, env = "POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,

    /// Postgres password.
    #[arg(
        long,
        env = "POSTGRES_PASSWORD",
        default_value = "1",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub postgres_password: Secret,

    /// Postgres database.
    #[arg(long, env = "POSTGRES_DB", default_value = "postgres")]
    pub postgres_db: String,

    /// Connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How long a request waits for a pooled connection before it fails with 503 (milliseconds).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_timeout_ms: u64,
}

impl PostgresSettings {
    /// The connection URL (contains the password: never log it).
    pub fn url(&self) -> Secret {
        if let Some(url) = &self.database_url {
            return url.clone();
        }
        Secret(format!(
            "postgres://{}:{}@{}:{}/{}",
            percent_encode(&self.postgres_user),
            percent_encode(self.postgres_password.expose()),
            self.postgres_host,
            self.postgres_port,
            percent_encode(&self.postgres_db)
        ))
    }
}

/// Escapes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An origin as browsers send it: `http` or `https`, `://`, a host and maybe a port, nothing
/// after (no path, not even `/`). Lower-cased, as browsers send them.
pub(crate) fn origin(text: &str) -> Result<String, String> {
    let origin = text.trim().to_ascii_lowercase();
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("an origin starts with http:// or https://")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (rest, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(origin)
    } else {
        Err(format!(
            "{text:?} is not an origin (scheme://host[:port], no path)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        Cli::parse_from(std::iter::once("recsys").chain(args.iter().copied())).settings
    }

    #[test]
    /// Unset, the users service gets one HTTP worker and the others two; set, every service
    /// gets that many, at least one.
    fn http_workers_default_per_service_and_one_setting_covers_all() {
        let workers = |args: &[&str]| {
            let settings = settings(args);
            Service::ALL.map(|service| settings.http_workers(service))
        };
        assert_eq!(workers(&[]), [1, 2, 2, 2]);
        assert_eq!(workers(&["--http-workers", "3"]), [3; 4]);
        assert_eq!(workers(&["--http-workers", "0"]), [1; 4]);
    }

    #[test]
    /// Properties come from the file, then the variables (either spelling), then the flags,
    /// later ones winning; `Debug` names them but shows no value.
    fn kafka_properties_layer_file_variables_and_flags() {
        let file = std::env::temp_dir().join(format!("kafka-{}.properties", std::process::id()));
        std::fs::write(
            &file,
            "# TLS\nsecurity.protocol = SSL\nsasl.mechanism=PLAIN\n\nssl.ca.location: /ca.pem\n",
        )
        .unwrap();
        let settings = settings(&[
            "--kafka-properties-file",
            file.to_str().unwrap(),
            "--kafka-property",
            "sasl.username=flag-user",
        ]);
        let env = [
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_PROPERTY_sasl.password", "hunter2"),
            ("KAFKA_PROPERTY_SASL_USERNAME", "env-user"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let brokers = settings.brokers(env).unwrap();
        let config = recsys_actors::kafka::client_config(&brokers, "test");
        let get = |k: &str| config.get(k).map(str::to_string);
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("PLAIN"));
        assert_eq!(get("ssl.ca.location").as_deref(), Some("/ca.pem"));
        assert_eq!(get("sasl.username").as_deref(), Some("flag-user"));
        assert_eq!(get("sasl.password").as_deref(), Some("hunter2"));
        let shown = format!("{brokers:?} {}", brokers.describe());
        assert!(
            shown.contains("sasl.password") && !shown.contains("hunter2"),
            "{shown}"
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    /// A malformed line is refused by file and line number, without its content.
    fn a_malformed_properties_line_is_named_not_shown() {
        let file = std::env::temp_dir().join(format!("bad-{}.properties", std::process::id()));
        std::fs::write(&file, "security.protocol=SSL\nsecret-without-a-separator\n").unwrap();
        let error = settings(&["--kafka-properties-file", file.to_str().unwrap()])
            .brokers(std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && !error.contains("secret-without"),
            "{error}"
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    /// The URL built from parts escapes a password with URL metacharacters.
    fn url_from_parts_escapes_the_password() {
        let pg = PostgresSettings {
            database_url: None,
            postgres_host: "db".into(),
            postgres_port: 5433,
            postgres_user: "app".into(),
            postgres_password: Secret::new("p@ss/word"),
            postgres_db: "recsys".into(),
            db_pool_size: 1,
            db_timeout_ms: 1,
        };
        assert_eq!(
            pg.url().expose(),
            "postgres://app:p%40ss%2Fword@db:5433/recsys"
        );
    }

    #[test]
    /// CORS origins are scheme, host and port; anything more or less is refused at startup.
    fn origins_are_scheme_host_and_port() {
        for good in [
            "https://shop.example",
            "http://127.0.0.1:8000",
            "HTTPS://Shop.Example",
            "http://[::1]:3000",
        ] {
            assert!(origin(good).is_ok(), "{good}");
        }
        assert_eq!(
            origin("HTTPS://Shop.Example").unwrap(),
            "https://shop.example"
        );
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://shop.example/path",
            "ftp://shop.example",
            "https://shop.example:0",
            "https://shop.example:99999",
            "https://shop.example:",
            "*",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    /// A secret's Debug output hides the value.
    fn secret_debug_hides_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
