//! The recommendations consumer: exactly-once effect under duplicates and redelivery, poison
//! records to the dead-letter topics, the ranking and cache actors answering typed messages,
//! and Redis outages answered from Postgres.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bigdecimal::BigDecimal;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use recsys::config::Service;
use recsys::consumption::Fact;
use recsys::recommendations::query::{Query, Recommend};
use recsys_actors::cache::{CacheGet, CacheSet};
use recsys_actors::kafka_consumer::{
    ApplyBatch, Batch, Consumed, KafkaConsumer, Leave, LoadPositions, Resume,
};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::*;
use recsys_schema::topics;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Sum of the samples of `name` whose label set contains every `filter` (e.g. `status="ok"`).
pub async fn metric_sum(app: &TestApp, name: &str, filters: &[&str]) -> f64 {
    let text = app
        .get(Service::Recommendations, "/metrics", None)
        .await
        .text;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The label selecting the recommendations consumer's samples.
const RECS: &str = "service=\"recommendations\"";

/// A plain producer for writing records straight to a topic.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer")
}

/// Writes a raw record with no publication stamp (consumers dead-letter it).
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .expect("record produced");
}

/// Writes a copy of `record`: same partition, key, value and headers (so the same stamp).
pub async fn produce_copy(producer: &FutureProducer, record: &Record) {
    let headers = record
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        });
    producer
        .send(
            FutureRecord::to(&record.topic)
                .partition(record.partition)
                .key(&record.key)
                .payload(&record.raw)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("record produced");
}

/// Publishes every record of both topics again (same partitions, keys, values and stamps), as
/// a relay that crashed before deleting its rows would; answers how many.
pub async fn republish_everything(app: &TestApp, expected: usize) -> usize {
    let names = [
        app.topic(topics::USER_UPDATES),
        app.topic(topics::PRODUCT_UPDATES),
    ];
    let records = consume(&brokers(), &names, expected, Duration::from_secs(30)).await;
    assert_eq!(records.len(), expected);
    let kafka = producer();
    for r in &records {
        produce_copy(&kafka, r).await;
    }
    records.len()
}

/// Waits until the consumer of `service` counted at least `want` duplicates.
pub async fn await_duplicates(app: &TestApp, service: &str, want: f64) {
    let label = format!("service=\"{service}\"");
    eventually(
        Duration::from_secs(60),
        "repeats to be counted as duplicates",
        || async {
            let seen = metric_sum(
                app,
                "kafka_messages_consumed_total",
                &[&label, "status=\"duplicate\""],
            )
            .await;
            (seen >= want).then_some(())
        },
    )
    .await;
}

/// Makes `consumer` read its topics again from the start, as after lost commits: it leaves its
/// group, the stored positions of the group (`<prefix><service>`) are reset, and it resumes.
pub async fn redeliver_from_start(
    app: &TestApp,
    consumer: &ObservedAddr<KafkaConsumer<Fact>>,
    service: &str,
) {
    consumer.send(Leave).await.unwrap();
    app.db()
        .execute(&format!(
            "UPDATE consumer_offsets SET next_offset = 0 WHERE consumer_group = '{}{service}'",
            app.prefix
        ))
        .await;
    consumer.send(Resume).await.unwrap();
}

/// The score of `product` in `GET /recommendations`, once it is listed with a score.
async fn score_of(app: &TestApp, product: &str) -> Option<f64> {
    let reply = app
        .get(Service::Recommendations, "/recommendations?limit=100", None)
        .await;
    reply
        .body
        .as_array()?
        .iter()
        .find(|i| i["product_id"] == product)?["score"]
        .as_f64()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * b.abs().max(1.0)
}

