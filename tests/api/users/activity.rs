//! `POST /users/{id}/activity`: recording what a user did with a product.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use recsys::config::Service;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{assert_rejected, outbox_high_water, FORBIDDEN, INVALID};
use crate::helpers::*;

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

/// Records each case's body as `user` with `token` and asserts its rejection, and that no
/// activity was ever recorded; a failure names the case.
async fn assert_activities_rejected(
    app: &TestApp,
    user: Uuid,
    token: &str,
    cases: &[(&str, Value, (u16, &str))],
) {
    for (case, body, expected) in cases {
        let reply = record(app, user, body.clone(), Some(token)).await;

        assert_rejected(&format!("{case} ({body})"), &reply, *expected);
        assert_eq!(
            app.count("user_activity").await,
            0,
            "{case}: a rejected action was recorded"
        );
    }
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
        assert_eq!(keys(&reply.body), ["event_id"], "{action}");
        let event_id: Uuid = reply.body["event_id"].as_str().unwrap().parse().unwrap();
        let row = activity_row(&app, event_id)
            .await
            .unwrap_or_else(|| panic!("{action}: no activity row"));
        assert_eq!((row.user_id, row.product_id), (id, product), "{action}");
        assert_eq!(row.action, action);
        assert_eq!(row.quantity, 2, "{action}");
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
    let cases = [
        ("zero", json!(0), INVALID),
        ("1001", json!(1001), INVALID),
        ("negative", json!(-1), INVALID),
        ("fractional", json!(1.5), INVALID),
        ("quoted", json!("2"), INVALID),
    ]
    .map(|(case, quantity, expected)| {
        (
            case,
            json!({"type": "cart_add", "product_id": Uuid::new_v4(), "quantity": quantity}),
            expected,
        )
    });

    assert_activities_rejected(&app, id, &token, &cases).await;
}

/// An activity type outside view/cart_add/cart_remove/purchase, or none, is 400.
#[actix_web::test]
async fn activity_with_unknown_type_is_rejected() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let cases = [
        (
            "unknown type",
            json!({"type": "wishlist", "product_id": Uuid::new_v4()}),
            INVALID,
        ),
        (
            "type in another case",
            json!({"type": "View", "product_id": Uuid::new_v4()}),
            INVALID,
        ),
        (
            "empty type",
            json!({"type": "", "product_id": Uuid::new_v4()}),
            INVALID,
        ),
        ("no type", json!({"product_id": Uuid::new_v4()}), INVALID),
    ];

    assert_activities_rejected(&app, id, &token, &cases).await;
}

/// A `product_id` that is not a UUID (or is missing) is 400.
#[actix_web::test]
async fn activity_with_malformed_product_id_is_rejected() {
    let app = spawn_app().await;
    let (id, token, _) = app.new_user().await;
    let short = Uuid::new_v4().to_string()[..35].to_string();
    let cases = [
        (
            "not a UUID",
            json!({"type": "view", "product_id": "not-a-uuid"}),
            INVALID,
        ),
        (
            "a UUID one digit short",
            json!({"type": "view", "product_id": short}),
            INVALID,
        ),
        (
            "a number",
            json!({"type": "view", "product_id": 42}),
            INVALID,
        ),
        ("no product_id", json!({"type": "view"}), INVALID),
    ];

    assert_activities_rejected(&app, id, &token, &cases).await;
}

/// Only the user may record their own activity: another user's token and even the admin's
/// are 403.
#[actix_web::test]
async fn activity_for_another_user_is_forbidden_even_for_admin() {
    let app = spawn_app().await;
    let (alice, _, _) = app.new_user().await;
    let (_, bob_token, _) = app.new_user().await;
    let body = json!({"type": "view", "product_id": Uuid::new_v4()});
    let cases = [
        ("another user's token", bob_token.as_str(), FORBIDDEN),
        ("the admin's token", app.admin_token.as_str(), FORBIDDEN),
    ];

    for (case, token, expected) in cases {
        let reply = record(&app, alice, body.clone(), Some(token)).await;

        assert_rejected(case, &reply, expected);
    }
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
