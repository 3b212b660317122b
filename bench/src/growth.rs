//! Growth (`--phases growth`): how the cost grows with the data, every point measured by this
//! phase on data that arrived the way the system gets it (events produced into Kafka, applied by
//! a runtime hosting recommendations and analytics).
//!
//! - **Reads.** For each point of the grid (`--growth-products` at the first of
//!   `--growth-users`, then each further `--growth-users` at the first of `--growth-products`):
//!   a backlog naming that many products and users (every product created, every user acting at
//!   least once) is produced and applied; then wrk reads `GET /recommendations?limit=10`, a
//!   user's recommendations and a product's similar items, each **warm** (one key, answered by
//!   the worker's micro-cache or Redis) and the last two with **varied** keys (a different user
//!   or product and `limit` on each request, so nearly every request is a cache miss computed
//!   by Postgres; the share that reached Postgres is measured). `EXPLAIN ANALYZE` of the
//!   service's three statements at each point says where the time goes.
//! - **Pipeline.** One backlog of the largest `--growth-events`, applied from its start; at each
//!   of `--growth-events` applied by both groups: events/s so far and of the last stretch, CPU
//!   seconds of the runtime, Postgres and the Kafka nodes, and every table's size.
//! - **Scale-out.** The `scale` phase's drains by 1, 2 and 3 runtimes (run here unless `scale`
//!   ran in the same invocation), with the partition count and CPU split that bound the next step.
//!
//! It writes SVG charts (`--growth-plots`, `docs/` by default) and answers the `growth` object of
//! the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::pipeline::{self, Backlog, Shape};
use crate::plot::{self, Chart, Scale, Series};
use crate::runtime::{self, Config, Paths, Runtime};
use crate::{median_by, topic_layout, Args, Row};

/// Requests of one wrk run, from the `done` hook of its script.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct WrkRun {
    requests: f64,
    duration_us: f64,
    connect: f64,
    read: f64,
    write: f64,
    /// Answers other than 2xx/3xx.
    status: f64,
    timeout: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl WrkRun {
    fn per_sec(&self) -> f64 {
        self.requests / (self.duration_us / 1e6)
    }
}

