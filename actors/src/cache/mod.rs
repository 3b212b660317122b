//! The cache actor: a Redis cache in front of slower queries.
//!
//! Services ask the cache first and fall back to the real query (usually the database) when it
//! has no answer. A miss and a failure look the same to callers: when Redis is down, slow or
//! answers an error, [`CacheGet`] answers `None`, [`CacheSet`] and [`CacheRaise`] answer `false`,
//! and the caller goes on as if the cache were empty. Every request is bounded by the actor's
//! operation timeout, counted in `redis_requests_total{operation,status}` and timed in
//! `redis_request_duration_seconds{operation}`; failures are logged at most once a second per
//! actor, so an outage does not flood the log.
//!
//! Keys and values are opaque strings: the cache knows no service, and callers choose (and
//! prefix) their own keys. Values are never logged.
//!
//! Connections come from a lazily filled `bb8` pool, so the actor starts while Redis is down and
//! serves as soon as it is back. Requests run concurrently, outside the actor's own thread of
//! handling: each handler clones the pool into its future.
//!
//! [`window`] adds attempt windows (a limit on attempts shared by every process on one Redis)
//! to the same actor; [`refresh`] adds what a cache refreshed ahead of its readers needs
//! (values stamped with a version, a set of what was recently asked for).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use bb8::{ErrorSink, Pool, PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use redis::{IntoConnectionInfo, RedisError, Script};
use slog::{info, warn, Logger};

use crate::metrics::{REDIS_REQUESTS, REDIS_REQUEST_DURATION};

pub mod refresh;
pub mod window;

/// Connections kept by one actor's pool; requests are multiplexed, so a few suffice.
const MAX_CONNECTIONS: u32 = 8;

/// Shortest time between two failure warnings of one actor.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Sets `KEYS[1]` to `ARGV[1]` only when that is greater than the current value or the key is
/// missing (a current value that is not a decimal number counts as missing). Answers 1 when it
/// wrote, 0 otherwise. Numbers are compared as decimal strings, so every `u64` compares exactly
/// (Lua numbers are doubles). Either way the key expires `ARGV[2]` milliseconds from now: a key
/// raised again and again lives on, a forgotten one goes.
const RAISE_SCRIPT: &str = r"
local new = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^%d+$') then
  cur = string.gsub(cur, '^0+', '')
  if cur == '' then cur = '0' end
  if string.len(cur) > string.len(new)
    or (string.len(cur) == string.len(new) and cur >= new) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 0
  end
end
redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
return 1
";

/// The raise script, loaded once per process (sent by SHA, with a fallback to `EVAL`).
static RAISE: LazyLock<Script> = LazyLock::new(|| Script::new(RAISE_SCRIPT));

/// Reads a cached value. Answers `None` on a miss and on any Redis failure or timeout.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<String>")]
pub struct CacheGet {
    /// The key, as the caller wrote it.
    pub key: String,
}

/// Stores a value that expires after `ttl` (`SET … PX`). Answers whether Redis stored it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct CacheSet {
    /// The key.
    pub key: String,
    /// The value, stored as is.
    pub value: String,
    /// How long the value lives; rounded up to whole milliseconds, at least one.
    pub ttl: Duration,
}

/// Raises a counter that must never go backwards, e.g. a "generation" number published by
/// several processes: sets `key` to `value` atomically (one Lua script) only if `value` is
/// greater than the number stored there, or the key is missing.
///
/// Answers `true` when this call wrote `value`; `false` when the stored number was already
/// greater than or equal to `value` (nothing changed), and also on any Redis failure or timeout.
/// To learn the current number, read it with [`CacheGet`]. Written or not, the key expires
/// `ttl` from now: raised regularly, it never does.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct CacheRaise {
    /// The key holding the number, as a decimal string.
    pub key: String,
    /// The number to raise it to.
    pub value: u64,
    /// How long the key lives after this call.
    pub ttl: Duration,
}

