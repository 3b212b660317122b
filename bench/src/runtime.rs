//! The system under test, started by the bench itself on the local stack's Kafka cluster and
//! Postgres: a fresh database and `recsys serve` processes (all services, or a subset) on free
//! ports; their RSS, CPU time and `/metrics` read while they run, and the CPU time of Postgres
//! and of the Kafka brokers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::{Child, Command};

/// Where the pieces are and how to reach the shared servers.
#[derive(Debug, Clone)]
pub struct Paths {
    pub recsys: PathBuf,
    /// Postgres server URL without a database.
    pub postgres: String,
    /// Logs and the pgbench script.
    pub work: PathBuf,
}

/// A port the OS says is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 50 ms until it is true or `deadline` passed.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !check().await {
        if Instant::now() > until {
            bail!("{what} did not happen within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A database of its own on the shared Postgres, dropped by [`Database::drop_now`].
pub struct Database {
    pub name: String,
    pub url: String,
    server: String,
}

impl Database {
    pub async fn create(server: &str) -> anyhow::Result<Self> {
        let name = format!("recsys_bench_{}", uuid::Uuid::new_v4().simple());
        psql(server, &format!("CREATE DATABASE {name}")).await?;
        Ok(Self {
            url: format!("{server}/{name}"),
            name,
            server: server.to_string(),
        })
    }

    pub async fn drop_now(&self) {
        let _ = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

/// Runs `measure` with `config` on a database of its own and the topic prefix
/// `<prefix><name>.`, then drops the database and deletes those topics and the groups, whatever
/// `measure` answered: no measurement starts with what an earlier one left behind.
pub async fn isolated<T, F, Fut>(
    paths: &Paths,
    config: &Config,
    name: &str,
    measure: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let database = Database::create(&paths.postgres).await?;
    let mut config = config.clone();
    config.database_url = database.url.clone();
    config.topic_prefix = format!("{}{name}.", config.topic_prefix);
    let (brokers, prefix) = (config.brokers.clone(), config.topic_prefix.clone());
    let result = measure(config).await;
    database.drop_now().await;
    crate::pipeline::delete_topics_and_groups(&brokers, &prefix).await?;
    result
}

/// The one value `sql` answers on the database at `url` (`psql -At`, the statement on stdin:
/// it may be longer than one argument may be).
pub async fn psql_value(url: &str, sql: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("psql")
        .args([url, "-qXAt", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running psql")?;
    let mut stdin = child.stdin.take().context("psql's stdin")?;
    stdin.write_all(sql.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await.context("running psql")?;
    if !output.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs one statement with `psql` on the server's `postgres` database.
pub async fn psql(server: &str, sql: &str) -> anyhow::Result<()> {
    let status = Command::new("psql")
        .args([
            &format!("{server}/postgres"),
            "-qX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .stdout(Stdio::null())
        .status()
        .await
        .context("running psql")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

/// What every runtime of one bench run shares.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub brokers: String,
    pub topic_prefix: String,
    pub redis: String,
    pub redis_prefix: String,
    pub jwt_secret: String,
    pub admin_email: String,
    pub admin_password: String,
    /// More settings for every runtime (`--runtime-env KEY=VALUE`), e.g. to compare a setting.
    pub extra_env: Vec<(String, String)>,
}

/// A `recsys serve` process; stopped (SIGKILL) when dropped.
pub struct Runtime {
    pub ports: BTreeMap<&'static str, u16>,
    child: Child,
}

impl Runtime {
    /// Starts `recsys serve --services <services>` and waits until each service is ready.
    pub async fn start(
        paths: &Paths,
        config: &Config,
        services: &[&'static str],
        log_name: &str,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(paths.work.join(log_name))?;
        let mut command = Command::new(&paths.recsys);
        command
            .args(["serve", "--services", &services.join(",")])
            .env_clear()
            .env("DATABASE_URL", &config.database_url)
            .env("KAFKA_ADDRESS", &config.brokers)
            .env("KAFKA_TOPIC_PREFIX", &config.topic_prefix)
            .env("REDIS_ADDRESS", &config.redis)
            .env("REDIS_KEY_PREFIX", &config.redis_prefix)
            .env("JWT_SECRET", &config.jwt_secret)
            .env("ADMIN_EMAIL", &config.admin_email)
            .env("ADMIN_PASSWORD", &config.admin_password)
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "json");
        let mut ports = BTreeMap::new();
        for &service in services {
            let port = free_port();
            command.env(format!("{}_PORT", service.to_uppercase()), port.to_string());
            ports.insert(service, port);
        }
        command.envs(config.extra_env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", paths.recsys.display()))?;
        let runtime = Self { ports, child };
        let client = reqwest::Client::new();
        for port in runtime.ports.values() {
            let url = format!("http://127.0.0.1:{port}/readyz");
            wait_for(Duration::from_secs(60), "the runtime to be ready", || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    client
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await
            .with_context(|| format!("see {}", paths.work.join(log_name).display()))?;
        }
        Ok(runtime)
    }

    /// `http://127.0.0.1:<port>` of `service`.
    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> Option<u64> {
        status_kib(self.pid(), "VmRSS:").map(|k| k * 1024)
    }

    /// The highest resident set size so far, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM:").map(|k| k * 1024)
    }

    /// CPU time the process has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid(), false)
    }

    /// Stops the process with SIGTERM and waits for it (SIGKILL after 20 s, said on stderr).
    pub async fn stop(mut self) {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("(runtime {pid} still running 20 s after SIGTERM: killed)");
        }
    }
}

/// User + system CPU time of process `pid` and, with `reaped`, of its children that exited and
/// were waited for (utime, stime, cutime and cstime of `/proc/PID/stat`), in seconds.
fn cpu_seconds(pid: u32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, numbered from the 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let wanted = if reaped { 11..15 } else { 11..13 };
    let ticks: Option<f64> = fields
        .get(wanted)?
        .iter()
        .map(|f| f.parse::<f64>().ok())
        .sum();
    Some(ticks? / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)`: 100 on Linux for every architecture this runs on.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// CPU seconds used so far by Postgres: the processes named `postgres` now alive (the server
/// and its backends) and those that exited (a backend whose client disconnected, an autovacuum
/// worker), which the server counts as its reaped children. Sampled before and after a phase,
/// the difference is what the phase cost Postgres.
pub fn postgres_cpu_seconds() -> f64 {
    processes_cpu_seconds(|comm, _| comm == "postgres", true)
}

/// CPU seconds used so far by the Kafka nodes now alive (`java ... kafka.Kafka ...`).
pub fn brokers_cpu_seconds() -> f64 {
    processes_cpu_seconds(|_, cmdline| cmdline.contains("kafka.Kafka"), false)
}

/// CPU seconds of the live processes whose `comm` and NUL-separated command line pass `wanted`
/// (with `reaped`, and of their children that exited).
fn processes_cpu_seconds(wanted: impl Fn(&str, &str) -> bool, reaped: bool) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            wanted(comm.trim(), &String::from_utf8_lossy(&cmdline))
        })
        .filter_map(|pid| cpu_seconds(pid, reaped))
        .sum()
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The sum of the samples of `name` on `/metrics` whose label text contains every `filter`.
pub async fn metric_sum(client: &reqwest::Client, base: &str, name: &str, filters: &[&str]) -> f64 {
    match metrics_text(client, base).await {
        Some(text) => sum_of(&text, name, filters),
        None => f64::NAN,
    }
}

/// The runtime's `/metrics` page, if it answered.
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> Option<String> {
    let response = client.get(format!("{base}/metrics")).send().await.ok()?;
    response.text().await.ok()
}

/// Sum of the samples of `name` in a `/metrics` page whose labels contain every `filter`.
pub fn sum_of(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0
}

/// Writes `text` to `name` in the work folder; answers the path.
pub fn write_file(work: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = work.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The cumulative buckets `(le, count)` of histogram `name` in a `/metrics` page, summed over
/// the label sets that contain every `filter`, in `le` order.
pub fn buckets_of(text: &str, name: &str, filters: &[&str]) -> Vec<(f64, f64)> {
    let series = format!("{name}_bucket{{");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&series)) {
        if !filters.iter().all(|f| line.contains(f)) {
            continue;
        }
        let Some(le) = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|le| le.parse::<f64>().ok())
        else {
            continue;
        };
        let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        match sums.iter_mut().find(|(l, _)| *l == le) {
            Some((_, sum)) => *sum += count,
            None => sums.push((le, count)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// What a histogram of seconds observed between two `/metrics` pages: the count and the p50
/// and p99 in milliseconds, interpolated within buckets the way Prometheus'
/// `histogram_quantile` does.
pub fn histogram_window(before: &str, after: &str, name: &str, filters: &[&str]) -> Value {
    let (total, p50, p99) = quantiles(before, after, name, filters, 1000.0);
    serde_json::json!({"count": total, "p50_ms": p50, "p99_ms": p99})
}

/// The relay's four steps (`outbox_batch_step_seconds`) between two `/metrics` pages, as
/// [`histogram_window`]s named `relay_<step>`.
pub fn relay_steps(before: &str, after: &str) -> serde_json::Map<String, Value> {
    ["read", "stamp", "publish", "remove"]
        .into_iter()
        .map(|step| {
            let filter = format!("step=\"{step}\"");
            let window = histogram_window(before, after, "outbox_batch_step_seconds", &[&filter]);
            (format!("relay_{step}"), window)
        })
        .collect()
}

/// The same for a histogram of counts (a batch's size): the count and the p50 and p99 as
/// observed.
pub fn count_window(before: &str, after: &str, name: &str, filters: &[&str]) -> Value {
    let (total, p50, p99) = quantiles(before, after, name, filters, 1.0);
    serde_json::json!({"count": total, "p50": p50, "p99": p99})
}

/// The observations between the two pages and their p50 and p99, times `scale`.
fn quantiles(
    before: &str,
    after: &str,
    name: &str,
    filters: &[&str],
    scale: f64,
) -> (f64, Option<f64>, Option<f64>) {
    let (first, last) = (
        buckets_of(before, name, filters),
        buckets_of(after, name, filters),
    );
    let delta: Vec<(f64, f64)> = last
        .iter()
        .map(|(le, count)| {
            let earlier = first.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, c)| *c);
    let quantile = |q: f64| -> Option<f64> {
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &delta {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0 * scale);
                }
                let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
                return Some((lower.0 + (le - lower.0) * within) * scale);
            }
            lower = (le, count);
        }
        None
    };
    (total, quantile(0.5), quantile(0.99))
}
