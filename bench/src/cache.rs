//! Cache under writes: the Redis hit ratio of `GET /recommendations?limit=10` while a storefront
//! reads and writes at fixed rates (open loop), on a runtime hosting all four services with the
//! micro-cache off (`RECOMMENDATION_LOCAL_TTL_MS=0`), so that every read asks the query actor
//! and Redis.
//!
//! The reads are half the home page (no category) and half a category page (one of the seeded
//! categories, uniformly); the writes are views, cart adds and purchases of the seeded users on
//! the seeded products, all categories alike. After a warm-up the load runs on through
//! `--rounds` windows of `--seconds`; each window's hit ratio is the delta of the runtime's own
//! `recommendation_cache_requests_total{result}` over it, beside the rates achieved (an
//! overloaded generator shows as rates below the targets), the latencies and the answers that
//! were not 2xx.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::freshness::User;
use crate::pipeline::bar;
use crate::runtime::{self, Config, Database, Paths, Runtime};
use crate::{median_by, seed, Args, Row};

/// Reads a second: `GET /recommendations?limit=10`.
const READS_PER_SEC: u32 = 2000;
/// Writes a second: `POST /users/{id}/activity`.
const WRITES_PER_SEC: u32 = 1000;
/// Load before the first measured window.
const WARMUP: Duration = Duration::from_secs(5);
/// The hit ratio the row asks for.
const TARGET: f64 = 0.9;
/// A window measures the row only if it achieved this share of both target rates.
const RATE_FLOOR: f64 = 0.95;
/// Requests in flight at most; when they are all waiting, the schedule falls behind (and the
/// achieved rates show it).
const IN_FLIGHT: u32 = 1024;

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// `hits / (hits + misses)` of `recommendation_cache_requests_total` over the window.
    hit_ratio: f64,
    hits: f64,
    misses: f64,
    /// `(hits + misses)` per read answered: 1 when every read reached the query actor (the
    /// micro-cache is off), less if something else answered some.
    lookups_per_read: f64,
    seconds: f64,
    /// Reads and writes answered (any status) a second.
    reads_per_sec: f64,
    writes_per_sec: f64,
    read_p50_ms: f64,
    read_p99_ms: f64,
    write_p50_ms: f64,
    write_p99_ms: f64,
    /// Answers other than 2xx.
    read_non_2xx: u64,
    write_non_2xx: u64,
    /// Requests without an answer (connection errors).
    read_failed: u64,
    write_failed: u64,
    /// Batches the ranking flushed a second (`ranking_flush_duration_seconds_count`).
    ranking_flushes_per_sec: f64,
    /// How far behind its schedule the generator sent a request, at most.
    max_schedule_lag_ms: f64,
}

impl Round {
    /// Both target rates achieved (to [`RATE_FLOOR`]).
    fn at_target_rates(&self) -> bool {
        self.reads_per_sec >= RATE_FLOOR * f64::from(READS_PER_SEC)
            && self.writes_per_sec >= RATE_FLOOR * f64::from(WRITES_PER_SEC)
    }

    fn errors(&self) -> u64 {
        self.read_non_2xx + self.write_non_2xx + self.read_failed + self.write_failed
    }
}

/// The phase: a runtime of its own (database, topics, Redis prefix), seeded, then loaded.
pub async fn phase(args: &Args, paths: &Paths, config: &Config) -> anyhow::Result<Row> {
    let database = Database::create(&paths.postgres).await?;
    let mut config = config.clone();
    config.database_url = database.url.clone();
    config.topic_prefix = format!("{}cache.", config.topic_prefix);
    config.redis_prefix = format!("{}cache:", config.redis_prefix);
    // Last, so that it wins over a `--runtime-env` of the same name: the row is about Redis.
    config
        .extra_env
        .push(("RECOMMENDATION_LOCAL_TTL_MS".into(), "0".into()));
    let result = measure(args, paths, &config).await;
    database.drop_now().await;
    let rounds = result?;
    Ok(row(&rounds))
}

