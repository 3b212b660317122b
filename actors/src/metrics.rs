//! Metric families recorded by the generic machinery, registered on the default registry.

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
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

/// Touches every family so that `/metrics` lists them before their first sample.
pub fn init() {
    LazyLock::force(&KAFKA_MESSAGES_PRODUCED);
    LazyLock::force(&OUTBOX_PENDING);
}
