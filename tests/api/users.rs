//! The users service over HTTP: registration, login, tokens, profile reads and updates, activity.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use recsys::config::Service;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// The JWT secret every test runtime signs with (see `helpers::test_settings`).
const TEST_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// The recsys claims of a token for `sub` with `role`, expiring `exp_offset` seconds from now.
fn claims(sub: Uuid, role: &str, exp_offset: i64) -> Value {
    let now = Utc::now().timestamp();
    json!({"sub": sub, "role": role, "exp": now + exp_offset, "iat": now - 7200})
}

/// An HS256 token with the recsys claims, signed with `secret`, expiring `exp_offset` seconds
/// from now. Signed by hand, so that any secret a forger might try works, the empty one too
/// (the JWT library refuses to sign with that).
pub fn sign(secret: &str, sub: Uuid, role: &str, exp_offset: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{KeyInit as _, Mac as _};
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = b64(claims(sub, role, exp_offset).to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&mac.finalize().into_bytes()))
}

/// Like [`sign`], with another algorithm (through the JWT library).
fn sign_with(algorithm: Algorithm, secret: &str, sub: Uuid, role: &str, exp_offset: i64) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims(sub, role, exp_offset),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// The sorted keys of a JSON object.
fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// A timestamp field of a JSON body.
fn timestamp(body: &Value, field: &str) -> DateTime<Utc> {
    serde_json::from_value(body[field].clone())
        .unwrap_or_else(|e| panic!("{field} is not a timestamp ({e}): {body}"))
}

/// The user's own path.
fn user_path(id: Uuid) -> String {
    format!("/users/{id}")
}

/// `GET /users/{id}` with a raw `Authorization` header value.
async fn get_with_authorization(app: &TestApp, id: Uuid, authorization: &str) -> StatusCode {
    app.client
        .get(format!("{}{}", app.url(Service::Users), user_path(id)))
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .expect("request sent")
        .status()
}

/// How many outbox rows were ever inserted (the id sequence's high-water mark; the relay deletes
/// rows once published, so a plain count could miss a write).
async fn outbox_high_water(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Mark {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .unwrap();
    diesel::sql_query(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM outbox_id_seq",
    )
    .get_result::<Mark>(&mut conn)
    .await
    .unwrap()
    .n
}

/// A row of `user_activity`, read back by its id.
#[derive(Debug, QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    product_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    action: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    quantity: i32,
}

