//! `POST /users/register` (and its alias `POST /users`): creating an account.

use recsys::config::Service;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{assert_rejected, outbox_high_water, user_path, INVALID};
use crate::helpers::*;

/// Posts each case's body to `/users/register` and asserts its rejection, and that it wrote no
/// user and no event; a failure names the case.
async fn assert_registrations_rejected(app: &TestApp, cases: &[(&str, Value, (u16, &str))]) {
    for (case, body, expected) in cases {
        let users = app.count("users").await;
        let outbox = outbox_high_water(app).await;

        let reply = app
            .post(Service::Users, "/users/register", body.clone(), None)
            .await;

        assert_rejected(&format!("{case} ({body})"), &reply, *expected);
        assert_eq!(
            app.count("users").await,
            users,
            "{case}: a rejected registration wrote a user"
        );
        assert_eq!(
            outbox_high_water(app).await,
            outbox,
            "{case}: a rejected registration wrote an event"
        );
    }
}

/// The seed's exact registration request (no password) answers 201 with id, name, email and a
/// token, and nothing resembling a password or its hash.
#[actix_web::test]
async fn register_accepts_the_seed_request_verbatim() {
    let app = spawn_app().await;

    let reply = app
        .post(
            Service::Users,
            "/users/register",
            json!({"name": "John", "email": "john@example.com"}),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(keys(&reply.body), ["email", "id", "name", "token"]);
    assert!(reply.body["id"].as_str().unwrap().parse::<Uuid>().is_ok());
    assert_eq!(reply.body["name"], "John");
    assert_eq!(reply.body["email"], "john@example.com");
    assert!(!reply.body["token"].as_str().unwrap().is_empty());
    assert!(!reply.text.contains("password"), "{}", reply.text);
    assert!(!reply.text.contains("$argon2"), "{}", reply.text);
}

/// `POST /users` is an alias of `/users/register`, and its token reads the new account.
#[actix_web::test]
async fn register_alias_creates_an_account() {
    let app = spawn_app().await;

    let reply = app
        .post(
            Service::Users,
            "/users",
            json!({"name": "Jane", "email": "jane@example.com", "password": "jane-password"}),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(keys(&reply.body), ["email", "id", "name", "token"]);
    let id: Uuid = reply.body["id"].as_str().unwrap().parse().unwrap();
    let me = app
        .get(Service::Users, &user_path(id), reply.body["token"].as_str())
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["email"], "jane@example.com");
}

/// Emails are unique case-insensitively and stored lower-cased.
#[actix_web::test]
async fn duplicate_email_in_another_case_is_a_conflict() {
    let app = spawn_app().await;

    let first = app
        .post(
            Service::Users,
            "/users/register",
            json!({"name": "Ann", "email": "Ann@Example.com"}),
            None,
        )
        .await;
    let second = app
        .post(
            Service::Users,
            "/users/register",
            json!({"name": "Other Ann", "email": "ann@example.COM", "password": "password-2"}),
            None,
        )
        .await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["email"], "ann@example.com");
    second.assert_error(409, "conflict");
    assert_eq!(app.count("users").await, 2, "admin and the first Ann only");
}

/// Malformed emails are rejected with 400 and write nothing.
#[actix_web::test]
async fn invalid_emails_are_rejected_without_writing() {
    let app = spawn_app().await;
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_address = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
    let cases = [
        ("empty", "", INVALID),
        ("no @", "john", INVALID),
        ("no domain", "john@", INVALID),
        ("no local part", "@example.com", INVALID),
        ("domain without a dot", "john@example", INVALID),
        ("a space", "john doe@example.com", INVALID),
        ("two @", "john@@example.com", INVALID),
        ("empty domain label", "john@example..com", INVALID),
        ("domain starting with a dot", "john@.example.com", INVALID),
        ("domain ending with a dot", "john@example.com.", INVALID),
        ("65-character local part", long_local.as_str(), INVALID),
        ("255-character address", long_address.as_str(), INVALID),
    ]
    .map(|(case, email, expected)| (case, json!({"name": "John", "email": email}), expected));

    assert_registrations_rejected(&app, &cases).await;
}

