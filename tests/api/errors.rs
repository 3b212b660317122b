//! The shared HTTP surface: every failure answers the JSON error shape; health, readiness and
//! metrics on every port; injection strings are plain data; database failures are classified
//! by their kind (what decides between a 503 and a 500).

use std::time::Duration;

use recsys::config::Service;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

/// Sends `body` as-is with `content_type` and no token; answers the reply.
async fn send_raw(
    app: &TestApp,
    method: Method,
    service: Service,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Reply {
    send_raw_as(app, None, method, service, path, content_type, body).await
}

/// Like [`send_raw`], with `token` as the bearer token.
async fn send_raw_as(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    service: Service,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url(service)))
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read_reply(request.send().await.expect("request sent")).await
}

/// Asserts `status`, `code`, a JSON content type and exactly `{"error": {"code", "message"}}`.
fn assert_json_error(reply: &Reply, status: u16, code: &str) {
    reply.assert_error(status, code);
    let content_type = reply
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?} for {}",
        reply.text
    );
    let top: Vec<&String> = reply.body.as_object().expect("an object").keys().collect();
    assert_eq!(top, ["error"], "{}", reply.text);
    let mut inner: Vec<&String> = reply.body["error"]
        .as_object()
        .expect("an object")
        .keys()
        .collect();
    inner.sort_unstable();
    assert_eq!(inner, ["code", "message"], "{}", reply.text);
}

/// A body that is not valid JSON is a JSON 400.
#[actix_web::test]
async fn malformed_json_is_a_json_bad_request() {
    let app = spawn_app().await;

    registrations_are_bad_requests(
        &app,
        &[
            r#"{"name": "John", "email": "#,
            "not json",
            "",
            r#"{"name": "John",}"#,
        ],
    )
    .await;
}

/// Posts each of `bodies` to `/users/register`: every one is a JSON 400, and nobody but the
/// admin is registered.
async fn registrations_are_bad_requests(app: &TestApp, bodies: &[&str]) {
    for body in bodies {
        let reply = send_raw(
            app,
            Method::POST,
            Service::Users,
            "/users/register",
            "application/json",
            body.to_string(),
        )
        .await;
        assert_json_error(&reply, 400, "invalid_request");
    }
    assert_eq!(app.count("users").await, 1, "only the admin");
}

/// A body must be a JSON object: an array of the fields in order (which serde would read into
/// the same struct) is a JSON 400 and changes nothing.
#[actix_web::test]
async fn a_body_that_is_not_an_object_is_a_json_bad_request() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let product = app
        .create_product("Lamp", json!("12.50"), Some("home"))
        .await;
    let id = product["id"].as_str().unwrap();

    registrations_are_bad_requests(
        &app,
        &[
            r#"["John", "john@example.com", "password123"]"#,
            "42",
            r#""John""#,
        ],
    )
    .await;

    let reply = send_raw_as(
        &app,
        Some(&admin),
        Method::PUT,
        Service::Products,
        &format!("/products/{id}"),
        "application/json",
        r#"["Renamed", null]"#,
    )
    .await;
    assert_json_error(&reply, 400, "invalid_request");
    let now = app
        .get(Service::Products, &format!("/products/{id}"), None)
        .await;
    assert_eq!(now.body["name"], "Lamp", "{}", now.text);
}

/// A body over 64 KiB is a JSON 413 `payload_too_large`, on both services that take bodies
/// (the products write carries the admin token, else its 401 comes first).
#[actix_web::test]
async fn oversized_body_is_payload_too_large() {
    let app = spawn_app().await;
    let body = json!({"name": "x".repeat(70 * 1024), "email": "big@example.com"}).to_string();

    let users = send_raw(
        &app,
        Method::POST,
        Service::Users,
        "/users/register",
        "application/json",
        body.clone(),
    )
    .await;
    let products = send_raw_as(
        &app,
        Some(&app.admin_token),
        Method::POST,
        Service::Products,
        "/products",
        "application/json",
        body,
    )
    .await;

    assert_json_error(&users, 413, "payload_too_large");
    assert_json_error(&products, 413, "payload_too_large");
}

/// A body under 64 KiB is read (and here rejected only for its over-long name).
#[actix_web::test]
async fn body_under_the_limit_is_read() {
    let app = spawn_app().await;
    let body = json!({"name": "x".repeat(60 * 1024), "email": "big@example.com"}).to_string();

    let reply = send_raw(
        &app,
        Method::POST,
        Service::Users,
        "/users/register",
        "application/json",
        body,
    )
    .await;

    assert_json_error(&reply, 400, "invalid_request");
}