/// The `user_activity` row with `id`, if any.
async fn activity_row(app: &TestApp, id: Uuid) -> Option<ActivityRow> {
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .unwrap();
    diesel::sql_query(
        "SELECT user_id, product_id, action, quantity FROM user_activity WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result::<ActivityRow>(&mut conn)
    .await
    .optional()
    .unwrap()
}

/// Posts each body to `/users/register` and asserts a 400 that wrote no user and no event.
async fn assert_registrations_rejected(app: &TestApp, bodies: &[Value]) {
    let users = app.count("users").await;
    let outbox = outbox_high_water(app).await;
    for body in bodies {
        let reply = app
            .post(Service::Users, "/users/register", body.clone(), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body} accepted: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(
        app.count("users").await,
        users,
        "a rejected registration wrote a user"
    );
    assert_eq!(
        outbox_high_water(app).await,
        outbox,
        "a rejected registration wrote an event"
    );
}

/// `POST /users/{id}/activity` as `token`.
async fn record(app: &TestApp, user: Uuid, body: Value, token: Option<&str>) -> Reply {
    app.post(
        Service::Users,
        &format!("/users/{user}/activity"),
        body,
        token,
    )
    .await
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

/// A password given at registration logs in, and the login token reads the profile, which
/// carries timestamps and never the password or its hash.
#[actix_web::test]
async fn registered_password_logs_in_and_reads_the_profile() {
    let app = spawn_app().await;
    let (id, _) = app.register("Ann", "ann@example.com", "ann-password").await;

    let login = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": "ann@example.com", "password": "ann-password"}),
            None,
        )
        .await;
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
    let bodies: Vec<Value> = [
        "",
        "john",
        "john@",
        "@example.com",
        "john@example",
        "john doe@example.com",
        "john@@example.com",
        "john@example..com",
        "john@.example.com",
        "john@example.com.",
    ]
    .iter()
    .map(|email| json!({"name": "John", "email": email}))
    .collect();

    assert_registrations_rejected(&app, &bodies).await;
}

/// Empty, blank and over-100-character names are rejected with 400 and write nothing.
#[actix_web::test]
async fn blank_or_overlong_names_are_rejected_without_writing() {
    let app = spawn_app().await;
    let bodies: Vec<Value> = ["", "   ", "\t\n", &"n".repeat(101)]
        .iter()
        .map(|name| json!({"name": name, "email": "john@example.com"}))
        .collect();

    assert_registrations_rejected(&app, &bodies).await;
}

/// Passwords of 7 and of 129 characters are rejected with 400 and write nothing.
#[actix_web::test]
async fn passwords_outside_8_to_128_characters_are_rejected_without_writing() {
    let app = spawn_app().await;
    let bodies: Vec<Value> = ["p".repeat(7), "p".repeat(129)]
        .iter()
        .map(|password| json!({"name": "John", "email": "john@example.com", "password": password}))
        .collect();

    assert_registrations_rejected(&app, &bodies).await;
}

/// Missing fields and values of the wrong JSON type are rejected with 400 and write nothing.
#[actix_web::test]
async fn missing_fields_and_wrong_types_are_rejected_without_writing() {
    let app = spawn_app().await;
    let bodies = [
        json!({}),
        json!({"name": "John"}),
        json!({"email": "john@example.com"}),
        json!({"name": 42, "email": "john@example.com"}),
        json!({"name": "John", "email": ["john@example.com"]}),
        json!({"name": "John", "email": "john@example.com", "password": 12345678}),
        json!({"name": null, "email": "john@example.com"}),
        json!(["John", "john@example.com"]),
        json!("John"),
    ];

    assert_registrations_rejected(&app, &bodies).await;
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

/// A wrong password and an unknown email get the same 401 body, so login reveals no accounts.
#[actix_web::test]
async fn login_failures_are_indistinguishable() {
    let app = spawn_app().await;
    app.register("Ann", "ann@example.com", "ann-password").await;

    let wrong_password = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": "ann@example.com", "password": "not-ann-password"}),
            None,
        )
        .await;
    let unknown_email = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": "nobody@example.com", "password": "ann-password"}),
            None,
        )
        .await;

    wrong_password.assert_error(401, "unauthorized");
    unknown_email.assert_error(401, "unauthorized");
    assert_eq!(wrong_password.text, unknown_email.text);
}

/// Login matches the email case-insensitively (and ignores surrounding spaces).
#[actix_web::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    let (id, _) = app.register("Ann", "ann@example.com", "ann-password").await;

    let login = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": " ANN@Example.Com ", "password": "ann-password"}),
            None,
        )
        .await;

    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let profile = app
        .get(Service::Users, &user_path(id), login.body["token"].as_str())
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
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

    let login = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": "john@example.com", "password": "any-password"}),
            None,
        )
        .await;

    login.assert_error(401, "unauthorized");
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

    let user = app
        .get(
            Service::Users,
            &user_path(id),
            Some(&sign("other-secret", id, "user", 3600)),
        )
        .await;
    let admin = app
        .get(
            Service::Users,
            &user_path(id),
            Some(&sign("other-secret", id, "admin", 3600)),
        )
        .await;

    user.assert_error(401, "unauthorized");
    admin.assert_error(401, "unauthorized");
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
    let hs512 = sign_with(Algorithm::HS512, TEST_SECRET, id, "admin", 3600);
    let claims = sign(TEST_SECRET, id, "admin", 3600)
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    // base64url of {"alg":"none","typ":"JWT"}
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");

    let hs512 = app.get(Service::Users, &user_path(id), Some(&hs512)).await;
    let unsigned = app
        .get(Service::Users, &user_path(id), Some(&unsigned))
        .await;

    hs512.assert_error(401, "unauthorized");
    unsigned.assert_error(401, "unauthorized");
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

    let status = get_with_authorization(&app, id, &token).await;

    assert_eq!(status, StatusCode::OK);
}

