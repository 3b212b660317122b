//! Consumer lag: for every partition of the topics, the log end offset minus the position the
//! sink stored (the log start when it stored none), as `kafka_consumer_lag`. Measured whether
//! or not the consume loop runs, so a stopped consumer shows its lag growing.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::config::ConsumerConfig;
use super::messages::LoadPositions;
use crate::metrics::KAFKA_CONSUMER_LAG;
use crate::observe::ObservedRecipient;

/// How often consumer lag is measured.
pub(super) const INTERVAL: Duration = Duration::from_secs(2);

/// Reads the watermarks with `client` (a group-less consumer) and the stored positions from
/// `positions`, and sets `kafka_consumer_lag` of every partition.
pub(super) async fn measure(
    client: Arc<BaseConsumer>,
    config: &ConsumerConfig,
    positions: &ObservedRecipient<LoadPositions>,
) -> anyhow::Result<()> {
    let topics = config.topics.clone();
    let offsets = tokio::task::spawn_blocking(move || watermarks(&client, &topics)).await??;
    let wanted = offsets.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect();
    let stored = positions.send(LoadPositions(wanted)).await??;
    for (topic, partition, low, high) in offsets {
        let position = stored
            .iter()
            .find(|(t, p, _)| *t == topic && *p == partition)
            .map_or(low, |(_, _, o)| *o);
        KAFKA_CONSUMER_LAG
            .with_label_values(&[
                config.service,
                &config.group,
                &topic,
                &partition.to_string(),
            ])
            .set((high - position).max(0));
    }
    Ok(())
}

/// `(topic, partition, low, high)` watermarks of every partition of `topics` (blocking).
fn watermarks(
    client: &BaseConsumer,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32, i64, i64)>> {
    let timeout = Duration::from_secs(2);
    let mut out = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = client.fetch_watermarks(topic, p.id(), timeout)?;
                out.push((topic.clone(), p.id(), low, high));
            }
        }
    }
    Ok(out)
}