/// A JSON endpoint given another content type answers a JSON 415.
#[actix_web::test]
async fn non_json_content_type_is_unsupported_media_type() {
    let app = spawn_app().await;
    let body = json!({"name": "John", "email": "john@example.com"}).to_string();

    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = send_raw(
            &app,
            Method::POST,
            Service::Users,
            "/users/register",
            content_type,
            body.clone(),
        )
        .await;

        assert_json_error(&reply, 415, "unsupported_media_type");
    }
    assert_eq!(app.count("users").await, 1, "only the admin");
}

/// A JSON endpoint given a body without any content type answers a JSON 415.
#[actix_web::test]
async fn missing_content_type_is_unsupported_media_type() {
    let app = spawn_app().await;
    let body = json!({"name": "John", "email": "john@example.com"}).to_string();

    let response = app
        .client
        .post(format!("{}/users/register", app.url(Service::Users)))
        .body(body)
        .send()
        .await
        .expect("request sent");
    let reply = read_reply(response).await;

    assert_json_error(&reply, 415, "unsupported_media_type");
}

/// A path no route serves is a JSON 404 on each of the four ports.
#[actix_web::test]
async fn unknown_route_is_json_not_found_on_every_port() {
    let app = spawn_app().await;

    for service in Service::ALL {
        let reply = app.get(service, "/no/such/route", None).await;

        assert_json_error(&reply, 404, "not_found");
    }
}

/// A known route with a method it does not serve is a JSON 405.
#[actix_web::test]
async fn wrong_method_is_json_method_not_allowed() {
    let app = spawn_app().await;

    let users = app
        .request(
            Method::DELETE,
            Service::Users,
            "/users/register",
            None,
            None,
        )
        .await;
    let products = app
        .request(
            Method::PUT,
            Service::Products,
            "/products",
            Some(json!({})),
            None,
        )
        .await;

    assert_json_error(&users, 405, "method_not_allowed");
    assert_json_error(&products, 405, "method_not_allowed");
}

/// `/healthz` answers 200 `{"status":"ok"}` on every port.
#[actix_web::test]
async fn health_is_ok_on_every_port() {
    let app = spawn_app().await;

    for service in Service::ALL {
        let health = app.get(service, "/healthz", None).await;

        assert_eq!(
            health.status,
            StatusCode::OK,
            "{service:?}: {}",
            health.text
        );
        assert_eq!(health.body["status"], "ok");
    }
}

/// `/readyz` answers 200 with Postgres and Kafka `ok` on every port (polled: the broker
/// connection of a fresh runtime may take a moment).
#[actix_web::test]
async fn readiness_is_ok_on_every_port() {
    let app = spawn_app().await;

    for service in Service::ALL {
        let ready = eventually(Duration::from_secs(15), "readyz 200", || async {
            let reply = app.get(service, "/readyz", None).await;
            (reply.status == StatusCode::OK).then_some(reply)
        })
        .await;

        assert_eq!(ready.body["status"], "ok", "{service:?}: {}", ready.text);
        assert_eq!(ready.body["checks"]["postgres"], "ok");
        assert_eq!(ready.body["checks"]["kafka"], "ok");
    }
}

/// `http_requests_total` labels a request to `/users/<uuid>` with the route template (and an
/// unknown path as `unmatched`), never the raw path.
#[actix_web::test]
async fn metrics_label_requests_with_the_route_template() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let stray = Uuid::new_v4();
    app.get(Service::Users, &format!("/users/{id}"), None).await;
    app.get(Service::Users, &format!("/no/such/{stray}"), None)
        .await;

    let metrics = app.get(Service::Users, "/metrics", None).await;

    assert_eq!(metrics.status, StatusCode::OK);
    let counted = |route: &str| {
        metrics.text.lines().any(|l| {
            l.starts_with("http_requests_total{") && l.contains(&format!(r#"route="{route}""#))
        })
    };
    assert!(
        counted("/users/{id}"),
        "no /users/{{id}} line:\n{}",
        metrics.text
    );
    assert!(counted("unmatched"), "no unmatched line:\n{}", metrics.text);
    for raw in [id, stray] {
        assert!(
            !metrics.text.contains(&raw.to_string()),
            "raw id {raw} leaked into /metrics"
        );
    }
}

/// SQL and JSON-operator strings in names are stored and answered verbatim, never a 500, and
/// the users table survives.
#[actix_web::test]
async fn injection_strings_in_user_names_are_stored_verbatim() {
    let app = spawn_app().await;

    for (i, name) in [
        "Robert'); DROP TABLE users;--",
        r#"{"$gt":""}"#,
        "' OR '1'='1",
    ]
    .iter()
    .enumerate()
    {
        let reply = app
            .post(
                Service::Users,
                "/users/register",
                json!({"name": name, "email": format!("bobby{i}@example.com"), "password": "password-1"}),
                None,
            )
            .await;

        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.text);
        assert_eq!(reply.body["name"], *name);
        let id = reply.body["id"].as_str().unwrap();
        let read = app
            .get(
                Service::Users,
                &format!("/users/{id}"),
                reply.body["token"].as_str(),
            )
            .await;
        assert_eq!(read.body["name"], *name);
    }
    assert_eq!(app.count("users").await, 4);
}

