//! Dead-lettering: a poison record goes to `<topic>.dlq` whole (key, value), with headers saying
//! why it was refused and where it was read, before the batch moves past it.

use std::time::Duration;

use rdkafka::message::{Header, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use slog::{warn, Logger};

use super::config::{dead_letter_topic, ConsumerConfig};
use crate::kafka::SlogContext;
use crate::metrics::KAFKA_MESSAGES_CONSUMED;
use crate::retry;

/// Publishes a poison record to `<topic>.dlq` (retrying until the broker acknowledges it).
pub(super) async fn dead_letter(
    producer: &FutureProducer<SlogContext>,
    message: &OwnedMessage,
    reason: &str,
    config: &ConsumerConfig,
    logger: &Logger,
) {
    let topic = dead_letter_topic(message.topic());
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    warn!(logger, "poison record sent to the dead-letter topic"; "topic" => message.topic(), "partition" => message.partition(), "offset" => message.offset(), "reason" => reason);
    retry::until_ok(logger, "publishing to the dead-letter topic", || async {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq-reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq-source-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "dlq-source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq-source-offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dlq-consumer-group",
                value: Some(&config.group),
            });
        let mut record = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| anyhow::Error::from(e))
    })
    .await;
    KAFKA_MESSAGES_CONSUMED
        .with_label_values(&[config.service, message.topic(), "unknown", "dead_letter"])
        .inc();
}
