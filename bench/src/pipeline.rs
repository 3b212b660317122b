//! The event pipeline: a backlog of valid events produced into both topics before any consumer
//! runs; drained once by bare rdkafka consumers (the ceiling: two groups, as the runtime has),
//! then applied by the runtime's recommendations and analytics consumers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bigdecimal::BigDecimal;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use recsys_actors::kafka::{self, SlogContext, TopicLayout};
use recsys_actors::sequence;
use recsys_schema::events::{Action, Envelope, Event, ProductSnapshot, UserActivity};
use recsys_schema::topics;
use uuid::Uuid;

/// A progress bar for `total` items.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// The physical names of both topics under `prefix`.
pub fn topic_names(prefix: &str) -> [String; 2] {
    [
        topics::prefixed(prefix, topics::USER_UPDATES),
        topics::prefixed(prefix, topics::PRODUCT_UPDATES),
    ]
}

/// A produced backlog: what its events are about, and how long producing took.
pub struct Backlog {
    pub products: Vec<Uuid>,
    /// Every user the activity names (each has at least one action once the backlog holds
    /// `users.len()` activities).
    pub users: Vec<Uuid>,
    /// The first users with activity, in the order of their first action (at most 10).
    pub active_users: Vec<Uuid>,
    pub seconds: f64,
}

/// What a backlog's events are about and how its activity is spread over them.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Products created first, one `product.created` each.
    pub products: usize,
    /// Users the activity names, in turn (the `k`-th action is the user `k % users`'s).
    pub users: usize,
    /// `false`: the activity of [`produce`] (action `n % 4`, product `7n % products`: with the
    /// default counts each user acts on one product). `true`: each action's product drawn from a
    /// skewed pseudo-random distribution (the lower indexes more popular; density ∝ 1/√rank),
    /// actions 70 % views, 15 % cart adds, 5 % cart removes, 10 % purchases, and each product
    /// update of a pseudo-random product: every user acts on many products, every product has
    /// co-buyers, as in a store.
    pub spread: bool,
}

impl Shape {
    /// The backlog of [`produce`]: 1 000 products, 10 000 users.
    pub const CLASSIC: Shape = Shape {
        products: 1000,
        users: 10_000,
        spread: false,
    };
}

/// Produces `total` valid events into both topics, created with `layout`: one
/// `product.created` for each of 1 000 products, then user activity (9 of 10) and product
/// updates (1 of 10) over them. Each record is stamped as the outbox relay stamps it (partition
/// chosen for its key, the next number of that stream).
pub async fn produce(
    brokers: &str,
    prefix: &str,
    layout: TopicLayout,
    total: u64,
) -> anyhow::Result<Backlog> {
    produce_shaped(brokers, prefix, layout, total, Shape::CLASSIC).await
}

/// A pseudo-random 64-bit number of `n` (splitmix64): the same backlog every run.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A product index below `products` for the event `n`, the lower indexes more often (the square
/// of a uniform number in [0, 1)).
fn skewed(n: u64, products: usize) -> usize {
    let uniform = (mix(n) >> 11) as f64 / (1u64 << 53) as f64;
    ((uniform * uniform * products as f64) as usize).min(products - 1)
}

