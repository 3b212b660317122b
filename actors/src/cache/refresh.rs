//! What a refresh-ahead cache needs from Redis: values stamped with a version that only ever
//! moves forward, and a set of recently asked-for members.
//!
//! A caller that refreshes answers ahead of its readers (instead of dropping them when the data
//! changes) writes each answer stamped with the version of the data it was computed from
//! ([`CacheSetNewer`]): a slow writer holding an older answer can then never replace a newer one.
//! It marks what readers ask for in a sorted set ([`CacheMark`], scored by the Redis server's
//! clock, so processes with skewed clocks agree) and, when the data changes, reads back what was
//! asked for recently and forgets the rest ([`CacheMarked`]). Members and keys are opaque to the
//! cache, as everywhere in it.
//!
//! As with [`super::CacheGet`] and [`super::CacheSet`], a Redis failure answers like a miss or a
//! write that did not happen.

use std::sync::LazyLock;
use std::time::Duration;

use actix::prelude::*;
use redis::Script;

use super::{millis, CacheActor};

/// Sets `KEYS[1]` to `ARGV[1] .. "\n" .. ARGV[2]` with expiry `ARGV[3]` ms, unless it holds a
/// value stamped with a version (the decimal number before the first newline) greater than or
/// equal to `ARGV[1]`. Versions compare as decimal strings, exactly for every `u64`. Answers 1
/// when it wrote.
const SET_NEWER_SCRIPT: &str = r"
local new = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = string.match(cur, '^(%d+)\n')
  if v then
    v = string.gsub(v, '^0+', '')
    if v == '' then v = '0' end
    if string.len(v) > string.len(new)
      or (string.len(v) == string.len(new) and v >= new) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], new .. '\n' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// Marks member `ARGV[1]` of the sorted set `KEYS[1]` with the server's time in ms, keeps the
/// `ARGV[3]` most recent members and the set itself for `ARGV[2]` ms. Answers the members it
/// dropped to stay within `ARGV[3]`.
const MARK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local over = -(tonumber(ARGV[3]) + 1)
local dropped = redis.call('ZRANGE', KEYS[1], 0, over)
if #dropped > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return dropped
";

/// The members of `KEYS[1]` marked within the last `ARGV[1]` ms, most recent first, and the
/// older ones, which it removes.
const MARKED_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff) end
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', cutoff)
return {live, expired}
";

static SET_NEWER: LazyLock<Script> = LazyLock::new(|| Script::new(SET_NEWER_SCRIPT));
static MARK: LazyLock<Script> = LazyLock::new(|| Script::new(MARK_SCRIPT));
static MARKED: LazyLock<Script> = LazyLock::new(|| Script::new(MARKED_SCRIPT));

/// A value and the version of the data it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub version: u64,
    pub value: String,
}

impl Stamped {
    /// Reads a stored `"<version>\n<value>"`; `None` for anything else.
    fn parse(stored: &str) -> Option<Self> {
        let (version, value) = stored.split_once('\n')?;
        Some(Self {
            version: version.parse().ok()?,
            value: value.to_owned(),
        })
    }
}

/// Stores `value` stamped with `version` unless the key holds a value stamped with a version
/// greater than or equal to it (then nothing changes, its expiry neither). Answers whether this
/// call wrote; `false` too on a Redis failure.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct CacheSetNewer {
    pub key: String,
    pub version: u64,
    pub value: String,
    /// How long the value lives once written.
    pub ttl: Duration,
}

/// Reads a value written by [`CacheSetNewer`]: `None` on a miss, a failure, or a value that
/// carries no stamp.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Stamped>")]
pub struct CacheGetStamped {
    pub key: String,
}

/// Marks `member` of the set `set` as asked for now. The set keeps its `cap` most recently
/// marked members and lives `keep` after the last mark. Answers the members dropped to stay
/// within `cap` (the caller forgets what it keeps for them); `None` on a Redis failure.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Vec<String>>")]
pub struct CacheMark {
    pub set: String,
    pub member: String,
    pub keep: Duration,
    pub cap: usize,
}

/// The members of a set written by [`CacheMark`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    /// Marked within `keep`, most recent first.
    pub live: Vec<String>,
    /// Marked longer ago; removed from the set by this call.
    pub expired: Vec<String>,
}

/// Reads the members of `set` marked within `keep` and removes the older ones. `None` on a
/// Redis failure.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Marked>")]
pub struct CacheMarked {
    pub set: String,
    pub keep: Duration,
}

/// Deletes keys; answers whether Redis did (`true` for keys that were not there).
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct CacheDelete {
    pub keys: Vec<String>,
}

impl Handler<CacheSetNewer> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CacheSetNewer, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .run("set_newer", |mut conn| async move {
                    SET_NEWER
                        .key(&msg.key)
                        .arg(msg.version)
                        .arg(&msg.value)
                        .arg(millis(msg.ttl))
                        .invoke_async::<i64>(&mut *conn)
                        .await
                })
                .await
                == Some(1)
        })
    }
}

impl Handler<CacheGetStamped> for CacheActor {
    type Result = ResponseFuture<Option<Stamped>>;

    fn handle(&mut self, msg: CacheGetStamped, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { Stamped::parse(&shared.get(&msg.key).await?) })
    }
}

impl Handler<CacheMark> for CacheActor {
    type Result = ResponseFuture<Option<Vec<String>>>;

    fn handle(&mut self, msg: CacheMark, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .run("mark", |mut conn| async move {
                    MARK.key(&msg.set)
                        .arg(&msg.member)
                        .arg(millis(msg.keep))
                        .arg(msg.cap.max(1))
                        .invoke_async::<Vec<String>>(&mut *conn)
                        .await
                })
                .await
        })
    }
}

impl Handler<CacheMarked> for CacheActor {
    type Result = ResponseFuture<Option<Marked>>;

    fn handle(&mut self, msg: CacheMarked, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (live, expired) = shared
                .run("marked", |mut conn| async move {
                    MARKED
                        .key(&msg.set)
                        .arg(millis(msg.keep))
                        .invoke_async::<(Vec<String>, Vec<String>)>(&mut *conn)
                        .await
                })
                .await?;
            Some(Marked { live, expired })
        })
    }
}

impl Handler<CacheDelete> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CacheDelete, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            if msg.keys.is_empty() {
                return true;
            }
            shared
                .run("delete", |mut conn| async move {
                    redis::cmd("DEL")
                        .arg(&msg.keys)
                        .query_async::<i64>(&mut *conn)
                        .await
                })
                .await
                .is_some()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_values_parse() {
        assert_eq!(
            Stamped::parse("17\n[1,2]\nmore"),
            Some(Stamped {
                version: 17,
                value: "[1,2]\nmore".into()
            })
        );
        assert_eq!(Stamped::parse("[1,2]"), None);
        assert_eq!(Stamped::parse("x\n[]"), None);
    }
}

crate::observed_handlers!(CacheActor => CacheSetNewer, CacheGetStamped, CacheMark, CacheMarked, CacheDelete);
