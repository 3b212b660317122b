//! The cache actor against a real Redis (`127.0.0.1:6379`, or `REDIS_ADDRESS`) and against an
//! address where nothing listens. Every test uses its own random key prefix.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use recsys_actors::cache::refresh::{
    CacheDelete, CacheGetStamped, CacheMark, CacheMarked, CacheSetNewer, Stamped,
};
use recsys_actors::cache::{CacheActor, CacheGet, CacheRaise, CacheSet};
use recsys_actors::metrics::{ACTOR_RESTARTS, REDIS_REQUESTS};
use recsys_actors::supervision::{start_supervised, Fail};
use slog::{o, Drain, Logger};

/// Timeout of every request in these tests.
const OP_TIMEOUT: Duration = Duration::from_millis(200);

/// An address where nothing listens.
const UNREACHABLE: &str = "127.0.0.1:1";

/// The Redis server under test.
fn redis_address() -> String {
    std::env::var("REDIS_ADDRESS").unwrap_or_else(|_| "127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (or run) uses.
fn prefix() -> String {
    format!("recsys-actors-test:{}:", uuid::Uuid::new_v4())
}

/// Log messages written by an actor, for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    fn logger(&self) -> Logger {
        Logger::root(self.clone(), o!())
    }

    fn count(&self, message: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| *m == message)
            .count()
    }
}

impl Drain for Captured {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        self.0.lock().unwrap().push(record.msg().to_string());
        Ok(())
    }
}

/// A cache actor on `address`, started on the current arbiter, logging nowhere.
fn start(address: &str) -> Addr<CacheActor> {
    let logger = Logger::root(slog::Discard, o!());
    CacheActor::new(address, None, OP_TIMEOUT, logger)
        .expect("cache actor builds")
        .start()
}

/// Failed (`error` or `timeout`) requests counted so far for `operation`.
fn failures(operation: &str) -> u64 {
    ["error", "timeout"]
        .iter()
        .map(|status| REDIS_REQUESTS.with_label_values(&[operation, status]).get())
        .sum()
}

