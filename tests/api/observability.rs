//! What `/metrics` tells an operator: every metric family with its labels after a small
//! workload, label values bounded (no ids), actor mailbox depth rising under a flood and
//! falling back to zero, and restarts counted.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use recsys::config::Service;
use recsys_actors::supervision::Fail;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

/// One sample of the text exposition: family, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format (as the prometheus crate writes it).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// The samples on `service`'s `/metrics`.
pub async fn samples(app: &TestApp, service: Service) -> Vec<Sample> {
    parse_samples(&app.get(service, "/metrics", None).await.text)
}

/// `actor_mailbox_depth` of one actor.
fn depth(samples: &[Sample], service: &str, actor: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == "actor_mailbox_depth"
                && s.label("service") == Some(service)
                && s.label("actor") == Some(actor)
        })
        .map(|s| s.value)
}

/// Every actor the all-in-one runtime starts, as `(service, actor)` labels.
const ACTORS: [(&str, &str); 11] = [
    ("users", "UsersActor"),
    ("users", "HashWorker"),
    ("products", "ProductsActor"),
    ("runtime", "OutboxRelay"),
    ("recommendations", "RankingActor"),
    ("recommendations", "RecommendationsActor"),
    ("recommendations", "CacheActor"),
    ("recommendations", "KafkaConsumer"),
    ("analytics", "AggregationActor"),
    ("analytics", "AnalyticsQueries"),
    ("analytics", "KafkaConsumer"),
];

