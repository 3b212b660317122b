//! The group context of a consumer: librdkafka's rebalance callback seeks each newly assigned
//! partition to the position the sink stored with its state, and keeps the rebalance counter
//! and the assignment gauge.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use slog::{debug, info, warn, Logger};

use super::config::ConsumerConfig;
use super::messages::LoadPositions;
use crate::kafka::SlogContext;
use crate::metrics::{KAFKA_ASSIGNED_PARTITIONS, KAFKA_REBALANCES};
use crate::observe::ObservedRecipient;

/// Seeks newly assigned partitions to the stored positions and counts rebalances.
///
/// librdkafka calls [`ConsumerContext::rebalance`] on the thread that polls the consumer (the
/// consumer actor's arbiter); the stored positions come from the sink actor on another arbiter,
/// so waiting for its answer there cannot deadlock.
pub(super) struct GroupContext {
    inner: SlogContext,
    logger: Logger,
    service: &'static str,
    group: String,
    positions: ObservedRecipient<LoadPositions>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.inner.log(level, fac, message)
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.inner.error(error, reason)
    }
}

impl GroupContext {
    /// The context of a consumer set up by `config`, asking `positions` for stored offsets.
    pub(super) fn new(
        config: &ConsumerConfig,
        positions: ObservedRecipient<LoadPositions>,
        logger: Logger,
    ) -> Self {
        Self {
            inner: SlogContext::new(logger.clone()),
            logger,
            service: config.service,
            group: config.group.clone(),
            positions,
        }
    }

    /// Puts the stored next offset on each partition of `tpl`, and the beginning on each that
    /// has none. The sink's positions are the truth, Kafka's committed offsets only a copy made
    /// after them: a partition the sink has no position for was never applied (a new group, a
    /// rebuilt read model, a database restored from before it), whatever Kafka remembers.
    fn apply_stored_positions(&self, tpl: &mut TopicPartitionList) {
        let wanted: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let answer = futures_executor::block_on(self.positions.send(LoadPositions(wanted.clone())));
        let stored = match answer {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                warn!(self.logger, "cannot load positions; resuming from Kafka's committed offsets (the sink still skips what it applied)"; "error" => format!("{e:#}"));
                return;
            }
            Err(e) => {
                warn!(self.logger, "cannot load positions; resuming from Kafka's committed offsets"; "error" => %e);
                return;
            }
        };
        let from_start: Vec<(String, i32)> = wanted
            .iter()
            .filter(|(t, p)| !stored.iter().any(|(st, sp, _)| st == t && sp == p))
            .cloned()
            .collect();
        let at = stored
            .into_iter()
            .map(|(t, p, o)| (t, p, Offset::Offset(o)))
            .chain(
                from_start
                    .into_iter()
                    .map(|(t, p)| (t, p, Offset::Beginning)),
            );
        for (topic, partition, offset) in at {
            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                warn!(self.logger, "cannot seek"; "topic" => &topic, "partition" => partition, "error" => %e);
            } else {
                debug!(self.logger, "resuming at stored position"; "topic" => &topic, "partition" => partition, "offset" => format!("{offset:?}"));
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr;
        KAFKA_REBALANCES.with_label_values(&[self.service]).inc();
        let assigned = KAFKA_ASSIGNED_PARTITIONS.with_label_values(&[self.service, &self.group]);
        // Eager rebalancing (librdkafka's default assignors): an assignment replaces the
        // previous one whole, and a revocation takes everything.
        assigned.set(0);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.apply_stored_positions(tpl);
                info!(self.logger, "partitions assigned"; "count" => tpl.count());
                match base_consumer.assign(tpl) {
                    Ok(()) => assigned.set(tpl.count() as i64),
                    Err(e) => warn!(self.logger, "assign failed"; "error" => %e),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(self.logger, "partitions revoked"; "count" => tpl.count());
                if let Err(e) = base_consumer.unassign() {
                    warn!(self.logger, "unassign failed"; "error" => %e);
                }
            }
            other => {
                warn!(self.logger, "rebalance error"; "error" => ?other);
                if let Err(e) = base_consumer.unassign() {
                    warn!(self.logger, "unassign failed"; "error" => %e);
                }
            }
        }
    }
}
