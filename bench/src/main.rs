//! `recsys-bench`: the benchmarks of issue 7, each figure beside a ceiling measured in the same
//! run on the same machine (median of several rounds), printed as a table and written as JSON.
//!
//! 1. read: `GET /recommendations?limit=10` and a user's `GET /recommendations/users/{id}` (warm
//!    cache) vs `GET /healthz` of the same process, same client (wrk), same connections;
//! 2. write: `POST /users/{id}/activity` vs single-row inserts by pgbench at the same
//!    concurrency;
//! 3. pipeline: a backlog of valid events applied by recommendations + analytics vs bare
//!    rdkafka consumers (one per group) draining the same backlog;
//! 4. freshness: at a fixed post rate, `202` to the first recommendation that reflects it;
//! 5. memory: peak RSS of the runtime during phase 3.
//!
//! 6. scale-out: one, two and three runtimes hosting recommendations and analytics drain the same
//!    backlog; events/s of each, and their answers checked against one runtime's.
//!
//! 7. cache (`--phases cache`): the Redis hit ratio of `GET /recommendations?limit=10` at 2 000
//!    reads/s (half the home page, half a category page) while 1 000 actions/s are posted, both
//!    open loop, on a runtime with the micro-cache off; against an absolute target (>= 0.9).
//!
//! 8. soak (`--phases soak`, `scripts/soak.sh`): a mixed load for `--soak-minutes` with one
//!    fault a minute; its own report (`bench/soak.json`).
//!
//! `scripts/bench.sh` builds everything and runs this against the local stack's Kafka cluster
//! and Postgres; it starts its own databases and runtime processes, and deletes the topics and
//! consumer groups it created.

mod cache;
mod freshness;
mod growth;
mod load;
mod pipeline;
mod plot;
mod profile;
mod runtime;
mod scale;
mod soak;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};

use load::Rate;
use recsys_actors::kafka::TopicLayout;
use runtime::{metric_sum, Config, Database, Paths, Runtime};

#[derive(Parser)]
#[command(about = "Benchmarks recsys against ceilings measured in the same run")]
struct Args {
    /// The `recsys` binary (a release build).
    #[arg(long)]
    recsys: PathBuf,
    /// Kafka bootstrap servers (the local stack's three-node cluster).
    #[arg(
        long,
        env = "KAFKA_ADDRESS",
        default_value = "127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093"
    )]
    brokers: String,
    /// Replicas of every topic the bench and its runtimes create; `min.insync.replicas` is one
    /// less (at least 1), as in the deployment.
    #[arg(long, default_value_t = 3)]
    replication: i32,
    /// Postgres server URL, without a database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: String,
    /// Folder for logs and scripts.
    #[arg(long)]
    work: PathBuf,
    /// Rounds of each throughput measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unmeasured writes before each write phase's rounds: the Kafka nodes' JIT
    /// compiles the produce and replication paths in the first seconds of load, as it has long
    /// done on a broker in service.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Events in the pipeline backlog.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Posts per second during the freshness phase.
    #[arg(long, default_value_t = 1000)]
    fresh_rate: u32,
    /// Seconds of the freshness phase.
    #[arg(long, default_value_t = 20)]
    fresh_seconds: u64,
    /// Events in the scale-out backlog.
    #[arg(long, default_value_t = 500_000)]
    scale_events: u64,
    /// Phases to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "read,write,freshness,cache,pipeline,scale"
    )]
    phases: Vec<String>,
    /// Growth (`--phases growth`): catalog sizes of the read points (at the first of
    /// `--growth-users`).
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    growth_products: Vec<u64>,
    /// Growth: user counts of the read points (the first also for every catalog size; the others
    /// at the first of `--growth-products`).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    growth_users: Vec<u64>,
    /// Growth: user actions of each read point's backlog (at least two per user).
    #[arg(long, default_value_t = 1_000_000)]
    growth_activity: u64,
    /// Growth: checkpoints of the pipeline backlog (its size is the largest), events per group.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    growth_events: Vec<u64>,
    /// Growth: products of the pipeline backlog.
    #[arg(long, default_value_t = 100_000)]
    growth_pipeline_products: usize,
    /// Growth: users of the pipeline backlog.
    #[arg(long, default_value_t = 1_000_000)]
    growth_pipeline_users: usize,
    /// Growth: seconds of each wrk round.
    #[arg(long, default_value_t = 5)]
    growth_seconds: u64,
    /// Growth: wrk connections of the varied-key reads (the warm ones use 64, as the read phase).
    #[arg(long, default_value_t = 16)]
    growth_connections: u32,
    /// Growth: users (and products) the varied-key reads go through.
    #[arg(long, default_value_t = 10_000)]
    growth_pool: usize,
    /// Growth: where the SVG charts go.
    #[arg(long, default_value = "docs")]
    growth_plots: PathBuf,
    /// Minutes of the soak phase.
    #[arg(long, default_value_t = 10)]
    soak_minutes: u64,
    /// Requests per second of the soak's load.
    #[arg(long, default_value_t = 100)]
    soak_rate: u32,
    /// Where the results go.
    #[arg(long, default_value = "bench/results.json")]
    output: PathBuf,
    /// Recorded in the results (e.g. the git commit).
    #[arg(long, default_value = "")]
    label: String,
    /// A setting for every runtime the bench starts, `KEY=VALUE` (repeatable), e.g.
    /// `--runtime-env CONSUMER_MAX_BATCH=2000`. Recorded in the results.
    #[arg(long, value_parser = key_value)]
    runtime_env: Vec<(String, String)>,
    /// Profile the first round of the write phases and of the pipeline with `perf record -a`
    /// and keep the reports in this directory (e.g. `bench/profiles`).
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// The item of `items` whose `key` is their median (of an even count, the upper middle one).
fn median_by<T: Clone>(items: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).cloned()
}