/// The cache actor. Start it under a supervisor; it keeps no state beyond its connection pool.
pub struct CacheActor {
    /// Where the Redis server is, for the logs (without a password).
    address: String,
    /// What the request futures share.
    shared: Arc<Shared>,
}

/// The pool and the bookkeeping every request future needs.
struct Shared {
    pool: Pool<RedisConnectionManager>,
    op_timeout: Duration,
    logger: Logger,
    warn_gate: WarnGate,
    /// The last error met while connecting, so that a request that found no connection can say
    /// why.
    connect_error: Arc<Mutex<Option<String>>>,
}

impl CacheActor {
    /// A cache on the Redis server at `redis_address` (`host:port`, or a full `redis://` or
    /// `rediss://` URL, which may carry a password: `rediss://:password@host:port/`) whose
    /// requests each give up after `op_timeout`. `root_ca` (PEM) is the certificate authority a
    /// `rediss://` server's certificate must chain to, when it is not one the system trusts.
    ///
    /// Connects lazily: succeeds while Redis is down. Must be called inside a Tokio runtime (the
    /// actix system), where the pool runs its housekeeping.
    pub fn new(
        redis_address: &str,
        root_ca: Option<Vec<u8>>,
        op_timeout: Duration,
        logger: Logger,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !op_timeout.is_zero(),
            "the cache operation timeout must not be zero"
        );
        tokio::runtime::Handle::try_current()
            .context("the cache actor must be created inside a Tokio runtime")?;
        let url = if redis_address.contains("://") {
            redis_address.to_owned()
        } else {
            format!("redis://{redis_address}/")
        };
        // Never the URL in a message: it may hold the password.
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("invalid Redis address: {:?}", e.kind()))?;
        let client = match root_ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| anyhow::anyhow!("Redis client: {:?}", e.kind()))?;
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())
            .map_err(|e| anyhow::anyhow!("Redis client: {:?}", e.kind()))?;
        let connect_error = Arc::new(Mutex::new(None));
        let pool = Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .connection_timeout(op_timeout)
            .error_sink(Box::new(LastError(connect_error.clone())))
            .build_unchecked(manager);
        Ok(Self {
            address: without_password(redis_address),
            shared: Arc::new(Shared {
                pool,
                op_timeout,
                logger,
                warn_gate: WarnGate::new(WARN_INTERVAL),
                connect_error,
            }),
        })
    }
}

/// `address` as logs may show it: a URL's user and password replaced by `***`.
fn without_password(address: &str) -> String {
    match (address.split_once("://"), address.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &address[at..]),
        _ => address.to_owned(),
    }
}

/// How a request went, as its `status` label says.
enum Outcome<T> {
    Ok(T),
    Error(String),
    Timeout(String),
}

impl Shared {
    /// Runs one request (`operation` is its metric label): checks out a connection, hands it to
    /// `request`, and bounds both by the operation timeout. Answers `None` on any failure, after
    /// counting and (rate-limited) logging it.
    async fn run<T, F, Fut>(&self, operation: &'static str, request: F) -> Option<T>
    where
        F: FnOnce(PooledConnection<'static, RedisConnectionManager>) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let attempt = async {
            let conn = match self.pool.get_owned().await {
                Ok(conn) => conn,
                Err(RunError::TimedOut) => {
                    let cause = self.connect_error.lock().ok().and_then(|e| e.clone());
                    let cause = cause.unwrap_or_else(|| "no idle connection".to_owned());
                    return Outcome::Timeout(format!("no connection to Redis: {cause}"));
                }
                Err(RunError::User(e)) => return Outcome::Error(e.to_string()),
            };
            match request(conn).await {
                Ok(value) => Outcome::Ok(value),
                Err(e) if e.is_timeout() => Outcome::Timeout(e.to_string()),
                Err(e) => Outcome::Error(e.to_string()),
            }
        };
        let outcome = tokio::time::timeout(self.op_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Outcome::Timeout(format!("no answer within {:?}", self.op_timeout))
            });
        REDIS_REQUEST_DURATION
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let (status, error) = match outcome {
            Outcome::Ok(value) => {
                REDIS_REQUESTS.with_label_values(&[operation, "ok"]).inc();
                // Redis is reachable: an old connection error would only mislead.
                if let Ok(mut cause) = self.connect_error.lock() {
                    cause.take();
                }
                return Some(value);
            }
            Outcome::Error(e) => ("error", e),
            Outcome::Timeout(e) => ("timeout", e),
        };
        REDIS_REQUESTS.with_label_values(&[operation, status]).inc();
        if let Some(suppressed) = self.warn_gate.admit() {
            warn!(self.logger, "redis cache request failed, answering as a miss";
                "operation" => operation, "status" => status, "error" => error,
                "suppressed_warnings" => suppressed);
        }
        None
    }

    /// `GET key`: the stored string, `None` on a miss and on any failure.
    async fn get(&self, key: &str) -> Option<String> {
        self.run("get", |mut conn| async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut *conn)
                .await
        })
        .await
        .flatten()
    }
}

