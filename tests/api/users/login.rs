//! `POST /users/login`: exchanging email and password for a token.

use recsys::config::Service;
use reqwest::StatusCode;
use serde_json::json;

use super::{timestamp, user_path};
use crate::helpers::*;

/// A password given at registration logs in, and the login token reads the profile, which
/// carries timestamps and never the password or its hash.
#[actix_web::test]
async fn registered_password_logs_in_and_reads_the_profile() {
    let app = spawn_app().await;
    let (id, _) = app.register("Ann", "ann@example.com", "ann-password").await;

    let login = app.login("ann@example.com", "ann-password").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    assert_eq!(keys(&login.body), ["token"]);
    let profile = app
        .get(Service::Users, &user_path(id), login.body["token"].as_str())
        .await;

    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
    assert_eq!(
        keys(&profile.body),
        ["created_at", "email", "id", "name", "updated_at"]
    );
    assert_eq!(profile.body["id"], id.to_string());
    assert_eq!(profile.body["name"], "Ann");
    assert_eq!(profile.body["email"], "ann@example.com");
    assert_eq!(
        timestamp(&profile.body, "created_at"),
        timestamp(&profile.body, "updated_at")
    );
    assert!(!profile.text.contains("password"), "{}", profile.text);
    assert!(!profile.text.contains("$argon2"), "{}", profile.text);
}

/// A wrong password and an unknown email get the same 401 body, so login reveals no accounts.
#[actix_web::test]
async fn login_failures_are_indistinguishable() {
    let app = spawn_app().await;
    app.register("Ann", "ann@example.com", "ann-password").await;

    let wrong_password = app.login("ann@example.com", "not-ann-password").await;
    let unknown_email = app.login("nobody@example.com", "ann-password").await;

    wrong_password.assert_error(401, "unauthorized");
    unknown_email.assert_error(401, "unauthorized");
    assert_eq!(wrong_password.text, unknown_email.text);
}

/// Login matches the email case-insensitively (and ignores surrounding spaces).
#[actix_web::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    let (id, _) = app.register("Ann", "ann@example.com", "ann-password").await;

    let login = app.login(" ANN@Example.Com ", "ann-password").await;

    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let profile = app
        .get(Service::Users, &user_path(id), login.body["token"].as_str())
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
}

/// An account registered without a password cannot log in with any password.
#[actix_web::test]
async fn account_without_password_cannot_log_in() {
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

    let login = app.login("john@example.com", "any-password").await;

    login.assert_error(401, "unauthorized");
}
