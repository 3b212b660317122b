//! How a consumer is set up, and the librdkafka settings that follow from it.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::kafka;

/// How a consumer is set up.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// The `service` metric label.
    pub service: &'static str,
    pub brokers: kafka::Brokers,
    /// Consumer group id.
    pub group: String,
    /// Physical topic names.
    pub topics: Vec<String>,
    /// How topics are created at start (source and dead-letter topics).
    pub layout: kafka::TopicLayout,
    /// Largest batch.
    pub max_records: usize,
    /// How long a batch waits for more records after its first.
    pub max_wait: Duration,
    /// `session.timeout.ms`: silence after which the broker hands the partitions to others.
    pub session_timeout: Duration,
    /// `fetch.wait.max.ms`: how long the broker may hold a fetch while nothing is there.
    pub fetch_wait: Duration,
    /// `group.instance.id` (static membership), if any.
    pub instance_id: Option<String>,
}

impl ConsumerConfig {
    /// The topics the consumer reads and their dead-letter topics.
    pub fn all_topics(&self) -> Vec<String> {
        let mut all = self.topics.clone();
        all.extend(self.topics.iter().map(|t| dead_letter_topic(t)));
        all
    }

    /// The group consumer's librdkafka settings. Positions are committed by the sink with its
    /// state, so nothing is committed or stored automatically; a partition never consumed
    /// starts at its beginning.
    pub fn client(&self) -> ClientConfig {
        let mut client = kafka::client_config(&self.brokers, self.service);
        if let Some(instance) = &self.instance_id {
            client.set("group.instance.id", instance);
        }
        client
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("max.poll.interval.ms", "600000")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            // The broker answers a fetch as soon as records arrive; the wait only paces an idle
            // consumer.
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait.as_millis().max(1).to_string(),
            )
            // Memory follows how much is fetched ahead: librdkafka keeps a fetched buffer until
            // its last record is consumed. At most 4 MiB queued and 2 MiB per fetch (512 KiB
            // per partition) bound it while keeping the batches fed; a full queue is refilled
            // after 10 ms instead of librdkafka's second. The figures behind these sizes are in
            // the benchmarks (docs/benchmarks.md).
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "2097152")
            .set("max.partition.fetch.bytes", "524288")
            .set("fetch.queue.backoff.ms", "10")
            .set("topic.metadata.refresh.interval.ms", "10000");
        client
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}