/// An `Authorization` header with another scheme (Basic) is 401, even around a valid token.
#[actix_web::test]
async fn other_authorization_schemes_are_unauthorized() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    let status = get_with_authorization(&app, id, &format!("Basic {token}")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// An id that is not a UUID is 400.
#[actix_web::test]
async fn malformed_user_id_is_bad_request() {
    let app = spawn_app().await;

    let reply = app
        .get(Service::Users, "/users/not-a-uuid", Some(&app.admin_token))
        .await;

    reply.assert_error(400, "invalid_request");
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

    let put = app
        .request(
            Method::PUT,
            Service::Users,
            &user_path(id),
            Some(json!({"name": "Put Name"})),
            Some(&token),
        )
        .await;
    let patch = app
        .request(
            Method::PATCH,
            Service::Users,
            &user_path(id),
            Some(json!({"name": "Patch Name"})),
            Some(&token),
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

    let put = app
        .request(
            Method::PUT,
            Service::Users,
            &user_path(id),
            Some(json!({"email": taken})),
            Some(&token),
        )
        .await;
    let patch = app
        .request(
            Method::PATCH,
            Service::Users,
            &user_path(id),
            Some(json!({"email": taken.to_uppercase()})),
            Some(&token),
        )
        .await;

    put.assert_error(409, "conflict");
    patch.assert_error(409, "conflict");
    let profile = app.get(Service::Users, &user_path(id), Some(&token)).await;
    assert_eq!(profile.body["email"], mine);
}

/// After a password change the old password no longer logs in and the new one does.
#[actix_web::test]
async fn update_password_replaces_the_old_one() {
    let app = spawn_app().await;
    let (id, token, email) = app.new_user().await;

    let reply = app
        .request(
            Method::PATCH,
            Service::Users,
            &user_path(id),
            Some(json!({"password": "brand-new-password"})),
            Some(&token),
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains("password"), "{}", reply.text);
    let old = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": email, "password": "user-password"}),
            None,
        )
        .await;
    old.assert_error(401, "unauthorized");
    let new = app
        .post(
            Service::Users,
            "/users/login",
            json!({"email": email, "password": "brand-new-password"}),
            None,
        )
        .await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.text);
}

/// An update naming no field is 400, for PUT and PATCH.
#[actix_web::test]
async fn empty_update_is_bad_request() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    for method in [Method::PUT, Method::PATCH] {
        let reply = app
            .request(
                method.clone(),
                Service::Users,
                &user_path(id),
                Some(json!({})),
                Some(&token),
            )
            .await;

        reply.assert_error(400, "invalid_request");
    }
}

/// Updates with invalid values (blank name, bad email, short password) are 400 and change
/// nothing.
#[actix_web::test]
async fn update_with_invalid_values_is_bad_request() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let before = app
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .body;

    for body in [
        json!({"name": "  "}),
        json!({"name": "n".repeat(101)}),
        json!({"email": "not-an-email"}),
        json!({"password": "short"}),
        json!({"name": 7}),
    ] {
        let reply = app
            .request(
                Method::PATCH,
                Service::Users,
                &user_path(id),
                Some(body.clone()),
                Some(&token),
            )
            .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    let after = app
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .body;
    assert_eq!(after, before);
}

