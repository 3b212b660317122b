//! Hostile clients: forged and tampered tokens, tokens of deleted accounts, user tokens on admin
//! routes, injection strings in every text field, password guessing (the login lockout), and a
//! search of the logs and of every event for the passwords a scenario used. (Expired tokens,
//! other secrets and algorithms, `alg: none` and other users' tokens are in `users/profile.rs`.)

use std::time::Duration;

use base64::Engine as _;
use recsys::config::Service;
use recsys::startup::Application;
use recsys_schema::topics;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::users::sign;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `token` with its claims rewritten by `change`, and the original signature kept.
fn tampered(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    change(&mut claims);
    let claims = B64.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

/// The admin-only routes, as `(service, method, path, body)`.
fn admin_routes(product: &str, user: Uuid) -> Vec<(Service, &'static str, String, Value)> {
    let product_body = json!({"name": "Forged", "price": 1.00});
    vec![
        (
            Service::Products,
            "POST",
            "/products".into(),
            product_body.clone(),
        ),
        (
            Service::Products,
            "POST",
            "/products/create".into(),
            product_body,
        ),
        (
            Service::Products,
            "PATCH",
            format!("/products/{product}"),
            json!({"name": "x"}),
        ),
        (
            Service::Products,
            "PUT",
            format!("/products/{product}"),
            json!({"name": "x"}),
        ),
        (
            Service::Products,
            "DELETE",
            format!("/products/{product}"),
            Value::Null,
        ),
        (
            Service::Analytics,
            "GET",
            "/analytics/summary".into(),
            Value::Null,
        ),
        (
            Service::Analytics,
            "GET",
            "/analytics/products/top".into(),
            Value::Null,
        ),
        (
            Service::Analytics,
            "GET",
            format!("/analytics/products/{product}"),
            Value::Null,
        ),
        (
            Service::Analytics,
            "GET",
            format!("/analytics/users/{user}"),
            Value::Null,
        ),
        (
            Service::Analytics,
            "GET",
            "/analytics/timeseries".into(),
            Value::Null,
        ),
    ]
}

async fn call(app: &TestApp, route: &(Service, &str, String, Value), token: &str) -> Reply {
    let (service, method, path, body) = route;
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let body = (!body.is_null()).then_some(body.clone());
    app.request(method, *service, path, body, Some(token)).await
}

/// A user's token on every admin route is 403; the same token with its `role` claim rewritten
/// to `admin` (signature kept) is 401; a token signed with a guessable secret is 401. Nothing
/// is written.
#[actix_web::test]
async fn user_tampered_and_forged_tokens_get_nothing_from_admin_routes() {
    let app = spawn_app().await;
    let product = app.create_product("Target", json!(5.00), None).await;
    let product = product["id"].as_str().unwrap().to_string();
    let (user, token, _) = app.new_user().await;
    let promoted = tampered(&token, |claims| claims["role"] = json!("admin"));
    let forged_tokens: Vec<String> = ["dev-secret-change-me", "secret", "changeme", ""]
        .iter()
        .map(|secret| sign(secret, user, "admin", 3600))
        .collect();
    let products_before = app.count("products").await;

    for route in admin_routes(&product, user) {
        call(&app, &route, &token)
            .await
            .assert_error(403, "forbidden");
        call(&app, &route, &promoted)
            .await
            .assert_error(401, "unauthorized");
        for forged in &forged_tokens {
            call(&app, &route, forged)
                .await
                .assert_error(401, "unauthorized");
        }
    }

    assert_eq!(app.count("products").await, products_before);
    let reply = app
        .get(Service::Products, &format!("/products/{product}"), None)
        .await;
    assert_eq!(reply.body["name"], "Target");
}

/// A token whose `sub` is rewritten to another user is 401 (the signature no longer matches).
#[actix_web::test]
async fn a_token_rewritten_to_another_user_is_unauthorized() {
    let app = spawn_app().await;
    let (alice, _, _) = app.new_user().await;
    let (_, mallory_token, _) = app.new_user().await;
    let as_alice = tampered(&mallory_token, |claims| claims["sub"] = json!(alice));

    app.get(Service::Users, &format!("/users/{alice}"), Some(&as_alice))
        .await
        .assert_error(401, "unauthorized");
}

/// The runtime refuses to start with a short (guessable) `JWT_SECRET`.
#[actix_web::test]
async fn the_runtime_refuses_a_short_jwt_secret() {
    let (database_url, prefix) = fresh_database().await;
    let mut settings = test_settings(&database_url, &prefix, &brokers());
    settings.jwt_secret = Some(recsys::config::Secret::new("dev-secret-change-me"));

    let error = Application::build(settings, &Service::ALL, test_logger())
        .await
        .err()
        .expect("a 20-byte secret is refused");

    assert!(format!("{error:#}").contains("JWT_SECRET is shorter than 32 bytes"));
}

/// Rotation: with `JWT_SECRET_PREVIOUS` set to the key `JWT_SECRET` replaced, tokens signed
/// with either are accepted, new ones are signed with the new key only, and a token of any
/// other key is refused; a short previous key stops the start like a short current one.
#[actix_web::test]
async fn a_rotated_secret_still_accepts_the_previous_keys_tokens() {
    const OLD: &str = "the-old-secret-of-at-least-32-bytes-long";
    const NEW: &str = "the-new-secret-of-at-least-32-bytes-long";
    let app = TestApp::builder()
        .with(|settings| {
            settings.jwt_secret = Some(recsys::config::Secret::new(NEW));
            settings.jwt_secret_previous = Some(recsys::config::Secret::new(OLD));
        })
        .spawn()
        .await;
    let (user, token, _) = app.new_user().await;
    let profile = |token: String| {
        let app = &app;
        async move {
            app.get(Service::Users, &format!("/users/{user}"), Some(&token))
                .await
        }
    };

    assert_eq!(
        profile(sign(OLD, user, "user", 600)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        profile(sign(NEW, user, "user", 600)).await.status,
        StatusCode::OK
    );
    profile(sign(
        "a-third-secret-of-at-least-32-bytes-long",
        user,
        "user",
        600,
    ))
    .await
    .assert_error(401, "unauthorized");
    // What the runtime issues is signed with the new key: re-signed with it, the same header
    // and claims give the same token.
    let parts: Vec<&str> = token.split('.').collect();
    let resigned = {
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(NEW.as_bytes()).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        B64.encode(mac.finalize().into_bytes())
    };
    assert_eq!(parts[2], resigned);

    let (database_url, prefix) = fresh_database().await;
    let mut settings = test_settings(&database_url, &prefix, &brokers());
    settings.jwt_secret_previous = Some(recsys::config::Secret::new("old-and-short"));
    let error = Application::build(settings, &Service::ALL, test_logger())
        .await
        .err()
        .expect("a 13-byte previous secret is refused");
    assert!(format!("{error:#}").contains("JWT_SECRET_PREVIOUS is shorter than 32 bytes"));
}

/// Once an account is gone, its still-unexpired token gets 401 on every route of that account,
/// and no activity is recorded for it.
#[actix_web::test]
async fn a_deleted_users_token_is_unauthorized() {
    let app = spawn_app().await;
    let (user, token, _) = app.new_user().await;
    app.db()
        .execute(&format!("DELETE FROM users WHERE id = '{user}'"))
        .await;
    let path = format!("/users/{user}");

    app.get(Service::Users, &path, Some(&token))
        .await
        .assert_error(401, "unauthorized");
    app.request(
        reqwest::Method::PATCH,
        Service::Users,
        &path,
        Some(json!({"name": "Ghost"})),
        Some(&token),
    )
    .await
    .assert_error(401, "unauthorized");
    app.post(
        Service::Users,
        &format!("{path}/activity"),
        json!({"type": "view", "product_id": Uuid::new_v4()}),
        Some(&token),
    )
    .await
    .assert_error(401, "unauthorized");
    assert_eq!(app.count("user_activity").await, 0);
    // An admin asking about the missing account learns only that it is not there.
    app.get(Service::Users, &path, Some(&app.admin_token))
        .await
        .assert_error(404, "not_found");
}

/// Strings that break naive SQL or JSON handling, in every text field and query parameter:
/// each answer is a 2xx that stores the text verbatim or a 400, never a 5xx, and the tables
/// are intact.
#[actix_web::test]
async fn injection_strings_are_data_or_refused_never_code() {
    const HOSTILE: [&str; 8] = [
        "'; DROP TABLE users; --",
        "\" OR \"1\"=\"1",
        "admin'--",
        "1; SELECT pg_sleep(10)",
        "{\"$ne\": null}",
        "\\\"}],\"role\":\"admin",
        "Robert'); DELETE FROM products;--",
        "\u{0}nul",
    ];
    let app = spawn_app().await;
    let (user, token, _) = app.new_user().await;
    let product = app.create_product("Anchor", json!(1.00), None).await;
    let product = product["id"].as_str().unwrap().to_string();
    let ok_or_400 = |reply: &Reply, what: &str| {
        assert!(
            reply.status.is_success() || reply.status == StatusCode::BAD_REQUEST,
            "{what}: {} {}",
            reply.status,
            reply.text
        );
        if !reply.status.is_success() {
            reply.assert_error(400, "invalid_request");
        }
    };

    for (i, hostile) in HOSTILE.iter().enumerate() {
        let registered = app
            .post(
                Service::Users,
                "/users/register",
                json!({"name": hostile, "email": format!("x{i}@example.com"), "password": format!("{hostile}-password")}),
                None,
            )
            .await;
        ok_or_400(&registered, "register name");
        if registered.status.is_success() {
            assert_eq!(registered.body["name"].as_str(), Some(hostile.trim()));
        }
        let email_as_hostile = app
            .post(
                Service::Users,
                "/users/register",
                json!({"name": "n", "email": hostile, "password": "long-enough"}),
                None,
            )
            .await;
        email_as_hostile.assert_error(400, "invalid_request");
        let login = app.login(hostile, hostile).await;
        login.assert_error(401, "unauthorized");
        let renamed = app
            .request(
                reqwest::Method::PATCH,
                Service::Users,
                &format!("/users/{user}"),
                Some(json!({"name": hostile})),
                Some(&token),
            )
            .await;
        ok_or_400(&renamed, "rename");
        let created = app
            .post(
                Service::Products,
                "/products",
                json!({"name": hostile, "price": 2.50, "category": hostile, "description": hostile}),
                Some(&app.admin_token),
            )
            .await;
        ok_or_400(&created, "product fields");
        if created.status.is_success() {
            assert_eq!(created.body["category"].as_str(), Some(hostile.trim()));
        }
        let encoded: String = urlencode(hostile);
        for (service, path) in [
            (Service::Products, format!("/products?category={encoded}")),
            (
                Service::Recommendations,
                format!("/recommendations?category={encoded}"),
            ),
            (Service::Products, format!("/products/{encoded}")),
            (Service::Users, format!("/users/{encoded}")),
        ] {
            let reply = app.get(service, &path, Some(&token)).await;
            assert!(
                reply.status.as_u16() < 500,
                "{path}: {} {}",
                reply.status,
                reply.text
            );
        }
    }

    assert!(app.count("users").await >= 3, "the users table is intact");
    let anchor = app
        .get(Service::Products, &format!("/products/{product}"), None)
        .await;
    assert_eq!(anchor.body["name"], "Anchor");
}

/// After `LOGIN_MAX_FAILURES` wrong passwords an email is locked: even the right password gets
/// `429` with `Retry-After`, an unknown email locks the same way (so the lockout does not tell
/// which emails exist), and other emails are unaffected.
#[actix_web::test]
async fn repeated_login_failures_lock_the_email() {
    let app = TestApp::builder()
        .with(email_lockout_after_three)
        .spawn()
        .await;
    let (_, _, email) = app.new_user().await;
    let unknown = format!("nobody-{}@example.com", Uuid::new_v4().simple());

    for target in [&email, &unknown] {
        for _ in 0..3 {
            app.login(target, "wrong password")
                .await
                .assert_error(401, "unauthorized");
        }
        let locked = app.login(target, "user-password").await;
        locked.assert_error(429, "too_many_requests");
        let retry: u64 = locked.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((800..=900).contains(&retry), "Retry-After: {retry}");
    }
    let (_, _, other) = app.new_user().await;
    assert_eq!(app.login(&other, "user-password").await.status, 200);
}

/// Failures from one address across many emails lock that address.
#[actix_web::test]
async fn repeated_login_failures_lock_the_client_address() {
    let app = TestApp::builder()
        .with(|settings| {
            settings.login_max_failures = 100;
            settings.login_max_failures_per_ip = 4;
        })
        .spawn()
        .await;
    for i in 0..4 {
        app.login(&format!("guess{i}@example.com"), "wrong password")
            .await
            .assert_error(401, "unauthorized");
    }
    let (_, _, email) = app.new_user().await;

    app.login(&email, "user-password")
        .await
        .assert_error(429, "too_many_requests");
}

/// `login_throttle_decisions_total{store}` of this process.
fn decisions(store: &str) -> u64 {
    recsys::users::throttle::DECISIONS
        .with_label_values(&[store])
        .get()
}

/// Two runtimes hosting users on one Redis share the lockout: failures spread over both lock
/// the email on both, and a success on one clears the email's failures for both.
#[actix_web::test]
async fn two_instances_share_one_login_lockout() {
    let app = TestApp::builder()
        .with(email_lockout_after_three)
        .spawn()
        .await;
    let other = app.another_instance(&[Service::Users]).await;
    let (_, _, locked) = app.new_user().await;
    let (_, _, cleared) = app.new_user().await;

    for instance in [&app, &other, &app] {
        instance
            .login(&locked, "wrong password")
            .await
            .assert_error(401, "unauthorized");
    }
    for instance in [&other, &app] {
        instance
            .login(&locked, "user-password")
            .await
            .assert_error(429, "too_many_requests");
    }

    for instance in [&app, &other] {
        instance
            .login(&cleared, "wrong password")
            .await
            .assert_error(401, "unauthorized");
    }
    assert_eq!(other.login(&cleared, "user-password").await.status, 200);
    for _ in 0..2 {
        app.login(&cleared, "wrong password")
            .await
            .assert_error(401, "unauthorized");
    }
    assert_eq!(app.login(&cleared, "user-password").await.status, 200);
    assert_eq!(decisions("local"), 0, "Redis decided every attempt");
    assert!(decisions("redis") >= 12);
}

/// Without Redis each instance falls back to its own counts: the email still locks on the
/// instance that saw the failures, the other instance does not know them, and the metric says
/// the counts were local.
#[actix_web::test]
async fn without_redis_each_instance_locks_out_on_its_own_counts() {
    let app = TestApp::builder()
        .with(email_lockout_after_three)
        .with(|settings| {
            settings.redis_address = format!("127.0.0.1:{}", free_port());
            settings.redis_timeout_ms = 50;
        })
        .spawn()
        .await;
    let other = app.another_instance(&[Service::Users]).await;
    let (_, _, email) = app.new_user().await;

    for _ in 0..3 {
        app.login(&email, "wrong password")
            .await
            .assert_error(401, "unauthorized");
    }
    app.login(&email, "user-password")
        .await
        .assert_error(429, "too_many_requests");
    assert_eq!(other.login(&email, "user-password").await.status, 200);
    assert_eq!(decisions("redis"), 0);
    // Every attempt the process counts admitted was decided locally (the admins' logins too).
    assert!(decisions("local") >= 4, "{}", decisions("local"));
    let text = app.get(Service::Users, "/metrics", None).await.text;
    assert!(
        text.contains("login_throttle_decisions_total{store=\"local\"}"),
        "{text}"
    );
}

/// A burst of concurrent guesses cannot slip past the limit: guesses beyond it are refused
/// before any password is verified.
#[actix_web::test]
async fn concurrent_guesses_are_limited_too() {
    let app = TestApp::builder()
        .with(|settings| {
            settings.login_max_failures = 3;
        })
        .spawn()
        .await;
    let (_, _, email) = app.new_user().await;

    let replies =
        futures_util::future::join_all((0..20).map(|_| app.login(&email, "wrong password"))).await;

    let verified = replies.iter().filter(|r| r.status == 401).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((verified, refused), (3, 17));
}

/// The passwords of a scenario that registers, logs in, changes the password and fails a login
/// appear in no log line and in no record of either topic (nor does any password hash).
#[actix_web::test]
async fn passwords_reach_no_log_line_and_no_event() {
    let (logger, lines) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    let first = format!("first-{}", Uuid::new_v4().simple());
    let second = format!("second-{}", Uuid::new_v4().simple());
    let wrong = format!("wrong-{}", Uuid::new_v4().simple());
    let email = format!("secretive-{}@example.com", Uuid::new_v4().simple());

    let (user, token) = app.register("Secretive", &email, &first).await;
    assert_eq!(app.login(&email, &first).await.status, 200);
    let changed = app
        .request(
            reqwest::Method::PATCH,
            Service::Users,
            &format!("/users/{user}"),
            Some(json!({"password": second, "current_password": first})),
            Some(&token),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(app.login(&email, &wrong).await.status, 401);
    assert_eq!(app.login(&email, &second).await.status, 200);
    let admin = app
        .login(app.settings.admin_email.as_deref().unwrap(), ADMIN_PASSWORD)
        .await;
    assert_eq!(admin.status, 200);

    let records = consume(
        &brokers(),
        &[app.topic(topics::USER_UPDATES)],
        3,
        Duration::from_secs(30),
    )
    .await;
    let kinds: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"user.registered") && kinds.contains(&"user.updated"),
        "{kinds:?}"
    );
    let secrets = [
        first.as_str(),
        second.as_str(),
        wrong.as_str(),
        ADMIN_PASSWORD,
        "$argon2",
    ];
    for record in &records {
        let text = format!("{} {} {:?}", record.key, record.raw, record.headers);
        for secret in secrets {
            assert!(!text.contains(secret), "a record carries {secret}: {text}");
        }
    }
    let lines = lines.lock().unwrap();
    assert!(lines.len() > 10, "the logs were captured");
    for line in lines.iter() {
        for secret in secrets {
            assert!(
                !line.contains(secret),
                "a log line carries {secret}: {line}"
            );
        }
    }
}
