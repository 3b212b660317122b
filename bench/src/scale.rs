//! Scale-out: one, two and three runtimes hosting recommendations and analytics drain the same
//! pre-produced backlog, each time from its start (a fresh database, the consumer groups
//! deleted). Reports events/s for each count, and checks that the answers of
//! `/recommendations` and `/analytics/...` after each drain are those of one runtime.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};

use crate::pipeline::{self, Backlog};
use crate::runtime::{self, Config, Database, Paths, Runtime};
use crate::{median_by, topic_layout, Args, Row};

/// How many runtimes share the consumer groups, run after run.
const COUNTS: [usize; 3] = [1, 2, 3];

/// One drain of the backlog by `runtimes` runtimes.
#[derive(Debug, Clone, Serialize)]
struct Drain {
    runtimes: usize,
    /// Events per second of each group, from the first spawn until both groups applied the
    /// backlog.
    events_per_sec: f64,
    seconds: f64,
    /// Records each runtime applied, `[recommendations, analytics]`: the work was shared.
    applied_per_runtime: Vec<[f64; 2]>,
    runtimes_cpu_seconds: f64,
    postgres_cpu_seconds: f64,
    brokers_cpu_seconds: f64,
    /// The answers read after the drain, by path.
    #[serde(skip)]
    answers: Vec<(String, Value)>,
}

pub async fn phase(args: &Args, paths: &Paths, config: &Config) -> anyhow::Result<Vec<Row>> {
    let mut config = config.clone();
    config.topic_prefix = format!("{}scale.", config.topic_prefix);
    // Scores at a ten-year half-life: answers read minutes apart differ by less than 1e-5.
    config
        .extra_env
        .push(("RANKING_HALF_LIFE".into(), "3650d".into()));
    eprintln!("scale-out: producing {} events", args.scale_events);
    let backlog = pipeline::produce(
        &config.brokers,
        &config.topic_prefix,
        topic_layout(args),
        args.scale_events,
    )
    .await?;
    let drains = drains(args, paths, &config, &backlog).await?;
    pipeline::delete_topics_and_groups(&config.brokers, &config.topic_prefix).await?;
    let per_count: Vec<Vec<&Drain>> = COUNTS
        .iter()
        .map(|&n| drains.iter().filter(|d| d.runtimes == n).collect())
        .collect();
    let median = |items: &[&Drain]| {
        let rates: Vec<f64> = items.iter().map(|d| d.events_per_sec).collect();
        median_by(&rates, |r| *r).unwrap_or(f64::NAN)
    };
    let one = median(&per_count[0]);
    Ok(COUNTS
        .iter()
        .zip(&per_count)
        .map(|(&n, items)| {
            let rate = median(items);
            Row {
                phase: "scale-out",
                metric: format!(
                    "{} events applied by both groups shared by {n} runtime(s) vs 1 runtime, events/s",
                    args.scale_events
                ),
                ours: rate,
                ceiling: one,
                ratio: rate / one,
                target: "same answers".into(),
                // Every drain's answers were compared with one runtime's (a difference fails
                // the phase).
                met: true,
                detail: json!({ "rounds": items }),
            }
        })
        .collect())
}

/// Every round's drains: one, two, then three runtimes; the answers of each compared with the
/// first drain's (one runtime).
async fn drains(
    args: &Args,
    paths: &Paths,
    config: &Config,
    backlog: &Backlog,
) -> anyhow::Result<Vec<Drain>> {
    let mut drains: Vec<Drain> = Vec::new();
    for round in 0..args.rounds {
        for runtimes in COUNTS {
            eprintln!(
                "scale-out round {}/{}: {runtimes} runtime(s)",
                round + 1,
                args.rounds
            );
            let drain = drain(args, paths, config, backlog, runtimes).await?;
            if let Some(first) = drains.first() {
                same_answers(&first.answers, &drain.answers).with_context(|| {
                    format!("{runtimes} runtimes answered otherwise than one runtime")
                })?;
            }
            drains.push(drain);
        }
    }
    Ok(drains)
}

/// `runtimes` runtimes hosting recommendations and analytics drain the backlog from its start,
/// on a fresh database; a runtime hosting users (on topics of its own) gives the admin token
/// the analytics answers need.
async fn drain(
    args: &Args,
    paths: &Paths,
    config: &Config,
    backlog: &Backlog,
    runtimes: usize,
) -> anyhow::Result<Drain> {
    pipeline::delete_groups(&config.brokers, &config.topic_prefix).await?;
    let database = Database::create(&paths.postgres).await?;
    let mut config = config.clone();
    config.database_url = database.url.clone();
    let result = measure(args, paths, &config, backlog, runtimes).await;
    database.drop_now().await;
    result
}