async fn measure(args: &Args, paths: &Paths, config: &Config) -> anyhow::Result<Vec<Round>> {
    let runtime = Runtime::start(
        paths,
        config,
        &["users", "products", "recommendations", "analytics"],
        "cache-runtime.log",
    )
    .await?;
    let seed = seed(&runtime, config, 0).await?;
    // Idle connections are dropped before the server's keep-alive (5 s) would close them under
    // a request.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT as usize)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let load = Load {
        client,
        users_url: runtime.url("users"),
        recommendations_url: runtime.url("recommendations"),
        users: seed.users,
        products: seed.background,
        categories: seed.categories,
        window: Duration::from_secs(args.seconds),
        rounds: args.rounds,
    };
    let rounds = load.run().await?;
    runtime.stop().await;
    Ok(rounds)
}

/// The row: the median round's hit ratio against the absolute target.
fn row(rounds: &[Round]) -> Row {
    let median = median_by(rounds, |r| r.hit_ratio);
    let ours = median.as_ref().map_or(f64::NAN, |r| r.hit_ratio);
    let at_rates = !rounds.is_empty() && rounds.iter().all(Round::at_target_rates);
    let errors: u64 = rounds.iter().map(Round::errors).sum();
    let mut metric = format!(
        "Redis hit ratio of GET /recommendations?limit=10 at {READS_PER_SEC} reads/s (half home, \
         half a category) and {WRITES_PER_SEC} writes/s, open loop, micro-cache off"
    );
    if !at_rates {
        let range = |f: fn(&Round) -> f64| {
            let values = rounds.iter().map(f);
            let min = values.clone().fold(f64::INFINITY, f64::min);
            let max = values.fold(f64::NEG_INFINITY, f64::max);
            format!("{min:.0}-{max:.0}")
        };
        metric.push_str(&format!(
            "; RATES NOT REACHED (< {:.0} % of target): reads {}/s, writes {}/s",
            RATE_FLOOR * 100.0,
            range(|r| r.reads_per_sec),
            range(|r| r.writes_per_sec),
        ));
    }
    if errors > 0 {
        metric.push_str(&format!("; {errors} requests not 2xx or unanswered"));
    }
    Row {
        phase: "cache",
        metric,
        ours,
        ceiling: f64::NAN,
        ratio: ours / TARGET,
        target: format!(">= {TARGET}"),
        // Measured at the row's rates, every request answered 2xx, and the ratio reached.
        met: ours >= TARGET && at_rates && errors == 0,
        detail: json!({
            "reads_per_sec_target": READS_PER_SEC,
            "writes_per_sec_target": WRITES_PER_SEC,
            "warmup_seconds": WARMUP.as_secs(),
            "at_target_rates": at_rates,
            "median_round": median,
            "rounds": rounds,
        }),
    }
}

/// What the generator sends, and to whom.
struct Load {
    client: reqwest::Client,
    users_url: String,
    recommendations_url: String,
    users: Vec<User>,
    products: Vec<String>,
    categories: Vec<String>,
    window: Duration,
    rounds: usize,
}

/// Latencies and outcomes of one kind of request in one window.
struct Tally {
    /// Microseconds from sending to the end of the answer's body.
    latency: Histogram<u64>,
    answered: u64,
    non_2xx: u64,
    failed: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
            answered: 0,
            non_2xx: 0,
            failed: 0,
        }
    }

    fn record(&mut self, sent: Instant, status: Option<reqwest::StatusCode>) {
        match status {
            Some(status) => {
                self.answered += 1;
                if !status.is_success() {
                    self.non_2xx += 1;
                }
                let micros = sent.elapsed().as_micros().max(1) as u64;
                self.latency.saturating_record(micros);
            }
            None => self.failed += 1,
        }
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Window 0 is the warm-up, 1..=rounds the measured ones, the last what completes after.
struct Windows {
    current: AtomicUsize,
    tallies: Mutex<Vec<[Tally; 2]>>,
}

const READ: usize = 0;
const WRITE: usize = 1;

/// Counters read from `/metrics` at a window's start.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    hits: f64,
    misses: f64,
    flushes: f64,
}

/// The activity a write records: mostly views, some cart adds, a few purchases.
fn action(draw: u64) -> &'static str {
    match draw % 100 {
        0..=79 => "view",
        80..=94 => "cart_add",
        _ => "purchase",
    }
}