/// A user cannot update another user's account (403), for PUT and PATCH.
#[actix_web::test]
async fn update_with_another_users_token_is_forbidden() {
    let app = spawn_app().await;
    let (alice, alice_token, _) = app.new_user().await;
    let (_, bob_token, _) = app.new_user().await;

    for method in [Method::PUT, Method::PATCH] {
        let reply = app
            .request(
                method,
                Service::Users,
                &user_path(alice),
                Some(json!({"name": "Hijacked"})),
                Some(&bob_token),
            )
            .await;

        reply.assert_error(403, "forbidden");
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

    let reply = app
        .request(
            Method::PUT,
            Service::Users,
            &user_path(id),
            Some(json!({"name": "Renamed", "email": "Renamed@Example.com"})),
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["name"], "Renamed");
    assert_eq!(reply.body["email"], "renamed@example.com");
    let profile = app.get(Service::Users, &user_path(id), Some(&token)).await;
    assert_eq!(profile.body["name"], "Renamed");
}

/// Every activity type is accepted with 202 and a fresh event id, and recorded under that id.
#[actix_web::test]
async fn each_activity_type_is_recorded() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let product = Uuid::new_v4();

    for action in ["view", "cart_add", "cart_remove", "purchase"] {
        let reply = record(
            &app,
            id,
            json!({"type": action, "product_id": product, "quantity": 2}),
            Some(&token),
        )
        .await;

        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{action}: {}",
            reply.text
        );
        assert_eq!(keys(&reply.body), ["event_id"]);
        let event_id: Uuid = reply.body["event_id"].as_str().unwrap().parse().unwrap();
        let row = activity_row(&app, event_id).await.expect("activity row");
        assert_eq!((row.user_id, row.product_id), (id, product));
        assert_eq!(row.action, action);
        assert_eq!(row.quantity, 2);
    }
    assert_eq!(app.count("user_activity").await, 4);
}

/// Many concurrent actions (written together in group commits): each `202` names a row of its
/// own user, product and quantity and an outbox event; the actions of a deleted account, mixed
/// into the same batches, are `401` and write nothing, and do not fail their neighbours.
#[actix_web::test]
async fn concurrent_actions_are_each_recorded_once() {
    const USERS: usize = 6;
    const EACH: usize = 30;
    let app = spawn_app().await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        let (id, token, _) = app.new_user().await;
        users.push((id, token));
    }
    let (ghost, ghost_token, _) = app.new_user().await;
    TestDb::execute(
        &app.db(),
        &format!("DELETE FROM users WHERE id = '{ghost}'"),
    )
    .await;
    let outbox_before = outbox_high_water(&app).await;

    let mut posts = Vec::new();
    for n in 0..EACH {
        for (user, token) in users
            .iter()
            .chain(std::iter::once(&(ghost, ghost_token.clone())))
        {
            let product = Uuid::new_v4();
            let quantity = (n % 7 + 1) as i32;
            let (app, user, token) = (&app, *user, token.clone());
            posts.push(async move {
                let reply = record(
                    app,
                    user,
                    json!({"type": "cart_add", "product_id": product, "quantity": quantity}),
                    Some(&token),
                )
                .await;
                (user, product, quantity, reply)
            });
        }
    }
    let replies = futures_util::future::join_all(posts).await;

    let mut accepted = 0;
    for (user, product, quantity, reply) in replies {
        if user == ghost {
            reply.assert_error(401, "unauthorized");
            continue;
        }
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        let event_id: Uuid = reply.body["event_id"].as_str().unwrap().parse().unwrap();
        let row = activity_row(&app, event_id).await.expect("activity row");
        assert_eq!(
            (
                row.user_id,
                row.product_id,
                row.quantity,
                row.action.as_str()
            ),
            (user, product, quantity, "cart_add")
        );
        accepted += 1;
    }
    assert_eq!(accepted, USERS * EACH);
    assert_eq!(app.count("user_activity").await, (USERS * EACH) as i64);
    assert_eq!(
        outbox_high_water(&app).await - outbox_before,
        (USERS * EACH) as i64,
        "one event per recorded action, none for the deleted account"
    );
}