/// One read measured at a point: the median round.
#[derive(Debug, Clone, Serialize)]
struct Read {
    /// `global`, `personal` or `similar`.
    route: &'static str,
    /// `warm` (one key) or `varied` (a key per request).
    keys: &'static str,
    connections: u32,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Answers other than 2xx in the median round (`503`: the statement outlived the runtime's
    /// `DB_TIMEOUT_MS`).
    non_2xx: f64,
    /// Requests that went past the micro-cache and Redis to Postgres, as a share of all
    /// (varied keys only; from `recommendation_cache_requests_total`).
    postgres_share: Option<f64>,
    timeouts: f64,
    rounds: Vec<f64>,
}

/// A table's size at a moment.
#[derive(Debug, Clone, Serialize)]
struct Table {
    name: String,
    /// `pg_total_relation_size`: heap, indexes and TOAST.
    bytes: u64,
    /// `n_live_tup` (the statistics' estimate).
    rows: u64,
}

/// One point of the read grid.
#[derive(Debug, Clone, Serialize)]
struct ReadPoint {
    products: u64,
    users: u64,
    events: u64,
    produce_seconds: f64,
    /// Events per second of each group, from the runtime's spawn to both groups done.
    apply_events_per_sec: f64,
    apply_seconds: f64,
    tables: Vec<Table>,
    reads: Vec<Read>,
    /// `EXPLAIN ANALYZE` of the service's statements: execution ms and the plan, summarized.
    explain: Vec<Value>,
}

/// The pipeline at one checkpoint of its backlog.
#[derive(Debug, Clone, Serialize)]
struct Checkpoint {
    /// Events applied by each group.
    events: u64,
    seconds_from_spawn: f64,
    events_per_sec: f64,
    /// Events per second since the previous checkpoint.
    stretch_events_per_sec: f64,
    runtime_cpu_seconds: f64,
    postgres_cpu_seconds: f64,
    brokers_cpu_seconds: f64,
    database_bytes: u64,
    tables: Vec<Table>,
}

/// The growth phase: its report rows and the `growth` object of the report.
pub async fn phase(
    args: &Args,
    paths: &Paths,
    config: &Config,
    scale_rows: &[Row],
) -> anyhow::Result<(Vec<Row>, Value)> {
    let started = Instant::now();
    let products0 = *args.growth_products.first().context("--growth-products")?;
    let users0 = *args.growth_users.first().context("--growth-users")?;
    let mut grid: Vec<(u64, u64)> = args.growth_products.iter().map(|p| (*p, users0)).collect();
    grid.extend(args.growth_users.iter().skip(1).map(|u| (products0, *u)));
    let mut points = Vec::new();
    for (i, (products, users)) in grid.iter().enumerate() {
        eprintln!(
            "growth: read point {}/{}: {products} products, {users} users",
            i + 1,
            grid.len()
        );
        let point = read_point(args, paths, config, i, *products, *users).await?;
        points.push(point);
        // Written as it goes: a point measured is kept even if a later one fails.
        let _ = std::fs::write(
            args.work.join("growth-partial.json"),
            serde_json::to_string_pretty(&points)?,
        );
    }
    eprintln!("growth: pipeline");
    let checkpoints = pipeline_point(args, paths, config).await?;
    let scale = scale_summary(scale_rows);
    let growth = json!({
        "grid": grid,
        "activity": args.growth_activity,
        "seconds_per_round": args.growth_seconds,
        "rounds": args.rounds,
        "pool": args.growth_pool,
        "reads": points,
        "pipeline": {
            "products": args.growth_pipeline_products,
            "users": args.growth_pipeline_users,
            "checkpoints": checkpoints,
        },
        "scale": scale,
        "partitions_per_topic": topic_layout(args).partitions,
        "plots": plots(args, &points, &checkpoints, &scale)?,
        "seconds": started.elapsed().as_secs_f64(),
    });
    Ok((rows(&points, &checkpoints), growth))
}

/// The report rows: each read of each point against the same read at the first point, and each
/// pipeline checkpoint against the first.
fn rows(points: &[ReadPoint], checkpoints: &[Checkpoint]) -> Vec<Row> {
    let mut rows = Vec::new();
    let first = points.first();
    for point in points {
        for read in &point.reads {
            let base = first
                .and_then(|f| {
                    f.reads
                        .iter()
                        .find(|r| r.route == read.route && r.keys == read.keys)
                })
                .map_or(f64::NAN, |r| r.per_sec);
            rows.push(Row {
                phase: "growth",
                metric: format!(
                    "{} ({}) at {} products, {} users: req/s (p99 {:.1} ms, {} non-2xx) vs the first point",
                    route_path(read.route),
                    read.keys,
                    plot::short(point.products as f64),
                    plot::short(point.users as f64),
                    read.p99_ms,
                    read.non_2xx
                ),
                ours: read.per_sec,
                ceiling: base,
                ratio: read.per_sec / base,
                target: "measured".into(),
                met: true,
                detail: json!(read),
            });
        }
    }
    let base = checkpoints.first().map_or(f64::NAN, |c| c.events_per_sec);
    for c in checkpoints {
        rows.push(Row {
            phase: "growth",
            metric: format!(
                "pipeline after {} events per group: events/s from spawn (the last stretch {:.0}) vs the first checkpoint; database {:.0} MiB",
                plot::short(c.events as f64),
                c.stretch_events_per_sec,
                c.database_bytes as f64 / MIB
            ),
            ours: c.events_per_sec,
            ceiling: base,
            ratio: c.events_per_sec / base,
            target: "measured".into(),
            met: true,
            detail: json!(c),
        });
    }
    rows
}

const MIB: f64 = 1024.0 * 1024.0;

/// The path a read's route is.
fn route_path(route: &str) -> &'static str {
    match route {
        "global" => "GET /recommendations?limit=10",
        "personal" => "GET /recommendations/users/{id}?limit=10",
        _ => "GET /recommendations/products/{id}/similar?limit=10",
    }
}

/// Activities of a read point: `--growth-activity`, and at least two per user.
fn activities(args: &Args, users: u64) -> u64 {
    args.growth_activity.max(2 * users)
}

/// Produces, applies and reads one point of the grid, on a database and topics of its own.
async fn read_point(
    args: &Args,
    paths: &Paths,
    config: &Config,
    index: usize,
    products: u64,
    users: u64,
) -> anyhow::Result<ReadPoint> {
    runtime::isolated(paths, config, &format!("growth{index}"), async |config| {
        measure_point(args, paths, &config, products, users).await
    })
    .await
}

