//! What a consuming service's sink receives from the consumer: batches of decoded records to
//! apply, and requests for its stored positions; and the decoder the service gives.

use std::sync::Arc;

use actix::prelude::*;

/// A decoded record and where it was read.
#[derive(Debug, Clone)]
pub struct Consumed<T> {
    /// Physical topic name.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The stream of the record's publication stamp (see [`crate::sequence`]).
    pub stream: i32,
    /// The record's sequence number within (topic, stream).
    pub seq: i64,
    /// The `type` metric label.
    pub label: &'static str,
    /// When the record was produced (its Kafka timestamp, milliseconds since the epoch; 0
    /// when it has none).
    pub produced_ms: i64,
    pub item: T,
}

/// What a sink applies in one transaction.
#[derive(Debug, Clone)]
pub struct Batch<T> {
    /// Decoded records, in read order (per partition: offset order).
    pub records: Vec<Consumed<T>>,
    /// `(topic, partition, next offset)` for every partition in the batch, poison records
    /// included: the positions to store with the state change.
    pub positions: Vec<(String, i32, i64)>,
}

/// Apply a batch durably; answers, per record, whether it was applied (`true`) or skipped as
/// already applied (`false`).
pub struct ApplyBatch<T>(pub Arc<Batch<T>>);

impl<T: 'static> Message for ApplyBatch<T> {
    type Result = anyhow::Result<Vec<bool>>;
}

/// The stored next offsets of these `(topic, partition)`s (absent: never consumed).
#[derive(Debug, Clone, Message)]
#[rtype(result = "anyhow::Result<Vec<(String, i32, i64)>>")]
pub struct LoadPositions(pub Vec<(String, i32)>);

/// Turns a record value into an item and its metric label (a bounded name such as the event
/// type), or says why the record is poison.
pub type Decoder<T> = Arc<dyn Fn(&[u8]) -> Result<(T, &'static str), String> + Send + Sync>;