/// Every record of both topics published a second time (same event ids) and then every record
/// redelivered from offset 0 after the stored positions were lost change no score: each event is
/// applied once.
#[actix_web::test]
async fn duplicates_and_redeliveries_do_not_change_scores() {
    let app = spawn_app().await;
    let product = app
        .create_product("Exact", json!("5.00"), Some("exact"))
        .await;
    let product = product["id"].as_str().unwrap().to_string();
    let (user, token, _) = app.new_user().await;
    for _ in 0..3 {
        app.post_activity(user, &token, &product, "purchase", 1)
            .await;
    }
    app.post_activity(user, &token, &product, "view", 2).await;
    let expected = 3.0 * 10.0 + 2.0;
    eventually(Duration::from_secs(30), "the score to reach 32", || async {
        score_of(&app, &product)
            .await
            .filter(|s| close(*s, expected))
    })
    .await;

    // Admin + user registered, 4 activities; product created.
    republish_everything(&app, 7).await;
    await_duplicates(&app, "recommendations", 7.0).await;
    assert!(close(score_of(&app, &product).await.unwrap(), expected));

    let consumer = app.runtime().recommendations().unwrap().consumer;
    redeliver_from_start(&app, &consumer, "recommendations").await;
    // All 14 records in the topics come again, all already applied.
    await_duplicates(&app, "recommendations", 21.0).await;
    assert!(close(score_of(&app, &product).await.unwrap(), expected));
    assert_eq!(
        metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[RECS, "status=\"ok\""]
        )
        .await,
        7.0,
        "each distinct event applied exactly once"
    );
    // Each stream's numbers are dense: what the group has seen adds up to the 7 events, with
    // nothing missing.
    let seen = |what: &str| {
        format!(
            "SELECT sum({what}) FROM consumer_sequences WHERE consumer_group LIKE '%recommendations'"
        )
    };
    assert_eq!(app.db().number(&seen("last_seq")).await, 7);
    assert_eq!(app.db().number(&seen("cardinality(gaps)")).await, 0);
}