/// As [`produce`], about `shape`'s products and users.
pub async fn produce_shaped(
    brokers: &str,
    prefix: &str,
    layout: TopicLayout,
    total: u64,
    shape: Shape,
) -> anyhow::Result<Backlog> {
    let partitions = layout.partitions;
    let [user_topic, product_topic] = topic_names(prefix);
    kafka::ensure_topics(
        &kafka::Brokers::new(brokers),
        &[user_topic.clone(), product_topic.clone()],
        layout,
        Duration::from_secs(10),
        &logger(),
    )
    .await?;
    let producer: FutureProducer<SlogContext> =
        kafka::client_config(&kafka::Brokers::new(brokers), "bench-producer")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "120000")
            .create_with_context(SlogContext::new(logger()))?;
    let products: Vec<Uuid> = (0..shape.products).map(|_| Uuid::new_v4()).collect();
    let users: Vec<Uuid> = (0..shape.users).map(|_| Uuid::new_v4()).collect();
    // Activities produced so far (the spread shape names users in turn).
    let mut activities = 0usize;
    let bar = bar(total, "producing");
    let started = Instant::now();
    let mut versions = vec![1; products.len()];
    let mut active_users = Vec::new();
    // (is the product topic, stream) -> last number given out.
    let mut last_seq: HashMap<(bool, i32), i64> = HashMap::new();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..total {
        let n = i as usize;
        let (topic, key, event) = if n < products.len() {
            let p = products[n];
            (&product_topic, p, Event::ProductCreated(snapshot(p, n, 1)))
        } else if n.is_multiple_of(10) {
            let slot = if shape.spread {
                (mix(i ^ 0x5eed) % products.len() as u64) as usize
            } else {
                n % products.len()
            };
            versions[slot] += 1;
            let p = products[slot];
            let event = Event::ProductUpdated(snapshot(p, slot, versions[slot]));
            (&product_topic, p, event)
        } else {
            let (user, product, action) = if shape.spread {
                let user = users[activities % users.len()];
                let action = match mix(i ^ 0xac71) % 100 {
                    0..70 => Action::View,
                    70..85 => Action::CartAdd,
                    85..90 => Action::CartRemove,
                    _ => Action::Purchase,
                };
                (user, products[skewed(i, products.len())], action)
            } else {
                let user = users[n % users.len()];
                (user, products[(n * 7) % products.len()], Action::ALL[n % 4])
            };
            activities += 1;
            if active_users.len() < 10 && !active_users.contains(&user) {
                active_users.push(user);
            }
            let event = Event::UserActivity(UserActivity {
                user_id: user,
                product_id: product,
                action,
                quantity: (n % 3 + 1) as u32,
            });
            (&user_topic, user, event)
        };
        let payload = Envelope::new(event).to_json();
        let key = key.to_string();
        let stream = sequence::partition_for(key.as_bytes(), partitions);
        let seq = last_seq
            .entry((*topic == product_topic, stream))
            .and_modify(|s| *s += 1)
            .or_insert(1);
        let seq = *seq;
        loop {
            let record = FutureRecord::to(topic)
                .partition(stream)
                .key(&key)
                .payload(&payload)
                .headers(sequence::headers(stream, seq));
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, _)) => {
                    // The local queue is full: wait for some deliveries.
                    use futures_util::StreamExt;
                    if let Some(done) = pending.next().await {
                        done.context("delivery canceled")?
                            .map_err(|(e, _)| e)
                            .context("delivery failed")?;
                        bar.inc(1);
                    }
                }
            }
        }
        while pending.len() > 200_000 {
            use futures_util::StreamExt;
            if let Some(done) = pending.next().await {
                done.context("delivery canceled")?
                    .map_err(|(e, _)| e)
                    .context("delivery failed")?;
                bar.inc(1);
            }
        }
    }
    {
        use futures_util::StreamExt;
        while let Some(done) = pending.next().await {
            done.context("delivery canceled")?
                .map_err(|(e, _)| e)
                .context("delivery failed")?;
            bar.inc(1);
        }
    }
    bar.finish();
    Ok(Backlog {
        products,
        users,
        active_users,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Deletes every topic and consumer group whose name starts with `prefix`: what a bench run
/// created on the shared cluster. Groups must have no members left (their runtimes stopped).
pub async fn delete_topics_and_groups(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    delete_groups(brokers, prefix).await?;
    let admin = admin(brokers)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| name.starts_with(prefix))
        .collect();
    if !topics.is_empty() {
        for result in admin.delete_topics(&topics, &admin_options()).await? {
            if let Err((topic, code)) = result {
                anyhow::bail!("deleting topic {topic}: {code}");
            }
        }
    }
    Ok(())
}

/// Deletes every consumer group whose name starts with `prefix`, so that the next consumers of
/// those names start from the beginning of their topics. A group whose last members are still
/// leaving is tried again for up to a minute.
pub async fn delete_groups(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    let admin = admin(brokers)?;
    let started = Instant::now();
    loop {
        let list = admin
            .inner()
            .fetch_group_list(None, Duration::from_secs(10))?;
        let groups: Vec<&str> = list
            .groups()
            .iter()
            .map(|g| g.name())
            .filter(|name| name.starts_with(prefix))
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let mut busy = None;
        for result in admin.delete_groups(&groups, &admin_options()).await? {
            match result {
                Ok(_) => {}
                Err((group, RDKafkaErrorCode::NonEmptyGroup)) => busy = Some(group),
                Err((group, code)) => anyhow::bail!("deleting consumer group {group}: {code}"),
            }
        }
        match busy {
            None => {
                if started.elapsed() > Duration::from_millis(500) {
                    eprintln!(
                        "(waited {:.1?} for the groups {prefix}* to have no member left)",
                        started.elapsed()
                    );
                }
                return Ok(());
            }
            Some(group) if started.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("consumer group {group} still has members after a minute")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<SlogContext>> {
    Ok(
        kafka::client_config(&kafka::Brokers::new(brokers), "bench-admin")
            .create_with_context(SlogContext::new(logger()))?,
    )
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

fn snapshot(product: Uuid, n: usize, version: i32) -> ProductSnapshot {
    ProductSnapshot {
        product_id: product,
        name: format!("Bench product {n}"),
        price: BigDecimal::from((n % 500) as i64 + 1),
        category: Some(format!("category-{}", n % 20)),
        version,
    }
}

/// How long the bare consumers took.
pub struct BareDrain {
    /// From creating the consumers to every group having read `total` records.
    pub seconds: f64,
    /// From creating the consumers to the first record of the last group to get one: joining
    /// the group and the first fetch.
    pub first_record_seconds: f64,
}

/// Drains both topics from the beginning with one bare consumer per group (`groups` of them,
/// concurrently, as the runtime's groups do) until every group read `total` records. Each is
/// librdkafka at its fastest: its default fetch sizes, polled in a loop on a thread of its
/// own, every record's payload touched and nothing else done.
pub async fn drain_bare(
    brokers: &str,
    prefix: &str,
    groups: usize,
    total: u64,
) -> anyhow::Result<BareDrain> {
    let topics = topic_names(prefix);
    let bar = bar(total * groups as u64, "bare consumers");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for g in 0..groups {
        let consumer: BaseConsumer =
            kafka::client_config(&kafka::Brokers::new(brokers), "bench-bare")
                .set("group.id", format!("{prefix}bench-bare-{g}"))
                .set("enable.auto.commit", "true")
                .set("auto.offset.reset", "earliest")
                .create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let bar = bar.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            const STEP: u64 = 1024;
            let mut mine = 0u64;
            let mut first = None;
            while mine < total {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        std::hint::black_box(message.payload().map(<[u8]>::len));
                        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                        mine += 1;
                        if mine.is_multiple_of(STEP) {
                            bar.inc(STEP);
                        }
                    }
                    Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    None => {}
                }
            }
            bar.inc(mine % STEP);
            anyhow::Ok(first.unwrap_or_default())
        }));
    }
    let mut first_record_seconds: f64 = 0.0;
    for task in tasks {
        first_record_seconds = first_record_seconds.max(task.await??);
    }
    bar.finish();
    Ok(BareDrain {
        seconds: started.elapsed().as_secs_f64(),
        first_record_seconds,
    })
}
