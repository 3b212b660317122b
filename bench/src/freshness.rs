//! Freshness: while activity is posted at a fixed rate (open loop), how long from a purchase's
//! `202` until the first `GET /recommendations` that shows it.
//!
//! Every probe is the first purchase of a product with no activity, alone in its category, so
//! `GET /recommendations?category=<its category>&limit=1` shows score 0 until the purchase is
//! applied and cached answers are invalidated, and a positive score after.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::pipeline::bar;

/// What the freshness phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// Posts per second achieved (all 202).
    pub posts_per_sec: f64,
    pub probes: u64,
    /// Probes not reflected within 10 s.
    pub missed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The runtime's own histograms over the round, stage by stage (count, p50, p99): the
    /// outbox relay (transaction to broker acknowledgement), the recommendations consumer
    /// (record produced to batch committed), one ranking flush, one refresh of the global
    /// answers. Filled in by the caller.
    pub stages: Value,
}

/// A user who posts: `(id, token)`.
pub type User = (String, String);

/// Posts `rate` activities a second for `duration` from `users` on `background` products;
/// every `probe_every`-th post is instead a purchase of the next of `probes` (product id,
/// category), whose freshness is measured.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &reqwest::Client,
    users_url: &str,
    recommendations_url: &str,
    users: &[User],
    background: &[String],
    probes: &[(String, String)],
    rate: u32,
    duration: Duration,
    probe_every: u64,
) -> anyhow::Result<Freshness> {
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    ));
    let missed = Arc::new(Mutex::new(0u64));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let in_flight = Arc::new(Semaphore::new(512));
    let total = rate as u64 * duration.as_secs();
    let bar = bar(total, "freshness load");
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut next_probe = 0usize;
    for n in 0..total {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (user, token) = users[n as usize % users.len()].clone();
        let probe = (n.is_multiple_of(probe_every) && next_probe < probes.len()).then(|| {
            next_probe += 1;
            probes[next_probe - 1].clone()
        });
        let body = match &probe {
            Some((product, _)) => json!({"type": "purchase", "product_id": product}),
            None => {
                json!({"type": "view", "product_id": background[n as usize % background.len()]})
            }
        };
        let (client, url) = (client.clone(), format!("{users_url}/users/{user}/activity"));
        let recommendations = recommendations_url.to_string();
        let (histogram, missed, failures, bar) = (
            histogram.clone(),
            missed.clone(),
            failures.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let reply = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            let accepted_at = Instant::now();
            match reply {
                Ok(r) if r.status().as_u16() == 202 => {}
                Ok(r) => {
                    failures.lock().unwrap().push(format!("{}", r.status()));
                    return;
                }
                Err(e) => {
                    failures.lock().unwrap().push(e.to_string());
                    return;
                }
            }
            drop(permit);
            bar.inc(1);
            let Some((_, category)) = probe else { return };
            let url = format!("{recommendations}/recommendations?category={category}&limit=1");
            loop {
                let shown = client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.json::<Value>())
                    .map(|f| async { f.await.ok() });
                let scored = match shown {
                    Some(f) => f.await.is_some_and(|v| v[0]["score"].as_f64() > Some(0.0)),
                    None => false,
                };
                let waited = accepted_at.elapsed();
                if scored {
                    let micros = waited.as_micros().max(1) as u64;
                    histogram.lock().unwrap().record(micros).ok();
                    return;
                }
                if waited > Duration::from_secs(10) {
                    *missed.lock().unwrap() += 1;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let posting = started.elapsed();
    for task in tasks {
        task.await.context("a load task panicked")?;
    }
    bar.finish();
    let failures = failures.lock().unwrap().clone();
    if !failures.is_empty() {
        bail!(
            "{} posts were not accepted, e.g. {}",
            failures.len(),
            failures[0]
        );
    }
    let histogram = histogram.lock().unwrap();
    let missed = *missed.lock().unwrap();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Freshness {
        posts_per_sec: total as f64 / posting.as_secs_f64(),
        probes: histogram.len() + missed,
        missed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
        stages: Value::Null,
    })
}
