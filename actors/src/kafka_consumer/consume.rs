//! The consume loop: makes sure the topics exist, joins the group, and from then on applies one
//! batch while it reads and decodes the next; poison records are dead-lettered first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use slog::Logger;

use super::apply::{apply, KafkaCopy};
use super::collect::{collect, TopicNames};
use super::config::ConsumerConfig;
use super::dead_letter::dead_letter;
use super::messages::{ApplyBatch, Batch, Decoder, LoadPositions};
use super::rebalance::GroupContext;
use crate::observe::ObservedRecipient;
use crate::{kafka, retry};

/// Consumes until an unrecoverable client error, which it answers; dropping the future closes
/// the client, which leaves the group.
pub(super) async fn run<T: Send + Sync + 'static>(
    config: ConsumerConfig,
    decoder: Decoder<T>,
    sink: ObservedRecipient<ApplyBatch<T>>,
    positions: ObservedRecipient<LoadPositions>,
    logger: Logger,
) -> anyhow::Result<()> {
    let all_topics = config.all_topics();
    retry::until_ok(&logger, "creating topics", || async {
        kafka::ensure_topics(
            &config.brokers,
            &all_topics,
            config.layout,
            Duration::from_secs(5),
            &logger,
        )
        .await
        .map_err(anyhow::Error::from)
    })
    .await;

    let context = GroupContext::new(&config, positions, logger.clone());
    let consumer: StreamConsumer<GroupContext> = config.client().create_with_context(context)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    // Made at the first poison record: an idle librdkafka producer still costs a polling thread
    // that wakes every 100 ms (and spins through the last millisecond of each wait), plus its
    // broker connections, and most consumers never dead-letter anything.
    let mut dlq = None;

    // One stream for the consumer's life: `recv` makes (and registers a waker slot for) a new
    // one per record.
    let mut stream = consumer.stream();
    // One batch is applied while the next is read and decoded; batches still apply one at a
    // time, in order. The next batch takes what arrives until the previous one is applied (and
    // at least `max_wait` after its first record): the slower the sink, the larger its batches.
    let mut in_flight: Option<(Arc<Batch<T>>, Instant)> = None;
    let mut topic_names = TopicNames::default();
    let mut copy = KafkaCopy::default();
    loop {
        let applying = async {
            if let Some((batch, started)) = in_flight.take() {
                apply(
                    &consumer, &sink, batch, started, &config, &mut copy, &logger,
                )
                .await?;
            }
            anyhow::Ok(())
        };
        let (collected, applied) = collect(
            &mut stream,
            &decoder,
            &mut topic_names,
            &config,
            &logger,
            applying,
        )
        .await;
        applied?;
        let Some(collected) = collected else {
            continue;
        };
        let (batch, poison, started) = collected.split();
        // Poison records reach their dead-letter topic before the batch moves past them.
        if !poison.is_empty() {
            let producer = match dlq.take() {
                Some(producer) => producer,
                None => kafka::idempotent_producer(
                    &config.brokers,
                    &format!("{}-dlq", config.service),
                    Duration::from_secs(30),
                    logger.clone(),
                )?,
            };
            for (message, reason) in &poison {
                dead_letter(&producer, message, reason, &config, &logger).await;
            }
            dlq = Some(producer);
        }
        in_flight = Some((Arc::new(batch), started));
    }
}
