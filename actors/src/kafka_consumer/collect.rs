//! Reading one batch: records are decoded as they are read, librdkafka's copy released at once,
//! and the batch closes when enough has arrived and the previous batch is applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::FusedFuture as _;
use futures_util::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::MessageStream;
use rdkafka::message::{BorrowedMessage, Message as _, OwnedMessage};
use slog::{warn, Logger};

use super::config::ConsumerConfig;
use super::messages::{Batch, Consumed, Decoder};
use super::rebalance::GroupContext;
use crate::sequence;

/// Most records a batch reserves room for up front (120 bytes each for the services' facts);
/// a larger `max_records` grows past it.
const RESERVED_RECORDS: usize = 100_000;

/// One batch as read: decoded records, poison records (kept whole for the dead-letter topic)
/// and the next offset of every partition read.
pub(super) struct Collected<T> {
    records: Vec<Consumed<T>>,
    poison: Vec<(OwnedMessage, String)>,
    next: BTreeMap<(Arc<str>, i32), i64>,
    /// When the first record arrived.
    started: Instant,
}

impl<T> Collected<T> {
    /// The batch of decoded records with the next offset of every partition read, the poison
    /// records, and when the first record arrived.
    pub(super) fn split(self) -> (Batch<T>, Vec<(OwnedMessage, String)>, Instant) {
        let batch = Batch {
            records: self.records,
            positions: self
                .next
                .into_iter()
                .map(|((t, p), o)| (t.to_string(), p, o))
                .collect(),
        };
        (batch, self.poison, self.started)
    }
}

/// One shared name per topic, so that records do not each carry a copy.
#[derive(Default)]
pub(super) struct TopicNames(Vec<Arc<str>>);

impl TopicNames {
    fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(name) = self.0.iter().find(|n| ***n == *topic) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(topic);
        self.0.push(name.clone());
        name
    }
}

/// Drives `applying` (the previous batch) to its end while it reads the next batch: waits for
/// one record, then takes what arrives until both `max_wait` has passed since that record and
/// `applying` is done, up to `max_records`. Each record is decoded as it is read and
/// librdkafka's copy released at once; only poison records are copied (for the dead-letter
/// topic). The batch is `None` when the wait for the first record ended in an error, or when
/// `applying` failed first.
pub(super) async fn collect<T>(
    stream: &mut MessageStream<'_, GroupContext>,
    decoder: &Decoder<T>,
    topics: &mut TopicNames,
    config: &ConsumerConfig,
    logger: &Logger,
    applying: impl std::future::Future<Output = anyhow::Result<()>>,
) -> (Option<Collected<T>>, anyhow::Result<()>) {
    let applying = applying.fuse();
    futures_util::pin_mut!(applying);
    let mut applied: Option<anyhow::Result<()>> = None;
    let first = loop {
        futures_util::select_biased! {
            result = applying => {
                if result.is_err() {
                    return (None, result);
                }
                applied = Some(result);
            }
            next = stream.next().fuse() => break next.expect("a Kafka stream never ends"),
        }
    };
    let first = match first {
        Ok(m) => m,
        Err(e) => {
            warn!(logger, "consume error"; "error" => %e);
            let pause = tokio::time::sleep(Duration::from_millis(200));
            let applied = match applied {
                Some(done) => done,
                None => applying.await,
            };
            pause.await;
            return (None, applied);
        }
    };
    let mut collected = Collected {
        // Room for a whole batch at once: growing by doubling would copy it and, at the moment
        // of the last growth, hold it twice. Untouched capacity costs address space, not
        // memory.
        records: Vec::with_capacity(config.max_records.min(RESERVED_RECORDS)),
        poison: Vec::new(),
        next: BTreeMap::new(),
        started: Instant::now(),
    };
    let mut take = |message: BorrowedMessage<'_>| {
        let topic = topics.get(message.topic());
        let next = collected
            .next
            .entry((topic.clone(), message.partition()))
            .or_insert(0);
        *next = (*next).max(message.offset() + 1);
        let decoded = decoder(message.payload().unwrap_or_default())
            .and_then(|decoded| sequence::read(message.headers()).map(|stamp| (decoded, stamp)));
        match decoded {
            Ok(((item, label), (stream, seq))) => collected.records.push(Consumed {
                topic,
                partition: message.partition(),
                offset: message.offset(),
                stream,
                seq,
                label,
                produced_ms: message.timestamp().to_millis().unwrap_or(0),
                item,
            }),
            Err(reason) => collected.poison.push((message.detach(), reason)),
        }
    };
    take(first);
    let until = tokio::time::Instant::now() + config.max_wait;
    let waited = tokio::time::sleep_until(until).fuse();
    futures_util::pin_mut!(waited);
    let mut read = 1;
    while read < config.max_records {
        // A record already queued is taken without arming a timer (most of them, in a
        // backlog).
        let next = match stream.next().now_or_never() {
            Some(ready) => ready,
            None => {
                if waited.is_terminated() && applied.is_some() {
                    break;
                }
                futures_util::select_biased! {
                    result = applying => {
                        let failed = result.is_err();
                        applied = Some(result);
                        if failed {
                            break;
                        }
                        continue;
                    }
                    () = waited => continue,
                    next = stream.next().fuse() => next,
                }
            }
        };
        match next.expect("a Kafka stream never ends") {
            Ok(m) => {
                take(m);
                read += 1;
            }
            Err(e) => {
                warn!(logger, "consume error"; "error" => %e);
                break;
            }
        }
    }
    let applied = match applied {
        Some(done) => done,
        None => applying.await,
    };
    (Some(collected), applied)
}
