//! Applying a batch: the sink is asked until the batch is durable (retried with backoff while
//! it fails), then the records are counted by outcome and Kafka is told the new positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use slog::{warn, Logger};

use super::config::ConsumerConfig;
use super::messages::{ApplyBatch, Batch, Consumed};
use super::rebalance::GroupContext;
use crate::metrics::{KAFKA_MESSAGES_CONSUMED, KAFKA_PROCESSING_DURATION};
use crate::observe::ObservedRecipient;
use crate::retry;

/// Hands `batch` to the sink until it is durable, counts its records and tells Kafka the new
/// positions.
pub(super) async fn apply<T: Send + Sync + 'static>(
    consumer: &StreamConsumer<GroupContext>,
    sink: &ObservedRecipient<ApplyBatch<T>>,
    batch: Arc<Batch<T>>,
    started: Instant,
    config: &ConsumerConfig,
    logger: &Logger,
) -> anyhow::Result<()> {
    let applied = retry::until_ok(logger, "applying a batch", || {
        let sink = sink.clone();
        let batch = batch.clone();
        let service = config.service;
        async move {
            let result = sink.send(ApplyBatch(batch.clone())).await;
            let result = result.map_err(anyhow::Error::from).and_then(|r| r);
            if result.is_err() {
                // Counted once per failed attempt; the batch is retried as a whole.
                count_records(service, batch.records.iter().map(|r| (r, "error")));
            }
            result
        }
    })
    .await;

    let elapsed = started.elapsed().as_secs_f64();
    count_records(
        config.service,
        batch
            .records
            .iter()
            .zip(applied)
            .map(|(record, applied)| (record, if applied { "ok" } else { "duplicate" })),
    );
    let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &batch.records {
        *per_topic.entry(&record.topic).or_default() += 1;
    }
    for (topic, n) in per_topic {
        let histogram = KAFKA_PROCESSING_DURATION.with_label_values(&[config.service, topic]);
        for _ in 0..n {
            histogram.observe(elapsed);
        }
    }
    // Kafka's own committed offsets only speed up resumption and feed lag metrics; the
    // sink's positions are the truth.
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in &batch.positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        warn!(logger, "offset commit to Kafka failed (positions are safe in the store)"; "error" => %e);
    }
    Ok(())
}

/// Adds `(record, status)` pairs to `kafka_messages_consumed_total`, one increment per
/// label set.
pub(super) fn count_records<'a, T: 'a>(
    service: &str,
    records: impl Iterator<Item = (&'a Consumed<T>, &'static str)>,
) {
    let mut counts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (record, status) in records {
        *counts
            .entry((&*record.topic, record.label, status))
            .or_default() += 1;
    }
    for ((topic, label, status), n) in counts {
        KAFKA_MESSAGES_CONSUMED
            .with_label_values(&[service, topic, label, status])
            .inc_by(n);
    }
}
