//! Analytics exactness: a stream of mixed events through the real APIs, then every record
//! published again (same stamps), then every record redelivered after the analytics consumer
//! lost its positions: every counter equals the number of distinct events, to the unit. Records
//! that arrive out of their stream's order count once.

use std::collections::HashMap;
use std::time::Duration;

use recsys::config::Service;
use reqwest::Method;
use serde_json::{json, Value};

use crate::consumer::{await_duplicates, metric_sum, redeliver_from_start, republish_everything};
use crate::helpers::*;

const ANALYTICS: &str = "service=\"analytics\"";

/// Expected counters of one product: views, cart_adds, cart_removes, purchases, units, updates.
type Counters = [i64; 6];

async fn stats(app: &TestApp, path: &str) -> Value {
    let reply = app
        .get(Service::Analytics, path, Some(&app.admin_token))
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply.body
}

/// Duplicates and redeliveries leave every analytics counter exact.
#[actix_web::test]
async fn counters_equal_distinct_events_despite_duplicates_and_redelivery() {
    let app = spawn_app().await;
    let mut products = Vec::new();
    for i in 0..4 {
        let p = app
            .create_product(&format!("P{i}"), json!(i + 1), Some("exact"))
            .await;
        products.push(p["id"].as_str().unwrap().to_string());
    }
    let mut updates = HashMap::new();
    for (i, product) in products.iter().enumerate().take(2) {
        for n in 0..=i {
            let reply = app
                .request(
                    Method::PATCH,
                    Service::Products,
                    &format!("/products/{product}"),
                    Some(json!({"name": format!("renamed {n}")})),
                    Some(&app.admin_token),
                )
                .await;
            assert_eq!(reply.status, 200);
        }
        updates.insert(product.clone(), i as i64 + 1);
    }
    let reply = app
        .request(
            Method::DELETE,
            Service::Products,
            &format!("/products/{}", products[3]),
            None,
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(reply.status, 204);

    let kinds = ["view", "cart_add", "cart_remove", "purchase"];
    let mut expected: HashMap<String, Counters> = HashMap::new();
    let mut activity = 0;
    let mut users = Vec::new();
    for u in 0..3 {
        let (id, token, _) = app.new_user().await;
        let reply = app
            .request(
                Method::PATCH,
                Service::Users,
                &format!("/users/{id}"),
                Some(json!({"name": "Renamed"})),
                Some(&token),
            )
            .await;
        assert_eq!(reply.status, 200);
        for k in 0..12 {
            let product = &products[(u + k) % products.len()];
            let kind = kinds[(u * 3 + k) % kinds.len()];
            let quantity = (k % 3 + 1) as u32;
            app.post_activity(id, &token, product, kind, quantity).await;
            let counters = expected.entry(product.clone()).or_default();
            match kind {
                "view" => counters[0] += 1,
                "cart_add" => counters[1] += 1,
                "cart_remove" => counters[2] += 1,
                _ => {
                    counters[3] += 1;
                    counters[4] += i64::from(quantity);
                }
            }
            activity += 1;
        }
        users.push(id);
    }
    // admin + 3 registrations, 3 profile updates, activity, 4 created, 3 updated, 1 deleted.
    let total = 4 + 3 + activity + 4 + 3 + 1;

    let settled = |want: i64| {
        let app = &app;
        async move {
            eventually(
                Duration::from_secs(60),
                "analytics to count every event",
                || async {
                    let s = stats(app, "/analytics/summary").await;
                    (s["events_total"] == want).then_some(())
                },
            )
            .await
        }
    };
    settled(total).await;

    republish_everything(&app, total as usize).await;
    await_duplicates(&app, "analytics", total as f64).await;

    let consumer = app.runtime().analytics().unwrap().consumer;
    redeliver_from_start(&app, &consumer, "analytics").await;
    // Every record in the topics (each event twice) comes again, all already applied.
    await_duplicates(&app, "analytics", 3.0 * total as f64).await;

    let summary = stats(&app, "/analytics/summary").await;
    assert_eq!(summary["events_total"], total);
    assert_eq!(summary["users"], 4);
    assert_eq!(summary["products"], 3);
    assert_eq!(summary["events_by_type"]["user.activity"], activity);
    assert_eq!(summary["events_by_type"]["user.updated"], 3);
    assert_eq!(summary["events_by_type"]["product.updated"], 3);
    assert_eq!(summary["active_users_last_hour"], 3);
    for product in &products {
        let s = stats(&app, &format!("/analytics/products/{product}")).await;
        let want = expected.get(product).copied().unwrap_or_default();
        let got = [
            &s["views"],
            &s["cart_adds"],
            &s["cart_removes"],
            &s["purchases"],
            &s["units_sold"],
        ]
        .map(|v| v.as_i64().unwrap());
        assert_eq!(got, want[..5], "counters of {product}");
        assert_eq!(s["updates"], updates.get(product).copied().unwrap_or(0));
    }
    for user in &users {
        let s = stats(&app, &format!("/analytics/users/{user}")).await;
        assert_eq!(s["activity_count"], 12);
        assert_eq!(s["profile_updates"], 1);
    }
    assert_eq!(
        metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[ANALYTICS, "status=\"ok\""]
        )
        .await,
        total as f64,
        "each distinct event applied once"
    );
}

