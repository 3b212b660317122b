//! # recsys-actors: generic actor machinery
//!
//! Nothing here knows about users, products or any other service: services plug in through
//! traits ([`outbox_relay::OutboxStore`]) and typed messages.
//!
//! ## Layout
//!
//! - [`supervision`]: starting actors under a supervisor that counts restarts and turns a panic
//!   into a restart, and (tests only) the `Fail` and `Panic` messages that make it restart.
//! - [`retry`]: retrying until success, with exponential backoff and jitter.
//! - [`kafka`]: librdkafka client settings, the idempotent producer and topic creation.
//! - [`kafka_consumer`]: the generic consumer actor, a folder of one job per file: batches,
//!   dead-letter topics, positions stored with the state by the service's sink (exactly-once
//!   effect), rebalances, lag.
//! - [`outbox_relay`]: the actor that publishes a transactional outbox to Kafka, in order, and
//!   forgets a row only once the broker acknowledged it.
//! - [`sequence`]: the publication sequences the relay stamps on every record and the per-stream
//!   state by which a consumer tells a new record from a copy.
//! - [`group_commit`]: concurrent writes of one kind folded into one statement, batches growing
//!   only while earlier ones are being written.
//! - [`cache`]: the Redis cache actor in front of slower queries; a miss and a Redis failure
//!   look the same to callers.
//! - [`observe`]: the envelope, addresses and handler macro that count every actor's mailbox
//!   depth, messages, handling time and restarts.
//! - [`request`]: the request a piece of work is done for, carried into actors for the logs.
//! - [`metrics`]: the metric families this machinery records (Kafka produce, outbox, Redis cache).

pub mod cache;
pub mod group_commit;
pub mod kafka;
pub mod kafka_consumer;
pub mod metrics;
pub mod observe;
pub mod outbox_relay;
pub mod request;
pub mod retry;
pub mod sequence;
pub mod supervision;

/// Re-exported for [`observed_handlers!`], which names actix types from the caller's crate.
pub use actix;
