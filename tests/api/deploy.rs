//! The docker-compose deployment, checked without a Docker engine: the distribution's
//! `docker-compose config -q` accepts the file, every environment variable it gives a recsys
//! container is one the runtime reads, each service container hosts the service of its port,
//! and nothing waits by sleeping (healthchecks and `depends_on` conditions instead).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use recsys::cli::Cli;
use recsys::config::Service;
use serde_yaml_ng::Value;

use crate::helpers::tool;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker-compose` with the repository's compose file (`DOCKER_COMPOSE_BIN` overrides),
/// with `JWT_SECRET` set as an operator must.
fn compose(args: &[&str]) -> std::process::Output {
    compose_with_secret(
        args,
        Some("0123456789abcdef0123456789abcdef0123456789abcdef"),
    )
}

fn compose_with_secret(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = Command::new(tool("DOCKER_COMPOSE_BIN", "docker-compose"));
    command
        .current_dir(root())
        .args(["--project-name", "recsys", "-f", "docker-compose.yml"])
        .args(args)
        .env_remove("JWT_SECRET");
    if let Some(secret) = secret {
        command.env("JWT_SECRET", secret);
    }
    command
        .output()
        .expect("docker-compose runs (scripts/test.sh installs the distribution's)")
}

/// No secret ships in the file: without `JWT_SECRET` the deployment does not start (a default
/// would be public, and anyone could sign admin tokens with it).
#[test]
fn the_deployment_refuses_to_start_without_a_jwt_secret() {
    let output = compose_with_secret(&["config", "-q"], None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_SECRET"));
    let resolved = String::from_utf8_lossy(&compose(&["config"]).stdout).into_owned();
    assert!(
        !resolved.contains("dev-secret"),
        "no default secret in the file"
    );
}

/// The compose file as `docker-compose config` resolves it (anchors merged, variables set).
fn resolved() -> Value {
    let output = compose(&["config"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml_ng::from_slice(&output.stdout).expect("docker-compose config prints YAML")
}

/// Every environment variable the runtime reads (the `env` of each `serve` argument).
fn runtime_env_names() -> BTreeSet<String> {
    let command = Cli::command();
    let mut names = BTreeSet::new();
    for sub in command.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
    }
    assert!(names.contains("KAFKA_ADDRESS") && names.contains("DATABASE_URL"));
    names
}

/// The port a service listens on by default (the seed system's).
fn seed_port(service: Service) -> u16 {
    match service {
        Service::Users => 8080,
        Service::Products => 8081,
        Service::Recommendations => 8082,
        Service::Analytics => 8083,
    }
}

/// The services built from this repository's Dockerfile.
fn recsys_services(compose: &Value) -> Vec<(String, &Value)> {
    compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, service)| {
            service["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("recsys"))
                || !service["build"].is_null()
        })
        .map(|(name, service)| (name.as_str().unwrap().to_string(), service))
        .collect()
}

fn env_names(service: &Value) -> BTreeSet<String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|e| e.as_str().unwrap().split('=').next().unwrap().to_string())
            .collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let output = compose(&["config", "-q"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "warnings: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_variable_compose_sets_is_one_the_runtime_reads() {
    let compose = resolved();
    let known = runtime_env_names();
    let services = recsys_services(&compose);
    assert!(services.len() >= 4, "{services:?}");
    for (name, service) in services {
        let set = env_names(service);
        assert!(!set.is_empty(), "{name} sets no environment");
        let unknown: Vec<_> = set.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{name} sets variables the runtime does not read: {unknown:?}"
        );
    }
}

#[test]
fn one_container_per_service_on_the_seed_ports_with_healthchecks() {
    let compose = resolved();
    let services = recsys_services(&compose);
    for service in Service::ALL {
        let (name, spec) = services
            .iter()
            .find(|(name, _)| name == service.name())
            .unwrap_or_else(|| panic!("no {} container", service.name()));
        let command: Vec<&str> = spec["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        // The `migrate` container migrates; the services only check the schema.
        assert_eq!(
            command,
            ["serve", "--no-migrate", "--services", service.name()],
            "{name}"
        );
        let port = seed_port(service);
        let published = serde_yaml_ng::to_string(&spec["ports"]).unwrap();
        assert!(
            published.contains(&format!("published: {port}"))
                || published.contains(&format!("{port}:{port}")),
            "{name} does not publish {port}: {published}"
        );
        // The image has no HTTP client: the binary checks itself.
        let check: Vec<String> = spec["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            check,
            ["CMD", "recsys", "healthcheck", "--port", &port.to_string()],
            "{name}"
        );
    }
    for broker in [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
    ] {
        let spec = &compose["services"][broker];
        assert!(!spec.is_null(), "no {broker} service");
        assert!(
            !spec["healthcheck"].is_null(),
            "{broker} has no healthcheck"
        );
    }
    for (n, port) in [(1, 9091), (2, 9092), (3, 9093)] {
        let ports =
            serde_yaml_ng::to_string(&compose["services"][format!("kafka-{n}")]["ports"]).unwrap();
        assert!(ports.contains(&port.to_string()), "kafka-{n}: {ports}");
    }
}

/// The infrastructure (brokers, Postgres, Redis, Prometheus, Grafana) is reachable from the
/// host's loopback only; the runtime image runs as a numeric non-root user and carries no
/// HTTP client.
#[test]
fn infrastructure_is_published_on_loopback_and_the_image_runs_unprivileged() {
    let compose = resolved();
    for name in [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
    ] {
        for port in compose["services"][name]["ports"].as_sequence().unwrap() {
            // `config` writes either `host_ip:published:target/proto` or a mapping.
            let loopback = match port.as_str() {
                Some(short) => short.starts_with("127.0.0.1:"),
                None => port["host_ip"].as_str() == Some("127.0.0.1"),
            };
            assert!(loopback, "{name} publishes {port:?} beyond loopback");
        }
    }
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let runtime = dockerfile
        .split("AS runtime")
        .nth(1)
        .expect("a runtime stage");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u > 0) && gid.parse::<u32>().is_ok(),
        "USER {user}"
    );
    assert!(
        !runtime.contains(" curl") && !runtime.contains(" wget"),
        "{runtime}"
    );
}

#[test]
fn startup_order_comes_from_health_not_sleeps() {
    let compose = resolved();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if let Some(deps) = service["depends_on"].as_mapping() {
            for (dep, spec) in deps {
                let condition = spec["condition"].as_str().unwrap_or("");
                assert!(
                    matches!(
                        condition,
                        "service_healthy" | "service_completed_successfully" | "service_started"
                    ),
                    "{name} -> {dep:?}: {condition}"
                );
            }
        }
        let text = serde_yaml_ng::to_string(service).unwrap();
        assert!(!text.contains("sleep "), "{name} sleeps: {text}");
    }
    for service in Service::ALL {
        let deps = &compose["services"][service.name()]["depends_on"];
        assert_eq!(
            deps["migrate"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{}",
            service.name()
        );
        assert_eq!(
            deps["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
    }
}

#[test]
fn the_image_is_built_in_stages_and_runs_the_binary() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build expected");
    assert!(dockerfile.contains("cargo build --release --locked --bin recsys"));
    assert!(dockerfile.contains("ENTRYPOINT [\"recsys\"]"));
}

/// The compose file runs the Apache Kafka version the local stack and the tests run
/// (`scripts/kafka/pom.xml`), on every node.
#[test]
fn compose_runs_the_kafka_version_of_the_local_stack() {
    let pom = std::fs::read_to_string(root().join("scripts/kafka/pom.xml")).unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("the pom names kafka.version");
    let compose = resolved();
    let images: Vec<&str> = ["kafka-1", "kafka-2", "kafka-3"]
        .iter()
        .map(|node| compose["services"][*node]["image"].as_str().unwrap())
        .collect();
    let expected = format!("apache/kafka:{version}");
    assert_eq!(images, [expected.as_str(); 3]);
}

/// Redis is a bounded cache in both the deployment and the local stack: the same `maxmemory`
/// and eviction policy, and nothing written to disk in the deployment, which runs Valkey.
#[test]
fn redis_is_a_bounded_cache_in_compose_and_the_stack() {
    let compose = resolved();
    let command: Vec<&str> = compose["services"]["redis"]["command"]
        .as_sequence()
        .expect("redis has a command")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let value_of = |flag: &str| {
        let at = command.iter().position(|w| *w == flag);
        at.and_then(|i| command.get(i + 1)).copied()
    };
    let stack = std::fs::read_to_string(root().join("scripts/stack.sh")).unwrap();
    let stack_value = |name: &str| {
        stack
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    assert_eq!(
        value_of("--maxmemory"),
        stack_value("REDIS_MAXMEMORY").as_deref()
    );
    assert_eq!(value_of("--maxmemory-policy"), Some("allkeys-lru"));
    assert_eq!(stack_value("REDIS_POLICY").as_deref(), Some("allkeys-lru"));
    assert_eq!(value_of("--appendonly"), Some("no"));
    // The BSD-licensed server (docs/operations.md, "Which Redis"): its image, its binaries.
    let service = &compose["services"]["redis"];
    assert!(
        service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("valkey/valkey:")),
        "{:?}",
        service["image"]
    );
    assert_eq!(command[0], "valkey-server");
    assert_eq!(
        service["healthcheck"]["test"][1].as_str(),
        Some("valkey-cli")
    );
}

/// Every document of every manifest under `deploy/kubernetes/`.
fn kubernetes_documents() -> Vec<Value> {
    use serde::Deserialize as _;
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                documents.push(value);
            }
        }
    }
    documents
}

/// The Kubernetes manifests split the runtime by role (users and products; recommendations;
/// analytics): every service in exactly one role, on its port, with probes, resources and no
/// service links; settings from a ConfigMap and a Secret that name only variables the runtime
/// reads; the consumer roles scaled by an autoscaler bounded by the partition count.
#[test]
fn kubernetes_manifests_match_the_code() {
    let documents = kubernetes_documents();
    let of_kind =
        |kind: &str| -> Vec<&Value> { documents.iter().filter(|d| d["kind"] == kind).collect() };
    let known = runtime_env_names();
    let mut partitions = None;
    for config in of_kind("ConfigMap").into_iter().chain(of_kind("Secret")) {
        let data = config["data"]
            .as_mapping()
            .or(config["stringData"].as_mapping())
            .unwrap();
        for (key, value) in data {
            let key = key.as_str().unwrap();
            assert!(known.contains(key), "{key} is not a setting of the runtime");
            if key == "KAFKA_PARTITIONS" {
                partitions = value.as_str().and_then(|v| v.parse::<i64>().ok());
            }
        }
    }
    let partitions = partitions.expect("KAFKA_PARTITIONS in the ConfigMap");
    let mut hosted = Vec::new();
    for deployment in of_kind("Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"], Value::Bool(false), "{name}");
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..3],
            ["serve", "--no-migrate", "--services"],
            "{name}"
        );
        let services: Vec<Service> = args[3]
            .split(',')
            .map(|s| {
                *Service::ALL
                    .iter()
                    .find(|x| x.name() == s)
                    .unwrap_or_else(|| panic!("{name}: unknown service {s}"))
            })
            .collect();
        let ports: BTreeSet<i64> = container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        let expected: BTreeSet<i64> = services.iter().map(|s| i64::from(seed_port(*s))).collect();
        assert_eq!(ports, expected, "{name}: container ports");
        for probe in ["readinessProbe", "livenessProbe"] {
            let port = container[probe]["httpGet"]["port"].as_i64().unwrap();
            assert!(ports.contains(&port), "{name}: {probe} on {port}");
        }
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{name}"
        );
        assert!(
            !container["resources"]["requests"].is_null()
                && !container["resources"]["limits"].is_null(),
            "{name}"
        );
        let refs: Vec<&str> = container["envFrom"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|r| {
                r["configMapRef"]["name"]
                    .as_str()
                    .or(r["secretRef"]["name"].as_str())
            })
            .collect();
        assert_eq!(
            refs,
            ["recsys", "recsys"],
            "{name}: settings from the ConfigMap and the Secret"
        );
        let service = of_kind("Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name}: no Service"));
        let targets: BTreeSet<i64> = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["targetPort"].as_i64().unwrap())
            .collect();
        assert_eq!(targets, ports, "{name}: Service ports");
        let consumes = services
            .iter()
            .any(|s| matches!(s, Service::Recommendations | Service::Analytics));
        let autoscaler = of_kind("HorizontalPodAutoscaler")
            .into_iter()
            .find(|h| h["spec"]["scaleTargetRef"]["name"] == name);
        if consumes {
            let autoscaler = autoscaler.unwrap_or_else(|| panic!("{name}: no autoscaler"));
            let max = autoscaler["spec"]["maxReplicas"].as_i64().unwrap();
            assert!(
                max <= partitions,
                "{name}: {max} replicas for {partitions} partitions"
            );
        }
        hosted.extend(services);
    }
    hosted.sort_by_key(|s| s.name());
    let mut all = Service::ALL.to_vec();
    all.sort_by_key(|s| s.name());
    assert_eq!(hosted, all, "every service in exactly one role");
    let migrate = of_kind("Job");
    assert!(
        migrate
            .iter()
            .any(|j| j["spec"]["template"]["spec"]["containers"][0]["args"][0] == "migrate"),
        "a migration Job"
    );
}

/// The image's entrypoint, run the way the image runs it: the binary the builder stage installs
/// at the path the entrypoint names, as the image's numeric user, with only the image's
/// environment. `--help` answers and lists the image's default command; so does that command's
/// own `--help`, and the health check's that the compose file uses instead of curl.
#[test]
fn the_image_entrypoint_runs_the_binary_as_the_image_user() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let runtime = dockerfile
        .split("AS runtime")
        .nth(1)
        .expect("a runtime stage");
    let instruction = |name: &str| -> Vec<String> {
        let line = runtime
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("a {name} line"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} in exec form: {e}"))
    };
    let (entrypoint, cmd) = (instruction("ENTRYPOINT"), instruction("CMD"));
    let installed = runtime
        .lines()
        .find_map(|l| l.strip_prefix("COPY --from=builder /out/recsys "))
        .expect("the runtime stage copies the built binary")
        .trim()
        .to_string();
    let program = Path::new(&installed);
    assert_eq!(
        program.file_name().unwrap().to_str(),
        Some(entrypoint[0].as_str()),
        "the entrypoint names the installed binary"
    );
    let env: Vec<(String, String)> = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line")
        .trim()
        .to_string();

    // The image's filesystem as far as the binary is concerned: the binary at the installed
    // path in a directory the image user may read.
    let image = std::env::temp_dir().join(format!("recsys-image-{}", uuid::Uuid::new_v4()));
    let bin_dir = image.join(program.parent().unwrap().strip_prefix("/").unwrap());
    std::fs::create_dir_all(&bin_dir).unwrap();
    let binary = bin_dir.join(program.file_name().unwrap());
    std::fs::copy(env!("CARGO_BIN_EXE_recsys"), &binary).unwrap();
    let run = |args: &[&str]| -> (bool, String) {
        let (uid, gid) = user.split_once(':').unwrap();
        // As root (CI), become the image's user; otherwise run as whoever runs the tests.
        let as_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut command = if as_root {
            // By its path: the child's PATH is the image's.
            let setpriv = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("setpriv"))
                .find(|p| p.is_file())
                .expect("setpriv (util-linux) on PATH");
            let mut c = Command::new(setpriv);
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_string(),
                "--".to_string(),
            ]);
            c.arg(&entrypoint[0]);
            c
        } else {
            Command::new(&entrypoint[0])
        };
        command
            .args(&entrypoint[1..])
            .args(args)
            .env_clear()
            .env("PATH", &bin_dir)
            .envs(env.iter().cloned())
            .current_dir("/");
        let out = command.output().expect("the entrypoint runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, help) = run(&["--help"]);
    assert!(ok, "--help fails: {help}");
    for command in [cmd[0].as_str(), "healthcheck", "migrate"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lists `{command}`:\n{help}"
        );
    }
    let (ok, serve_help) = run(&[&cmd[0], "--help"]);
    assert!(ok && serve_help.contains("--services"), "{serve_help}");
    let (ok, check_help) = run(&["healthcheck", "--help"]);
    assert!(ok && check_help.contains("--port"), "{check_help}");
    let _ = std::fs::remove_dir_all(&image);
}
