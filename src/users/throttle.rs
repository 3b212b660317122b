//! Login throttling: repeated failures for one email, or from one client address, lock further
//! attempts out for a while.
//!
//! A failure counts against the email (whether or not an account has it, so the lockout tells
//! nothing about which emails exist) and against the client's address. Once `per_email`
//! failures of one email, or `per_ip` failures from one address, fall within `window`, further
//! attempts answer `429` until the oldest of them leaves the window, even with the right
//! password. A success clears the email's failures. Attempts still being verified count as
//! failures until they finish, so a burst of concurrent guesses cannot slip past the limit.
//!
//! The counts are kept twice. [`SharedThrottle`] keeps them in Redis (an attempt window of the
//! cache actor), so every runtime hosting users on one Redis shares one lockout: guesses spread
//! over instances behind a load balancer count together. [`LoginThrottle`] keeps this process's
//! own counts in the users actor. Redis decides while it answers (this process still counts the
//! attempt, for the day it does not); when Redis does not answer, the process's own counts
//! decide (the per-instance limit), and `login_throttle_decisions_total{store="local"}` says so.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::{register_int_counter_vec, IntCounterVec};
use recsys_actors::cache::window::{Settled, Subject, WindowAdmit, WindowSettle};
use recsys_actors::cache::CacheActor;
use recsys_actors::observe::ObservedAddr;
use sha2::Digest as _;
use uuid::Uuid;

/// How many failures are allowed, and over what period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures of one email within `window` before it is locked.
    pub per_email: u32,
    /// Failures from one client address within `window` before it is locked.
    pub per_ip: u32,
    /// How long a failure counts.
    pub window: Duration,
}

/// Failures within the window, and attempts not yet decided.
#[derive(Debug, Default)]
struct Tally {
    failures: VecDeque<Instant>,
    in_flight: u32,
}

impl Tally {
    fn forget_before(&mut self, horizon: Option<Instant>) {
        while let (Some(first), Some(horizon)) = (self.failures.front(), horizon) {
            if *first > horizon {
                break;
            }
            self.failures.pop_front();
        }
    }

    /// How long until one more attempt is allowed (`None`: allowed now).
    fn wait(&self, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        if (self.failures.len() as u64 + u64::from(self.in_flight)) < u64::from(limit) {
            return None;
        }
        Some(match self.failures.front() {
            Some(oldest) => (*oldest + window).saturating_duration_since(now),
            // Only undecided attempts: they finish within a second or so.
            None => Duration::from_secs(1),
        })
    }

    fn idle(&self) -> bool {
        self.failures.is_empty() && self.in_flight == 0
    }
}

/// An admitted attempt; hand it back to [`LoginThrottle::finish`].
#[derive(Debug)]
pub struct Attempt {
    email: String,
    ip: Option<IpAddr>,
}

/// The per-email and per-address failure counts of one users actor.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    emails: HashMap<String, Tally>,
    ips: HashMap<IpAddr, Tally>,
    /// Operations since the last sweep of expired tallies.
    since_sweep: u32,
}

/// Tallies are swept of expired failures every this many operations, so memory follows the
/// failures of the last window, not every address ever seen.
const SWEEP_EVERY: u32 = 1024;