/// splitmix64: a reproducible stream of choices without another dependency.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An index below `n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl Load {
    /// Runs the warm-up and every window; answers the measured windows.
    async fn run(&self) -> anyhow::Result<Vec<Round>> {
        let windows = Arc::new(Windows {
            current: AtomicUsize::new(0),
            tallies: Mutex::new(
                (0..self.rounds + 2)
                    .map(|_| [Tally::new(), Tally::new()])
                    .collect(),
            ),
        });
        let total = WARMUP + self.window * self.rounds as u32;
        let bar = bar(
            u64::from(READS_PER_SEC + WRITES_PER_SEC) * total.as_secs(),
            "cache load",
        );
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT as usize));
        let started = Instant::now();
        let (lags, snapshots) = tokio::join!(
            self.send(started, total, &windows, &in_flight, &bar),
            self.clock(started, &windows),
        );
        // Every request answered (or failed): all permits back.
        let _all = in_flight.acquire_many(IN_FLIGHT).await?;
        bar.finish();
        let snapshots = snapshots?;
        let lags = lags?;
        let tallies = windows.tallies.lock().unwrap();
        let mut rounds = Vec::new();
        for k in 1..=self.rounds {
            let (start, end) = (snapshots[k - 1], snapshots[k]);
            let seconds = (end.at - start.at).as_secs_f64();
            let (hits, misses) = (end.hits - start.hits, end.misses - start.misses);
            let [reads, writes] = &tallies[k];
            if reads.answered > 0 && hits + misses == 0.0 {
                bail!("recommendation_cache_requests_total did not move while reads were answered");
            }
            let round = Round {
                hit_ratio: hits / (hits + misses),
                hits,
                misses,
                lookups_per_read: (hits + misses) / reads.answered as f64,
                seconds,
                reads_per_sec: reads.answered as f64 / seconds,
                writes_per_sec: writes.answered as f64 / seconds,
                read_p50_ms: reads.ms(0.5),
                read_p99_ms: reads.ms(0.99),
                write_p50_ms: writes.ms(0.5),
                write_p99_ms: writes.ms(0.99),
                read_non_2xx: reads.non_2xx,
                write_non_2xx: writes.non_2xx,
                read_failed: reads.failed,
                write_failed: writes.failed,
                ranking_flushes_per_sec: (end.flushes - start.flushes) / seconds,
                max_schedule_lag_ms: lags[k],
            };
            eprintln!(
                "cache round {k}/{}: hit ratio {:.3} ({hits} hits, {misses} misses), \
                 {:.0} reads/s, {:.0} writes/s, read p50 {:.2} ms p99 {:.2} ms, \
                 {} not 2xx or unanswered, {:.1} flushes/s, {:.2} lookups/read",
                self.rounds,
                round.hit_ratio,
                round.reads_per_sec,
                round.writes_per_sec,
                round.read_p50_ms,
                round.read_p99_ms,
                round.errors(),
                round.ranking_flushes_per_sec,
                round.lookups_per_read,
            );
            rounds.push(round);
        }
        Ok(rounds)
    }

    /// Sends both streams on their schedule (request `n` of a stream at `rate` is due `n / rate`
    /// seconds after `started`) until `total`; answers the largest lag behind it per window, ms.
    async fn send(
        &self,
        started: Instant,
        total: Duration,
        windows: &Arc<Windows>,
        in_flight: &Arc<Semaphore>,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<Vec<f64>> {
        let mut lags = vec![0.0f64; self.rounds + 2];
        let mut choices = Choices(0x5eed);
        let mut sent = [0u64; 2];
        let rates = [f64::from(READS_PER_SEC), f64::from(WRITES_PER_SEC)];
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let elapsed = started.elapsed().min(total).as_secs_f64();
            // Interleaved: a write, then the reads due with it.
            loop {
                let due = |kind: usize| (elapsed * rates[kind]) as u64 > sent[kind];
                let kind = if due(WRITE) {
                    WRITE
                } else if due(READ) {
                    READ
                } else {
                    break;
                };
                let permit = in_flight.clone().acquire_owned().await?;
                let window = windows.current.load(Ordering::Relaxed);
                let lag = started.elapsed().as_secs_f64() - sent[kind] as f64 / rates[kind];
                lags[window] = lags[window].max(lag * 1000.0);
                sent[kind] += 1;
                let request = if kind == READ {
                    self.read(&mut choices)
                } else {
                    self.write(&mut choices)
                };
                let (windows, bar) = (windows.clone(), bar.clone());
                tokio::spawn(async move {
                    let at = Instant::now();
                    let status = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            response.bytes().await.ok().map(|_| status)
                        }
                        Err(_) => None,
                    };
                    let window = windows.current.load(Ordering::Relaxed);
                    windows.tallies.lock().unwrap()[window][kind].record(at, status);
                    bar.inc(1);
                    drop(permit);
                });
            }
            if started.elapsed() >= total {
                return Ok(lags);
            }
        }
    }

    /// A home page (no category) or a category page, one in two.
    fn read(&self, choices: &mut Choices) -> reqwest::RequestBuilder {
        let base = &self.recommendations_url;
        let url = if choices.below(2) == 0 {
            format!("{base}/recommendations?limit=10")
        } else {
            let category = &self.categories[choices.below(self.categories.len())];
            format!("{base}/recommendations?limit=10&category={category}")
        };
        self.client.get(url)
    }

    /// An action of a seeded user on a seeded product, both uniformly.
    fn write(&self, choices: &mut Choices) -> reqwest::RequestBuilder {
        let (user, token) = &self.users[choices.below(self.users.len())];
        let product = &self.products[choices.below(self.products.len())];
        let body = json!({"type": action(choices.next()), "product_id": product});
        self.client
            .post(format!("{}/users/{user}/activity", self.users_url))
            .bearer_auth(token)
            .json(&body)
    }

    /// Moves to the next window at each boundary (after the warm-up, then every window) and
    /// reads the counters there; answers the `rounds + 1` snapshots.
    async fn clock(&self, started: Instant, windows: &Windows) -> anyhow::Result<Vec<Snapshot>> {
        let client = reqwest::Client::new();
        let mut snapshots = Vec::new();
        for k in 0..=self.rounds {
            let boundary = started + WARMUP + self.window * k as u32;
            tokio::time::sleep_until(boundary.into()).await;
            windows.current.store(k + 1, Ordering::Relaxed);
            let at = Instant::now();
            let text = runtime::metrics_text(&client, &self.recommendations_url)
                .await
                .context("reading the recommendations port's /metrics")?;
            let count = |result: &str| {
                let filter = format!("result=\"{result}\"");
                runtime::sum_of(&text, "recommendation_cache_requests_total", &[&filter])
            };
            snapshots.push(Snapshot {
                at,
                hits: count("hit"),
                misses: count("miss"),
                flushes: runtime::sum_of(&text, "ranking_flush_duration_seconds_count", &[]),
            });
        }
        Ok(snapshots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(hit_ratio: f64, reads_per_sec: f64, non_2xx: u64) -> Round {
        Round {
            hit_ratio,
            hits: hit_ratio * 1000.0,
            misses: (1.0 - hit_ratio) * 1000.0,
            lookups_per_read: 1.0,
            seconds: 10.0,
            reads_per_sec,
            writes_per_sec: 1000.0,
            read_p50_ms: 1.0,
            read_p99_ms: 5.0,
            write_p50_ms: 2.0,
            write_p99_ms: 8.0,
            read_non_2xx: non_2xx,
            write_non_2xx: 0,
            read_failed: 0,
            write_failed: 0,
            ranking_flushes_per_sec: 10.0,
            max_schedule_lag_ms: 1.0,
        }
    }

    /// The row reports the median round and is met only at the target rates, without errors.
    #[test]
    fn met_needs_the_ratio_the_rates_and_no_errors() {
        let met = row(&[
            round(0.95, 2000.0, 0),
            round(0.8, 2000.0, 0),
            round(0.92, 2000.0, 0),
        ]);
        assert_eq!(met.ours, 0.92);
        assert!(met.met);
        let missed = row(&[
            round(0.5, 2000.0, 0),
            round(0.4, 2000.0, 0),
            round(0.95, 2000.0, 0),
        ]);
        assert_eq!(missed.ours, 0.5);
        assert!(!missed.met);
        let slow = row(&[round(0.95, 1800.0, 0)]);
        assert!(!slow.met);
        assert!(slow.metric.contains("RATES NOT REACHED"));
        let failing = row(&[round(0.95, 2000.0, 3)]);
        assert!(!failing.met);
    }
}
