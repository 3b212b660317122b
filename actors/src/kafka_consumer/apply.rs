//! Applying a batch: the sink is asked until the batch is durable (retried with backoff while
//! it fails), then the records are counted by outcome and Kafka is told the new positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use slog::{warn, Logger};

use super::config::ConsumerConfig;
use super::messages::{ApplyBatch, Batch, Consumed};
use super::rebalance::GroupContext;
use crate::metrics::{KAFKA_MESSAGES_CONSUMED, KAFKA_PROCESSING_DURATION, KAFKA_RECORD_AGE};
use crate::observe::ObservedRecipient;
use crate::retry;

/// How often, at most, the positions are copied to Kafka. The copy only serves tools and a
/// consumer that cannot ask its sink (which then re-reads at most this much and skips it), and
/// each commit is a replicated write to `__consumer_offsets` on the brokers: once per batch,
/// under a steady trickle, it cost the brokers more than the records did.
const COPY_EVERY: Duration = Duration::from_secs(1);

/// The positions not yet copied to Kafka, and when they last were.
#[derive(Default)]
pub(super) struct KafkaCopy {
    pending: BTreeMap<(String, i32), i64>,
    last: Option<Instant>,
}

impl KafkaCopy {
    /// Adds a batch's positions; commits everything pending if [`COPY_EVERY`] has passed since
    /// the last commit. What arrives after the last batch of a burst waits for the next batch.
    fn record(
        &mut self,
        consumer: &StreamConsumer<GroupContext>,
        positions: &[(String, i32, i64)],
        logger: &Logger,
    ) -> anyhow::Result<()> {
        for (topic, partition, offset) in positions {
            self.pending.insert((topic.clone(), *partition), *offset);
        }
        if self.last.is_some_and(|at| at.elapsed() < COPY_EVERY) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.pending {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(logger, "offset commit to Kafka failed (positions are safe in the store)"; "error" => %e);
        }
        self.pending.clear();
        self.last = Some(Instant::now());
        Ok(())
    }
}

/// Hands `batch` to the sink until it is durable, counts its records and tells Kafka the new
/// positions (through `copy`, at most once per [`COPY_EVERY`]).
pub(super) async fn apply<T: Send + Sync + 'static>(
    consumer: &StreamConsumer<GroupContext>,
    sink: &ObservedRecipient<ApplyBatch<T>>,
    batch: Arc<Batch<T>>,
    started: Instant,
    config: &ConsumerConfig,
    copy: &mut KafkaCopy,
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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut per_topic: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for record in &batch.records {
        per_topic
            .entry(&record.topic)
            .or_default()
            .push(record.produced_ms);
    }
    for (topic, produced) in per_topic {
        // Observed once per record into local copies, added to the shared histograms once per
        // batch: a backlog's batches hold tens of thousands of records.
        let labels = [config.service, topic];
        let processing = KAFKA_PROCESSING_DURATION.with_label_values(&labels).local();
        let age = KAFKA_RECORD_AGE.with_label_values(&labels).local();
        for produced_ms in produced {
            processing.observe(elapsed);
            if produced_ms > 0 {
                // Clocks of two machines may disagree a little: never a negative age.
                age.observe((now_ms - produced_ms).max(0) as f64 / 1000.0);
            }
        }
        processing.flush();
        age.flush();
    }
    // Kafka's own committed offsets only speed up resumption; the sink's positions are the
    // truth (and what the lag is measured from).
    copy.record(consumer, &batch.positions, logger)
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
