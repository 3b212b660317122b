//! The dashboards against a real Prometheus: every panel query of every dashboard returns data
//! when Prometheus scrapes a runtime under a workload; the dashboards and the Prometheus and
//! Grafana provisioning files agree with each other; `promtool check config` accepts both
//! scrape configurations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;
use crate::observability::small_workload;

/// The repository's `dashboards/` folder.
fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// Every dashboard JSON, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// `(dashboard, panel title, expr)` of every query target.
fn targets() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    file.clone(),
                    panel["title"].as_str().unwrap_or("").to_string(),
                    target["expr"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// An expression as Grafana sends it with "All" services and a 1-minute rate window.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
}

/// The Grafana variables the dashboards may use: ours, and Grafana's rate window.
const ALLOWED_VARIABLES: [&str; 2] = ["$service", "$__rate_interval"];

/// The three dashboards exist, each panel has a unique id and queries the provisioned
/// datasource, and expressions use only the known variables.
#[test]
fn dashboards_are_complete_and_use_the_provisioned_datasource() {
    let provisioned: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dashboards_dir().join("grafana/datasource.yml")).unwrap(),
    )
    .unwrap();
    let uid = provisioned["datasources"][0]["uid"].as_str().unwrap();
    assert_eq!(
        provisioned["datasources"][0]["type"].as_str(),
        Some("prometheus")
    );

    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["actors.json", "kafka.json", "overview.json"]);
    let mut uids = BTreeSet::new();
    for (file, dashboard) in &all {
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_string()));
        let mut ids = BTreeSet::new();
        for panel in panels(dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{file}: duplicate panel id in {title}"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"].as_str(),
                Some(uid),
                "{file}: {title}"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for target in targets {
                let expr = target["expr"].as_str().expect("expr");
                for variable in expr.match_indices('$').map(|(i, _)| &expr[i..]) {
                    assert!(
                        ALLOWED_VARIABLES.iter().any(|v| variable.starts_with(v)),
                        "{file}: {title}: unknown variable in {expr}"
                    );
                }
            }
        }
    }
    assert!(targets().len() >= 30, "{} queries", targets().len());
}

/// The dashboard provider reads the folder the compose file mounts the dashboards into.
#[test]
fn grafana_provisioning_matches_the_compose_mounts() {
    let provider: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dashboards_dir().join("grafana/dashboards.yml")).unwrap(),
    )
    .unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let compose =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml"))
            .unwrap();
    assert!(
        compose.contains(&format!("./dashboards:{path}:ro")),
        "{path}"
    );
    assert!(compose
        .contains("./dashboards/grafana/datasource.yml:/etc/grafana/provisioning/datasources/"));
    assert!(compose
        .contains("./dashboards/grafana/dashboards.yml:/etc/grafana/provisioning/dashboards/"));
    assert!(compose.contains("./dashboards/prometheus.yml:/etc/prometheus/prometheus.yml"));
}

/// `promtool check config` accepts the compose and the local scrape configuration.
#[test]
fn promtool_accepts_both_scrape_configs() {
    for file in ["prometheus.yml", "prometheus.local.yml"] {
        let output = std::process::Command::new(tool("PROMTOOL_BIN", "promtool"))
            .args(["check", "config"])
            .arg(dashboards_dir().join(file))
            .output()
            .expect("promtool runs (scripts/stack.sh up installs it)");
        assert!(
            output.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A Prometheus server of this test: its own port, data folder and scrape configuration.
struct Prometheus {
    url: String,
    data: PathBuf,
    _child: tokio::process::Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Prometheus {
    /// Starts Prometheus with `dashboards/prometheus.local.yml`, pointed at `target`.
    async fn start(target: &str) -> Self {
        let data = std::env::temp_dir().join(format!("recsys-prometheus-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let template =
            std::fs::read_to_string(dashboards_dir().join("prometheus.local.yml")).unwrap();
        assert!(template.contains("127.0.0.1:8080"));
        let config = data.join("prometheus.yml");
        std::fs::write(&config, template.replace("127.0.0.1:8080", target)).unwrap();
        let start = |port: u16| {
            tokio::process::Command::new(tool("PROMETHEUS_BIN", "prometheus"))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    data.join(format!("tsdb-{port}")).display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("prometheus starts (scripts/stack.sh up installs it)")
        };
        let client = reqwest::Client::new();
        let ready = |port: u16| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://127.0.0.1:{port}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        };
        let (child, port) = retry_on_taken_port("prometheus to be ready", start, ready).await;
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            data,
            _child: child,
        };
        prometheus
    }

    /// The series an instant query returns (`None` if Prometheus refused the query).
    async fn query(&self, client: &reqwest::Client, expr: &str) -> Result<usize, String> {
        let reply: Value = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if reply["status"] != "success" {
            return Err(format!("{}: {}", reply["errorType"], reply["error"]));
        }
        Ok(reply["data"]["result"].as_array().map_or(0, Vec::len))
    }
}

/// Every panel query of every dashboard, evaluated by a real Prometheus scraping a runtime
/// under a workload, returns at least one series.
#[actix_web::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let app = spawn_app().await;
    let target = app.url(recsys::config::Service::Users);
    let target = target.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target).await;
    small_workload(&app).await;

    let targets = targets();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending = targets.clone();
    loop {
        let mut empty = Vec::new();
        for (file, title, expr) in pending {
            match prometheus.query(&client, &substitute(&expr)).await {
                Ok(series) if series > 0 => {}
                Ok(_) => empty.push((file, title, expr)),
                Err(e) => panic!("{file} / {title}: Prometheus refused {expr}: {e}"),
            }
        }
        pending = empty;
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no series after 90 s for:\n{}",
            pending
                .iter()
                .map(|(file, title, expr)| format!("{file} / {title}: {expr}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(targets.len() >= 30);
}
