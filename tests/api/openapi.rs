//! `/openapi.json`: each service's document is well formed, lists exactly the routes the service
//! answers (no route missing, no method served that it does not list), and the curl
//! examples use only documented operations while every documented path has an example.

use std::collections::{BTreeMap, BTreeSet};

use recsys::config::Service;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};

mod rules;

/// Methods the check sends to every documented path.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

async fn document(app: &TestApp, service: Service) -> Value {
    let reply = app.get(service, "/openapi.json", None).await;
    assert_eq!(reply.status, 200, "{}: {}", service.name(), reply.text);
    assert!(
        reply.body.is_object(),
        "{}: not JSON: {}",
        service.name(),
        reply.text
    );
    reply.body
}

/// `(path template, upper-case method)` of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                found.insert((path.clone(), method.to_string()));
            }
        }
    }
    found
}

/// `template` with every `{param}` replaced by a fresh UUID.
fn instantiate(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                Uuid::new_v4().to_string()
            } else {
                segment.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[actix_web::test]
/// Each document is OpenAPI 3, names its service, gives every operation a unique id and a
/// response list, declares every path parameter, and every `$ref` resolves to a component.
async fn every_service_serves_a_well_formed_document() {
    let app = spawn_app().await;
    for service in Service::ALL {
        let doc = document(&app, service).await;
        let name = service.name();
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{name}: {}",
            doc["openapi"]
        );
        assert!(
            doc["info"]["title"]
                .as_str()
                .is_some_and(|t| t.contains(name)),
            "{name}: title {}",
            doc["info"]["title"]
        );
        let mut ids = BTreeSet::new();
        for (path, method) in operations(&doc) {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(
                !id.is_empty() && ids.insert(id.clone()),
                "{name} {method} {path}: operationId {id:?} missing or repeated"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{name} {method} {path}: no success response"
            );
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(
                declared, in_template,
                "{name} {method} {path}: path parameters"
            );
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty(), "{name}: no $ref at all");
        for reference in refs {
            let schema = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{name}: unexpected $ref {reference}"));
            assert!(
                schemas.contains_key(schema),
                "{name}: $ref {reference} has no schema"
            );
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Whether `reply` is the router's own answer: no route for the path, or not this method.
fn unrouted(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["error"]["message"] == "no such route")
}

#[actix_web::test]
/// Every documented operation reaches a handler (its answer is not the router's 404 or 405),
/// and every method a documented path does not list is refused with `405`: what the service
/// serves and what its document says are the same set.
async fn documents_list_exactly_the_served_routes() {
    let app = spawn_app().await;
    for service in Service::ALL {
        let doc = document(&app, service).await;
        let documented = operations(&doc);
        let paths: BTreeSet<&String> = documented.iter().map(|(p, _)| p).collect();
        for path in paths {
            let concrete = instantiate(path);
            for method in METHODS {
                let listed = documented.contains(&(path.clone(), method.to_string()));
                let body =
                    matches!(method, "POST" | "PUT" | "PATCH").then(|| serde_json::json!({}));
                let reply = app
                    .request(
                        Method::from_bytes(method.as_bytes()).unwrap(),
                        service,
                        &concrete,
                        body,
                        None,
                    )
                    .await;
                let status = reply.status.as_u16();
                if listed {
                    assert!(
                        !unrouted(status, &reply.body),
                        "{} {method} {path} is documented but not served: {status} {}",
                        service.name(),
                        reply.text
                    );
                    assert!(
                        status < 500 || path == "/readyz",
                        "{} {method} {path}: {status} {}",
                        service.name(),
                        reply.text
                    );
                } else {
                    assert_eq!(
                        status,
                        405,
                        "{} {method} {path} is served but not documented: {}",
                        service.name(),
                        reply.text
                    );
                    let allow: BTreeSet<String> = reply
                        .headers
                        .get("allow")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .split(", ")
                        .map(str::to_string)
                        .collect();
                    let listed: BTreeSet<String> = documented
                        .iter()
                        .filter(|(p, _)| p == path)
                        .map(|(_, m)| m.clone())
                        .collect();
                    assert_eq!(allow, listed, "{method} {path}: Allow header");
                }
            }
        }
        // The common routes and the document itself are in every document.
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(
                documented.contains(&(path.to_string(), "GET".to_string())),
                "{}: {path} undocumented",
                service.name()
            );
        }
    }
    // Every route the middleware saw a request for (the label is the matched route template)
    // is documented by the service that answered it.
    let metrics = app.get(Service::Users, "/metrics", None).await.text;
    let mut by_service: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for service in Service::ALL {
        by_service.insert(
            service.name().to_string(),
            operations(&document(&app, service).await),
        );
    }
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
    {
        let label = |name: &str| {
            let key = format!("{name}=\"");
            let start = line.find(&key).expect(name) + key.len();
            line[start..].split('"').next().unwrap().to_string()
        };
        let (service, method, route) = (label("service"), label("method"), label("route"));
        if route == "unmatched" {
            continue;
        }
        let served = by_service.get(&service).expect("known service");
        assert!(
            served.contains(&(route.clone(), method.clone()))
                || served.iter().any(|(p, _)| *p == route),
            "{service}: requests reached {method} {route}, which is not documented"
        );
    }
}

/// The `curl` commands of the README and the manual in `docs/`: `(port, method, path)`,
/// continuation lines joined.
fn readme_calls() -> Vec<(u16, String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let mut docs: Vec<_> = std::fs::read_dir(format!("{root}/docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for doc in docs {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(&doc).expect("a docs page"));
    }
    let joined = text.replace("\\\n", " ");
    let mut calls = Vec::new();
    for line in joined.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("curl ") {
            let command = &rest[at + 5..];
            let end = command.find(')').unwrap_or(command.len());
            let command_text = &command[..end];
            rest = &command[end..];
            let Some(host) = command_text.find("localhost:") else {
                continue;
            };
            let after = &command_text[host + "localhost:".len()..];
            let port: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let path: String = after[port.to_string().len()..]
                .chars()
                .take_while(|c| !matches!(c, '?' | '"' | '\'' | ' ' | '`'))
                .collect();
            let words: Vec<&str> = command_text.split_whitespace().collect();
            let method = words
                .iter()
                .position(|w| *w == "-X")
                .and_then(|i| words.get(i + 1))
                .map(|m| m.to_string())
                .unwrap_or_else(|| {
                    if words.contains(&"-d") {
                        "POST".into()
                    } else {
                        "GET".into()
                    }
                });
            calls.push((port, method, path));
        }
    }
    calls
}

/// Whether the concrete path of an example (segments like `$ANN_ID` or `$(...)` stand for values)
/// fits `template`.
fn fits(path: &str, template: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(seg, tpl)| seg == tpl || (tpl.starts_with('{') && seg.starts_with('$')))
}