/// Garbage, unknown types and contract violations on both topics go to `<topic>.dlq` with
/// headers naming the reason and origin; the valid record behind them is applied.
#[actix_web::test]
async fn poison_records_go_to_the_dead_letter_topics_and_the_rest_is_applied() {
    let app = spawn_app().await;
    let product = app.create_product("Survivor", json!(3), None).await;
    let product_id: Uuid = product["id"].as_str().unwrap().parse().unwrap();
    let (user_topic, product_topic) = (
        app.topic(topics::USER_UPDATES),
        app.topic(topics::PRODUCT_UPDATES),
    );
    let kafka = producer();
    let user = Uuid::new_v4();
    let valid = Envelope::new(Event::UserActivity(UserActivity {
        user_id: user,
        product_id,
        action: Action::Purchase,
        quantity: 1,
    }));
    let mut unknown: Value = serde_json::from_str(&valid.to_json()).unwrap();
    unknown["type"] = json!("user.teleported");
    let mut violation: Value = serde_json::from_str(&valid.to_json()).unwrap();
    violation["data"]["quantity"] = json!(0);
    violation["event_id"] = json!(Uuid::new_v4());
    // A valid event that did not come through an outbox relay carries no publication stamp.
    let unstamped = Envelope::new(Event::UserActivity(UserActivity {
        user_id: user,
        product_id,
        action: Action::Purchase,
        quantity: 5,
    }));
    let key = user.to_string();
    for poison in [
        "not json at all",
        "{}",
        &unknown.to_string(),
        &violation.to_string(),
        &unstamped.to_json(),
    ] {
        produce(&kafka, &user_topic, &key, poison).await;
    }
    produce(&kafka, &product_topic, &product_id.to_string(), "[1, 2, 3]").await;
    app.publish(&valid).await;

    eventually(
        Duration::from_secs(30),
        "the valid purchase behind the poison to count",
        || async {
            score_of(&app, &product_id.to_string())
                .await
                .filter(|s| close(*s, 10.0))
        },
    )
    .await;
    let dlq = [format!("{user_topic}.dlq"), format!("{product_topic}.dlq")];
    // Each consumer group dead-letters what it cannot read: recommendations and analytics.
    let dead = consume(&brokers(), &dlq, 12, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 12, "{dead:#?}");
    for group in ["recommendations", "analytics"] {
        let of_group = dead
            .iter()
            .filter(|r| {
                r.headers
                    .iter()
                    .any(|(k, v)| k == "dlq-consumer-group" && v.ends_with(group))
            })
            .count();
        assert_eq!(of_group, 6, "dead letters of {group}");
    }
    for record in &dead {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let source = header("dlq-source-topic").expect("source topic header");
        assert_eq!(format!("{source}.dlq"), record.topic);
        assert!(header("dlq-reason").is_some_and(|r| !r.is_empty()));
        assert!(header("dlq-source-partition")
            .unwrap()
            .parse::<i32>()
            .is_ok());
        assert!(header("dlq-source-offset").unwrap().parse::<i64>().is_ok());
    }
    assert!(dead.iter().any(|r| r.raw == "not json at all"));
    assert!(dead.iter().any(|r| r.raw == unstamped.to_json()
        && r.headers
            .iter()
            .any(|(k, v)| k == "dlq-reason" && v.contains("not published by an outbox relay"))));
    let analytics = eventually(
        Duration::from_secs(30),
        "analytics to count the purchase",
        || async {
            let reply = app
                .get(
                    Service::Analytics,
                    &format!("/analytics/products/{product_id}"),
                    Some(&app.admin_token),
                )
                .await;
            (reply.status == 200 && reply.body["purchases"] == 1).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(analytics["units_sold"], 1);
    assert_eq!(
        metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[RECS, "status=\"dead_letter\""]
        )
        .await,
        6.0
    );
}

/// The ranking actor applies a batch once (a replay at the same offsets and the same events at
/// new offsets are both skipped) and keeps its positions; the query and cache actors answer.
#[actix_web::test]
async fn ranking_query_and_cache_actors_answer_typed_messages() {
    let app = spawn_app().await;
    let actors = app.runtime().recommendations().unwrap();
    let product = Uuid::new_v4();
    let events = [
        Envelope::new(Event::ProductCreated(ProductSnapshot {
            product_id: product,
            name: "Direct".into(),
            price: BigDecimal::from(2),
            category: Some("direct".into()),
            version: 1,
        })),
        Envelope::new(Event::UserActivity(UserActivity {
            user_id: Uuid::new_v4(),
            product_id: product,
            action: Action::CartAdd,
            quantity: 2,
        })),
    ];
    let batch = |first_offset: i64| {
        Arc::new(Batch {
            records: events
                .iter()
                .enumerate()
                .map(|(i, e)| Consumed {
                    topic: "direct-topic".into(),
                    partition: 0,
                    offset: first_offset + i as i64,
                    stream: 0,
                    seq: i as i64 + 1,
                    label: e.event.type_name(),
                    produced_ms: 0,
                    item: Fact::from(e.clone()),
                })
                .collect(),
            positions: vec![("direct-topic".into(), 0, first_offset + events.len() as i64)],
        })
    };
    let applied = actors
        .ranking
        .send(ApplyBatch(batch(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied, [true, true]);
    let replay = actors
        .ranking
        .send(ApplyBatch(batch(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replay, [false, false], "offsets below the stored position");
    let republished = actors
        .ranking
        .send(ApplyBatch(batch(2)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(republished, [false, false], "sequence numbers already seen");
    let positions = actors
        .ranking
        .send(LoadPositions(vec![("direct-topic".into(), 0)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(positions, [("direct-topic".to_string(), 0, 4)]);

    let answer = actors
        .query
        .send(Recommend {
            query: Query::Global {
                categories: vec!["direct".into()],
                sort: Default::default(),
            },
            limit: 5,
        })
        .await
        .unwrap()
        .unwrap();
    let items: Value = serde_json::from_str(&answer.json).unwrap();
    assert_eq!(items[0]["product_id"], product.to_string());
    assert!(close(items[0]["score"].as_f64().unwrap(), 6.0));

    let key = format!("test-{}", Uuid::new_v4());
    assert_eq!(
        actors
            .cache
            .send(CacheGet { key: key.clone() })
            .await
            .unwrap(),
        None
    );
    assert!(actors
        .cache
        .send(CacheSet {
            key: key.clone(),
            value: "v".into(),
            ttl: Duration::from_secs(5)
        })
        .await
        .unwrap());
    assert_eq!(
        actors
            .cache
            .send(CacheGet { key })
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
}

/// A Redis server of the test's own on a free port, answering; killed when dropped. Answers
/// the server and its port.
pub async fn start_redis_on_free_port() -> (tokio::process::Child, u16) {
    retry_on_taken_port(
        "a Redis server of the test's own",
        start_redis,
        redis_answers,
    )
    .await
}

/// Whether a Redis server answers `PING` on `port`.
pub async fn redis_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut answer).await.is_ok()
        && &answer == b"+PONG\r\n"
}

/// A Redis server of the test's own on `port` (keeps nothing on disk); killed when dropped.
pub fn start_redis(port: u16) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts")
}

pub async fn x_cache(app: &TestApp) -> String {
    let reply = app
        .get(Service::Recommendations, "/recommendations", None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
        .headers
        .get("x-cache")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// With Redis gone, recommendations still answer 200 from Postgres (`X-Cache: miss`); when
/// Redis is back, answers are cached again.
#[actix_web::test]
async fn redis_outage_is_answered_from_postgres_and_caching_resumes() {
    let (mut redis, port) = start_redis_on_free_port().await;
    let app = TestApp::builder()
        .with(|s| {
            s.redis_address = format!("127.0.0.1:{port}");
            // X-Cache here says whether Redis answered: no worker micro-cache in front.
            s.recommendation_local_ttl_ms = 0;
        })
        .spawn()
        .await;
    app.create_product("Cached", json!(1), None).await;
    eventually(Duration::from_secs(30), "a cache hit", || async {
        (x_cache(&app).await == "hit").then_some(())
    })
    .await;

    redis.kill().await.unwrap();
    for _ in 0..5 {
        assert_eq!(x_cache(&app).await, "miss");
    }
    assert!(
        metric_sum(&app, "redis_requests_total", &["status=\"error\""]).await
            + metric_sum(&app, "redis_requests_total", &["status=\"timeout\""]).await
            > 0.0
    );

    let _redis = start_redis(port);
    eventually(
        Duration::from_secs(30),
        "hits after Redis is back",
        || async { (x_cache(&app).await == "hit").then_some(()) },
    )
    .await;
}

/// Topics are not ordered with each other: activity that arrives before its product keeps its
/// score, the product shows up once created, an update older than the stored version is
/// ignored, and a deletion removes it.
#[actix_web::test]
async fn out_of_order_events_converge_on_the_newest_catalog_state() {
    let app = spawn_app().await;
    let (user, product) = (Uuid::new_v4(), Uuid::new_v4());
    let purchase = Envelope::new(Event::UserActivity(UserActivity {
        user_id: user,
        product_id: product,
        action: Action::Purchase,
        quantity: 2,
    }));
    app.publish(&purchase).await;
    let db = app.db();
    eventually(
        Duration::from_secs(30),
        "the early purchase to be scored",
        || async { (db.count("rec_scores").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        score_of(&app, &product.to_string()).await,
        None,
        "not served before it exists"
    );

    let snapshot = |version: i32, name: &str| ProductSnapshot {
        product_id: product,
        name: name.into(),
        price: BigDecimal::from(4),
        category: None,
        version,
    };
    let key = product.to_string();
    for event in [
        Event::ProductCreated(snapshot(1, "Late")),
        Event::ProductUpdated(snapshot(3, "Late v3")),
        Event::ProductUpdated(snapshot(2, "Late v2")),
    ] {
        app.publish(&Envelope::new(event)).await;
    }
    let listed = eventually(
        Duration::from_secs(30),
        "the product at version 3",
        || async {
            let reply = app
                .get(Service::Recommendations, "/recommendations?limit=100", None)
                .await;
            let item = reply
                .body
                .as_array()?
                .iter()
                .find(|i| i["product_id"] == key.as_str())?
                .clone();
            (item["name"] == "Late v3").then_some(item)
        },
    )
    .await;
    assert!(close(listed["score"].as_f64().unwrap(), 20.0));
    assert_eq!(listed["price"], "4.00");

    let deleted = Envelope::new(Event::ProductDeleted(ProductDeleted {
        product_id: product,
        version: 4,
    }));
    app.publish(&deleted).await;
    eventually(
        Duration::from_secs(30),
        "the deleted product to disappear",
        || async { score_of(&app, &key).await.is_none().then_some(()) },
    )
    .await;
}

/// The recommendations consumer's lag summed over the partitions of `topic`.
async fn lag_of(app: &TestApp, topic: &str) -> f64 {
    metric_sum(app, "kafka_consumer_lag", &[RECS, topic]).await
}

/// `kafka_consumer_lag` counts the records a stopped consumer has not applied and falls back
/// to 0 once it runs again.
#[actix_web::test]
async fn lag_grows_while_the_consumer_is_stopped_and_returns_to_zero() {
    let app = spawn_app().await;
    let topic = format!("topic=\"{}\"", app.topic(topics::USER_UPDATES));
    eventually(Duration::from_secs(30), "a caught-up consumer", || async {
        (metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[RECS, "status=\"ok\""],
        )
        .await
            >= 1.0
            && lag_of(&app, &topic).await == 0.0)
            .then_some(())
    })
    .await;

    let consumer = app.runtime().recommendations().unwrap().consumer;
    consumer.send(Leave).await.unwrap();
    let (user, token, _) = app.new_user().await;
    for _ in 0..4 {
        app.post_activity(user, &token, &Uuid::new_v4().to_string(), "view", 1)
            .await;
    }
    eventually(
        Duration::from_secs(30),
        "the lag to show the 5 unapplied records",
        || async { (lag_of(&app, &topic).await >= 5.0).then_some(()) },
    )
    .await;
    consumer.send(Resume).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the lag to return to 0",
        || async { (lag_of(&app, &topic).await == 0.0).then_some(()) },
    )
    .await;
}
