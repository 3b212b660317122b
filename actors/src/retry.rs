//! Retrying an operation until it succeeds: exponential backoff with jitter.
//!
//! The actors retry what must eventually happen (a batch applied, a record dead-lettered, a
//! topic created) rather than give up: the dependency that failed comes back. Each wait is
//! drawn uniformly from the upper half of the current backoff, so that consumers which failed
//! together (a database outage hits both groups of every runtime at once) do not retry in step.

use std::future::Future;
use std::time::Duration;

use slog::{warn, Logger};

/// The first backoff; each failure doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, logging each failure with `what` and waiting
/// [`jittered`] backoffs between attempts.
pub async fn until_ok<R, F, Fut>(logger: &Logger, what: &str, mut attempt: F) -> R
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Ok(r) => return r,
            Err(e) => {
                let wait = jittered(backoff);
                warn!(logger, "retrying"; "what" => what, "error" => format!("{e:#}"), "backoff_ms" => wait.as_millis() as u64);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A wait drawn uniformly from `[backoff / 2, backoff]`.
pub fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(unit_random())
}

/// A number in `[0, 1)` that differs between calls, threads and processes: the sub-second
/// clock mixed with a per-call counter (jitter needs spread, not secrecy).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Every wait lies in the upper half of its backoff, and the waits are spread out.
    fn waits_are_jittered_within_the_upper_half() {
        let backoff = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(backoff)).collect();
        assert!(waits.iter().all(|w| *w >= backoff / 2 && *w <= backoff));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
    }

    #[actix_rt::test]
    /// An operation that fails twice is tried a third time and its value answered.
    async fn an_operation_is_retried_until_it_succeeds() {
        let logger = Logger::root(slog::Discard, slog::o!());
        let mut attempts = 0;
        let value = until_ok(&logger, "test", || {
            attempts += 1;
            let attempt = attempts;
            async move {
                anyhow::ensure!(attempt >= 3, "attempt {attempt} fails");
                Ok(attempt * 10)
            }
        })
        .await;
        assert_eq!((value, attempts), (30, 3));
    }
}
