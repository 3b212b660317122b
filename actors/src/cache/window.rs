//! Attempt windows: a limit on attempts (say, failed logins) shared by every process that uses
//! the same Redis, kept in the cache actor's Redis.
//!
//! A *subject* (an email, a client address) has two sorted sets under its key: the failures of
//! the last `window` and the attempts still pending, each member scored by the Redis server's
//! clock (so processes with skewed clocks agree). An attempt is admitted when, for every subject
//! it names, failures in the window plus pending attempts stay below that subject's limit; it is
//! then pending on each until it is settled. A pending attempt whose process died is forgotten
//! after `pending_for`. Both checks and writes are one Lua script each, so two processes cannot
//! both take the last place.
//!
//! Unlike the cache messages, a Redis failure is not a silent miss here: the answer is `None`,
//! and the caller decides (the users service falls back to its own per-process limit).

use std::sync::LazyLock;
use std::time::Duration;

use actix::prelude::*;
use redis::Script;

use super::{millis, CacheActor};

/// KEYS: per subject, its failures set then its pending set. ARGV: window ms, pending ms,
/// attempt id, then each subject's limit. Answers 0 and marks the attempt pending on every
/// subject, or answers the milliseconds until the first subject at its limit frees a place
/// (at least 1000).
const ADMIT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local pending = tonumber(ARGV[2])
local wait = 0
for i = 1, #KEYS / 2 do
  local failures, open = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
  redis.call('ZREMRANGEBYSCORE', open, '-inf', now - pending)
  local taken = redis.call('ZCARD', failures) + redis.call('ZCARD', open)
  if taken >= tonumber(ARGV[3 + i]) then
    local w = 1000
    local oldest = redis.call('ZRANGE', failures, 0, 0, 'WITHSCORES')
    if oldest[2] then w = math.max(tonumber(oldest[2]) + window - now, 1000) end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 1, #KEYS / 2 do
  redis.call('ZADD', KEYS[2 * i], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[2 * i], pending)
end
return 0
";

/// KEYS: as for admission. ARGV: window ms, attempt id, outcome (`failed`, `succeeded`,
/// `abandoned`), then per subject 1 when a success clears its failures. The attempt stops being
/// pending; a failure is recorded on every subject; a success clears the subjects that ask.
const SETTLE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS / 2 do
  local failures, open = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREM', open, ARGV[2])
  if ARGV[3] == 'failed' then
    redis.call('ZADD', failures, now, ARGV[2])
    redis.call('PEXPIRE', failures, ARGV[1])
  elseif ARGV[3] == 'succeeded' and ARGV[3 + i] == '1' then
    redis.call('DEL', failures)
  end
end
return 0
";

static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_SCRIPT));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_SCRIPT));

/// One subject of an attempt: where its sets live and how many it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The key prefix of the subject's two sets (`…:failures`, `…:pending`), chosen by the
    /// caller; it should not reveal the subject (hash an email).
    pub key: String,
    /// Failures plus pending attempts within the window beyond which attempts are refused.
    pub limit: u32,
    /// Whether a success clears this subject's failures.
    pub cleared_by_success: bool,
}

impl Subject {
    fn keys(&self) -> [String; 2] {
        [
            format!("{}:failures", self.key),
            format!("{}:pending", self.key),
        ]
    }
}

/// Admits an attempt on all of `subjects`, or says how long to wait. Answers `None` when Redis
/// did not answer (within the actor's operation timeout).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Result<(), Duration>>")]
pub struct WindowAdmit {
    pub subjects: Vec<Subject>,
    /// The attempt's id, unique across processes (a UUID).
    pub attempt: String,
    /// How long a failure counts.
    pub window: Duration,
    /// How long an attempt may stay pending before it is forgotten (its process died).
    pub pending_for: Duration,
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Failed,
    Succeeded,
    /// Ended undecided: counts as nothing.
    Abandoned,
}

/// Settles an attempt admitted by [`WindowAdmit`]. Answers whether Redis recorded it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct WindowSettle {
    pub subjects: Vec<Subject>,
    pub attempt: String,
    pub window: Duration,
    pub outcome: Settled,
}

impl Handler<WindowAdmit> for CacheActor {
    type Result = ResponseFuture<Option<Result<(), Duration>>>;

    fn handle(&mut self, msg: WindowAdmit, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            let wait = shared
                .run("window_admit", |mut conn| async move {
                    let mut invocation = ADMIT.prepare_invoke();
                    for key in msg.subjects.iter().flat_map(Subject::keys) {
                        invocation.key(key);
                    }
                    invocation
                        .arg(millis(msg.window))
                        .arg(millis(msg.pending_for))
                        .arg(&msg.attempt);
                    for subject in &msg.subjects {
                        invocation.arg(subject.limit);
                    }
                    invocation.invoke_async::<u64>(&mut *conn).await
                })
                .await?;
            Some(match wait {
                0 => Ok(()),
                ms => Err(Duration::from_millis(ms)),
            })
        })
    }
}

impl Handler<WindowSettle> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: WindowSettle, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .run("window_settle", |mut conn| async move {
                    let mut invocation = SETTLE.prepare_invoke();
                    for key in msg.subjects.iter().flat_map(Subject::keys) {
                        invocation.key(key);
                    }
                    let outcome = match msg.outcome {
                        Settled::Failed => "failed",
                        Settled::Succeeded => "succeeded",
                        Settled::Abandoned => "abandoned",
                    };
                    invocation
                        .arg(millis(msg.window))
                        .arg(&msg.attempt)
                        .arg(outcome);
                    for subject in &msg.subjects {
                        invocation.arg(u8::from(subject.cleared_by_success));
                    }
                    invocation.invoke_async::<i64>(&mut *conn).await
                })
                .await
                .is_some()
        })
    }
}

crate::observed_handlers!(CacheActor => WindowAdmit, WindowSettle);