#[actix_web::test]
/// Every `curl` of the README and docs/ against a service port uses an operation that service documents, and
/// every documented path of every service has at least one example.
async fn readme_examples_and_documents_agree() {
    let app = spawn_app().await;
    let calls = readme_calls();
    assert!(calls.len() > 30, "curl examples: {}", calls.len());
    let mut unexampled = BTreeSet::new();
    for service in Service::ALL {
        let documented = operations(&document(&app, service).await);
        let seed_port = match service {
            Service::Users => 8080,
            Service::Products => 8081,
            Service::Recommendations => 8082,
            Service::Analytics => 8083,
        };
        // A CORS preflight (`OPTIONS`) is answered before routing, not by an operation.
        let operation_calls = calls
            .iter()
            .filter(|(p, method, _)| *p == seed_port && method != "OPTIONS");
        for (port, method, path) in operation_calls {
            assert!(
                documented
                    .iter()
                    .any(|(tpl, m)| m == method && fits(path, tpl)),
                "docs: {method} {path} on :{port} is not in the {} document",
                service.name()
            );
        }
        for (tpl, _) in &documented {
            if !calls.iter().any(|(_, _, path)| fits(path, tpl)) {
                unexampled.insert(tpl.clone());
            }
        }
    }
    assert!(
        unexampled.is_empty(),
        "documented paths without a curl example in README.md or docs/: {unexampled:?}"
    );
}
