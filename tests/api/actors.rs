//! The service actors answer typed messages directly, and a supervised actor that fails is
//! restarted and serves the next message.

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
use recsys_actors::supervision::Fail;
use recsys_schema::events::Action;
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
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.name, "Renamed");
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
