//! `recsys demo --traffic RATE`: live actions, occurring now, at RATE per second until SIGINT or
//! SIGTERM, so that the trending ranking, the last hour's counts and the dashboards move.
//!
//! The actions come from the same distributions as the backfill: whole sessions of shoppers
//! drawn by activity (views, then sometimes a cart add and its removal or purchase), queued and
//! sent in order, so a session's funnel stays in order on the wire. Every 200 ms the actions
//! due by then go out in one `POST /activity/batch` (at most 1000) with a fresh
//! `Idempotency-Key`, which makes the client's retries of it safe.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slog::{info, Logger};
use tokio::signal::unix::{signal, SignalKind};

use super::client::{Auth, Client, DemoError};
use super::plan::{Batch, Plan, PlannedAction, Rng, MAX_BATCH};
use super::{batch_body, Ids};
use crate::config::Secret;

/// How often due actions are sent.
const TICK: Duration = Duration::from_millis(200);

/// How often a progress line is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Sends live actions at `rate` per second until SIGINT or SIGTERM; answers how many were sent.
pub async fn run(
    client: &Client,
    plan: &Plan,
    ids: Ids<'_>,
    users_url: &str,
    api_key: &Secret,
    rate: f64,
    logger: &Logger,
) -> Result<u64, DemoError> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| DemoError::Invalid(format!("listening for SIGTERM: {e}")))?;
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::pin!(stop);
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut rng = Rng::new(plan.seed, &format!("traffic/{started_nanos}"));
    let mut queue: VecDeque<PlannedAction> = VecDeque::new();
    let url = format!("{users_url}/activity/batch");
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent: u64 = 0;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(logger, "demo: live traffic until SIGINT/SIGTERM"; "rate_per_sec" => rate);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let n = (due.saturating_sub(sent) as usize).min(MAX_BATCH);
        if n == 0 {
            continue;
        }
        while queue.len() < n {
            let user = plan.live_user(&mut rng);
            queue.extend(plan.session(user, 0, &mut rng));
        }
        let batch = Batch {
            actions: queue.drain(..n).collect(),
            through: Vec::new(),
        };
        let body = batch_body(&batch, ids, None);
        let key = format!("recsys-demo/{}/traffic/{}", plan.seed, uuid::Uuid::new_v4());
        client
            .post(&url, &body, Auth::Key(api_key), Some(&key))
            .await?
            .success()?;
        sent += n as u64;
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            info!(logger, "demo: live traffic"; "sent" => sent,
                "rate_per_sec" => format!("{:.1}", sent as f64 / started.elapsed().as_secs_f64()));
        }
    }
    info!(logger, "demo: live traffic stopped"; "sent" => sent,
        "seconds" => format!("{:.1}", started.elapsed().as_secs_f64()));
    Ok(sent)
}