/// Parses `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    phase: &'static str,
    metric: String,
    ours: f64,
    ceiling: f64,
    /// `ours / ceiling` (or, for targets without a ceiling, `ours / target`).
    ratio: f64,
    target: String,
    met: bool,
    /// Absolute figures beside the ratio.
    detail: Value,
}

const PARTITIONS: i32 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let paths = Paths {
        recsys: args.recsys.clone(),
        postgres: args.postgres.clone(),
        work: args.work.clone(),
    };
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let database = Database::create(&args.postgres).await?;
    let layout = topic_layout(&args);
    // The runtimes create their topics as the bench creates its backlogs.
    let mut extra_env = vec![
        (
            "KAFKA_REPLICATION_FACTOR".to_string(),
            layout.replication.to_string(),
        ),
        (
            "KAFKA_MIN_INSYNC_REPLICAS".to_string(),
            layout.min_insync_replicas.to_string(),
        ),
    ];
    extra_env.extend(args.runtime_env.iter().cloned());
    let config = Config {
        database_url: database.url.clone(),
        brokers: args.brokers.clone(),
        topic_prefix: format!("bench{run_id}."),
        redis: args.redis.clone(),
        redis_prefix: format!("bench{run_id}:"),
        jwt_secret: format!("bench-secret-{run_id}-at-least-32-bytes-long"),
        admin_email: format!("admin-{run_id}@example.com"),
        admin_password: "bench-admin-password".into(),
        extra_env,
    };
    if wants("soak") {
        let cache = std::env::var("RECSYS_CACHE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/recsys",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let soak = soak::Soak {
            minutes: args.soak_minutes.max(3),
            rate: args.soak_rate,
            stack: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh"),
            kafka_dir: PathBuf::from(cache).join("stack/kafka"),
        };
        let result = soak::run(&soak, &paths, &config).await;
        database.drop_now().await;
        let _ = pipeline::delete_topics_and_groups(&config.brokers, &config.topic_prefix).await;
        let mut report = result?;
        report["label"] = json!(args.label);
        report["machine"] = json!(machine());
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&args.output, text + "\n")?;
        println!("{}", serde_json::to_string_pretty(&report["budget"])?);
        println!("written to {}", args.output.display());
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut growth = None;
    let result = async {
        if wants("read") || wants("write") || wants("freshness") {
            let runtime = Runtime::start(
                &paths,
                &config,
                &["users", "products", "recommendations", "analytics"],
                "runtime.log",
            )
            .await?;
            // Every freshness round uses probes of its own, with some to spare.
            let per_round = freshness_probes_per_round(&args);
            let seed = seed(&runtime, &config, per_round * args.rounds + 100).await?;
            if wants("read") {
                rows.extend(read_phase(&args, &runtime, &seed).await?);
            }
            if wants("freshness") {
                rows.push(freshness_phase(&args, &runtime, &seed).await?);
            }
            runtime.stop().await;
            if wants("write") {
                // Each write measurement on a runtime of its own, publishing to topics of its
                // own, so that no measurement starts with what an earlier phase left behind
                // (a backlog to publish or to consume).
                let fresh = |name: &str| {
                    let mut config = config.clone();
                    config.topic_prefix = format!("{}{name}.", config.topic_prefix);
                    config
                };
                let all = Runtime::start(
                    &paths,
                    &fresh("write-all"),
                    &["users", "products", "recommendations", "analytics"],
                    "write-all-runtime.log",
                )
                .await?;
                rows.push(write_phase(&args, &paths, &all, &seed, &database, WRITE_ALL).await?);
                all.stop().await;
                // The users service alone, as each container of the deployment runs it: the
                // write path and its relay, without the consumers of the other services.
                let users = Runtime::start(
                    &paths,
                    &fresh("write-users"),
                    &["users"],
                    "users-runtime.log",
                )
                .await?;
                rows.push(write_phase(&args, &paths, &users, &seed, &database, "write").await?);
                users.stop().await;
            }
        }
        if wants("cache") {
            rows.push(cache::phase(&args, &paths, &config).await?);
        }
        if wants("pipeline") {
            rows.extend(pipeline_phase(&args, &paths, &config).await?);
        }
        if wants("scale") {
            rows.extend(scale::phase(&args, &paths, &config).await?);
        }
        if wants("growth") {
            // The scale-out drains are part of the growth figures: run them unless done above.
            if !wants("scale") {
                rows.extend(scale::phase(&args, &paths, &config).await?);
            }
            let (growth_rows, object) = growth::phase(&args, &paths, &config, &rows).await?;
            rows.extend(growth_rows);
            growth = Some(object);
        }
        anyhow::Ok(())
    }
    .await;
    database.drop_now().await;
    let cleaned = pipeline::delete_topics_and_groups(&config.brokers, &config.topic_prefix).await;
    result?;
    cleaned.context("deleting the bench's topics and groups")?;
    let order = [
        "read",
        "read, personal",
        "write",
        WRITE_ALL,
        "freshness",
        "cache",
        "pipeline",
        "memory",
        "cost",
        "scale-out",
        "growth",
    ];
    rows.sort_by_key(|r| order.iter().position(|p| *p == r.phase));
    report(&args, &rows, growth)
}