/// `d` in whole milliseconds, at least one (what Redis' `PX` and the scripts take).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Admits at most one warning per interval and counts the ones it holds back.
struct WarnGate {
    origin: Instant,
    interval_ms: u64,
    /// Milliseconds since `origin` before which warnings are held back.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnGate {
    fn new(interval: Duration) -> Self {
        Self {
            origin: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be written now, `n` being how many were held back since the
    /// last one; `None` when this one must be held back.
    fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Keeps the last connection error of the pool (it reports them out of band).
#[derive(Debug, Clone)]
struct LastError(Arc<Mutex<Option<String>>>);

impl ErrorSink<RedisError> for LastError {
    fn sink(&self, error: RedisError) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(error.to_string());
        }
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        info!(self.shared.logger, "cache actor started"; "redis" => &self.address,
            "op_timeout_ms" => self.shared.op_timeout.as_millis());
    }
}

impl Supervised for CacheActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        warn!(self.shared.logger, "cache actor restarting"; "redis" => &self.address);
    }
}

/// Reads the key; a miss, a failure and a timeout all answer `None`.
impl Handler<CacheGet> for CacheActor {
    type Result = ResponseFuture<Option<String>>;

    fn handle(&mut self, msg: CacheGet, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.get(&msg.key).await })
    }
}

/// Writes the value with its expiry; answers whether Redis stored it.
impl Handler<CacheSet> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CacheSet, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let ttl_ms = u64::try_from(msg.ttl.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        Box::pin(async move {
            shared
                .run("set", |mut conn| async move {
                    redis::cmd("SET")
                        .arg(&msg.key)
                        .arg(&msg.value)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut *conn)
                        .await
                })
                .await
                .is_some()
        })
    }
}

/// Raises the stored number with the Lua script; answers whether this call wrote it.
impl Handler<CacheRaise> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CacheRaise, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .run("raise", |mut conn| async move {
                    RAISE
                        .key(&msg.key)
                        .arg(msg.value)
                        .arg(millis(msg.ttl))
                        .invoke_async::<i64>(&mut *conn)
                        .await
                })
                .await
                == Some(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate lets the first warning through, holds back the next ones within the interval and
    /// reports how many it held back when it opens again.
    #[test]
    fn logged_addresses_carry_no_password() {
        assert_eq!(
            without_password("rediss://:hunter2@cache:6380/0"),
            "rediss://***@cache:6380/0"
        );
        assert_eq!(without_password("localhost:6379"), "localhost:6379");
        assert_eq!(without_password("redis://cache/"), "redis://cache/");
    }

    #[test]
    fn warn_gate_admits_one_warning_per_interval() {
        let gate = WarnGate::new(Duration::from_millis(50));
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), None);
        assert_eq!(gate.admit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(gate.admit(), Some(2));
    }
}

crate::observed_handlers!(CacheActor => CacheGet, CacheSet, CacheRaise);
crate::restart_on_fail!(CacheActor);