impl LoginThrottle {
    /// A throttle with no failures recorded.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            emails: HashMap::new(),
            ips: HashMap::new(),
            since_sweep: 0,
        }
    }

    fn horizon(&self, now: Instant) -> Option<Instant> {
        now.checked_sub(self.limits.window)
    }

    /// Admits an attempt for `email` from `ip`, or answers how long to wait.
    pub fn admit(
        &mut self,
        email: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        self.maybe_sweep(now);
        let horizon = self.horizon(now);
        let LoginLimits {
            per_email,
            per_ip,
            window,
        } = self.limits;
        let email_wait = self.emails.get_mut(email).and_then(|tally| {
            tally.forget_before(horizon);
            tally.wait(per_email, window, now)
        });
        let ip_wait = ip.and_then(|ip| self.ips.get_mut(&ip)).and_then(|tally| {
            tally.forget_before(horizon);
            tally.wait(per_ip, window, now)
        });
        if let Some(wait) = email_wait.max(ip_wait) {
            return Err(wait.max(Duration::from_secs(1)));
        }
        Ok(self.track(email, ip))
    }

    /// Counts an attempt another store admitted (the shared counts), without checking this
    /// process's own: they keep a history for the day Redis does not answer.
    pub fn track(&mut self, email: &str, ip: Option<IpAddr>) -> Attempt {
        self.emails.entry(email.to_string()).or_default().in_flight += 1;
        if let Some(ip) = ip {
            self.ips.entry(ip).or_default().in_flight += 1;
        }
        Attempt {
            email: email.to_string(),
            ip,
        }
    }

    /// Records how an admitted attempt ended.
    pub fn finish(&mut self, attempt: Attempt, succeeded: bool, now: Instant) {
        self.settle(attempt, Some(succeeded), now);
    }

    /// Forgets an admitted attempt that ended undecided (e.g. the database was down).
    pub fn abandon(&mut self, attempt: Attempt) {
        self.settle(attempt, None, Instant::now());
    }

    /// Ends an attempt: no longer in flight; a failure counts against the email and the
    /// address, a success clears the email's failures, an undecided attempt records nothing.
    fn settle(&mut self, attempt: Attempt, succeeded: Option<bool>, now: Instant) {
        let record = |tally: &mut Tally| {
            tally.in_flight = tally.in_flight.saturating_sub(1);
            if succeeded == Some(false) {
                tally.failures.push_back(now);
            }
        };
        if let Some(tally) = self.emails.get_mut(&attempt.email) {
            record(tally);
            if succeeded == Some(true) {
                tally.failures.clear();
            }
        }
        if let Some(tally) = attempt.ip.and_then(|ip| self.ips.get_mut(&ip)) {
            record(tally);
        }
        remove_if_idle(&mut self.emails, &attempt.email);
        if let Some(ip) = attempt.ip {
            remove_if_idle(&mut self.ips, &ip);
        }
    }

    fn maybe_sweep(&mut self, now: Instant) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY {
            return;
        }
        self.since_sweep = 0;
        let horizon = self.horizon(now);
        sweep(&mut self.emails, horizon);
        sweep(&mut self.ips, horizon);
    }

    /// Emails and addresses with something recorded (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (self.emails.len(), self.ips.len())
    }
}

fn remove_if_idle<K: Hash + Eq>(tallies: &mut HashMap<K, Tally>, key: &K) {
    if tallies.get(key).is_some_and(Tally::idle) {
        tallies.remove(key);
    }
}

fn sweep<K: Hash + Eq>(tallies: &mut HashMap<K, Tally>, horizon: Option<Instant>) {
    tallies.retain(|_, tally| {
        tally.forget_before(horizon);
        !tally.idle()
    });
}

/// `login_throttle_decisions_total{store}`: login admissions, by where the counts that decided
/// came from: `redis` (shared by every instance) or `local` (Redis did not answer; this
/// process's own counts decided alone).
pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "login_throttle_decisions_total",
        "Login admissions, by the store of failure counts that decided: redis (shared) or local (Redis unreachable)",
        &["store"]
    )
    .expect("metric registers once")
});

/// Registers the throttle's metric family, both series at zero.
pub fn init_metrics() {
    for store in ["redis", "local"] {
        DECISIONS.with_label_values(&[store]);
    }
}

/// How long an admitted attempt may stay pending in Redis: far beyond a password check, so a
/// pending mark outlives its attempt only when its process died.
const PENDING_FOR: Duration = Duration::from_secs(30);

/// The failure counts every runtime on one Redis shares.
#[derive(Clone)]
pub struct SharedThrottle {
    cache: ObservedAddr<CacheActor>,
    /// `REDIS_KEY_PREFIX` followed by `login:`.
    prefix: String,
    limits: LoginLimits,
}

/// An attempt admitted by the shared counts; settle it with [`SharedThrottle::settle`].
#[derive(Debug)]
pub struct SharedAttempt {
    subjects: Vec<Subject>,
    id: String,
}

impl SharedThrottle {
    /// Counts kept through `cache` under `key_prefix`, with the same `limits` as the process's.
    pub fn new(cache: ObservedAddr<CacheActor>, key_prefix: &str, limits: LoginLimits) -> Self {
        Self {
            cache,
            prefix: format!("{key_prefix}login:"),
            limits,
        }
    }