/// The aggregation actor answers a batch with which records were new (a replay at the same
/// offsets and the same events at new offsets are skipped); the query actor reads the result.
#[actix_web::test]
async fn aggregation_and_query_actors_answer_typed_messages() {
    use recsys::analytics::query::{Stats, StatsQuery};
    use recsys::consumption::Fact;
    use recsys_actors::kafka_consumer::{ApplyBatch, Batch, Consumed, LoadPositions};
    use recsys_schema::events::{Action, Envelope, Event, UserActivity};
    use std::sync::Arc;
    use uuid::Uuid;

    let app = spawn_app().await;
    let actors = app.runtime().analytics().unwrap();
    let (user, product) = (Uuid::new_v4(), Uuid::new_v4());
    let events: Vec<Envelope> = [
        (Action::Purchase, 4),
        (Action::View, 1),
        (Action::Purchase, 2),
    ]
    .into_iter()
    .map(|(action, quantity)| {
        Envelope::new(Event::UserActivity(UserActivity {
            user_id: user,
            product_id: product,
            action,
            quantity,
        }))
    })
    .collect();
    let batch = |first: i64| {
        Arc::new(Batch {
            records: events
                .iter()
                .enumerate()
                .map(|(i, e)| Consumed {
                    topic: "direct".into(),
                    partition: 1,
                    offset: first + i as i64,
                    stream: 1,
                    seq: i as i64 + 1,
                    label: e.event.type_name(),
                    produced_ms: 0,
                    item: Fact::from(e.clone()),
                })
                .collect(),
            positions: vec![("direct".into(), 1, first + events.len() as i64)],
        })
    };
    // New, then a replay at the same offsets, then the same events at new offsets.
    for (first, applied) in [(0, [true; 3]), (0, [false; 3]), (3, [false; 3])] {
        let answer = actors
            .aggregation
            .send(ApplyBatch(batch(first)))
            .await
            .unwrap();
        assert_eq!(answer.unwrap(), applied, "batch at offset {first}");
    }
    let positions = actors
        .aggregation
        .send(LoadPositions(vec![("direct".into(), 1)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(positions, [("direct".to_string(), 1, 6)]);

    let product_stats = actors
        .queries
        .send(Stats(StatsQuery::Product(product)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            &product_stats["purchases"],
            &product_stats["units_sold"],
            &product_stats["views"]
        ),
        (&json!(2), &json!(6), &json!(1))
    );
    let user_stats = actors
        .queries
        .send(Stats(StatsQuery::User(user)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user_stats["activity_count"], 3);
    assert_eq!(
        user_stats["registered_at"],
        Value::Null,
        "activity of an unknown user still counts"
    );
}

/// A record overtaken by later ones of its stream (a delivery retried after its successors
/// succeeded) is applied when it arrives, across batches and restarts of the count; a copy of
/// it, or of any other number already seen, is not. What the group has seen is stored with the
/// counters.
#[actix_web::test]
async fn a_late_record_fills_its_gap_once() {
    use recsys::analytics::query::{Stats, StatsQuery};
    use recsys::consumption::Fact;
    use recsys_actors::kafka_consumer::{ApplyBatch, Batch, Consumed};
    use recsys_schema::events::{Action, Envelope, Event, UserActivity};
    use std::sync::Arc;
    use uuid::Uuid;

    let app = spawn_app().await;
    let actors = app.runtime().analytics().unwrap();
    let product = Uuid::new_v4();
    let view = || {
        Envelope::new(Event::UserActivity(UserActivity {
            user_id: Uuid::new_v4(),
            product_id: product,
            action: Action::View,
            quantity: 1,
        }))
    };
    let mut offset = 0;
    // One batch per step: the numbers it carries, and which of them are new.
    let steps: [(&[i64], &[bool]); 5] = [
        (&[1, 2, 5], &[true, true, true]),
        (&[4], &[true]),
        (&[4, 5, 1], &[false, false, false]),
        (&[3, 6], &[true, true]),
        (&[3], &[false]),
    ];
    for (numbers, new) in steps {
        let records = numbers
            .iter()
            .map(|&seq| {
                offset += 1;
                let item = view();
                Consumed {
                    topic: "direct".into(),
                    partition: 0,
                    offset,
                    stream: 2,
                    seq,
                    label: item.event.type_name(),
                    produced_ms: 0,
                    item: Fact::from(item),
                }
            })
            .collect();
        let batch = Arc::new(Batch {
            records,
            positions: vec![("direct".into(), 0, offset + 1)],
        });
        let answer = actors.aggregation.send(ApplyBatch(batch)).await.unwrap();
        assert_eq!(answer.unwrap(), new, "numbers {numbers:?}");
        if numbers == [4] {
            let gaps = app
                .db()
                .number("SELECT cardinality(gaps) FROM consumer_sequences WHERE topic = 'direct'")
                .await;
            assert_eq!(gaps, 2, "3 is missing: one range, stored as [3, 3]");
        }
    }
    let views = actors
        .queries
        .send(Stats(StatsQuery::Product(product)))
        .await
        .unwrap()
        .unwrap()["views"]
        .clone();
    assert_eq!(views, json!(6), "numbers 1 to 6, each once");
    let db = app.db();
    assert_eq!(
        db.number("SELECT last_seq FROM consumer_sequences WHERE topic = 'direct'")
            .await,
        6
    );
    assert_eq!(
        db.number("SELECT cardinality(gaps) FROM consumer_sequences WHERE topic = 'direct'")
            .await,
        0
    );
}

/// While the sink cannot write (one of its tables is unavailable), the consumer retries the same
/// batch with backoff and moves no position; once writes work again every event counts once.
#[actix_web::test]
async fn a_failing_sink_is_retried_until_it_succeeds_and_counts_once() {
    let app = spawn_app().await;
    let events_total = |want: i64| {
        let app = &app;
        async move {
            eventually(
                Duration::from_secs(60),
                "analytics to count the events",
                || async {
                    (stats(app, "/analytics/summary").await["events_total"] == want).then_some(())
                },
            )
            .await
        }
    };
    events_total(1).await; // the admin's registration

    app.db()
        .execute("ALTER TABLE an_event_counts RENAME TO an_event_counts_away")
        .await;
    for _ in 0..3 {
        app.new_user().await;
    }
    eventually(
        Duration::from_secs(30),
        "failed attempts to be counted",
        || async {
            let errors = metric_sum(
                &app,
                "kafka_messages_consumed_total",
                &[ANALYTICS, "status=\"error\""],
            )
            .await;
            (errors >= 3.0).then_some(())
        },
    )
    .await;
    app.db()
        .execute("ALTER TABLE an_event_counts_away RENAME TO an_event_counts")
        .await;

    events_total(4).await;
    let summary = stats(&app, "/analytics/summary").await;
    assert_eq!(summary["users"], 4);
    assert_eq!(
        metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[ANALYTICS, "status=\"ok\""]
        )
        .await,
        4.0,
        "each event applied once after the retries"
    );
}