async fn measure_point(
    args: &Args,
    paths: &Paths,
    config: &Config,
    products: u64,
    users: u64,
) -> anyhow::Result<ReadPoint> {
    // One activity in ten becomes a product update, as in the pipeline's backlog: 10/9 of the
    // activities after the catalog.
    let events = products + activities(args, users) * 10 / 9;
    check_disk(events)?;
    let shape = Shape {
        products: products as usize,
        users: users as usize,
        spread: true,
    };
    let backlog = pipeline::produce_shaped(
        &config.brokers,
        &config.topic_prefix,
        topic_layout(args),
        events,
        shape,
    )
    .await?;
    let (runtime, applied) =
        start_and_apply(paths, config, "growth-runtime.log", events, &[]).await?;
    let applied = applied?;
    let apply_seconds = applied.seconds;
    let tables = tables(&config.database_url, true).await?.1;
    let reads = reads(args, config, &runtime, &backlog).await;
    // A statement the runtime's schema cannot run (a `--recsys` binary older than the bench)
    // is reported in the point, not a reason to lose its figures.
    let explain = match &reads {
        Ok(_) => explain_all(&config.database_url, &backlog)
            .await
            .or_else(|e| Ok::<_, anyhow::Error>(vec![json!({ "error": format!("{e:#}") })])),
        Err(_) => Ok(Vec::new()),
    };
    runtime.stop().await;
    Ok(ReadPoint {
        products,
        users,
        events,
        produce_seconds: backlog.seconds,
        apply_events_per_sec: events as f64 / apply_seconds,
        apply_seconds,
        tables,
        reads: reads?,
        explain: explain?,
    })
}

/// Refuses a backlog the disk may not hold: three replicas of each event on the brokers, and
/// what Postgres writes for it, with room to spare (a full disk stops the Kafka nodes).
fn check_disk(events: u64) -> anyhow::Result<()> {
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail", "/"])
        .output()
        .context("running df")?;
    let avail: u64 = String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("df's answer")?;
    // About 1 KB per event measured (three replicas of a compressed record, the rows and
    // indexes it adds, WAL), 4 GiB to spare.
    let need = events * 1024 + 4 * 1024 * MIB as u64;
    if avail < need {
        bail!(
            "{events} events need about {:.1} GiB of disk, {:.1} GiB free",
            need as f64 / (1024.0 * MIB),
            avail as f64 / (1024.0 * MIB)
        );
    }
    Ok(())
}

/// What [`apply`] saw.
struct Applied {
    /// From spawn until both groups applied everything.
    seconds: f64,
    checkpoints: Vec<Checkpoint>,
}

/// Waits until both groups of `runtime` applied `total` records (then lag 0), recording each of
/// `checkpoints` on the way.
/// Starts a runtime hosting recommendations and analytics on `config` (its log in `log`) and
/// waits until both groups applied `total` events (see [`apply`]); answers the runtime, still
/// running, and how the applying went.
async fn start_and_apply(
    paths: &Paths,
    config: &Config,
    log: &str,
    total: u64,
    checkpoints: &[u64],
) -> anyhow::Result<(Runtime, anyhow::Result<Applied>)> {
    let spawned = Instant::now();
    let runtime = Runtime::start(paths, config, &["recommendations", "analytics"], log).await?;
    let client = reqwest::Client::new();
    let applied = apply(
        &client,
        &runtime,
        &config.database_url,
        total,
        checkpoints,
        spawned,
    )
    .await;
    Ok((runtime, applied))
}