    /// The email (as a digest: the keys do not reveal who logs in) and the address.
    fn subjects(&self, email: &str, ip: Option<IpAddr>) -> Vec<Subject> {
        let digest = sha2::Sha256::digest(email.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut subjects = vec![Subject {
            key: format!("{}email:{hex}", self.prefix),
            limit: self.limits.per_email,
            cleared_by_success: true,
        }];
        if let Some(ip) = ip {
            subjects.push(Subject {
                key: format!("{}ip:{ip}", self.prefix),
                limit: self.limits.per_ip,
                cleared_by_success: false,
            });
        }
        subjects
    }

    /// Admits an attempt on the shared counts (`Ok(Some)`), refuses it with how long to wait,
    /// or answers `Ok(None)` when Redis did not answer (counted `store="local"`).
    pub async fn admit(
        &self,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<Option<SharedAttempt>, Duration> {
        let attempt = SharedAttempt {
            subjects: self.subjects(email, ip),
            id: Uuid::new_v4().to_string(),
        };
        let answer = self
            .cache
            .send(WindowAdmit {
                subjects: attempt.subjects.clone(),
                attempt: attempt.id.clone(),
                window: self.limits.window,
                pending_for: PENDING_FOR,
            })
            .await
            .ok()
            .flatten();
        let store = if answer.is_some() { "redis" } else { "local" };
        DECISIONS.with_label_values(&[store]).inc();
        match answer {
            Some(Ok(())) => Ok(Some(attempt)),
            Some(Err(wait)) => Err(wait),
            None => Ok(None),
        }
    }

    /// Records how an attempt ended, within the cache's operation timeout (an end Redis did not
    /// record only leaves the attempt pending until `PENDING_FOR` passes).
    pub async fn settle(&self, attempt: SharedAttempt, succeeded: Option<bool>) {
        let outcome = match succeeded {
            Some(true) => Settled::Succeeded,
            Some(false) => Settled::Failed,
            None => Settled::Abandoned,
        };
        let settle = WindowSettle {
            subjects: attempt.subjects,
            attempt: attempt.id,
            window: self.limits.window,
            outcome,
        };
        // Whether Redis recorded it changes nothing here: see above.
        let _ = self.cache.send(settle).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LoginLimits = LoginLimits {
        per_email: 3,
        per_ip: 5,
        window: Duration::from_secs(60),
    };
    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const AWAY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn fail(throttle: &mut LoginThrottle, email: &str, ip: Option<IpAddr>, now: Instant) {
        let attempt = throttle.admit(email, ip, now).expect("admitted");
        throttle.finish(attempt, false, now);
    }

    #[test]
    fn an_email_locks_after_its_failures_until_the_oldest_leaves_the_window() {
        let mut throttle = LoginThrottle::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..3 {
            fail(&mut throttle, "a@x.io", HOME, t0 + Duration::from_secs(i));
        }
        let wait = throttle
            .admit("a@x.io", AWAY, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            throttle.admit("b@x.io", AWAY, t0).is_ok(),
            "other emails are not locked"
        );
        assert!(throttle
            .admit("a@x.io", AWAY, t0 + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn an_address_locks_after_failures_across_emails() {
        let mut throttle = LoginThrottle::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..5 {
            fail(&mut throttle, &format!("u{i}@x.io"), HOME, t0);
        }
        assert!(throttle.admit("fresh@x.io", HOME, t0).is_err());
        assert!(throttle.admit("fresh@x.io", AWAY, t0).is_ok());
    }

    #[test]
    fn undecided_attempts_count_so_a_burst_cannot_pass_the_limit() {
        let mut throttle = LoginThrottle::new(LIMITS);
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..10)
            .filter_map(|_| throttle.admit("a@x.io", HOME, t0).ok())
            .collect();
        assert_eq!(admitted.len(), 3);
        for attempt in admitted {
            throttle.finish(attempt, false, t0);
        }
        assert!(throttle.admit("a@x.io", HOME, t0).is_err());
    }

    #[test]
    fn a_success_clears_the_email_but_not_the_address() {
        let mut throttle = LoginThrottle::new(LIMITS);
        let t0 = Instant::now();
        fail(&mut throttle, "a@x.io", HOME, t0);
        fail(&mut throttle, "a@x.io", HOME, t0);
        let attempt = throttle.admit("a@x.io", HOME, t0).unwrap();
        throttle.finish(attempt, true, t0);
        for _ in 0..2 {
            fail(&mut throttle, "a@x.io", HOME, t0);
        }
        assert!(
            throttle.admit("a@x.io", HOME, t0).is_ok(),
            "2 of 3 after the reset"
        );
        assert!(
            throttle.admit("z@x.io", HOME, t0).is_err(),
            "the address has 4 + 1 undecided"
        );
    }

    #[test]
    fn memory_follows_the_window() {
        let mut throttle = LoginThrottle::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..2000 {
            fail(&mut throttle, &format!("u{i}@x.io"), None, t0);
        }
        assert_eq!(throttle.tracked(), (2000, 0));
        let later = t0 + Duration::from_secs(120);
        for i in 0..SWEEP_EVERY {
            let attempt = throttle.admit(&format!("v{i}@x.io"), None, later).unwrap();
            throttle.finish(attempt, true, later);
        }
        assert_eq!(throttle.tracked(), (0, 0));
    }
}