/// How the bench's topics are created (`--replication`).
fn topic_layout(args: &Args) -> TopicLayout {
    let replication = args.replication.max(1);
    TopicLayout {
        partitions: PARTITIONS,
        replication,
        min_insync_replicas: (replication - 1).max(1),
        retention_ms: -1,
    }
}

/// The write phase against the runtime hosting all four services.
const WRITE_ALL: &str = "write (all-in-one)";

/// What the phases need from the seeded catalog.
struct Seed {
    users: Vec<freshness::User>,
    background: Vec<String>,
    /// The categories of `background`, ten products in each.
    categories: Vec<String>,
    probes: Vec<(String, String)>,
}

/// Categories of the seeded products.
const SEED_CATEGORIES: usize = 10;

/// 100 products in [`SEED_CATEGORIES`] categories, 40 users with some activity each, and
/// `probes_needed` freshness probes (one product per category, no activity); waits until the
/// ranking has scores.
async fn seed(runtime: &Runtime, config: &Config, probes_needed: usize) -> anyhow::Result<Seed> {
    let client = reqwest::Client::new();
    let users_url = runtime.url("users");
    let login: Value = client
        .post(format!("{users_url}/users/login"))
        .json(&json!({"email": config.admin_email, "password": config.admin_password}))
        .send()
        .await?
        .json()
        .await?;
    let admin = login["token"].as_str().context("admin token")?.to_string();
    let products_url = runtime.url("products");
    let create = |name: String, category: String| {
        let (client, url, admin) = (client.clone(), products_url.clone(), admin.clone());
        async move {
            let product: Value = client
                .post(format!("{url}/products"))
                .bearer_auth(&admin)
                .json(&json!({"name": name, "price": "9.99", "category": category}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(product["id"].as_str().context("product id")?.to_string())
        }
    };
    let categories: Vec<String> = (0..SEED_CATEGORIES).map(|c| format!("seed-{c}")).collect();
    let mut background = Vec::new();
    for i in 0..100 {
        let category = categories[i % categories.len()].clone();
        background.push(create(format!("Seed {i}"), category).await?);
    }
    let mut probes = Vec::new();
    for i in 0..probes_needed {
        let category = format!("fresh-{i}");
        probes.push((
            create(format!("Probe {i}"), category.clone()).await?,
            category,
        ));
    }
    let mut users = Vec::new();
    for i in 0..40 {
        let registered: Value = client
            .post(format!("{users_url}/users/register"))
            .json(&json!({"name": format!("Bench {i}"),
                "email": format!("bench-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": "bench-password"}))
            .send()
            .await?
            .json()
            .await?;
        let id = registered["id"].as_str().context("user id")?.to_string();
        let token = registered["token"].as_str().context("token")?.to_string();
        for k in 0..5 {
            let product = &background[(i * 5 + k) % background.len()];
            let status = client
                .post(format!("{users_url}/users/{id}/activity"))
                .bearer_auth(&token)
                .json(&json!({"type": "purchase", "product_id": product}))
                .send()
                .await?
                .status();
            if status.as_u16() != 202 {
                bail!("seeding activity: {status}");
            }
        }
        users.push((id, token));
    }
    let recommendations = format!(
        "{}/recommendations?limit=10",
        runtime.url("recommendations")
    );
    runtime::wait_for(Duration::from_secs(60), "the seed to be ranked", || {
        let (client, url) = (client.clone(), recommendations.clone());
        async move {
            let Ok(r) = client.get(url).send().await else {
                return false;
            };
            let items: Value = r.json().await.unwrap_or(Value::Null);
            items[9]["score"].as_f64().is_some_and(|s| s > 0.0)
        }
    })
    .await?;
    Ok(Seed {
        users,
        background,
        categories,
        probes,
    })
}

fn ratio_row(
    phase: &'static str,
    metric: &str,
    ours: Rate,
    ceiling: Rate,
    target: f64,
    detail: Value,
) -> Row {
    let ratio = ours.per_sec / ceiling.per_sec;
    Row {
        phase,
        metric: metric.into(),
        ours: ours.per_sec,
        ceiling: ceiling.per_sec,
        ratio,
        target: format!(">= {target}x"),
        met: ratio >= target,
        detail,
    }
}

/// The read rows: the global ranking and a user's personal ranking, each warm, against
/// `/healthz` of the same process, in alternating rounds.
async fn read_phase(args: &Args, runtime: &Runtime, seed: &Seed) -> anyhow::Result<Vec<Row>> {
    let base = runtime.url("recommendations");
    let recommendations = format!("{base}/recommendations?limit=10");
    let (user, token) = seed.users.first().context("no seeded user")?;
    let personal = format!("{base}/recommendations/users/{user}?limit=10");
    let health = format!("{base}/healthz");
    let script = runtime::write_file(&args.work, "personal.lua", &load::get_script(token))?;
    let client = reqwest::Client::new();
    let cache_of = |url: &str| {
        let request = client.get(url).bearer_auth(token);
        async move {
            let reply = request.send().await?.error_for_status()?;
            Ok::<_, anyhow::Error>(
                reply
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            )
        }
    };
    cache_of(&recommendations).await?;
    cache_of(&personal).await?;
    let duration = Duration::from_secs(args.seconds);
    let (mut global, mut mine, mut ceiling) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        eprintln!("read round {}/{}", round + 1, args.rounds);
        ceiling.push(load::wrk(&health, 64, duration, None).await?);
        global.push(load::wrk(&recommendations, 64, duration, None).await?);
        mine.push(load::wrk(&personal, 64, duration, Some(&script)).await?);
    }
    for url in [&recommendations, &personal] {
        let cache = cache_of(url).await?;
        if cache != "hit" {
            bail!("the recommendation cache was not warm for {url} (X-Cache: {cache})");
        }
    }
    let (g, m, c) = (
        load::median(&global),
        load::median(&mine),
        load::median(&ceiling),
    );
    Ok(vec![
        ratio_row(
            "read",
            "GET /recommendations?limit=10 (warm) vs GET /healthz, req/s, wrk -t1 -c64",
            g,
            c,
            0.9,
            json!({"recommendations": g, "healthz": c, "rounds": {"recommendations": global, "healthz": ceiling}}),
        ),
        ratio_row(
            "read, personal",
            "GET /recommendations/users/{id}?limit=10 with the user's token (warm) vs GET /healthz, req/s, wrk -t1 -c64",
            m,
            c,
            0.8,
            json!({"personal": m, "healthz": c, "rounds": {"personal": mine, "healthz": ceiling}}),
        ),
    ])
}

async fn write_phase(
    args: &Args,
    paths: &Paths,
    runtime: &Runtime,
    seed: &Seed,
    database: &Database,
    phase: &'static str,
) -> anyhow::Result<Row> {
    const CONCURRENCY: u32 = 16;
    let (user, token) = &seed.users[0];
    let body = json!({"type": "view", "product_id": seed.background[0]}).to_string();
    let script = runtime::write_file(&paths.work, "post.lua", &load::post_script(&body, token))?;
    let url = format!("{}/users/{user}/activity", runtime.url("users"));
    let insert = runtime::write_file(
        &paths.work,
        "insert.sql",
        "INSERT INTO bench_single_row (payload) VALUES ('x');\n",
    )?;
    let create = tokio::process::Command::new("psql")
        .args([&database.url, "-qX", "-c"])
        .arg("CREATE TABLE IF NOT EXISTS bench_single_row (id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .status()
        .await?;
    if !create.success() {
        bail!("creating bench_single_row");
    }
    let duration = Duration::from_secs(args.seconds);
    if args.warmup > 0 {
        eprintln!("{phase}: {} s of warm-up writes", args.warmup);
        load::wrk(
            &url,
            CONCURRENCY,
            Duration::from_secs(args.warmup),
            Some(&script),
        )
        .await?;
        wait_outbox_empty(&database.url).await?;
    }
    let (client, users) = (reqwest::Client::new(), runtime.url("users"));
    let (mut ours, mut ceiling) = (Vec::new(), Vec::new());
    // CPU microseconds per request of each round, by whom: where a write's cost goes. (Not
    // for pgbench: its server processes exit with it, their CPU time with them.)
    let mut cpu = Vec::new();
    for round in 0..args.rounds {
        eprintln!("{phase} round {}/{}", round + 1, args.rounds);
        let pgbench = load::pgbench(&database.url, CONCURRENCY, duration, &insert).await?;
        let recording = if round == 0 {
            let title =
                format!("{phase}: POST /users/{{id}}/activity, 16 connections, first round");
            let name = phase.replace([' ', ',', '(', ')'], "-").replace("--", "-");
            profile::start(
                args.profile.as_deref(),
                name.trim_matches('-'),
                &title,
                runtime.pid(),
            )
            .await?
        } else {
            None
        };
        let before = (
            runtime.cpu_seconds().unwrap_or(f64::NAN),
            runtime::postgres_cpu_seconds(),
            runtime::brokers_cpu_seconds(),
        );
        let metrics_before = runtime::metrics_text(&client, &users)
            .await
            .unwrap_or_default();
        let activity = load::wrk(&url, CONCURRENCY, duration, Some(&script)).await?;
        let metrics_after = runtime::metrics_text(&client, &users)
            .await
            .unwrap_or_default();
        if let Some(recording) = recording {
            recording.finish().await?;
        }
        // The relay's publishing of this round belongs to its cost.
        wait_outbox_empty(&database.url).await?;
        let requests = activity.per_sec * duration.as_secs_f64();
        let per = |seconds: f64, n: f64| seconds * 1e6 / n;
        cpu.push(json!({
            "activity_us_per_request": {
                "runtime": per(runtime.cpu_seconds().unwrap_or(f64::NAN) - before.0, requests),
                "postgres": per(runtime::postgres_cpu_seconds() - before.1, requests),
                "kafka_nodes": per(runtime::brokers_cpu_seconds() - before.2, requests),
            },
            "stages": write_stages(&metrics_before, &metrics_after),
        }));
        ceiling.push(pgbench);
        ours.push(activity);
    }
    let (o, c) = (load::median(&ours), load::median(&ceiling));
    let hosted = if phase == WRITE_ALL {
        "all four services in one process"
    } else {
        "the users service alone"
    };
    Ok(ratio_row(
        phase,
        &format!("POST /users/{{id}}/activity (row + outbox; {hosted}) vs pgbench single-row INSERT, 16 clients"),
        o,
        c,
        // The targets: the users service alone as deployed, and all four services
        // sharing the process with both consumer groups.
        if phase == WRITE_ALL { 0.7 } else { 0.85 },
        json!({"activity": o, "pgbench": c, "rounds": {"activity": ours, "pgbench": ceiling, "cpu": cpu}}),
    ))
}

/// Where a write's time went between two `/metrics` pages of the runtime: the group commit's
/// batch sizes and write times, the users actor's answer (queue and batch), the whole request
/// as the runtime saw it, and the relay's steps.
fn write_stages(before: &str, after: &str) -> Value {
    let activity = ["name=\"activity\""];
    let time =
        |name: &str, filters: &[&str]| runtime::histogram_window(before, after, name, filters);
    let mut stages = serde_json::Map::new();
    stages.insert(
        "group_commit_batch_size".into(),
        runtime::count_window(before, after, "group_commit_batch_size", &activity),
    );
    stages.insert(
        "group_commit_write".into(),
        time("group_commit_write_seconds", &activity),
    );
    stages.insert(
        "actor_record_activity".into(),
        time(
            "actor_message_duration_seconds",
            &["message=\"RecordActivity\""],
        ),
    );
    stages.insert(
        "http_activity".into(),
        time(
            "http_request_duration_seconds",
            &["route=\"/users/{id}/activity\""],
        ),
    );
    stages.extend(runtime::relay_steps(before, after));
    Value::Object(stages)
}

/// Waits until the relay published everything (so one round's backlog does not load the next).
async fn wait_outbox_empty(database_url: &str) -> anyhow::Result<()> {
    runtime::wait_for(Duration::from_secs(300), "the outbox to drain", || async {
        let out = tokio::process::Command::new("psql")
            .args([database_url, "-qXAt", "-c", "SELECT count(*) FROM outbox"])
            .output()
            .await;
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
    .await
}

/// Posts between two freshness probes.
const PROBE_EVERY: u64 = 50;

/// Probes one freshness round measures.
fn freshness_probes_per_round(args: &Args) -> usize {
    (u64::from(args.fresh_rate) * args.fresh_seconds / PROBE_EVERY) as usize + 1
}

async fn freshness_phase(args: &Args, runtime: &Runtime, seed: &Seed) -> anyhow::Result<Row> {
    // Idle connections are dropped before the server's keep-alive (5 s) would close them under
    // a request.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let per_round = freshness_probes_per_round(args);
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        eprintln!("freshness round {}/{}", round + 1, args.rounds);
        let probes = &seed.probes[round * per_round..(round + 1) * per_round];
        let metrics_url = runtime.url("recommendations");
        let before = runtime::metrics_text(&client, &metrics_url)
            .await
            .unwrap_or_default();
        let mut measured = freshness::run(
            &client,
            &runtime.url("users"),
            &runtime.url("recommendations"),
            &seed.users,
            &seed.background,
            probes,
            args.fresh_rate,
            Duration::from_secs(args.fresh_seconds),
            PROBE_EVERY,
        )
        .await?;
        let after = runtime::metrics_text(&client, &metrics_url)
            .await
            .unwrap_or_default();
        let stage = |name: &str, filters: &[&str]| {
            runtime::histogram_window(&before, &after, name, filters)
        };
        measured.stages = json!({
            "outbox_delivery": stage("outbox_delivery_seconds", &[]),
            "record_age_at_ranking_commit": stage(
                "kafka_record_age_seconds",
                &["service=\"recommendations\""],
            ),
            "ranking_flush": stage("ranking_flush_duration_seconds", &[]),
            "refresh": stage("recommendation_refresh_seconds", &[]),
        });
        if let Value::Object(stages) = &mut measured.stages {
            stages.extend(runtime::relay_steps(&before, &after));
        }
        rounds.push(measured);
    }
    let measured = median_by(&rounds, |r| r.p99_ms).context("no freshness round")?;
    let missed: u64 = rounds.iter().map(|r| r.missed).sum();
    let target = 100.0;
    Ok(Row {
        phase: "freshness",
        metric: format!(
            "202 -> first GET /recommendations showing it, p99 ms, at {} posts/s",
            args.fresh_rate
        ),
        ours: measured.p99_ms,
        ceiling: f64::NAN,
        ratio: measured.p99_ms / target,
        target: format!("p99 <= {target} ms"),
        met: measured.p99_ms <= target && missed == 0,
        detail: json!({"median_round": measured, "rounds": rounds}),
    })
}

/// One round of the pipeline phase.
#[derive(Debug, Clone, Serialize)]
struct PipelineRound {
    /// Events per second of each group, from the runtime's start until both applied the
    /// backlog.
    events_per_sec: f64,
    /// Events per second of the bare consumers (the ceiling).
    bare_per_sec: f64,
    /// Peak RSS of the runtime (`VmHWM`).
    peak_bytes: u64,
    detail: Value,
}

async fn pipeline_phase(args: &Args, paths: &Paths, config: &Config) -> anyhow::Result<Vec<Row>> {
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        eprintln!("pipeline round {}/{}", round + 1, args.rounds);
        rounds.push(pipeline_round(args, paths, config, round).await?);
    }
    let median = |value: fn(&PipelineRound) -> f64| {
        let values: Vec<f64> = rounds.iter().map(value).collect();
        median_by(&values, |v| *v).unwrap_or(f64::NAN)
    };
    let ours = median(|r| r.events_per_sec);
    let ceiling = median(|r| r.bare_per_sec);
    let events = args.events;
    let pipeline_row = Row {
        phase: "pipeline",
        metric: format!(
            "{events} events applied by both groups vs bare rdkafka consumers (one per group), events/s"
        ),
        ours,
        ceiling,
        ratio: ours / ceiling,
        target: ">= 0.8x".into(),
        met: ours / ceiling >= 0.8,
        detail: json!({
            "events": events,
            "rounds": rounds.iter().map(|r| json!({
                "events_per_sec": r.events_per_sec,
                "bare_per_sec": r.bare_per_sec,
                "ratio": r.events_per_sec / r.bare_per_sec,
                "detail": r.detail,
            })).collect::<Vec<_>>(),
        }),
    };
    let peak = median(|r| r.peak_bytes as f64);
    let max = rounds.iter().map(|r| r.peak_bytes).max().unwrap_or(0);
    let mib = peak / (1024.0 * 1024.0);
    let memory_row = Row {
        phase: "memory",
        metric: "peak RSS of the runtime during the pipeline phase, MiB".into(),
        ours: mib,
        ceiling: f64::NAN,
        ratio: mib / 150.0,
        target: "<= 150 MiB".into(),
        met: mib <= 150.0,
        detail: json!({
            "median_peak_bytes": peak,
            "max_peak_bytes": max,
            "rounds_peak_bytes": rounds.iter().map(|r| r.peak_bytes).collect::<Vec<_>>(),
        }),
    };
    let previous = previous_cost(&args.output);
    Ok(vec![
        pipeline_row,
        memory_row,
        cost_row(&rounds, events, previous),
    ])
}

/// CPU seconds per 100 000 events applied by both groups in a pipeline round: the runtime,
/// Postgres and the Kafka nodes, from `/proc`.
fn cost_per_100k(detail: &Value, events: f64) -> Option<[f64; 3]> {
    let cpu = |key: &str| detail[key].as_f64();
    let per = 100_000.0 / events;
    Some([
        cpu("runtime_cpu_seconds")? * per,
        cpu("postgres_cpu_seconds")? * per,
        cpu("brokers_cpu_seconds")? * per,
    ])
}

/// The median total cost of the pipeline rounds in an earlier report at `path`, if it has them.
fn previous_cost(path: &std::path::Path) -> Option<(f64, String)> {
    let report: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let row = report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["phase"] == "pipeline")?;
    let events = row["detail"]["events"].as_f64()?;
    let totals: Vec<f64> = row["detail"]["rounds"]
        .as_array()?
        .iter()
        .filter_map(|r| cost_per_100k(&r["detail"], events))
        .map(|c| c.iter().sum())
        .collect();
    let label = report["label"].as_str().unwrap_or("unknown").to_string();
    Some((median_by(&totals, |v| *v)?, label))
}

/// The cost row: CPU seconds per 100 000 applied events (median round by total), against the
/// same figure of the report this run replaces.
fn cost_row(rounds: &[PipelineRound], events: u64, previous: Option<(f64, String)>) -> Row {
    let costs: Vec<[f64; 3]> = rounds
        .iter()
        .filter_map(|r| cost_per_100k(&r.detail, events as f64))
        .collect();
    let median = median_by(&costs, |c| c.iter().sum()).unwrap_or([f64::NAN; 3]);
    let total: f64 = median.iter().sum();
    let before = previous.as_ref().map(|(cost, _)| *cost).unwrap_or(f64::NAN);
    Row {
        phase: "cost",
        metric: "CPU seconds per 100 000 events applied by both groups (runtime + Postgres + \
                 Kafka nodes), pipeline phase"
            .into(),
        ours: total,
        ceiling: before,
        ratio: total / before,
        target: "lower than the report it replaces".into(),
        met: total < before,
        detail: json!({
            "median_round": {"runtime": median[0], "postgres": median[1], "brokers": median[2]},
            "rounds": costs.iter().map(|c| json!({"runtime": c[0], "postgres": c[1], "brokers": c[2]})).collect::<Vec<_>>(),
            "previous": previous.map(|(cost, label)| json!({"total": cost, "label": label})),
        }),
    }
}

/// Produces the backlog into topics of its own, drains it with the bare consumers, then runs
/// the recommendations and analytics runtime on it, against a fresh database.
async fn pipeline_round(
    args: &Args,
    paths: &Paths,
    config: &Config,
    round: usize,
) -> anyhow::Result<PipelineRound> {
    let profile = args.profile.as_deref().filter(|_| round == 0);
    // Each round's backlog goes once measured: three replicas of a million events each.
    runtime::isolated(paths, config, &format!("pipe{round}"), async |config| {
        measure_pipeline(args, paths, &config, profile).await
    })
    .await
}

/// One pipeline round on `config`'s database and topics: the backlog produced, drained by the
/// bare consumers, then applied by the runtime.
async fn measure_pipeline(
    args: &Args,
    paths: &Paths,
    config: &Config,
    profile: Option<&std::path::Path>,
) -> anyhow::Result<PipelineRound> {
    let backlog = pipeline::produce(
        &config.brokers,
        &config.topic_prefix,
        topic_layout(args),
        args.events,
    )
    .await?;
    let bare_brokers_before = runtime::brokers_cpu_seconds();
    let bare = pipeline::drain_bare(&config.brokers, &config.topic_prefix, 2, args.events).await?;
    let bare_secs = bare.seconds;
    let bare_brokers_cpu = runtime::brokers_cpu_seconds() - bare_brokers_before;
    let postgres_before = runtime::postgres_cpu_seconds();
    let brokers_before = runtime::brokers_cpu_seconds();
    let spawned = Instant::now();
    let runtime = Runtime::start(
        paths,
        config,
        &["recommendations", "analytics"],
        "pipeline-runtime.log",
    )
    .await?;
    let base = runtime.url("recommendations");
    let client = reqwest::Client::new();
    let title = format!(
        "pipeline: {} events applied by both groups, first round, from the runtime's readiness",
        args.events
    );
    let recording = profile::start(profile, "pipeline", &title, runtime.pid()).await?;
    let ready_secs = spawned.elapsed().as_secs_f64();
    let bar = pipeline::bar(args.events * 2, "runtime consumers");
    let mut rss_samples = 0;
    // (seconds since spawn, records applied by recommendations, by analytics)
    let mut timeline: Vec<(f64, f64, f64)> = Vec::new();
    let total = args.events as f64;
    let applied_secs = loop {
        let text = runtime::metrics_text(&client, &base)
            .await
            .unwrap_or_default();
        let consumed = |service: &str| {
            let filter = format!("service=\"{service}\"");
            runtime::sum_of(&text, "kafka_messages_consumed_total", &[&filter])
        };
        let (r, a) = (consumed("recommendations"), consumed("analytics"));
        let at = spawned.elapsed().as_secs_f64();
        if runtime.rss().is_some() {
            rss_samples += 1;
        }
        bar.set_position((r + a) as u64);
        if timeline
            .last()
            .is_none_or(|(_, r0, a0)| *r0 != r || *a0 != a)
        {
            timeline.push((at, r, a));
        }
        // Each record is counted once its batch is committed: both counts at the backlog's
        // size mean everything is applied.
        if r >= total && a >= total {
            break at;
        }
        if at > 3600.0 {
            bail!("the runtime did not apply the backlog within an hour ({r} and {a})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    bar.finish();
    if let Some(recording) = recording {
        recording.finish().await?;
    }
    let runtime_cpu = runtime.cpu_seconds().unwrap_or(f64::NAN);
    let postgres_cpu = runtime::postgres_cpu_seconds() - postgres_before;
    let brokers_cpu = runtime::brokers_cpu_seconds() - brokers_before;
    // The consumers' own view agrees: lag 0 (measured every 2 s), not timed.
    runtime::wait_for(
        Duration::from_secs(30),
        "the consumer lag to read 0",
        || {
            let (client, base) = (client.clone(), base.clone());
            async move { metric_sum(&client, &base, "kafka_consumer_lag", &[]).await == 0.0 }
        },
    )
    .await?;
    let first_secs = timeline
        .iter()
        .find(|(_, r, a)| r + a > 0.0)
        .map_or(applied_secs, |(at, _, _)| *at);
    let peak = runtime.peak_rss().unwrap_or(0);
    runtime.stop().await;
    Ok(PipelineRound {
        events_per_sec: args.events as f64 / applied_secs,
        bare_per_sec: args.events as f64 / bare_secs,
        peak_bytes: peak,
        detail: json!({
            "produce_seconds": backlog.seconds,
            "bare_seconds": bare_secs,
            "bare_first_record_seconds": bare.first_record_seconds,
            "bare_brokers_cpu_seconds": bare_brokers_cpu,
            "runtime_seconds_from_spawn": applied_secs,
            "ready_seconds_from_spawn": ready_secs,
            "first_applied_seconds_from_spawn": first_secs,
            "apply_seconds_from_first_applied": applied_secs - first_secs,
            "runtime_cpu_seconds": runtime_cpu,
            "postgres_cpu_seconds": postgres_cpu,
            "brokers_cpu_seconds": brokers_cpu,
            "rss_samples": rss_samples,
            "timeline": timeline,
        }),
    })
}

/// Prints the table and writes the JSON report.
fn report(args: &Args, rows: &[Row], growth: Option<Value>) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<10} {:>14} {:>14} {:>8} {:>14} {:>4}  metric",
        "phase", "ours", "ceiling", "ratio", "target", "met"
    );
    for row in rows {
        println!(
            "{:<10} {:>14.2} {:>14.2} {:>8.3} {:>14} {:>4}  {}",
            row.phase,
            row.ours,
            row.ceiling,
            row.ratio,
            row.target,
            if row.met { "yes" } else { "NO" },
            row.metric
        );
    }
    let machine = machine();
    let mut document = json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "label": args.label,
        "machine": machine,
        "parameters": {
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "warmup_seconds": args.warmup,
            "events": args.events,
            "fresh_rate": args.fresh_rate,
            "fresh_seconds": args.fresh_seconds,
            "scale_events": args.scale_events,
            "brokers": args.brokers,
            "replication": args.replication,
            "runtime_env": args.runtime_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        },
        "rows": rows,
    });
    if let Some(growth) = growth {
        document["growth"] = growth;
    }
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.output,
        serde_json::to_string_pretty(&document)? + "\n",
    )?;
    println!("\nwritten to {}", args.output.display());
    Ok(())
}

/// The machine a report was measured on: cores, CPU model, memory.
fn machine() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())
        }),
        "memory_kib": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines().next()?.split_whitespace().nth(1)?.parse::<u64>().ok()
        }),
    })
}