/// A little of everything: accounts, products, actions flowing to both consumers, cached and
/// uncached recommendations, statistics. Answers when both consumers applied the actions.
pub async fn small_workload(app: &TestApp) {
    let (user, token, _) = app.new_user().await;
    let product = app
        .create_product("Observed lamp", json!(19.99), Some("lighting"))
        .await;
    let product = product["id"].as_str().unwrap().to_string();
    for action in ["view", "cart_add", "purchase"] {
        app.post_activity(user, &token, &product, action, 1).await;
    }
    app.get(Service::Products, &format!("/products/{product}"), None)
        .await;
    app.get(Service::Products, "/products/not-a-uuid", None)
        .await;
    eventually(
        Duration::from_secs(30),
        "both consumers to apply the actions",
        || async {
            let samples = samples(app, Service::Users).await;
            let applied = |service: &str| {
                samples
                    .iter()
                    .filter(|s| {
                        s.name == "kafka_messages_consumed_total"
                            && s.label("service") == Some(service)
                            && s.label("status") == Some("ok")
                            && s.label("type") == Some("user.activity")
                    })
                    .map(|s| s.value)
                    .sum::<f64>()
            };
            (applied("recommendations") >= 3.0 && applied("analytics") >= 3.0).then_some(())
        },
    )
    .await;
    for _ in 0..2 {
        let reply = app
            .get(Service::Recommendations, "/recommendations?limit=5", None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let reply = app
        .get(
            Service::Analytics,
            "/analytics/summary",
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// After a small workload every family named in the observability issue is on `/metrics` with
/// its labels, and the process collector is there too.
#[actix_web::test]
async fn every_metric_family_is_exposed_with_its_labels() {
    let app = spawn_app().await;
    small_workload(&app).await;
    let samples = eventually(
        Duration::from_secs(10),
        "lag to be measured for both groups",
        || async {
            let samples = samples(&app, Service::Analytics).await;
            let groups: BTreeSet<_> = samples
                .iter()
                .filter(|s| s.name == "kafka_consumer_lag")
                .filter_map(|s| s.label("service").map(str::to_string))
                .collect();
            (groups.len() == 2).then_some(samples)
        },
    )
    .await;

    let labelled = |name: &str, labels: &[&str]| {
        let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert!(!found.is_empty(), "{name} is missing from /metrics");
        for sample in &found {
            for label in labels {
                assert!(
                    sample.label(label).is_some(),
                    "{name} has no {label} label: {sample:?}"
                );
            }
        }
    };
    labelled("actor_mailbox_depth", &["service", "actor"]);
    labelled(
        "actor_messages_total",
        &["service", "actor", "message", "outcome"],
    );
    labelled(
        "actor_message_duration_seconds_bucket",
        &["service", "actor", "message", "le"],
    );
    labelled("actor_restarts_total", &["service", "actor"]);
    labelled(
        "kafka_consumer_lag",
        &["service", "group", "topic", "partition"],
    );
    labelled("kafka_consumer_rebalances_total", &["service"]);
    labelled("kafka_consumer_assigned_partitions", &["service", "group"]);
    labelled("outbox_oldest_pending_age_seconds", &[]);
    labelled("outbox_pending", &[]);
    labelled("kafka_messages_produced_total", &["topic", "status"]);
    labelled(
        "kafka_messages_consumed_total",
        &["service", "topic", "type", "status"],
    );
    labelled(
        "http_requests_total",
        &["service", "method", "route", "status"],
    );
    labelled("redis_requests_total", &["operation", "status"]);
    labelled("group_commit_batch_size_bucket", &["name", "le"]);
    labelled("group_commit_write_seconds_bucket", &["name", "le"]);
    // Every recorded action went through one batch of the activity group commit, and every
    // batch taken was written and timed.
    let value = |name: &str, filter: &dyn Fn(&Sample) -> bool| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && filter(s))
            .map(|s| s.value)
            .sum()
    };
    let activity = |s: &Sample| s.label("name") == Some("activity");
    let recorded = value("actor_messages_total", &|s| {
        s.label("message") == Some("RecordActivity")
    });
    assert!(recorded > 0.0, "the workload records actions");
    assert_eq!(value("group_commit_batch_size_sum", &activity), recorded);
    assert_eq!(
        value("group_commit_write_seconds_count", &activity),
        value("group_commit_batch_size_count", &activity),
    );
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        labelled(family, &[]);
    }

    for (service, actor) in ACTORS {
        assert_eq!(
            depth(&samples, service, actor),
            Some(0.0),
            "{service}/{actor}: idle, so nothing in its mailbox"
        );
        assert!(
            samples.iter().any(|s| s.name == "actor_restarts_total"
                && s.label("service") == Some(service)
                && s.label("actor") == Some(actor)),
            "{service}/{actor} has no restart counter"
        );
    }
    let handled: BTreeSet<(String, String)> = samples
        .iter()
        .filter(|s| s.name == "actor_messages_total" && s.value > 0.0)
        .map(|s| {
            (
                s.label("actor").unwrap().to_string(),
                s.label("message").unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("UsersActor", "RecordActivity"),
        ("ProductsActor", "CreateProduct"),
        ("RankingActor", "ApplyBatch"),
        ("AggregationActor", "ApplyBatch"),
        ("RecommendationsActor", "Recommend"),
        ("RecommendationsActor", "Refresh"),
        ("CacheActor", "CacheGetStamped"),
        ("AnalyticsQueries", "Stats"),
        ("OutboxRelay", "Wake"),
    ] {
        assert!(
            handled.contains(&(expected.0.to_string(), expected.1.to_string())),
            "no {expected:?} in actor_messages_total: {handled:?}"
        );
    }
}

/// Label values are bounded: route templates and type names, never an id from a request.
#[actix_web::test]
async fn no_label_value_carries_an_id() {
    let app = spawn_app().await;
    small_workload(&app).await;
    let missing = Uuid::new_v4();
    app.get(Service::Products, &format!("/products/{missing}"), None)
        .await;
    let text = app.get(Service::Users, "/metrics", None).await.text;
    let samples = parse_samples(&text);
    assert!(!samples.is_empty());
    for sample in &samples {
        for (key, value) in &sample.labels {
            let looks_like_id = value
                .split(['/', '.', '-', '_'])
                .any(|part| part.len() >= 8 && part.chars().all(|c| c.is_ascii_hexdigit()))
                || Uuid::parse_str(value).is_ok();
            // Topic names carry the test's own prefix, which is random by design.
            let is_topic = key == "topic" || key == "group";
            assert!(
                is_topic || !looks_like_id,
                "{} has an unbounded {key}={value}",
                sample.name
            );
        }
    }
    assert!(!text.contains(&missing.to_string()));
}

/// A made-up method, or a method the route does not serve, counts under `method="OTHER"`:
/// however many a client invents, the families keep one series for them.
#[actix_web::test]
async fn made_up_methods_count_under_one_label() {
    let app = spawn_app().await;
    let invented: Vec<String> = (0..20).map(|i| format!("BREW{i}")).collect();
    for method in &invented {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client
            .request(method, format!("{}/users/login", app.url(Service::Users)))
            .send()
            .await
            .unwrap();
    }
    let refused = app
        .request(
            reqwest::Method::DELETE,
            Service::Users,
            "/users/login",
            None,
            None,
        )
        .await;
    assert_eq!(refused.status, reqwest::StatusCode::METHOD_NOT_ALLOWED);
    let nowhere = app
        .client
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{}/no/such/route", app.url(Service::Users)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), reqwest::StatusCode::NOT_FOUND);

    let samples = samples(&app, Service::Users).await;
    let http: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with("http_request"))
        .collect();
    let methods: std::collections::BTreeSet<&str> =
        http.iter().filter_map(|s| s.label("method")).collect();
    assert!(
        methods.iter().all(|m| [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"
        ]
        .contains(m)),
        "{methods:?}"
    );
    let other_login = http
        .iter()
        .find(|s| {
            s.name == "http_requests_total"
                && s.label("method") == Some("OTHER")
                && s.label("route") == Some("/users/login")
        })
        .map(|s| s.value);
    assert_eq!(
        other_login,
        Some(21.0),
        "20 invented methods and one DELETE"
    );
    assert!(!http
        .iter()
        .any(|s| s.label("method") == Some("DELETE") && s.label("route") == Some("/users/login")));
    let other_unmatched = http
        .iter()
        .find(|s| {
            s.name == "http_requests_total"
                && s.label("method") == Some("OTHER")
                && s.label("route") == Some("unmatched")
        })
        .map(|s| s.value);
    assert_eq!(other_unmatched, Some(1.0));
}

/// Concurrent logins (each an argon2 verification) pile up in the users actor's mailbox
/// gauge, which falls back to 0 once all are answered; every one is counted.
#[actix_web::test]
async fn mailbox_depth_rises_under_a_flood_and_falls_back_to_zero() {
    const FLOOD: usize = 48;
    let app = TestApp::builder()
        .with(|settings| {
            settings.login_max_failures = 1000;
            settings.login_max_failures_per_ip = 1000;
        })
        .spawn()
        .await;
    let (_, _, email) = app.new_user().await;
    let logins = join_all((0..FLOOD).map(|_| app.login(&email, "wrong password")));
    let watch = eventually(
        Duration::from_secs(60),
        "the users mailbox to fill",
        || async {
            let samples = samples(&app, Service::Analytics).await;
            depth(&samples, "users", "UsersActor").filter(|depth| *depth >= 4.0)
        },
    );
    let (replies, peak) = futures_util::join!(logins, watch);
    assert!(replies.iter().all(|r| r.status == 401));
    assert!(peak >= 4.0, "peak {peak}");

    let samples = eventually(
        Duration::from_secs(10),
        "the users mailbox to drain",
        || async {
            let samples = samples(&app, Service::Analytics).await;
            (depth(&samples, "users", "UsersActor") == Some(0.0)).then_some(samples)
        },
    )
    .await;
    let refused = samples
        .iter()
        .find(|s| {
            s.name == "actor_messages_total"
                && s.label("actor") == Some("UsersActor")
                && s.label("message") == Some("Login")
                && s.label("outcome") == Some("error")
        })
        .map(|s| s.value);
    assert_eq!(refused, Some(FLOOD as f64));
}

/// A killed actor is restarted, counted in `actor_restarts_total`, and serves again.
#[actix_web::test]
async fn a_killed_actor_is_restarted_and_counted() {
    let app = spawn_app().await;
    let restarts = |samples: &[Sample], actor: &str| {
        samples
            .iter()
            .find(|s| s.name == "actor_restarts_total" && s.label("actor") == Some(actor))
            .map(|s| s.value)
    };
    let before = samples(&app, Service::Users).await;
    assert_eq!(restarts(&before, "UsersActor"), Some(0.0));
    assert_eq!(restarts(&before, "ProductsActor"), Some(0.0));

    let (users, products) = (
        app.runtime().users().unwrap().actor,
        app.runtime().products().unwrap().actor,
    );
    users.send(Fail).await.unwrap();
    users.send(Fail).await.unwrap();
    products.send(Fail).await.unwrap();

    let after = eventually(Duration::from_secs(10), "restarts counted", || async {
        let samples = samples(&app, Service::Users).await;
        let counted = (
            restarts(&samples, "UsersActor"),
            restarts(&samples, "ProductsActor"),
        );
        (counted == (Some(2.0), Some(1.0))).then_some(samples)
    })
    .await;
    assert_eq!(restarts(&after, "RankingActor"), Some(0.0));
    let (_, token, _) = app.new_user().await;
    assert!(!token.is_empty(), "the restarted users actor serves again");
}

/// Health checks and scrapes are logged at DEBUG, what clients do at INFO.
#[actix_web::test]
async fn probes_and_scrapes_are_logged_at_debug() {
    let (logger, logs) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = app.get(Service::Products, path, None).await;
        assert_eq!(reply.status, 200, "{path}");
    }
    let reply = app.get(Service::Products, "/products?limit=1", None).await;
    assert_eq!(reply.status, 200);
    let lines = logs.lock().unwrap().clone();
    let level_of = |route: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains(" request ") || l.ends_with(" request"))
            .filter(|l| {
                l.contains(&format!("route={route} ")) || l.ends_with(&format!("route={route}"))
            })
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    for route in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            level_of(route),
            vec!["DEBG".to_string()],
            "{route}: {lines:?}"
        );
    }
    assert_eq!(level_of("/products"), vec!["INFO".to_string()], "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("INFO service listening")
                && l.contains("address=http://127.0.0.1:")),
        "{lines:?}"
    );
}