async fn measure(
    args: &Args,
    paths: &Paths,
    config: &Config,
    backlog: &Backlog,
    count: usize,
) -> anyhow::Result<Drain> {
    let client = reqwest::Client::new();
    let mut front_config = config.clone();
    front_config.topic_prefix = format!("{}front.", config.topic_prefix);
    // It migrates the fresh database before the others start.
    let front = Runtime::start(paths, &front_config, &["users"], "scale-front.log").await?;
    let login: Value = client
        .post(format!("{}/users/login", front.url("users")))
        .json(&json!({"email": config.admin_email, "password": config.admin_password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("admin token")?.to_string();

    let postgres_before = runtime::postgres_cpu_seconds();
    let brokers_before = runtime::brokers_cpu_seconds();
    let spawned = Instant::now();
    let logs: Vec<String> = (0..count)
        .map(|i| format!("scale-{count}-{i}.log"))
        .collect();
    let started = futures_util::future::try_join_all(
        logs.iter()
            .map(|log| Runtime::start(paths, config, &["recommendations", "analytics"], log)),
    )
    .await?;
    let total = args.scale_events as f64;
    let bar = pipeline::bar(args.scale_events * 2, &format!("{count} runtime(s)"));
    let (seconds, applied_per_runtime) = loop {
        let mut applied = Vec::new();
        for runtime in &started {
            let text = runtime::metrics_text(&client, &runtime.url("recommendations"))
                .await
                .unwrap_or_default();
            applied.push(["recommendations", "analytics"].map(|service| {
                let service = format!("service=\"{service}\"");
                runtime::sum_of(
                    &text,
                    "kafka_messages_consumed_total",
                    &[&service, "status=\"ok\""],
                )
            }));
        }
        let sums = [0, 1].map(|i| applied.iter().map(|a| a[i]).sum::<f64>());
        bar.set_position((sums[0] + sums[1]) as u64);
        // Each record is applied once, by whichever runtime held its partition: both sums at
        // the backlog's size mean everything is applied.
        if sums[0] >= total && sums[1] >= total {
            break (spawned.elapsed().as_secs_f64(), applied);
        }
        if spawned.elapsed() > Duration::from_secs(3600) {
            bail!("{count} runtimes did not apply the backlog within an hour ({sums:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish();
    let runtimes_cpu_seconds = started
        .iter()
        .map(|r| r.cpu_seconds().unwrap_or(f64::NAN))
        .sum();
    let postgres_cpu_seconds = runtime::postgres_cpu_seconds() - postgres_before;
    let brokers_cpu_seconds = runtime::brokers_cpu_seconds() - brokers_before;
    let base = started[0].url("recommendations");
    runtime::wait_for(Duration::from_secs(30), "the consumer lag to read 0", || {
        let (client, base) = (client.clone(), base.clone());
        async move { runtime::metric_sum(&client, &base, "kafka_consumer_lag", &[]).await == 0.0 }
    })
    .await?;
    let answers = answers(
        &client,
        &base,
        &started[0].url("analytics"),
        &token,
        backlog,
    )
    .await?;
    for runtime in started {
        runtime.stop().await;
    }
    front.stop().await;
    Ok(Drain {
        runtimes: count,
        events_per_sec: total / seconds,
        seconds,
        applied_per_runtime,
        runtimes_cpu_seconds,
        postgres_cpu_seconds,
        brokers_cpu_seconds,
        answers,
    })
}

/// The answers compared between drains: the global ranking, similar items and the analytics of
/// some products and users, and the totals (without the last-hour figures, which move with the
/// clock).
async fn answers(
    client: &reqwest::Client,
    recommendations: &str,
    analytics: &str,
    token: &str,
    backlog: &Backlog,
) -> anyhow::Result<Vec<(String, Value)>> {
    let mut paths = vec![(recommendations, "/recommendations?limit=100".to_string())];
    for product in backlog.products.iter().take(3) {
        paths.push((
            recommendations,
            format!("/recommendations/products/{product}/similar?limit=20"),
        ));
        paths.push((analytics, format!("/analytics/products/{product}")));
    }
    for user in backlog.active_users.iter().take(3) {
        paths.push((analytics, format!("/analytics/users/{user}")));
    }
    for by in ["views", "purchases", "units_sold"] {
        paths.push((
            analytics,
            format!("/analytics/products/top?by={by}&limit=20"),
        ));
    }
    paths.push((analytics, "/analytics/summary".to_string()));
    let mut out = Vec::new();
    for (base, path) in paths {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
        let mut body: Value = response.json().await?;
        if let Some(summary) = body.as_object_mut() {
            summary.remove("events_last_hour");
            summary.remove("active_users_last_hour");
        }
        out.push((path, body));
    }
    Ok(out)
}

/// The same paths with the same answers: equal JSON, numbers within a relative 1e-5 (decayed
/// scores read at different instants).
fn same_answers(want: &[(String, Value)], got: &[(String, Value)]) -> anyhow::Result<()> {
    if want.len() != got.len() {
        bail!("{} answers instead of {}", got.len(), want.len());
    }
    for ((path, a), (other, b)) in want.iter().zip(got) {
        if path != other || !same(a, b) {
            bail!("{path}:\n  one runtime: {a}\n  now:         {b}");
        }
    }
    Ok(())
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-5 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