/// The milliseconds `key` has left to live (`-1`: no expiry, `-2`: no key).
async fn pttl(key: &str) -> i64 {
    let client = redis::Client::open(format!("redis://{}/", redis_address())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Sets `key` to expire in `ms` milliseconds.
async fn redis_expire(key: &str, ms: u64) {
    let client = redis::Client::open(format!("redis://{}/", redis_address())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PEXPIRE")
        .arg(key)
        .arg(ms)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// Removes the keys a test left behind without expiry.
async fn delete(keys: &[&str]) {
    let client = redis::Client::open(format!("redis://{}/", redis_address())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// A key nobody wrote is a miss.
#[actix_rt::test]
async fn get_of_a_missing_key_is_none() {
    let cache = start(&redis_address());
    let key = format!("{}missing", prefix());

    let value = cache.send(CacheGet { key }).await.unwrap();

    assert_eq!(value, None);
}

/// A value written with `CacheSet` is read back by `CacheGet`.
#[actix_rt::test]
async fn set_then_get_answers_the_value() {
    let cache = start(&redis_address());
    let key = format!("{}greeting", prefix());

    let stored = cache
        .send(CacheSet {
            key: key.clone(),
            value: "hello".to_owned(),
            ttl: Duration::from_secs(30),
        })
        .await
        .unwrap();
    let value = cache.send(CacheGet { key }).await.unwrap();

    assert!(stored);
    assert_eq!(value.as_deref(), Some("hello"));
}

/// A value disappears once its ttl has passed.
#[actix_rt::test]
async fn a_value_expires_after_its_ttl() {
    let cache = start(&redis_address());
    let key = format!("{}short-lived", prefix());

    let stored = cache
        .send(CacheSet {
            key: key.clone(),
            value: "soon gone".to_owned(),
            ttl: Duration::from_millis(100),
        })
        .await
        .unwrap();
    assert!(stored);

    let deadline = Instant::now() + Duration::from_secs(5);
    while cache
        .send(CacheGet { key: key.clone() })
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "value still there after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `CacheRaise` writes a missing key and any greater number, never a smaller one, and answers
/// whether it wrote; written or not, the key expires its `ttl` after the call.
#[actix_rt::test]
async fn raise_never_goes_backwards() {
    let cache = start(&redis_address());
    let key = format!("{}generation", prefix());
    let raise = |value| {
        cache.send(CacheRaise {
            key: key.clone(),
            value,
            ttl: Duration::from_secs(60),
        })
    };
    let get = || cache.send(CacheGet { key: key.clone() });

    assert!(raise(5).await.unwrap(), "a missing key is raised");
    assert_eq!(get().await.unwrap().as_deref(), Some("5"));

    assert!(!raise(3).await.unwrap(), "a smaller number is refused");
    assert_eq!(get().await.unwrap().as_deref(), Some("5"));

    assert!((1..=60_000).contains(&pttl(&key).await), "the key expires");
    delete(&[&key]).await;
    assert!(raise(5).await.unwrap());
    redis_expire(&key, 1_000).await;
    assert!(!raise(5).await.unwrap(), "the same number is refused");
    assert!(
        pttl(&key).await > 1_000,
        "a refused raise still renews the expiry"
    );
    assert!(raise(7).await.unwrap(), "a greater number is raised");
    assert_eq!(get().await.unwrap().as_deref(), Some("7"));

    assert!(raise(u64::MAX).await.unwrap());
    assert!(!raise(u64::MAX - 1).await.unwrap(), "u64s compare exactly");
    assert_eq!(
        get().await.unwrap(),
        Some(u64::MAX.to_string()),
        "the largest u64 is stored exactly"
    );

    delete(&[&key]).await;
}

/// `CacheSetNewer` writes a missing key and a value of a greater version, never one of a smaller
/// or the same version, whatever order the writers arrive in; `CacheGetStamped` reads the value
/// with its version, and a value written without a stamp reads as nothing.
#[actix_rt::test]
async fn stamped_values_never_go_back_to_an_older_version() {
    let cache = start(&redis_address());
    let key = format!("{}answer", prefix());
    let set = |version: u64, value: &str| {
        cache.send(CacheSetNewer {
            key: key.clone(),
            version,
            value: value.to_owned(),
            ttl: Duration::from_secs(60),
        })
    };
    let get = || cache.send(CacheGetStamped { key: key.clone() });
    let stamped = |version, value: &str| {
        Some(Stamped {
            version,
            value: value.to_owned(),
        })
    };

    assert!(
        set(9, "[\"nine\"]").await.unwrap(),
        "a missing key is written"
    );
    assert_eq!(get().await.unwrap(), stamped(9, "[\"nine\"]"));
    assert!(
        !set(8, "[\"eight\"]").await.unwrap(),
        "an older version is refused"
    );
    assert!(
        !set(9, "[\"again\"]").await.unwrap(),
        "the same version is kept"
    );
    assert_eq!(get().await.unwrap(), stamped(9, "[\"nine\"]"));
    assert!(set(10, "line one\nline two").await.unwrap());
    assert_eq!(get().await.unwrap(), stamped(10, "line one\nline two"));
    assert!(
        (1..=60_000).contains(&pttl(&key).await),
        "the value expires"
    );
    assert!(set(u64::MAX, "max").await.unwrap());
    assert!(
        !set(u64::MAX - 1, "less").await.unwrap(),
        "u64s compare exactly"
    );

    cache
        .send(CacheSet {
            key: key.clone(),
            value: "no stamp".into(),
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(get().await.unwrap(), None, "an unstamped value is not read");
    assert!(
        set(1, "stamped").await.unwrap(),
        "and is replaced by any stamp"
    );

    assert!(cache
        .send(CacheDelete {
            keys: vec![key.clone()]
        })
        .await
        .unwrap());
    assert_eq!(pttl(&key).await, -2, "deleted");
}

/// Marked members are read back most recent first while they are within `keep`; older ones are
/// answered as expired once and removed; the set keeps only its `cap` most recent members and
/// answers the ones it dropped; the set itself expires.
#[actix_rt::test]
async fn marked_members_are_live_within_keep_and_capped() {
    let cache = start(&redis_address());
    let set = format!("{}asked", prefix());
    let mark = |member: &str, cap: usize| {
        cache.send(CacheMark {
            set: set.clone(),
            member: member.to_owned(),
            keep: Duration::from_secs(60),
            cap,
        })
    };
    let marked = |keep_ms: u64| {
        cache.send(CacheMarked {
            set: set.clone(),
            keep: Duration::from_millis(keep_ms),
        })
    };

    assert_eq!(mark("a", 3).await.unwrap(), Some(vec![]));
    // Redis' clock has millisecond scores: apart by a few, "b" is the more recent.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(mark("b", 3).await.unwrap(), Some(vec![]));
    let both = marked(60_000).await.unwrap().unwrap();
    assert_eq!(both.live, ["b", "a"]);
    assert!(both.expired.is_empty());
    assert!((1..=60_000).contains(&pttl(&set).await), "the set expires");

    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(mark("c", 3).await.unwrap(), Some(vec![]));
    let recent = marked(50).await.unwrap().unwrap();
    assert_eq!(recent.live, ["c"]);
    assert_eq!(recent.expired.len(), 2, "{recent:?}");
    let again = marked(60_000).await.unwrap().unwrap();
    assert_eq!(again.live, ["c"], "expired members were removed");
    assert!(again.expired.is_empty());

    for member in ["d", "e"] {
        tokio::time::sleep(Duration::from_millis(2)).await;
        mark(member, 3).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(mark("f", 3).await.unwrap(), Some(vec!["c".to_owned()]));
    assert_eq!(marked(60_000).await.unwrap().unwrap().live, ["f", "e", "d"]);

    delete(&[&set]).await;
}

/// With Redis unreachable, get answers `None` and set answers `false` within the operation
/// timeout, and the failures are counted.
#[actix_rt::test]
async fn unreachable_redis_answers_like_a_miss_within_the_timeout() {
    let cache = start(UNREACHABLE);
    let key = format!("{}anything", prefix());
    let (get_failures, set_failures) = (failures("get"), failures("set"));

    let started = Instant::now();
    let value = cache.send(CacheGet { key: key.clone() }).await.unwrap();
    let get_took = started.elapsed();

    let started = Instant::now();
    let stored = cache
        .send(CacheSet {
            key,
            value: "lost".to_owned(),
            ttl: Duration::from_secs(30),
        })
        .await
        .unwrap();
    let set_took = started.elapsed();

    assert_eq!(value, None);
    assert!(!stored);
    assert!(get_took < Duration::from_secs(2), "get took {get_took:?}");
    assert!(set_took < Duration::from_secs(2), "set took {set_took:?}");
    assert!(failures("get") > get_failures);
    assert!(failures("set") > set_failures);
}

/// Many failures in a burst write a single warning, not one each.
#[actix_rt::test]
async fn an_outage_does_not_flood_the_log() {
    let logs = Captured::default();
    let cache = CacheActor::new(UNREACHABLE, None, OP_TIMEOUT, logs.logger())
        .unwrap()
        .start();
    let key = format!("{}anything", prefix());

    let answers =
        futures_util::future::join_all((0..10).map(|_| cache.send(CacheGet { key: key.clone() })))
            .await;

    assert!(answers.into_iter().all(|a| a.unwrap().is_none()));
    assert_eq!(
        logs.count("redis cache request failed, answering as a miss"),
        1
    );
}

/// After `Fail`, the supervisor restarts the actor and the next request is served.
#[actix_rt::test]
async fn the_actor_restarts_after_fail_and_serves_again() {
    let logs = Captured::default();
    let arbiter = Arbiter::new();
    let actor = CacheActor::new(&redis_address(), None, OP_TIMEOUT, logs.logger()).unwrap();
    let cache = start_supervised(
        &arbiter.handle(),
        "cache-test",
        recsys_actors::observe::DEFAULT_MAILBOX_LIMIT,
        &logs.logger(),
        actor,
    );
    let key = format!("{}survivor", prefix());
    assert!(cache
        .send(CacheSet {
            key: key.clone(),
            value: "still here".to_owned(),
            ttl: Duration::from_secs(30),
        })
        .await
        .unwrap());

    cache.send(Fail).await.unwrap();
    let value = cache.send(CacheGet { key }).await.unwrap();

    assert_eq!(value.as_deref(), Some("still here"));
    assert_eq!(logs.count("cache actor restarting"), 1);
    assert_eq!(
        ACTOR_RESTARTS
            .with_label_values(&["cache-test", "CacheActor"])
            .get(),
        1
    );
    arbiter.stop();
}
