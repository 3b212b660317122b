//! Metric families recorded by the generic machinery, registered on the default registry.

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

/// `kafka_messages_produced_total{topic,status}`: records handed to the broker, by outcome
/// (`ok` once acknowledged, `error` when a delivery failed and will be retried).
pub static KAFKA_MESSAGES_PRODUCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_messages_produced_total",
        "Records produced to Kafka, by topic and delivery outcome",
        &["topic", "status"]
    )
    .expect("metric registers once")
});

/// `outbox_pending`: outbox rows written and not yet acknowledged by the broker.
pub static OUTBOX_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outbox_pending",
        "Outbox rows not yet acknowledged by the broker"
    )
    .expect("metric registers once")
});

/// `outbox_relay_busy_total`: batches that found another process's relay publishing.
pub static OUTBOX_RELAY_BUSY: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outbox_relay_busy_total",
        "Outbox batches that found another process's relay publishing"
    )
    .expect("metric registers once")
});

/// `kafka_messages_consumed_total{service,topic,type,status}`: records read, by outcome
/// (`ok` applied, `duplicate` already applied, `dead_letter` poison, `error`).
pub static KAFKA_MESSAGES_CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_messages_consumed_total",
        "Records consumed, by service, topic, event type and outcome",
        &["service", "topic", "type", "status"]
    )
    .expect("metric registers once")
});

/// `kafka_message_processing_duration_seconds{service,topic}`: from a record's batch being
/// read to its state being durable.
pub static KAFKA_PROCESSING_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "kafka_message_processing_duration_seconds",
        "Time from reading a record to its effect being committed",
        &["service", "topic"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// `kafka_record_age_seconds{service,topic}`: from a record's production (its Kafka
/// timestamp, the producer's clock) to its effect being committed: how old what a consumer
/// applies is, end to end.
pub static KAFKA_RECORD_AGE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "kafka_record_age_seconds",
        "Time from a record's production to its effect being committed",
        &["service", "topic"],
        vec![
            0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            60.0
        ]
    )
    .expect("metric registers once")
});

/// `kafka_consumer_lag{service,group,topic,partition}`: records behind the log end (log end
/// offset minus the position stored with the consumer's state).
pub static KAFKA_CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "kafka_consumer_lag",
        "Records behind the log end, by service, group, topic and partition",
        &["service", "group", "topic", "partition"]
    )
    .expect("metric registers once")
});

/// `kafka_consumer_assigned_partitions{service,group}`: partitions the group gave this
/// consumer at its last rebalance (0 while it holds none).
pub static KAFKA_ASSIGNED_PARTITIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "kafka_consumer_assigned_partitions",
        "Partitions assigned to this consumer, by service and group",
        &["service", "group"]
    )
    .expect("metric registers once")
});

/// `kafka_consumer_rebalances_total{service}`.
pub static KAFKA_REBALANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_consumer_rebalances_total",
        "Consumer group rebalances seen, by service",
        &["service"]
    )
    .expect("metric registers once")
});

/// `outbox_oldest_pending_age_seconds`: age of the oldest unpublished outbox row (0 when empty).
pub static OUTBOX_OLDEST_AGE: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::register_gauge!(
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest outbox row not yet acknowledged by the broker"
    )
    .expect("metric registers once")
});

/// `outbox_delivery_seconds`: from an event's transaction (its outbox row's `created_at`) to the
/// broker's acknowledgement of its record.
pub static OUTBOX_DELIVERY: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    prometheus::register_histogram!(
        "outbox_delivery_seconds",
        "Time from an event's transaction to the broker acknowledging its record",
        vec![
            0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            60.0
        ]
    )
    .expect("metric registers once")
});

/// `outbox_batch_step_seconds{step}`: the steps of one relay batch: `read` (the lock and the
/// pending rows), `stamp` (numbering and committing the stamps), `publish` (sending and waiting
/// for every acknowledgement) and `remove` (deleting what was acknowledged, committing).
pub static OUTBOX_BATCH_STEP: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "outbox_batch_step_seconds",
        "Time of each step of one outbox relay batch",
        &["step"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0]
    )
    .expect("metric registers once")
});