/// A line logged while a request is handled names the request, whether the HTTP handler, an
/// actor or the actor's answer future writes it; lines of other work name none.
#[actix_web::test]
async fn every_line_logged_for_a_request_carries_its_id() {
    let (logger, logs) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    let register = app
        .client
        .post(format!("{}/users/register", app.url(Service::Users)))
        .header("X-Request-Id", "req-register-1")
        .json(&serde_json::json!({
            "name": "Ada", "email": "ada-request-id@example.com", "password": "correct horse 1"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    assert_eq!(register.headers()["x-request-id"], "req-register-1");
    let create = app
        .client
        .post(format!("{}/products", app.url(Service::Products)))
        .header("X-Request-Id", "req-product-1")
        .bearer_auth(&app.admin_token)
        .json(&serde_json::json!({
            "name": "Lamp", "description": "", "price": "12.50", "category": "home"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);

    let lines = logs.lock().unwrap().clone();
    let with = |msg: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(msg))
            })
            .collect()
    };
    for (msg, id) in [
        ("user registered", "req-register-1"),
        ("product created", "req-product-1"),
    ] {
        let found = with(msg);
        assert_eq!(found.len(), 1, "{msg}: {lines:#?}");
        assert!(
            found[0].contains(&format!(" request_id={id}")),
            "{msg} names its request: {}",
            found[0]
        );
    }
    let access: Vec<_> = with("request ")
        .into_iter()
        .chain(with("request"))
        .filter(|l| l.contains("route=/users/register") || l.contains("route=/products"))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains(" request_id=req-register-1"))
            && access
                .iter()
                .any(|l| l.contains(" request_id=req-product-1")),
        "the access lines name their requests: {access:#?}"
    );
    for line in &access {
        assert_eq!(
            line.matches(" request_id=").count(),
            1,
            "one id per line: {line}"
        );
    }
    let started = with("users actor started");
    assert!(!started.is_empty(), "{lines:#?}");
    assert!(
        started.iter().all(|l| !l.contains("request_id=")),
        "work no request started names none: {started:?}"
    );
}
