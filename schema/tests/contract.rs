//! Keeps the topic JSON Schemas and the Rust event types in agreement: every Rust event
//! validates against its topic's schema, the schemas name exactly the Rust types and fields, and
//! the schemas reject what the Rust types would never produce.

use std::collections::BTreeSet;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use recsys_schema::events::*;
use recsys_schema::topics;
use serde_json::{json, Value};
use uuid::Uuid;

/// One event of every type, as the services build them.
fn samples() -> Vec<Envelope> {
    let (user_id, product_id) = (Uuid::new_v4(), Uuid::new_v4());
    let snapshot = ProductSnapshot {
        product_id,
        name: "Lamp".into(),
        price: BigDecimal::from_str("19.9").unwrap(),
        category: None,
        version: 1,
    };
    [
        Event::UserRegistered(UserRegistered {
            user_id,
            name: "Ann".into(),
        }),
        Event::UserUpdated(UserUpdated {
            user_id,
            name: "Ann".into(),
            changed: vec![
                "name".into(),
                "email".into(),
                "password".into(),
                "role".into(),
            ],
        }),
        Event::UserActivity(UserActivity {
            user_id,
            product_id,
            action: Action::CartRemove,
            quantity: 1000,
        }),
        Event::ProductCreated(snapshot.clone()),
        Event::ProductUpdated(ProductSnapshot {
            category: Some("home".into()),
            version: 2,
            ..snapshot
        }),
        Event::ProductDeleted(ProductDeleted {
            product_id,
            version: 3,
        }),
    ]
    .into_iter()
    .map(Envelope::new)
    .collect()
}

fn schema_of(topic: &str) -> Value {
    let text = topics::ALL.iter().find(|(t, _)| *t == topic).unwrap().1;
    serde_json::from_str(text).unwrap()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Every event the Rust types produce is valid against its topic's schema.
#[test]
fn every_rust_event_satisfies_its_topic_schema() {
    for envelope in samples() {
        let schema = schema_of(envelope.event.topic());
        let value = serde_json::to_value(&envelope).unwrap();
        let errors: Vec<String> = validator(&schema)
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{value} violates {}: {errors:?}",
            envelope.event.topic()
        );
    }
}

/// Each schema lists exactly the event types Rust sends on that topic, and for each type
/// exactly the data fields the Rust payload serializes, all required.
#[test]
fn schemas_name_exactly_the_rust_types_and_fields() {
    for (topic, _) in topics::ALL {
        let schema = schema_of(topic);
        let rust_types: BTreeSet<String> = samples()
            .iter()
            .filter(|e| e.event.topic() == topic)
            .map(|e| e.event.type_name().to_string())
            .collect();
        let schema_types: BTreeSet<String> = schema["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(schema_types, rust_types, "types of {topic}");
        assert_eq!(keys(&schema["$defs"]), rust_types, "$defs of {topic}");

        for envelope in samples().iter().filter(|e| e.event.topic() == topic) {
            let value = serde_json::to_value(envelope).unwrap();
            assert_eq!(
                keys(&schema["properties"]),
                keys(&value),
                "envelope fields of {topic}"
            );
            let def = &schema["$defs"][envelope.event.type_name()];
            let required: BTreeSet<String> = def["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                keys(&def["properties"]),
                keys(&value["data"]),
                "{}",
                envelope.event.type_name()
            );
            assert_eq!(
                required,
                keys(&value["data"]),
                "required of {}",
                envelope.event.type_name()
            );
        }
    }
    // One sample of each kind, in EventType's order, each written with its own name: the serde
    // names of `Event`'s variants are those of `EventType`.
    let kinds: Vec<EventType> = samples().iter().map(|e| e.event.event_type()).collect();
    assert_eq!(kinds, EventType::ALL);
    for envelope in samples() {
        let value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(value["type"], envelope.event.type_name());
    }
}

/// The schemas reject an unknown type, an extra or missing field, a float price, a bad
/// quantity and a wrong schema_version, so they constrain producers for real.
#[test]
fn schemas_reject_what_rust_never_sends() {
    let envelopes = samples();
    let activity = serde_json::to_value(&envelopes[2]).unwrap();
    let created = serde_json::to_value(&envelopes[3]).unwrap();
    let user = validator(&schema_of(topics::USER_UPDATES));
    let product = validator(&schema_of(topics::PRODUCT_UPDATES));
    let mutate = |base: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let bad_users = [
        mutate(&activity, &|v| v["type"] = json!("user.deleted")),
        mutate(&activity, &|v| v["data"]["email"] = json!("a@b.c")),
        mutate(&activity, &|v| v["data"]["quantity"] = json!(0)),
        mutate(&activity, &|v| v["data"]["action"] = json!("like")),
        mutate(&activity, &|v| v["schema_version"] = json!(2)),
        mutate(&activity, &|v| {
            v["data"].as_object_mut().unwrap().remove("product_id");
        }),
        mutate(&activity, &|v| v["password"] = json!("x")),
    ];
    for bad in bad_users {
        assert!(!user.is_valid(&bad), "accepted {bad}");
    }
    let bad_products = [
        mutate(&created, &|v| v["data"]["price"] = json!(19.9)),
        mutate(&created, &|v| v["data"]["price"] = json!("19.9")),
        mutate(&created, &|v| v["key"] = json!("not-a-uuid")),
        mutate(&created, &|v| v["occurred_at"] = json!("yesterday")),
    ];
    for bad in bad_products {
        assert!(!product.is_valid(&bad), "accepted {bad}");
    }
}
