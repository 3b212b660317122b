//! `PUT /users/{id}` and `PATCH /users/{id}`: changing a profile's name, email or password.

use recsys::config::Service;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{assert_rejected, timestamp, user_path, FORBIDDEN, INVALID};
use crate::helpers::*;

/// `method` (PUT or PATCH) with `body` on the profile of the user `id`, as the holder of `token`.
async fn change(app: &TestApp, method: Method, id: Uuid, body: Value, token: &str) -> Reply {
    app.request(
        method,
        Service::Users,
        &user_path(id),
        Some(body),
        Some(token),
    )
    .await
}

/// PUT and PATCH both change the name, answer the new profile and advance `updated_at`.
#[actix_web::test]
async fn update_changes_the_name_and_advances_updated_at() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let before = app
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .body;

    let put = change(&app, Method::PUT, id, json!({"name": "Put Name"}), &token).await;
    let patch = change(
        &app,
        Method::PATCH,
        id,
        json!({"name": "Patch Name"}),
        &token,
    )
    .await;

    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["name"], "Put Name");
    assert!(timestamp(&put.body, "updated_at") > timestamp(&before, "updated_at"));
    assert_eq!(put.body["created_at"], before["created_at"]);
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    assert_eq!(patch.body["name"], "Patch Name");
    assert!(timestamp(&patch.body, "updated_at") > timestamp(&put.body, "updated_at"));
    let after = app
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .body;
    assert_eq!(after, patch.body);
}

/// Changing the email to one another account holds (in any case) is 409 and changes nothing.
#[actix_web::test]
async fn update_to_a_taken_email_is_a_conflict() {
    let app = spawn_app().await;
    let (_, _, taken) = app.new_user().await;
    let (id, token, mine) = app.new_user().await;
    let cases = [
        (
            "PUT, same case",
            Method::PUT,
            taken.clone(),
            (409, "conflict"),
        ),
        (
            "PATCH, upper case",
            Method::PATCH,
            taken.to_uppercase(),
            (409, "conflict"),
        ),
    ];

    for (case, method, email, expected) in cases {
        let body = json!({"email": email, "current_password": "user-password"});
        let reply = change(&app, method, id, body, &token).await;

        assert_rejected(case, &reply, expected);
    }
    let profile = app.get(Service::Users, &user_path(id), Some(&token)).await;
    assert_eq!(profile.body["email"], mine);
}

/// After a password change the old password no longer logs in and the new one does.
#[actix_web::test]
async fn update_password_replaces_the_old_one() {
    let app = spawn_app().await;
    let (id, token, email) = app.new_user().await;

    let reply = change(
        &app,
        Method::PATCH,
        id,
        json!({"password": "brand-new-password", "current_password": "user-password"}),
        &token,
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains("password"), "{}", reply.text);
    let old = app.login(&email, "user-password").await;
    old.assert_error(401, "unauthorized");
    let new = app.login(&email, "brand-new-password").await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.text);
}

/// An update naming no field is 400, for PUT and PATCH.
#[actix_web::test]
async fn empty_update_is_bad_request() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    for method in [Method::PUT, Method::PATCH] {
        let reply = change(&app, method.clone(), id, json!({}), &token).await;

        assert_rejected(method.as_str(), &reply, INVALID);
    }
}

/// Updates with invalid values (blank or overlong name, bad email, too short or too long
/// password, a name of the wrong type) are 400 and change nothing.
#[actix_web::test]
async fn update_with_invalid_values_is_bad_request() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let before = app
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .body;
    let cases = [
        ("empty name", json!({"name": ""}), INVALID),
        ("blank name", json!({"name": "  "}), INVALID),
        (
            "101-character name",
            json!({"name": "n".repeat(101)}),
            INVALID,
        ),
        ("email without @", json!({"email": "not-an-email"}), INVALID),
        (
            "5-character password",
            json!({"password": "short"}),
            INVALID,
        ),
        (
            "7-character password",
            json!({"password": "p".repeat(7)}),
            INVALID,
        ),
        (
            "129-character password",
            json!({"password": "p".repeat(129)}),
            INVALID,
        ),
        ("numeric name", json!({"name": 7}), INVALID),
    ];

    for (case, body, expected) in cases {
        let reply = change(&app, Method::PATCH, id, body.clone(), &token).await;

        assert_rejected(&format!("{case} ({body})"), &reply, expected);
        let after = app
            .get(Service::Users, &user_path(id), Some(&token))
            .await
            .body;
        assert_eq!(
            after, before,
            "{case}: the rejected update changed the profile"
        );
    }
}

/// A user cannot update another user's account (403), for PUT and PATCH.
#[actix_web::test]
async fn update_with_another_users_token_is_forbidden() {
    let app = spawn_app().await;
    let (alice, alice_token, _) = app.new_user().await;
    let (_, bob_token, _) = app.new_user().await;

    for method in [Method::PUT, Method::PATCH] {
        let reply = change(
            &app,
            method.clone(),
            alice,
            json!({"name": "Hijacked"}),
            &bob_token,
        )
        .await;

        assert_rejected(method.as_str(), &reply, FORBIDDEN);
    }
    let profile = app
        .get(Service::Users, &user_path(alice), Some(&alice_token))
        .await;
    assert_eq!(profile.body["name"], "Test User");
}

/// The admin may update any account, and the change is what the user then reads.
#[actix_web::test]
async fn admin_updates_any_user() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    let reply = change(
        &app,
        Method::PUT,
        id,
        json!({"name": "Renamed", "email": "Renamed@Example.com"}),
        &app.admin_token,
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["name"], "Renamed");
    assert_eq!(reply.body["email"], "renamed@example.com");
    let profile = app.get(Service::Users, &user_path(id), Some(&token)).await;
    assert_eq!(profile.body["name"], "Renamed");
}
