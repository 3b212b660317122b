//! A stolen token is not a stolen account: a new email or password needs the current password,
//! a new password and `logout-everywhere` revoke every earlier token on every service and every
//! instance, and a runtime started later refuses them too.

use std::time::Duration;

use recsys::config::Service;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

async fn patch(app: &TestApp, id: Uuid, body: Value, token: &str) -> Reply {
    app.request(
        Method::PATCH,
        Service::Users,
        &user_path(id),
        Some(body),
        Some(token),
    )
    .await
}

/// The status of the user's own profile read with `token`, and of their personal
/// recommendations (another service).
async fn statuses(app: &TestApp, id: Uuid, token: &str) -> (u16, u16) {
    let profile = app.get(Service::Users, &user_path(id), Some(token)).await;
    let personal = app
        .get(
            Service::Recommendations,
            &format!("/recommendations/users/{id}"),
            Some(token),
        )
        .await;
    (profile.status.as_u16(), personal.status.as_u16())
}

/// A new password needs the current one; once changed, every token issued before (the
/// registration's, a login's) is refused by the users and the recommendations services, and
/// the answer's fresh token works.
#[actix_web::test]
async fn a_password_change_needs_the_current_password_and_revokes_earlier_tokens() {
    let app = spawn_app().await;
    let (id, registered, email) = app.new_user().await;
    let logged_in = app.login(&email, "user-password").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let new = json!({"password": "a-brand-new-password"});

    let bare = patch(&app, id, new.clone(), &registered).await;
    assert_rejected("no current_password", &bare, FORBIDDEN);
    let mut wrong = new.clone();
    wrong["current_password"] = json!("not-the-password");
    let wrong = patch(&app, id, wrong, &registered).await;
    assert_rejected("a wrong current_password", &wrong, FORBIDDEN);
    assert_eq!(statuses(&app, id, &registered).await, (200, 200));

    let mut right = new.clone();
    right["current_password"] = json!("user-password");
    let changed = patch(&app, id, right, &logged_in).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let fresh = changed.body["token"].as_str().unwrap().to_string();

    for old in [&registered, &logged_in] {
        let reply = app.get(Service::Users, &user_path(id), Some(old)).await;
        reply.assert_error(401, "unauthorized");
        assert!(reply.text.contains("token revoked"), "{}", reply.text);
        assert_eq!(statuses(&app, id, old).await, (401, 401));
    }
    assert_eq!(statuses(&app, id, &fresh).await, (200, 200));
    app.login(&email, "user-password")
        .await
        .assert_error(401, "unauthorized");
    let again = app.login(&email, "a-brand-new-password").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let token = again.body["token"].as_str().unwrap();
    assert_eq!(statuses(&app, id, token).await, (200, 200));
}

/// A new email needs the current password too, and revokes nothing: it is not a credential
/// an attacker could use to keep the account.
#[actix_web::test]
async fn an_email_change_needs_the_current_password() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let email = format!("moved-{}@example.com", Uuid::new_v4().simple());

    let bare = patch(&app, id, json!({"email": email}), &token).await;
    assert_rejected("no current_password", &bare, FORBIDDEN);
    let changed = patch(
        &app,
        id,
        json!({"email": email, "current_password": "user-password"}),
        &token,
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["email"], email);
    assert!(changed.body.get("token").is_none(), "{}", changed.text);
    assert_eq!(statuses(&app, id, &token).await, (200, 200));
    // A name alone needs nothing more than the token.
    let renamed = patch(&app, id, json!({"name": "Still Me"}), &token).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
}

/// Wrong current passwords count as failed logins: after `LOGIN_MAX_FAILURES` of them the
/// account is locked out, for this route and for logins alike.
#[actix_web::test]
async fn wrong_current_passwords_lock_the_account_out_like_failed_logins() {
    let app = TestApp::builder()
        .with(email_lockout_after_three)
        .spawn()
        .await;
    let (id, token, email) = app.new_user().await;
    let guess = json!({"password": "attacker-password", "current_password": "guess-guess"});

    for _ in 0..3 {
        let reply = patch(&app, id, guess.clone(), &token).await;
        assert_rejected("a guess", &reply, FORBIDDEN);
    }
    let locked = patch(&app, id, guess, &token).await;
    assert_rejected("past the limit", &locked, (429, "too_many_requests"));
    app.login(&email, "user-password")
        .await
        .assert_error(429, "too_many_requests");
}

/// An admin changes another user's password without knowing it; the change is logged with the
/// admin's id, and the user's tokens are revoked (the admin's own token is not).
#[actix_web::test]
async fn an_admin_resets_another_users_password_and_it_is_logged() {
    let (logger, logs) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    let (id, token, email) = app.new_user().await;

    let reset = patch(
        &app,
        id,
        json!({"password": "reset-by-admin"}),
        &app.admin_token,
    )
    .await;

    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert!(reset.body.get("token").is_none(), "{}", reset.text);
    assert_eq!(statuses(&app, id, &token).await, (401, 401));
    let admin_view = app
        .get(Service::Users, &user_path(id), Some(&app.admin_token))
        .await;
    assert_eq!(admin_view.status, StatusCode::OK, "{}", admin_view.text);
    assert_eq!(
        app.login(&email, "reset-by-admin").await.status,
        StatusCode::OK
    );
    let logged = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("admin changed another user's credentials")
                && l.contains(&format!("user_id={id}"))
                && l.contains("admin_id=")
                && l.contains("changed=password")
        })
        .count();
    assert_eq!(logged, 1);
}

/// `logout-everywhere` on one instance: that instance refuses the earlier tokens at once, a
/// second instance as soon as the announcement reaches it, a runtime started afterwards from
/// its first request; a later login works everywhere. Nobody else may call it for a user.
#[actix_web::test]
async fn logout_everywhere_refuses_earlier_tokens_on_every_instance() {
    let app = spawn_app().await;
    let other = app
        .another_instance(&[Service::Users, Service::Recommendations])
        .await;
    let (id, token, email) = app.new_user().await;
    let (_, stranger, _) = app.new_user().await;
    assert_eq!(statuses(&other, id, &token).await, (200, 200));
    let path = format!("/users/{id}/logout-everywhere");

    let refused = app
        .post(Service::Users, &path, json!({}), Some(&stranger))
        .await;
    refused.assert_error(403, "forbidden");
    let done = app
        .post(Service::Users, &path, json!({}), Some(&token))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text);

    assert_eq!(statuses(&app, id, &token).await, (401, 401));
    eventually(
        Duration::from_secs(10),
        "the other instance to refuse",
        || async { (statuses(&other, id, &token).await == (401, 401)).then_some(()) },
    )
    .await;
    let later = app.another_instance(&[Service::Users]).await;
    later
        .get(Service::Users, &user_path(id), Some(&token))
        .await
        .assert_error(401, "unauthorized");
    let fresh = later.login(&email, "user-password").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(statuses(&app, id, &fresh).await, (200, 200));
    assert_eq!(statuses(&other, id, &fresh).await, (200, 200));
    let by_admin = app
        .post(Service::Users, &path, json!({}), Some(&app.admin_token))
        .await;
    assert_eq!(by_admin.status, StatusCode::NO_CONTENT, "{}", by_admin.text);
    assert_eq!(statuses(&app, id, &fresh).await, (401, 401));
}