/// Empty, blank and over-100-character names are rejected with 400 and write nothing.
#[actix_web::test]
async fn blank_or_overlong_names_are_rejected_without_writing() {
    let app = spawn_app().await;
    let overlong = "n".repeat(101);
    let cases = [
        ("empty", "", INVALID),
        ("spaces only", "   ", INVALID),
        ("tab and newline only", "\t\n", INVALID),
        ("101 characters", overlong.as_str(), INVALID),
    ]
    .map(|(case, name, expected)| {
        (
            case,
            json!({"name": name, "email": "john@example.com"}),
            expected,
        )
    });

    assert_registrations_rejected(&app, &cases).await;
}

/// Empty passwords and passwords of 7 and of 129 characters are rejected with 400 and write
/// nothing.
#[actix_web::test]
async fn passwords_outside_8_to_128_characters_are_rejected_without_writing() {
    let app = spawn_app().await;
    let (short, long) = ("p".repeat(7), "p".repeat(129));
    let cases = [
        ("empty", "", INVALID),
        ("7 characters", short.as_str(), INVALID),
        ("129 characters", long.as_str(), INVALID),
    ]
    .map(|(case, password, expected)| {
        (
            case,
            json!({"name": "John", "email": "john@example.com", "password": password}),
            expected,
        )
    });

    assert_registrations_rejected(&app, &cases).await;
}

/// Missing fields and values of the wrong JSON type are rejected with 400 and write nothing.
#[actix_web::test]
async fn missing_fields_and_wrong_types_are_rejected_without_writing() {
    let app = spawn_app().await;
    let cases = [
        ("empty object", json!({}), INVALID),
        ("no email", json!({"name": "John"}), INVALID),
        ("no name", json!({"email": "john@example.com"}), INVALID),
        (
            "numeric name",
            json!({"name": 42, "email": "john@example.com"}),
            INVALID,
        ),
        (
            "email in an array",
            json!({"name": "John", "email": ["john@example.com"]}),
            INVALID,
        ),
        (
            "numeric password",
            json!({"name": "John", "email": "john@example.com", "password": 12345678}),
            INVALID,
        ),
        (
            "null name",
            json!({"name": null, "email": "john@example.com"}),
            INVALID,
        ),
        (
            "array instead of an object",
            json!(["John", "john@example.com"]),
            INVALID,
        ),
        ("string instead of an object", json!("John"), INVALID),
    ];

    assert_registrations_rejected(&app, &cases).await;
}

/// The limits are inclusive: a 100-character name and 8- and 128-character passwords register.
#[actix_web::test]
async fn boundary_lengths_are_accepted() {
    let app = spawn_app().await;

    let (id, token) = app
        .register(&"n".repeat(100), "a@example.com", &"p".repeat(8))
        .await;
    app.register("B", "b@example.com", &"p".repeat(128)).await;

    let profile = app.get(Service::Users, &user_path(id), Some(&token)).await;
    assert_eq!(profile.body["name"], "n".repeat(100));
}

/// Concurrent registrations of one email create exactly one account: one 201, the rest 409.
#[actix_web::test]
async fn concurrent_registrations_of_one_email_create_one_account() {
    let app = spawn_app().await;

    let replies = futures_util::future::join_all((0..6).map(|i| {
        app.post(
            Service::Users,
            "/users/register",
            json!({"name": format!("Racer {i}"), "email": "race@example.com", "password": "race-password"}),
            None,
        )
    }))
    .await;

    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{replies:?}");
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        reply.assert_error(409, "conflict");
    }
    assert_eq!(app.count("users").await, 2, "admin and one racer");
}
