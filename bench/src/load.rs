//! Load generators from the distribution: `wrk` for HTTP (closed loop, fixed connections) and
//! `pgbench` for the Postgres ceiling; their output parsed into one [`Rate`].

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Command;

/// Throughput and latency of one round.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rate {
    /// Requests (or transactions) per second.
    pub per_sec: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// The round whose throughput is the median of `rounds`.
pub fn median(rounds: &[Rate]) -> Rate {
    crate::median_by(rounds, |r| r.per_sec).unwrap_or_default()
}

/// `wrk -t1 -c<connections> -d<duration> --latency [-s script] url`.
pub async fn wrk(
    url: &str,
    connections: u32,
    duration: Duration,
    script: Option<&Path>,
) -> anyhow::Result<Rate> {
    let mut command = Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs()),
        "--latency",
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output().await.context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        bail!("wrk saw errors ({}): {url}\n{text}", line.trim());
    }
    parse_wrk(&text).with_context(|| format!("parsing wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Rate> {
    let per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p))
            .and_then(|v| duration_ms(v.trim()))
    };
    Some(Rate {
        per_sec,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// `635.91us`, `1.33ms`, `2.01s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

/// A wrk script sending its `GET` with a bearer token.
pub fn get_script(token: &str) -> String {
    format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n")
}

/// A wrk script posting `body` with `token`.
pub fn post_script(body: &str, token: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.body = '{body}'\n"
    )
}

/// `pgbench -n -c<clients> -j2 -T<duration> -f script database_url` with per-statement
/// latencies off; answers transactions per second and its latency average as p50 (pgbench
/// reports no percentiles without a log).
pub async fn pgbench(
    database_url: &str,
    clients: u32,
    duration: Duration,
    script: &Path,
) -> anyhow::Result<Rate> {
    let output = Command::new("pgbench")
        .args(["-n", &format!("-c{clients}"), "-j2"])
        .arg(format!("-T{}", duration.as_secs()))
        .arg("-f")
        .arg(script)
        .arg(database_url)
        .output()
        .await
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    let per_sec = field("tps = ").context("no tps in pgbench output")?;
    let latency = field("latency average = ").unwrap_or(f64::NAN);
    Ok(Rate {
        per_sec,
        p50_ms: latency,
        p99_ms: f64::NAN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 2s test @ http://127.0.0.1:1/healthz\n  1 threads and 64 connections\n\
            \x20 Latency Distribution\n     50%  635.91us\n     75%  712.00us\n     90%  800.00us\n\
            \x20    99%    1.33ms\n  196844 requests in 2.00s, 27.03MB read\n\
            Requests/sec:  98422.12\nTransfer/sec:     13.51MB\n";
        let rate = parse_wrk(text).unwrap();
        assert_eq!(rate.per_sec, 98422.12);
        assert!((rate.p50_ms - 0.63591).abs() < 1e-9);
        assert!((rate.p99_ms - 1.33).abs() < 1e-9);
    }
}