/// Without a quantity, an activity is recorded with quantity 1; 1000 is still accepted.
#[actix_web::test]
async fn activity_quantity_defaults_to_one() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    let default = record(
        &app,
        id,
        json!({"type": "view", "product_id": Uuid::new_v4()}),
        Some(&token),
    )
    .await;
    let most = record(
        &app,
        id,
        json!({"type": "purchase", "product_id": Uuid::new_v4(), "quantity": 1000}),
        Some(&token),
    )
    .await;

    assert_eq!(default.status, StatusCode::ACCEPTED, "{}", default.text);
    let row = activity_row(
        &app,
        default.body["event_id"].as_str().unwrap().parse().unwrap(),
    )
    .await;
    assert_eq!(row.expect("activity row").quantity, 1);
    assert_eq!(most.status, StatusCode::ACCEPTED, "{}", most.text);
    let row = activity_row(
        &app,
        most.body["event_id"].as_str().unwrap().parse().unwrap(),
    )
    .await;
    assert_eq!(row.expect("activity row").quantity, 1000);
}

/// Quantities 0, 1001, negative, fractional or quoted are 400 and record nothing.
#[actix_web::test]
async fn activity_quantity_outside_1_to_1000_is_rejected() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    for quantity in [json!(0), json!(1001), json!(-1), json!(1.5), json!("2")] {
        let reply = record(
            &app,
            id,
            json!({"type": "cart_add", "product_id": Uuid::new_v4(), "quantity": quantity}),
            Some(&token),
        )
        .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{quantity}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.count("user_activity").await, 0);
}

/// An activity type outside view/cart_add/cart_remove/purchase, or none, is 400.
#[actix_web::test]
async fn activity_with_unknown_type_is_rejected() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    for body in [
        json!({"type": "wishlist", "product_id": Uuid::new_v4()}),
        json!({"type": "View", "product_id": Uuid::new_v4()}),
        json!({"product_id": Uuid::new_v4()}),
    ] {
        let reply = record(&app, id, body.clone(), Some(&token)).await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.count("user_activity").await, 0);
}

/// A `product_id` that is not a UUID (or is missing) is 400.
#[actix_web::test]
async fn activity_with_malformed_product_id_is_rejected() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;

    for body in [
        json!({"type": "view", "product_id": "not-a-uuid"}),
        json!({"type": "view", "product_id": 42}),
        json!({"type": "view"}),
    ] {
        let reply = record(&app, id, body.clone(), Some(&token)).await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.count("user_activity").await, 0);
}

/// Only the user may record their own activity: another user's token and even the admin's
/// are 403.
#[actix_web::test]
async fn activity_for_another_user_is_forbidden_even_for_admin() {
    let app = spawn_app().await;
    let (alice, _, _) = app.new_user().await;
    let (_, bob_token, _) = app.new_user().await;
    let body = json!({"type": "view", "product_id": Uuid::new_v4()});

    let bob = record(&app, alice, body.clone(), Some(&bob_token)).await;
    let admin = record(&app, alice, body, Some(&app.admin_token)).await;

    bob.assert_error(403, "forbidden");
    admin.assert_error(403, "forbidden");
    assert_eq!(app.count("user_activity").await, 0);
}

/// Recording activity without a token is 401.
#[actix_web::test]
async fn activity_without_token_is_unauthorized() {
    let app = spawn_app().await;
    let (id, _, _) = app.new_user().await;

    let reply = record(
        &app,
        id,
        json!({"type": "view", "product_id": Uuid::new_v4()}),
        None,
    )
    .await;

    reply.assert_error(401, "unauthorized");
    assert_eq!(app.count("user_activity").await, 0);
}