/// `group_commit_batch_size{name}`: requests written by one batch of a group commit.
pub static GROUP_COMMIT_BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "group_commit_batch_size",
        "Requests written together by one batch of a group commit",
        &["name"],
        vec![1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0, 256.0, 1024.0]
    )
    .expect("metric registers once")
});

/// `group_commit_write_seconds{name}`: from a batch being taken off the queue to its requests
/// being answered (its statement and commit).
pub static GROUP_COMMIT_WRITE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "group_commit_write_seconds",
        "Time to write one batch of a group commit, from taking it to answering it",
        &["name"],
        vec![0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0]
    )
    .expect("metric registers once")
});

/// Touches every family so that `/metrics` lists them before their first sample.
pub fn init() {
    LazyLock::force(&KAFKA_MESSAGES_PRODUCED);
    LazyLock::force(&OUTBOX_PENDING);
    LazyLock::force(&OUTBOX_OLDEST_AGE);
    LazyLock::force(&OUTBOX_DELIVERY);
    LazyLock::force(&OUTBOX_BATCH_STEP);
    LazyLock::force(&OUTBOX_RELAY_BUSY);
    LazyLock::force(&GROUP_COMMIT_BATCH_SIZE);
    LazyLock::force(&GROUP_COMMIT_WRITE);
    LazyLock::force(&KAFKA_MESSAGES_CONSUMED);
    LazyLock::force(&KAFKA_PROCESSING_DURATION);
    LazyLock::force(&KAFKA_RECORD_AGE);
    LazyLock::force(&KAFKA_REBALANCES);
    LazyLock::force(&KAFKA_ASSIGNED_PARTITIONS);
    LazyLock::force(&KAFKA_CONSUMER_LAG);
    LazyLock::force(&REDIS_REQUESTS);
    LazyLock::force(&REDIS_REQUEST_DURATION);
    LazyLock::force(&ACTOR_MAILBOX_DEPTH);
    LazyLock::force(&ACTOR_MESSAGES);
    LazyLock::force(&ACTOR_MESSAGE_DURATION);
    LazyLock::force(&ACTOR_RESTARTS);
}

/// `redis_requests_total{operation,status}`: cache requests to Redis, by operation (`get`, `set`,
/// `raise`) and outcome (`ok`, `error`, `timeout`). A cache miss is `ok`.
pub static REDIS_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "redis_requests_total",
        "Requests to the Redis cache, by operation and outcome",
        &["operation", "status"]
    )
    .expect("metric registers once")
});

/// `redis_request_duration_seconds{operation}`: time from asking the pool for a connection to
/// the reply (or the timeout), whatever the outcome.
pub static REDIS_REQUEST_DURATION: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "redis_request_duration_seconds",
        "Duration of requests to the Redis cache, by operation",
        &["operation"],
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric registers once")
});

/// `actor_mailbox_depth{service,actor}`: messages sent to the actor and not yet handled
/// (queued, or being handled); see [`crate::observe`].
pub static ACTOR_MAILBOX_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "actor_mailbox_depth",
        "Messages sent to an actor and not yet handled, by service and actor type",
        &["service", "actor"]
    )
    .expect("metric registers once")
});

/// `actor_messages_total{service,actor,message,outcome}`: messages handled, by outcome (`ok`,
/// `error` for an `Err` answer, `dropped` when never answered).
pub static ACTOR_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "actor_messages_total",
        "Messages handled by actors, by service, actor type, message type and outcome",
        &["service", "actor", "message", "outcome"]
    )
    .expect("metric registers once")
});

/// `actor_message_duration_seconds{service,actor,message}`: from the start of handling to the
/// answer, asynchronous work included.
pub static ACTOR_MESSAGE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "actor_message_duration_seconds",
        "Time actors take to answer a message, by service, actor type and message type",
        &["service", "actor", "message"],
        vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0
        ]
    )
    .expect("metric registers once")
});

/// `actor_restarts_total{service,actor}`: restarts by the actor's supervisor.
pub static ACTOR_RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "actor_restarts_total",
        "Actor restarts by their supervisor, by service and actor type",
        &["service", "actor"]
    )
    .expect("metric registers once")
});
