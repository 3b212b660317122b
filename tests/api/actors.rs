//! The service actors answer typed messages directly, and a supervised actor that fails or
//! panics is restarted and serves the next message.

use std::time::Duration;

use bigdecimal::BigDecimal;
use recsys::config::{Secret, Service};
use recsys::products::actor::{
    CreateProduct, DeleteProduct, GetProduct, ListProducts, UpdateProduct,
};
use recsys::products::error::ProductsError;
use recsys::products::store::ProductChanges;
use recsys::users::actor::{GetUser, Login, RecordActivity, RegisterUser, UpdateUser};
use recsys::users::error::UsersError;
use recsys_actors::metrics::ACTOR_RESTARTS;
use recsys_actors::observe::Refused;
use recsys_actors::supervision::{Fail, Panic};
use recsys_schema::events::Action;
use serde_json::json;
use std::str::FromStr;
use uuid::Uuid;

use crate::helpers::*;

/// RegisterUser, Login, GetUser, UpdateUser and RecordActivity answer as documented.
#[actix_web::test]
async fn users_actor_answers_typed_messages() {
    let app = spawn_app().await;
    let users = app.runtime().users().unwrap().actor;
    let registered = users
        .send(RegisterUser {
            name: "Actor".into(),
            email: "actor@example.com".into(),
            password: Some(Secret::new("actor-password")),
            claim: None,
        })
        .await
        .unwrap()
        .unwrap()
        .value;
    let token = users
        .send(Login {
            email: "actor@example.com".into(),
            password: Secret::new("actor-password"),
            client: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!token.is_empty());
    let wrong = users
        .send(Login {
            email: "actor@example.com".into(),
            password: Secret::new("not-the-password"),
            client: None,
        })
        .await
        .unwrap();
    assert!(matches!(wrong, Err(UsersError::BadCredentials)));
    let view = users
        .send(GetUser { id: registered.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.name.as_str(), view.email.as_str()),
        ("Actor", "actor@example.com")
    );
    let updated = users
        .send(UpdateUser {
            id: registered.id,
            name: Some("Renamed".into()),
            email: None,
            password: None,
            by_admin: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.user.name, "Renamed");
    assert_eq!(
        updated.token_version, None,
        "no new password, no revocation"
    );
    let event_id = users
        .send(RecordActivity {
            user_id: registered.id,
            product_id: Uuid::new_v4(),
            action: Action::CartAdd,
            quantity: 2,
            claim: None,
        })
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_ne!(event_id, Uuid::nil());
    let unknown = users
        .send(RecordActivity {
            user_id: Uuid::new_v4(),
            product_id: Uuid::new_v4(),
            action: Action::View,
            quantity: 1,
            claim: None,
        })
        .await
        .unwrap();
    assert!(matches!(unknown, Err(UsersError::UserNotFound)));
    assert!(matches!(
        users.send(GetUser { id: Uuid::new_v4() }).await.unwrap(),
        Err(UsersError::UserNotFound)
    ));
}

/// CreateProduct, UpdateProduct, ListProducts, DeleteProduct and GetProduct answer as documented.
#[actix_web::test]
async fn products_actor_answers_typed_messages() {
    let app = spawn_app().await;
    let products = app.runtime().products().unwrap().actor;
    let created = products
        .send(CreateProduct {
            name: "Mug".into(),
            price: BigDecimal::from_str("7.5").unwrap(),
            category: Some("kitchen".into()),
            description: None,
            claim: None,
        })
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(created.version, 1);
    assert_eq!(created.price.to_string(), "7.50");
    let updated = products
        .send(UpdateProduct {
            id: created.id,
            changes: ProductChanges {
                name: Some("Big mug".into()),
                ..Default::default()
            },
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((updated.version, updated.name.as_str()), (2, "Big mug"));
    let page = products
        .send(ListProducts {
            categories: vec!["kitchen".into()],
            limit: 10,
            after: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.next.is_none());
    products
        .send(DeleteProduct { id: created.id })
        .await
        .unwrap()
        .unwrap();
    let gone = products.send(GetProduct { id: created.id }).await.unwrap();
    assert!(matches!(gone, Err(ProductsError::ProductNotFound)));
}

/// A supervised actor told to fail is restarted by its supervisor (it logs the restart and
/// starts again) and answers the next message, directly and over HTTP.
#[actix_web::test]
async fn a_failed_actor_is_restarted_and_serves_the_next_message() {
    let (logger, logs) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    let (id, token, _) = app.new_user().await;
    let users = app.runtime().users().unwrap().actor;
    let products = app.runtime().products().unwrap().actor;

    users.send(Fail).await.unwrap();
    products.send(Fail).await.unwrap();

    let started = |what: &str| {
        logs.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    eventually(Duration::from_secs(5), "both actors to restart", || async {
        (started("users actor restarting") == 1
            && started("users actor started") == 2
            && started("products actor restarting") == 1
            && started("products actor started") == 2)
            .then_some(())
    })
    .await;
    let view = users.send(GetUser { id }).await.unwrap().unwrap();
    assert_eq!(view.id, id);
    let reply = app
        .get(Service::Users, &format!("/users/{id}"), Some(&token))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let page = products
        .send(ListProducts {
            categories: Vec::new(),
            limit: 1,
            after: None,
        })
        .await
        .unwrap();
    assert!(page.is_ok());
}

/// Every kind of actor the runtime starts panics, in its handler and in its answer future: each
/// panic is logged with the actor and the message and counted as a restart, and the services go
/// on answering and applying: the purchases made before, between and after the panics are each
/// counted once, in analytics and in the popularity score.
#[actix_web::test]
async fn a_panic_in_any_actor_is_a_restart_and_loses_nothing() {
    let (logger, logs) = captured_logger();
    let app = TestApp::builder().logger(logger).spawn().await;
    let runtime = app.runtime();
    let (users, products) = (runtime.users().unwrap(), runtime.products().unwrap());
    let (recommendations, analytics) = (
        runtime.recommendations().unwrap(),
        runtime.analytics().unwrap(),
    );
    let product = app.create_product("Sturdy", json!(5), Some("panic")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ann, ann_token, ann_email) = app.new_user().await;
    for _ in 0..3 {
        app.post_activity(ann, &ann_token, &product, "purchase", 1)
            .await;
    }

    for panic in [Panic::InHandler, Panic::InAnswer] {
        let refused = [
            users.actor.send(panic).await,
            products.actor.send(panic).await,
            runtime.relay().unwrap().send(panic).await,
            recommendations.query.send(panic).await,
            recommendations.ranking.send(panic).await,
            recommendations.cache.send(panic).await,
            recommendations.consumer.send(panic).await,
            analytics.queries.send(panic).await,
            analytics.aggregation.send(panic).await,
            analytics.consumer.send(panic).await,
        ];
        assert!(
            refused.iter().all(|r| *r == Err(Refused::Stopped)),
            "{refused:?}"
        );
    }
    users.hasher.send(Panic::InHandler).await.unwrap();
    let restarted = [
        ("users", "UsersActor", 2),
        ("users", "HashWorker", 1),
        ("products", "ProductsActor", 2),
        ("runtime", "OutboxRelay", 2),
        ("recommendations", "RecommendationsActor", 2),
        ("recommendations", "RankingActor", 2),
        ("recommendations", "CacheActor", 2),
        ("recommendations", "KafkaConsumer", 2),
        ("analytics", "AnalyticsQueries", 2),
        ("analytics", "AggregationActor", 2),
        ("analytics", "KafkaConsumer", 2),
    ];
    eventually(
        Duration::from_secs(10),
        "every actor to restart",
        || async {
            restarted
                .iter()
                .all(|(service, actor, n)| {
                    ACTOR_RESTARTS.with_label_values(&[service, actor]).get() == *n
                })
                .then_some(())
        },
    )
    .await;
    for (service, actor, n) in restarted {
        let logged = logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.contains("actor panicked, restarting it")
                    && l.contains(&format!("service={service}"))
                    && l.contains(&format!("actor={actor}"))
                    && l.contains("message=Panic")
            })
            .count();
        assert_eq!(logged, n as usize, "{service} {actor}");
    }

    // The hasher verifies and hashes again, every actor answers, every write is applied.
    let login = app.login(&ann_email, "user-password").await;
    assert_eq!(login.status, 200, "{}", login.text);
    let (bob, bob_token, _) = app.new_user().await;
    for (user, token) in [(bob, &bob_token), (bob, &bob_token), (ann, &ann_token)] {
        app.post_activity(user, token, &product, "purchase", 1)
            .await;
    }
    let stats = format!("/analytics/products/{product}");
    let counted = eventually(Duration::from_secs(30), "6 purchases counted", || async {
        let reply = app
            .get(Service::Analytics, &stats, Some(&app.admin_token))
            .await;
        (reply.status == 200 && reply.body["purchases"].as_i64() >= Some(6)).then_some(reply.body)
    })
    .await;
    assert_eq!(
        (&counted["purchases"], &counted["units_sold"]),
        (&json!(6), &json!(6))
    );
    // Weight 10 a purchase: six purchases, none counted twice.
    let score = eventually(
        Duration::from_secs(30),
        "the score of 6 purchases",
        || async {
            let reply = app
                .get(
                    Service::Recommendations,
                    "/recommendations?category=panic",
                    None,
                )
                .await;
            let score = reply.body[0]["score"].as_f64()?;
            (score > 59.9).then_some(score)
        },
    )
    .await;
    assert!(score < 60.1, "{score}");
}