async fn apply(
    client: &reqwest::Client,
    runtime: &Runtime,
    database_url: &str,
    total: u64,
    checkpoints: &[u64],
    spawned: Instant,
) -> anyhow::Result<Applied> {
    let base = runtime.url("recommendations");
    let bar = pipeline::bar(total * 2, "growth: applying");
    let postgres_before = runtime::postgres_cpu_seconds();
    let brokers_before = runtime::brokers_cpu_seconds();
    let mut pending: Vec<u64> = checkpoints.to_vec();
    pending.sort_unstable();
    let mut seen: Vec<Checkpoint> = Vec::new();
    let seconds = loop {
        let text = runtime::metrics_text(client, &base)
            .await
            .unwrap_or_default();
        let consumed = |service: &str| {
            let filter = format!("service=\"{service}\"");
            runtime::sum_of(&text, "kafka_messages_consumed_total", &[&filter])
        };
        let (r, a) = (consumed("recommendations"), consumed("analytics"));
        let at = spawned.elapsed().as_secs_f64();
        bar.set_position((r + a) as u64);
        while let Some(&next) = pending.first() {
            if r.min(a) < next as f64 {
                break;
            }
            pending.remove(0);
            let (database_bytes, tables) = tables(database_url, false).await?;
            let (previous_events, previous_at) = seen
                .last()
                .map_or((0.0, 0.0), |c| (c.events as f64, c.seconds_from_spawn));
            seen.push(Checkpoint {
                events: next,
                seconds_from_spawn: at,
                events_per_sec: next as f64 / at,
                // Two checkpoints passed within one poll share it: no stretch between them.
                stretch_events_per_sec: if at > previous_at {
                    (next as f64 - previous_events) / (at - previous_at)
                } else {
                    f64::NAN
                },
                runtime_cpu_seconds: runtime.cpu_seconds().unwrap_or(f64::NAN),
                postgres_cpu_seconds: runtime::postgres_cpu_seconds() - postgres_before,
                brokers_cpu_seconds: runtime::brokers_cpu_seconds() - brokers_before,
                database_bytes,
                tables,
            });
        }
        // Each record is counted once its batch is committed.
        if r >= total as f64 && a >= total as f64 {
            break at;
        }
        if at > 3600.0 {
            bail!("the runtime did not apply {total} events within an hour ({r} and {a})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    bar.finish();
    runtime::wait_for(
        Duration::from_secs(60),
        "the consumer lag to read 0",
        || {
            let (client, base) = (client.clone(), base.clone());
            async move {
                runtime::metric_sum(&client, &base, "kafka_consumer_lag", &[]).await == 0.0
            }
        },
    )
    .await?;
    Ok(Applied {
        seconds,
        checkpoints: seen,
    })
}

/// The database's size and every table's, largest first; rows counted with `exact`, else the
/// statistics' estimate (which lags: cheap enough to read while the pipeline runs).
async fn tables(database_url: &str, exact: bool) -> anyhow::Result<(u64, Vec<Table>)> {
    let rows = if exact {
        "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', relname), \
          false, true, '')))[1]::text::bigint"
    } else {
        "n_live_tup"
    };
    let text = runtime::psql_value(
        database_url,
        &format!(
            "SELECT pg_database_size(current_database()), '', 0 \
             UNION ALL \
             (SELECT pg_total_relation_size(relid), relname, {rows} FROM pg_stat_user_tables \
              ORDER BY 1 DESC)"
        ),
    )
    .await?;
    let mut lines = text.lines().map(|l| {
        let mut fields = l.split('|');
        let bytes: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let name = fields.next().unwrap_or("").to_string();
        let rows: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        Table { name, bytes, rows }
    });
    let database = lines.next().map_or(0, |t| t.bytes);
    Ok((database, lines.collect()))
}

/// The tokens the runtime accepts for `user`: HS256 with the bench's `JWT_SECRET`, as
/// `auth::JwtKeys::issue` signs them.
fn token(secret: &str, user: Uuid) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": user, "role": "user", "iat": now, "exp": now + 24 * 3600, "ver": 0});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

/// Lua for wrk's `done` hook: one line `GROWTH {json}` with the counts and percentiles.
const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('GROWTH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// A wrk script asking for `paths` in turn (each with its header, if any), each time with a
/// `limit` of round `round`'s own ten (10-19 in the first, 20-29 in the second...: another key
/// once every path was asked, and no key of an earlier round), then the `done` hook.
fn varied_script(paths: &[String], headers: Option<&[String]>, round: usize) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    let mut lua = format!("local paths = {{\n{}\n}}\n", list(paths));
    match headers {
        Some(tokens) => lua += &format!("local tokens = {{\n{}\n}}\n", list(tokens)),
        None => lua += "local tokens = nil\n",
    }
    lua += r#"
local n = #paths
local i = 0
request = function()
  local k = i % n
  local limit = FIRST_LIMIT + math.floor(i / n) % 10
  i = i + 1
  local headers = {}
  if tokens then headers["Authorization"] = "Bearer " .. tokens[k + 1] end
  return wrk.format("GET", paths[k + 1] .. "?limit=" .. limit, headers)
end
"#;
    lua.replace("FIRST_LIMIT", &(10 + 10 * (round % 9)).to_string()) + DONE
}

/// `wrk -t1 -c<connections> -d<seconds>s --timeout 30s -s script url`; fails on a socket error
/// other than a timeout (timeouts and non-2xx answers are counted).
async fn wrk(url: &str, connections: u32, seconds: u64, script: &Path) -> anyhow::Result<WrkRun> {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("GROWTH "))
        .with_context(|| format!("no GROWTH line in wrk's output:\n{text}"))?;
    let run: WrkRun = serde_json::from_str(line)?;
    if run.connect + run.read + run.write > 0.0 {
        bail!("wrk saw socket errors on {url}: {run:?}\n{text}");
    }
    // Non-2xx answers (a `503` when a statement outlives `DB_TIMEOUT_MS`) are a result: counted.
    Ok(run)
}

/// Waits (up to two minutes) until no statement runs on the point's database: what the previous
/// wrk run left queued (requests wrk gave up on are still computed) must not load the next.
async fn idle(database_url: &str) {
    let waited = Instant::now();
    let result = runtime::wait_for(Duration::from_secs(120), "Postgres to be idle", || async {
        runtime::psql_value(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .await
        .is_ok_and(|n| n.trim() == "0")
    })
    .await;
    match result {
        Err(e) => eprintln!("growth: {e:#} (measuring anyway)"),
        Ok(()) if waited.elapsed() > Duration::from_secs(1) => eprintln!(
            "growth: waited {:.1?} for the previous run's statements to finish",
            waited.elapsed()
        ),
        Ok(()) => {}
    }
}

/// `recommendation_cache_requests_total{result="miss"}` of the runtime.
async fn misses(client: &reqwest::Client, base: &str) -> f64 {
    runtime::metric_sum(
        client,
        base,
        "recommendation_cache_requests_total",
        &["result=\"miss\""],
    )
    .await
}

/// Evenly spaced items of `all`, at most `count`.
fn sample<T: Copy>(all: &[T], count: usize) -> Vec<T> {
    let step = (all.len() / count.max(1)).max(1);
    all.iter().step_by(step).take(count).copied().collect()
}

/// The five reads of a point, `--rounds` rounds each (alternating), the median round of each.
async fn reads(
    args: &Args,
    config: &Config,
    runtime: &Runtime,
    backlog: &Backlog,
) -> anyhow::Result<Vec<Read>> {
    let client = reqwest::Client::new();
    let base = runtime.url("recommendations");
    let work = &args.work;
    let user = *backlog.users.first().context("no user")?;
    let product = *backlog.products.first().context("no product")?;
    let user_token = token(&config.jwt_secret, user)?;
    let done_only = runtime::write_file(work, "growth-done.lua", DONE)?;
    let personal_script = runtime::write_file(
        work,
        "growth-personal.lua",
        &(crate::load::get_script(&user_token) + DONE),
    )?;
    let users = sample(&backlog.users, args.growth_pool);
    let user_paths: Vec<String> = users
        .iter()
        .map(|u| format!("/recommendations/users/{u}"))
        .collect();
    let tokens: Vec<String> = users
        .iter()
        .map(|u| token(&config.jwt_secret, *u))
        .collect::<anyhow::Result<_>>()?;
    let product_paths: Vec<String> = sample(&backlog.products, args.growth_pool)
        .iter()
        .map(|p| format!("/recommendations/products/{p}/similar"))
        .collect();
    // Each round's varied scripts (keys of their own).
    let varied = |round: usize| -> anyhow::Result<[PathBuf; 2]> {
        Ok([
            runtime::write_file(
                work,
                &format!("growth-personal-varied-{round}.lua"),
                &varied_script(&user_paths, Some(&tokens), round),
            )?,
            runtime::write_file(
                work,
                &format!("growth-similar-varied-{round}.lua"),
                &varied_script(&product_paths, None, round),
            )?,
        ])
    };
    let [varied_personal, varied_similar] = varied(0)?;
    let warm = |path: String, script: PathBuf, route: &'static str| {
        (route, "warm", format!("{base}{path}"), script, 64u32)
    };
    let plan = [
        warm(
            "/recommendations?limit=10".into(),
            done_only.clone(),
            "global",
        ),
        warm(
            format!("/recommendations/users/{user}?limit=10"),
            personal_script,
            "personal",
        ),
        warm(
            format!("/recommendations/products/{product}/similar?limit=10"),
            done_only,
            "similar",
        ),
        (
            "personal",
            "varied",
            base.clone(),
            varied_personal,
            args.growth_connections,
        ),
        (
            "similar",
            "varied",
            base.clone(),
            varied_similar,
            args.growth_connections,
        ),
    ];
    // Warm: each one-key answer asked once (a miss), then every request a hit.
    for (route, keys, url, _, _) in &plan {
        if *keys == "warm" {
            let mut request = client.get(url);
            if *route == "personal" {
                request = request.bearer_auth(&user_token);
            }
            request.send().await?.error_for_status()?;
        }
    }
    let mut runs: BTreeMap<usize, Vec<(WrkRun, Option<f64>)>> = BTreeMap::new();
    for round in 0..args.rounds {
        let [personal_round, similar_round] = varied(round)?;
        for (i, (route, keys, url, script, connections)) in plan.iter().enumerate() {
            let script = match (*route, *keys) {
                ("personal", "varied") => &personal_round,
                ("similar", "varied") => &similar_round,
                _ => script,
            };
            eprintln!(
                "growth: round {}/{}: {route} ({keys})",
                round + 1,
                args.rounds
            );
            idle(&config.database_url).await;
            let before = misses(&client, &base).await;
            let run = wrk(url, *connections, args.growth_seconds, script).await?;
            let after = misses(&client, &base).await;
            let share = (*keys == "varied").then(|| (after - before) / run.requests.max(1.0));
            runs.entry(i).or_default().push((run, share));
        }
    }
    Ok(plan
        .iter()
        .enumerate()
        .map(|(i, (route, keys, _, _, connections))| {
            let rounds = &runs[&i];
            let (median, share) =
                median_by(rounds, |(r, _)| r.per_sec()).unwrap_or((WrkRun::default(), None));
            Read {
                route,
                keys,
                connections: *connections,
                per_sec: median.per_sec(),
                p50_ms: median.p50_us / 1000.0,
                p99_ms: median.p99_us / 1000.0,
                non_2xx: median.status,
                postgres_share: share,
                timeouts: rounds.iter().map(|(r, _)| r.timeout).sum(),
                rounds: rounds.iter().map(|(r, _)| r.per_sec()).collect(),
            }
        })
        .collect())
}

/// The statements of `src/recommendations/store.rs` (`top` with `acc`, `for_user`, `similar`;
/// of `top` and `for_user` the ordered one, which answers whenever the catalog has `limit`
/// scored products), prepared as the service prepares them, executed with the default weights (view 1, cart add
/// 3, cart remove -3, purchase 10): `EXPLAIN ANALYZE` of each says how its cost grows with the
/// tables.
fn statements() -> [(&'static str, String, String); 3] {
    use recsys::recommendations::store;
    [
        (
            "global",
            format!(
                "PREPARE q(text[], bigint) AS {}",
                store::top_scored_sql("acc")
            ),
            "EXECUTE q('{}', 10)".to_string(),
        ),
        (
            "personal",
            format!(
                "PREPARE q(uuid, float8, float8, float8, float8, bigint, text[], text) AS {}",
                store::FOR_USER_SCORED_SQL
            ),
            "EXECUTE q('{user}', 1, 3, -3, 10, 10, '{}', 'purchased')".to_string(),
        ),
        (
            "similar",
            format!(
                "PREPARE q(uuid, float8, float8, bigint, text[], bigint) AS {}",
                store::SIMILAR_SQL
            ),
            format!(
                "EXECUTE q('{{product}}', 10, 3, 10, '{{}}', {})",
                store::SIMILAR_BUYERS
            ),
        ),
    ]
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of each statement, for the first user and for the most popular
/// product and one from the middle of the catalog.
async fn explain_all(database_url: &str, backlog: &Backlog) -> anyhow::Result<Vec<Value>> {
    let user = backlog.users[0];
    let products = [
        ("most popular", backlog.products[0]),
        ("median", backlog.products[backlog.products.len() / 2]),
    ];
    let mut out = Vec::new();
    for (name, prepare, execute) in statements() {
        let cases: Vec<(String, String)> = match name {
            "similar" => products
                .iter()
                .map(|(which, p)| {
                    (
                        format!("similar, {which} product"),
                        execute.replace("{product}", &p.to_string()),
                    )
                })
                .collect(),
            _ => vec![(
                name.to_string(),
                execute.replace("{user}", &user.to_string()),
            )],
        };
        for (case, execute) in cases {
            let sql = format!(
                "{prepare};\nEXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute};\n\
                 EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute};\n"
            );
            let text = runtime::psql_value(database_url, &sql).await?;
            // The second run (the pages the first read are cached, as under load): the last
            // top-level array, the only lines that are `[` alone.
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.iter().rposition(|l| *l == "[").unwrap_or(0);
            let second = lines[start..].join("\n");
            let plan: Value = serde_json::from_str(second.trim())
                .with_context(|| format!("EXPLAIN's answer: {text}"))?;
            let mut lines = Vec::new();
            summarize(&plan[0]["Plan"], 0, &mut lines);
            out.push(json!({
                "query": case,
                "execution_ms": plan[0]["Execution Time"],
                "planning_ms": plan[0]["Planning Time"],
                "plan": lines,
            }));
        }
    }
    Ok(out)
}

/// One line per plan node: its type, relation, rows, loops and time, children indented.
fn summarize(node: &Value, depth: usize, lines: &mut Vec<String>) {
    let mut line = format!(
        "{}{}",
        "  ".repeat(depth),
        node["Node Type"].as_str().unwrap_or("?")
    );
    if let Some(strategy) = node["Sort Method"].as_str() {
        line += &format!(" ({strategy})");
    }
    if let Some(relation) = node["Relation Name"].as_str() {
        line += &format!(" on {relation}");
    }
    if let Some(index) = node["Index Name"].as_str() {
        line += &format!(" using {index}");
    }
    line += &format!(
        ": rows {} x{} loops, {} ms",
        node["Actual Rows"], node["Actual Loops"], node["Actual Total Time"]
    );
    lines.push(line);
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            summarize(child, depth + 1, lines);
        }
    }
}

/// The pipeline: one backlog of the largest `--growth-events`, applied from its start, with a
/// checkpoint at each.
async fn pipeline_point(
    args: &Args,
    paths: &Paths,
    config: &Config,
) -> anyhow::Result<Vec<Checkpoint>> {
    let Some(&total) = args.growth_events.iter().max() else {
        return Ok(Vec::new());
    };
    check_disk(total)?;
    // Three replicas of the largest backlog: deleted at once.
    runtime::isolated(paths, config, "growth-pipe", async |config| {
        let shape = Shape {
            products: args.growth_pipeline_products,
            users: args.growth_pipeline_users,
            spread: true,
        };
        let backlog = pipeline::produce_shaped(
            &config.brokers,
            &config.topic_prefix,
            topic_layout(args),
            total,
            shape,
        )
        .await?;
        eprintln!(
            "growth: {total} events produced in {:.1} s",
            backlog.seconds
        );
        let (runtime, applied) = start_and_apply(
            paths,
            &config,
            "growth-pipeline-runtime.log",
            total,
            &args.growth_events,
        )
        .await?;
        runtime.stop().await;
        anyhow::Ok(applied?.checkpoints)
    })
    .await
}

/// The scale-out drains of the `scale` rows: per runtime count, the median events/s and CPU
/// seconds of the runtimes, Postgres and the Kafka nodes, and every round's figure.
fn scale_summary(rows: &[Row]) -> Vec<Value> {
    rows.iter()
        .filter(|r| r.phase == "scale-out")
        .filter_map(|row| {
            let drains = row.detail["rounds"].as_array()?;
            let runtimes = drains.first()?["runtimes"].as_u64()?;
            let median = |key: &str| {
                let values: Vec<f64> = drains.iter().filter_map(|d| d[key].as_f64()).collect();
                median_by(&values, |v| *v).unwrap_or(f64::NAN)
            };
            Some(json!({
                "runtimes": runtimes,
                "events_per_sec": median("events_per_sec"),
                "rounds_events_per_sec": drains.iter().map(|d| d["events_per_sec"].clone()).collect::<Vec<_>>(),
                "runtimes_cpu_seconds": median("runtimes_cpu_seconds"),
                "postgres_cpu_seconds": median("postgres_cpu_seconds"),
                "brokers_cpu_seconds": median("brokers_cpu_seconds"),
                "seconds": median("seconds"),
                "applied_per_runtime": drains.iter().map(|d| d["applied_per_runtime"].clone()).collect::<Vec<_>>(),
            }))
        })
        .collect()
}

/// Writes the charts into `--growth-plots`; answers their paths.
fn plots(
    args: &Args,
    points: &[ReadPoint],
    checkpoints: &[Checkpoint],
    scale: &[Value],
) -> anyhow::Result<Vec<String>> {
    let dir = &args.growth_plots;
    std::fs::create_dir_all(dir)?;
    let users0 = args.growth_users.first().copied().unwrap_or(0);
    let products0 = args.growth_products.first().copied().unwrap_or(0);
    let reads = [
        ("global", "warm"),
        ("personal", "warm"),
        ("similar", "warm"),
        ("personal", "varied"),
        ("similar", "varied"),
    ];
    // One series per read, along the products (users fixed) or the users (products fixed).
    let along = |by_products: bool, value: fn(&Read) -> f64| -> Vec<Series> {
        reads
            .iter()
            .map(|(route, keys)| Series {
                name: format!("{route}, {keys}"),
                points: points
                    .iter()
                    .filter(|p| {
                        if by_products {
                            p.users == users0
                        } else {
                            p.products == products0
                        }
                    })
                    .filter_map(|p| {
                        let read = p
                            .reads
                            .iter()
                            .find(|r| r.route == *route && r.keys == *keys)?;
                        let x = if by_products { p.products } else { p.users };
                        Some((x as f64, value(read)))
                    })
                    .collect(),
            })
            .collect()
    };
    let mut charts = vec![
        (
            "growth-reads.svg",
            Chart {
                title: format!(
                    "Reads vs catalog size ({} users), wrk median round",
                    plot::short(users0 as f64)
                ),
                x_label: "products".into(),
                y_label: "requests/s".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Log,
                series: along(true, |r| r.per_sec),
            },
        ),
        (
            "growth-latency.svg",
            Chart {
                title: format!(
                    "Read p99 vs catalog size ({} users)",
                    plot::short(users0 as f64)
                ),
                x_label: "products".into(),
                y_label: "p99 latency, ms".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Log,
                series: along(true, |r| r.p99_ms),
            },
        ),
    ];
    if args.growth_users.len() > 1 {
        let mut series = along(false, |r| r.per_sec);
        series.extend(along(false, |r| r.p99_ms).into_iter().map(|mut s| {
            s.name = format!("{} p99 ms", s.name);
            s
        }));
        charts.push((
            "growth-users.svg",
            Chart {
                title: format!(
                    "Reads vs users ({} products): req/s and p99 ms",
                    plot::short(products0 as f64)
                ),
                x_label: "users".into(),
                y_label: "requests/s; p99 ms".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Log,
                series,
            },
        ));
    }
    let mut pipeline_series = vec![
        Series {
            name: "large backlog, from spawn".into(),
            points: checkpoints
                .iter()
                .map(|c| (c.events as f64, c.events_per_sec))
                .collect(),
        },
        Series {
            name: "large backlog, last stretch".into(),
            points: checkpoints
                .iter()
                .map(|c| (c.events as f64, c.stretch_events_per_sec))
                .collect(),
        },
    ];
    let mut read_backlogs: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.events as f64, p.apply_events_per_sec))
        .collect();
    read_backlogs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pipeline_series.push(Series {
        name: "read points' backlogs".into(),
        points: read_backlogs,
    });
    charts.push((
        "growth-pipeline.svg",
        Chart {
            title: "Pipeline: events/s per group vs events applied".into(),
            x_label: "events applied by each group".into(),
            y_label: "events/s".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: pipeline_series,
        },
    ));
    // The tables of the last checkpoint, largest first, along the checkpoints.
    let names: Vec<String> = checkpoints
        .last()
        .map(|c| {
            c.tables
                .iter()
                .filter(|t| t.bytes >= 1024 * 1024)
                .take(8)
                .map(|t| t.name.clone())
                .collect()
        })
        .unwrap_or_default();
    charts.push((
        "growth-tables.svg",
        Chart {
            title: "Postgres table sizes (heap + indexes) vs events applied".into(),
            x_label: "events applied by each group".into(),
            y_label: "MiB".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series: names
                .iter()
                .map(|name| Series {
                    name: name.clone(),
                    points: checkpoints
                        .iter()
                        .filter_map(|c| {
                            let t = c.tables.iter().find(|t| &t.name == name)?;
                            Some((c.events as f64, t.bytes as f64 / MIB))
                        })
                        .collect(),
                })
                .collect(),
        },
    ));
    if !scale.is_empty() {
        let series = |name: &str, key: &str| Series {
            name: name.into(),
            points: scale
                .iter()
                .filter_map(|s| Some((s["runtimes"].as_f64()?, s[key].as_f64()?)))
                .collect(),
        };
        charts.push((
            "growth-scale.svg",
            Chart {
                title: "Scale-out: runtimes hosting the consumers (one machine)".into(),
                x_label: "runtimes".into(),
                y_label: "events/s per group (median)".into(),
                x_scale: Scale::Linear,
                y_scale: Scale::Linear,
                series: vec![series("events/s", "events_per_sec")],
            },
        ));
    }
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        std::fs::write(&path, chart.to_svg())?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
