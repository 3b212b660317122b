//! `GET /users/{id}`: reading a profile, and the tokens and `Authorization` headers that
//! authorize it (or do not).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use recsys::config::Service;
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use uuid::Uuid;

use super::{assert_rejected, claims, sign, user_path, INVALID};
use crate::helpers::*;

/// The JWT secret every test runtime signs with (see `helpers::test_settings`).
const TEST_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// The rejection of a request without a valid token: `401` with code `unauthorized`.
const UNAUTHORIZED: (u16, &str) = (401, "unauthorized");

/// Like [`sign`], with another algorithm (through the JWT library).
fn sign_with(algorithm: Algorithm, secret: &str, sub: Uuid, role: &str, exp_offset: i64) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims(sub, role, exp_offset),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// `GET /users/{id}` with a raw `Authorization` header value.
async fn get_with_authorization(app: &TestApp, id: Uuid, authorization: &str) -> Reply {
    let response = app
        .client
        .get(format!("{}{}", app.url(Service::Users), user_path(id)))
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .expect("request sent");
    read_reply(response).await
}

/// Reading a profile without an `Authorization` header is 401.
#[actix_web::test]
async fn get_user_without_token_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;

    let reply = app.get(Service::Users, &user_path(id), None).await;

    reply.assert_error(401, "unauthorized");
}

/// A token that is not a JWT is 401.
#[actix_web::test]
async fn get_user_with_garbage_token_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;

    let reply = app
        .get(Service::Users, &user_path(id), Some("not.a.jwt"))
        .await;

    reply.assert_error(401, "unauthorized");
}

/// A well-formed token signed with another secret is 401, even naming the user as admin.
#[actix_web::test]
async fn get_user_with_token_signed_by_another_secret_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;
    let cases = [
        (
            "user role",
            sign("other-secret", id, "user", 3600),
            UNAUTHORIZED,
        ),
        (
            "admin role",
            sign("other-secret", id, "admin", 3600),
            UNAUTHORIZED,
        ),
    ];

    for (case, token, expected) in cases {
        let reply = app.get(Service::Users, &user_path(id), Some(&token)).await;

        assert_rejected(case, &reply, expected);
    }
}

/// A token signed with the runtime's secret is refused once it expired an hour ago (the same
/// token, unexpired, is accepted).
#[actix_web::test]
async fn get_user_with_expired_token_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;

    let fresh = app
        .get(
            Service::Users,
            &user_path(id),
            Some(&sign(TEST_SECRET, id, "user", 3600)),
        )
        .await;
    let expired = app
        .get(
            Service::Users,
            &user_path(id),
            Some(&sign(TEST_SECRET, id, "user", -3600)),
        )
        .await;

    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    expired.assert_error(401, "unauthorized");
}

/// A token with the right secret but another algorithm (HS512), or unsigned (`alg: none`),
/// is 401.
#[actix_web::test]
async fn get_user_with_token_of_another_algorithm_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;
    let claims = sign(TEST_SECRET, id, "admin", 3600)
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let cases = [
        (
            "HS512",
            sign_with(Algorithm::HS512, TEST_SECRET, id, "admin", 3600),
            UNAUTHORIZED,
        ),
        // base64url of {"alg":"none","typ":"JWT"}
        (
            "alg: none",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}."),
            UNAUTHORIZED,
        ),
    ];

    for (case, token, expected) in cases {
        let reply = app.get(Service::Users, &user_path(id), Some(&token)).await;

        assert_rejected(case, &reply, expected);
    }
}

/// A user's token cannot read another user's profile (403).
#[actix_web::test]
async fn get_user_with_another_users_token_is_forbidden() {
    let app = spawn_app().await;
    let (alice, _, _) = app.new_user().await;
    let (_, bob_token, _) = app.new_user().await;

    let reply = app
        .get(Service::Users, &user_path(alice), Some(&bob_token))
        .await;

    reply.assert_error(403, "forbidden");
}

/// The admin token reads any user's profile.
#[actix_web::test]
async fn admin_reads_any_user() {
    let app = spawn_app().await;
    let (id, _, email) = app.new_user().await;

    let reply = app
        .get(Service::Users, &user_path(id), Some(&app.admin_token))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["id"], id.to_string());
    assert_eq!(reply.body["email"], email);
}

/// The admin reading an id no user has gets 404.
#[actix_web::test]
async fn admin_reading_unknown_user_is_not_found() {
    let app = spawn_app().await;

    let reply = app
        .get(
            Service::Users,
            &user_path(Uuid::new_v4()),
            Some(&app.admin_token),
        )
        .await;

    reply.assert_error(404, "not_found");
}

/// A bare token without the `Bearer` scheme is accepted, as the seed accepted it.
#[actix_web::test]
async fn bare_token_without_bearer_scheme_is_accepted() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    let reply = get_with_authorization(&app, id, &token).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// An `Authorization` header with another scheme (Basic, Token) is 401, even around a valid
/// token.
#[actix_web::test]
async fn other_authorization_schemes_are_unauthorized() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let cases = [
        ("Basic", format!("Basic {token}"), UNAUTHORIZED),
        ("Token", format!("Token {token}"), UNAUTHORIZED),
    ];

    for (case, authorization, expected) in cases {
        let reply = get_with_authorization(&app, id, &authorization).await;

        assert_rejected(case, &reply, expected);
    }
}

/// An id that is not a UUID is 400.
#[actix_web::test]
async fn malformed_user_id_is_bad_request() {
    let app = spawn_app().await;
    let id = Uuid::new_v4().to_string();
    let cases = [
        ("not a UUID", "not-a-uuid".to_string(), INVALID),
        ("a UUID one digit short", id[..35].to_string(), INVALID),
        (
            "a UUID with a non-hex digit",
            format!("{}g", &id[..35]),
            INVALID,
        ),
    ];

    for (case, id, expected) in cases {
        let reply = app
            .get(
                Service::Users,
                &format!("/users/{id}"),
                Some(&app.admin_token),
            )
            .await;

        assert_rejected(case, &reply, expected);
    }
}