/// Injection strings in emails, logins, product fields and query strings are rejected with a
/// 4xx or stored verbatim, never a 500, and both tables survive.
#[actix_web::test]
async fn injection_strings_elsewhere_never_cause_a_server_error() {
    let app = spawn_app().await;
    let evil = ["Robert'); DROP TABLE users;--", r#"{"$gt":""}"#];

    for text in evil {
        let register = app
            .post(
                Service::Users,
                "/users/register",
                json!({"name": "Bob", "email": text}),
                None,
            )
            .await;
        let login = app.login(text, text).await;
        let product = app
            .post(
                Service::Products,
                "/products",
                json!({"name": text, "price": "1.00", "category": text, "description": text}),
                Some(&app.admin_token),
            )
            .await;
        let listed = app
            .get(
                Service::Products,
                &format!("/products?category={}", urlencode(text)),
                None,
            )
            .await;

        assert_json_error(&register, 400, "invalid_request");
        assert_json_error(&login, 401, "unauthorized");
        assert_eq!(
            product.status,
            StatusCode::CREATED,
            "{text}: {}",
            product.text
        );
        assert_eq!(product.body["name"], text);
        assert_eq!(product.body["category"], text);
        assert_eq!(listed.status, StatusCode::OK, "{text}: {}", listed.text);
        assert_eq!(listed.body["items"][0]["category"], text);
    }
    let object = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": {"$gt": ""}, "password": {"$gt": ""}}),
            None,
        )
        .await;
    assert_json_error(&object, 400, "invalid_request");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("products").await, 2);
}

/// Control characters (NUL included, which Postgres cannot store in text) are a 400 in every
/// text field and query, never a 500.
#[actix_web::test]
async fn control_characters_are_rejected_not_stored() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let nul = "bad\u{0}name";

    let register = app
        .post(
            Service::Users,
            "/users/register",
            json!({"name": nul, "email": "nul@example.com"}),
            None,
        )
        .await;
    let update = app
        .request(
            Method::PATCH,
            Service::Users,
            &format!("/users/{id}"),
            Some(json!({"name": nul})),
            Some(&token),
        )
        .await;
    let product = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "Lamp", "price": "1.00", "description": nul}),
            Some(&app.admin_token),
        )
        .await;
    let listed = app
        .get(Service::Products, "/products?category=a%00b", None)
        .await;
    let login = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": "a\u{0}@example.com", "password": nul}),
            None,
        )
        .await;

    assert_json_error(&register, 400, "invalid_request");
    assert_json_error(&update, 400, "invalid_request");
    assert_json_error(&product, 400, "invalid_request");
    assert_json_error(&listed, 400, "invalid_request");
    assert_json_error(&login, 401, "unauthorized");
    assert_eq!(app.count("products").await, 0);
}

/// Real Postgres failures are classified by their kind: a statement cancelled by the server's
/// timeout and a connection the server terminated are `Unavailable` (a retry may succeed); a
/// syntax error and a unique violation, whatever their text says, are `Failed`.
#[actix_web::test]
async fn database_failures_are_classified_by_kind() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use recsys::db::DbError;

    let (url, _) = fresh_database().await;
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let run = async |conn: &mut AsyncPgConnection, sql: &str| {
        DbError::from(diesel::sql_query(sql).execute(conn).await.unwrap_err())
    };

    diesel::sql_query("SET statement_timeout = 10")
        .execute(&mut conn)
        .await
        .unwrap();
    let cancelled = run(&mut conn, "SELECT pg_sleep(5)").await;
    assert!(
        matches!(cancelled, DbError::Unavailable(_)),
        "{cancelled:?}"
    );
    diesel::sql_query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await
        .unwrap();

    let syntax = run(&mut conn, "SELEC 1").await;
    assert!(matches!(syntax, DbError::Failed(_)), "{syntax:?}");
    diesel::sql_query("CREATE TABLE connection_names (name text PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    let insert = "INSERT INTO connection_names VALUES ('connection')";
    diesel::sql_query(insert).execute(&mut conn).await.unwrap();
    let duplicate = run(&mut conn, insert).await;
    assert!(matches!(duplicate, DbError::Failed(_)), "{duplicate:?}");

    let terminated = run(&mut conn, "SELECT pg_terminate_backend(pg_backend_pid())").await;
    assert!(
        matches!(terminated, DbError::Unavailable(_)),
        "{terminated:?}"
    );
}
