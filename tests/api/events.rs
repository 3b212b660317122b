//! The event flow: every change reaches its topic as a schema-valid envelope keyed by its
//! entity, in per-key order, exactly once, stamped with its publication sequence, with no email
//! or password in any record.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use recsys::config::Service;
use recsys_actors::sequence;
use recsys_schema::topics;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn validator(schema: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(schema).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

/// Registration, profile and password changes, activity and the product lifecycle each emit
/// their event; all are valid, ordered per key, unique, stamped densely per stream, and free of
/// secrets.
#[actix_web::test]
async fn every_change_reaches_its_topic_in_order_without_secrets() {
    let app = spawn_app().await;
    let password = "first-secret-pw";
    let new_password = "second-secret-pw";
    let (user_id, token) = app
        .register("Eve", "Eve.Events@Example.com", password)
        .await;
    let path = format!("/users/{user_id}");
    let patch = |body: Value| {
        app.request(
            Method::PATCH,
            Service::Users,
            &path,
            Some(body),
            Some(&token),
        )
    };
    assert_eq!(patch(json!({"name": "Eve Two"})).await.status, 200);
    let changed = patch(json!({"password": new_password, "current_password": password})).await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    // The password change revoked the registration's token and answered a new one.
    let token = changed.body["token"].as_str().unwrap().to_string();
    let product = app
        .create_product("Kettle", json!("24.90"), Some("kitchen"))
        .await;
    let product_id = product["id"].as_str().unwrap().to_string();
    let reply = app
        .request(
            Method::PUT,
            Service::Products,
            &format!("/products/{product_id}"),
            Some(json!({"price": 19.5})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for (kind, quantity) in [("view", 1), ("purchase", 3)] {
        let reply = app
            .post(
                Service::Users,
                &format!("/users/{user_id}/activity"),
                json!({"type": kind, "product_id": product_id, "quantity": quantity}),
                Some(&token),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    let reply = app
        .request(
            Method::DELETE,
            Service::Products,
            &format!("/products/{product_id}"),
            None,
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(reply.status, 204);

    // admin registered + Eve registered, 2 updates, 2 activities; product created, updated, deleted.
    let expected = 6 + 3;
    let names = [
        app.topic(topics::USER_UPDATES),
        app.topic(topics::PRODUCT_UPDATES),
    ];
    let mut records = consume(&brokers(), &names, expected, Duration::from_secs(60)).await;
    assert_eq!(records.len(), expected, "records: {records:#?}");
    records.sort_by_key(|r| (r.topic.clone(), r.partition, r.offset));

    let user_schema = validator(topics::USER_UPDATES_SCHEMA);
    let product_schema = validator(topics::PRODUCT_UPDATES_SCHEMA);
    let mut ids = HashSet::new();
    let mut by_key: HashMap<String, Vec<Value>> = HashMap::new();
    let mut stamps: HashMap<(String, i32), Vec<i64>> = HashMap::new();
    for record in &records {
        let schema = if record.topic == names[0] {
            &user_schema
        } else {
            &product_schema
        };
        let errors: Vec<String> = schema
            .iter_errors(&record.value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} violates its schema: {errors:?}",
            record.raw
        );
        assert_eq!(
            record.value["key"],
            record.key.as_str(),
            "message key differs from envelope key"
        );
        assert!(
            ids.insert(record.value["event_id"].clone()),
            "duplicate event {}",
            record.raw
        );
        for secret in [password, new_password, "eve.events@example.com", "argon2"] {
            assert!(
                !record.raw.to_lowercase().contains(secret),
                "{secret} leaked in {}",
                record.raw
            );
        }
        by_key
            .entry(record.key.clone())
            .or_default()
            .push(record.value.clone());
        let header = |name: &str| -> i64 {
            let (_, value) = record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .unwrap_or_else(|| panic!("no {name} header on {}", record.raw));
            value.parse().unwrap()
        };
        assert_eq!(
            header(sequence::STREAM_HEADER),
            i64::from(record.partition),
            "the stream is the partition"
        );
        assert_eq!(
            header(sequence::STREAM_HEADER),
            i64::from(sequence::partition_for(record.key.as_bytes(), 3)),
            "the partition is Kafka's murmur2 choice for the key"
        );
        stamps
            .entry((record.topic.clone(), record.partition))
            .or_default()
            .push(header(sequence::SEQ_HEADER));
    }
    // Each (topic, stream) is numbered 1, 2, 3, ... in offset order.
    for (stream, numbers) in &stamps {
        let dense: Vec<i64> = (1..=numbers.len() as i64).collect();
        assert_eq!(numbers, &dense, "numbers of {stream:?}");
    }

    let types = |key: &str| -> Vec<String> {
        by_key[key]
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        types(&user_id.to_string()),
        [
            "user.registered",
            "user.updated",
            "user.updated",
            "user.activity",
            "user.activity"
        ]
    );
    let user_events = &by_key[&user_id.to_string()];
    assert_eq!(user_events[1]["data"]["changed"], json!(["name"]));
    assert_eq!(user_events[1]["data"]["name"], "Eve Two");
    assert_eq!(user_events[2]["data"]["changed"], json!(["password"]));
    assert_eq!(user_events[4]["data"]["action"], "purchase");
    assert_eq!(user_events[4]["data"]["quantity"], 3);
    assert_eq!(
        types(&product_id),
        ["product.created", "product.updated", "product.deleted"]
    );
    let product_events = &by_key[&product_id];
    assert_eq!(product_events[0]["data"]["price"], "24.90");
    assert_eq!(product_events[1]["data"]["price"], "19.50");
    assert_eq!(product_events[1]["data"]["version"], 2);
    assert_eq!(product_events[2]["data"]["version"], 3);
}
