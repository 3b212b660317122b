//! The generic Kafka consumer actor: at-least-once delivery, exactly-once effect.
//!
//! It reads records in batches (up to `max_records`, or what arrived within `max_wait` of the
//! first), decodes them with the service's decoder, reads each record's publication stamp
//! ([`crate::sequence`]), sends poison records (undecodable, invalid, unstamped) to
//! `<topic>.dlq` with headers saying why and where they came from, and hands the rest to the
//! service's sink as one [`ApplyBatch`]. The sink commits its state change together with the
//! batch's positions and what it has seen of each stream in one transaction and skips what it
//! already applied, so redeliveries and duplicates change nothing. Positions live in the sink's
//! store; on partition assignment the consumer starts each partition at its stored position.
//! While the sink fails (its database is down) the same batch is retried with backoff: no
//! position moves before the state is durable and nothing is skipped.
//!
//! ## Layout
//!
//! - [`messages`]: what a sink receives ([`ApplyBatch`], [`LoadPositions`]) and the decoder
//!   it gives.
//! - [`config`]: [`ConsumerConfig`] and the librdkafka settings it makes.
//! - [`actor`]: [`KafkaConsumer`], its lifecycle and [`Leave`].
//! - `consume`: the consume loop: topics, client, subscription, one batch applied while the
//!   next is read.
//! - `collect`: reading and decoding one batch.
//! - `apply`: handing a batch to the sink until it is durable, and its metrics.
//! - `dead_letter`: publishing a poison record to `<topic>.dlq`.
//! - `rebalance`: the group context: stored positions on assignment, the assignment gauge.
//! - `lag`: the lag measurement.

pub mod actor;
mod apply;
mod collect;
pub mod config;
mod consume;
mod dead_letter;
mod lag;
pub mod messages;
mod rebalance;

#[cfg(feature = "test-support")]
pub use actor::Resume;
pub use actor::{KafkaConsumer, Leave};
pub use config::ConsumerConfig;
pub use messages::{ApplyBatch, Batch, Consumed, Decoder, LoadPositions};
