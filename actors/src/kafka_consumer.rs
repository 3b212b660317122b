//! The generic Kafka consumer actor: at-least-once delivery, exactly-once effect.
//!
//! It reads records in batches (up to `max_records`, or what arrived within `max_wait` of the
//! first), decodes them with the service's decoder, reads each record's publication stamp
//! ([`crate::sequence`]), sends poison records (undecodable, invalid, unstamped) to
//! `<topic>.dlq` with headers saying why and where they came from, and hands the rest to the
//! service's sink as one [`ApplyBatch`]. The sink commits its state change together with the
//! batch's positions and what it has seen of each stream in one transaction and skips what it
//! already applied, so redeliveries and duplicates change nothing. Positions live in the sink's store; on partition assignment the
//! consumer starts each partition at its stored position. While the sink fails (its database is down) the same batch is retried
//! with backoff: no position moves before the state is durable and nothing is skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::FusedFuture as _;
use futures_util::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use slog::{debug, info, warn, Logger};

use crate::kafka::{self, SlogContext};
use crate::metrics::{
    KAFKA_ASSIGNED_PARTITIONS, KAFKA_CONSUMER_LAG, KAFKA_MESSAGES_CONSUMED,
    KAFKA_PROCESSING_DURATION, KAFKA_REBALANCES,
};
use crate::observe::ObservedRecipient;
use crate::sequence;

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

/// How a consumer is set up.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// The `service` metric label.
    pub service: &'static str,
    pub brokers: String,
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

/// Seeks newly assigned partitions to the stored positions and counts rebalances.
///
/// librdkafka calls [`ConsumerContext::rebalance`] on the thread that polls the consumer (the
/// consumer actor's arbiter); the stored positions come from the sink actor on another arbiter,
/// so waiting for its answer there cannot deadlock.
struct GroupContext {
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
    /// Puts the stored next offset on each partition of `tpl` that has one.
    fn apply_stored_positions(&self, tpl: &mut TopicPartitionList) {
        let wanted: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let answer = futures_executor::block_on(self.positions.send(LoadPositions(wanted)));
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
        for (topic, partition, offset) in stored {
            if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(offset)) {
                warn!(self.logger, "cannot seek"; "topic" => &topic, "partition" => partition, "error" => %e);
            } else {
                debug!(self.logger, "resuming at stored position"; "topic" => &topic, "partition" => partition, "offset" => offset);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        base_consumer: &rdkafka::consumer::BaseConsumer<Self>,
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

/// The consumer actor. Start it under a supervisor: a restart re-subscribes and resumes from
/// the sink's stored positions.
pub struct KafkaConsumer<T: Send + Sync + 'static> {
    config: ConsumerConfig,
    decoder: Decoder<T>,
    sink: ObservedRecipient<ApplyBatch<T>>,
    positions: ObservedRecipient<LoadPositions>,
    logger: Logger,
    running: Option<SpawnHandle>,
    /// A lag measurement is in flight.
    measuring: bool,
    /// The group-less client that reads watermarks; made on first use.
    lag_client: Option<Arc<BaseConsumer>>,
}

impl<T: Send + Sync + 'static> KafkaConsumer<T> {
    /// A consumer feeding `sink`; `positions` answers stored offsets.
    pub fn new(
        config: ConsumerConfig,
        decoder: Decoder<T>,
        sink: ObservedRecipient<ApplyBatch<T>>,
        positions: ObservedRecipient<LoadPositions>,
        logger: Logger,
    ) -> Self {
        Self {
            config,
            decoder,
            sink,
            positions,
            logger,
            running: None,
            measuring: false,
            lag_client: None,
        }
    }

    fn start_loop(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        let work = run(
            self.config.clone(),
            self.decoder.clone(),
            self.sink.clone(),
            self.positions.clone(),
            self.logger.clone(),
        );
        self.running = Some(ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.running = None;
            act.holds_nothing();
            if let Err(e) = result {
                warn!(act.logger, "consumer failed; restarting"; "error" => format!("{e:#}"));
                ctx.stop();
            }
        })));
    }
}

impl<T: Send + Sync + 'static> KafkaConsumer<T> {
    /// Without its client the consumer holds no partition, whatever the last rebalance said.
    fn holds_nothing(&self) {
        KAFKA_ASSIGNED_PARTITIONS
            .with_label_values(&[self.config.service, &self.config.group])
            .set(0);
    }
}

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

impl<T: Send + Sync + 'static> KafkaConsumer<T> {
    /// Sets `kafka_consumer_lag` for every partition of the topics: the log end offset minus
    /// the stored position (the log start when nothing was stored). Runs whether or not the
    /// consume loop runs, so a stopped consumer shows its lag growing.
    fn measure_lag(&mut self, ctx: &mut Context<Self>) {
        if self.measuring {
            return;
        }
        let client = match &self.lag_client {
            Some(client) => client.clone(),
            None => match kafka::client_config(&self.config.brokers, "recsys-lag").create() {
                Ok(client) => self.lag_client.insert(Arc::new(client)).clone(),
                Err(e) => {
                    warn!(self.logger, "cannot create the lag client"; "error" => %e);
                    return;
                }
            },
        };
        self.measuring = true;
        let (config, positions, logger) = (
            self.config.clone(),
            self.positions.clone(),
            self.logger.clone(),
        );
        let work = async move {
            let topics = config.topics.clone();
            let offsets =
                tokio::task::spawn_blocking(move || watermarks(&client, &topics)).await??;
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
            anyhow::Ok(())
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, _| {
            act.measuring = false;
            if let Err(e) = result {
                debug!(logger, "lag not measured"; "error" => format!("{e:#}"));
            }
        }));
    }
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

impl<T: Send + Sync + 'static> Actor for KafkaConsumer<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(LAG_INTERVAL, |act, ctx| act.measure_lag(ctx));
        info!(self.logger, "consumer started"; "group" => &self.config.group, "topics" => self.config.topics.join(","));
        self.start_loop(ctx);
    }
}

impl<T: Send + Sync + 'static> Supervised for KafkaConsumer<T> {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "consumer restarting"; "group" => &self.config.group);
        self.running = None;
    }
}

/// Stop consuming (the group rebalances the partitions away); [`Resume`] starts again.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Pause;

/// Start consuming again after [`Pause`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Resume;

/// Cancels the loop, which drops the Kafka consumer and leaves the group.
impl<T: Send + Sync + 'static> Handler<Pause> for KafkaConsumer<T> {
    type Result = ();

    fn handle(&mut self, _: Pause, ctx: &mut Self::Context) {
        if let Some(handle) = self.running.take() {
            ctx.cancel_future(handle);
            self.holds_nothing();
            info!(self.logger, "consumer paused"; "group" => &self.config.group);
        }
    }
}

/// Starts the loop unless it runs.
impl<T: Send + Sync + 'static> Handler<Resume> for KafkaConsumer<T> {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Self::Context) {
        self.start_loop(ctx);
    }
}

/// Restart on request (see [`crate::supervision::Fail`]).
impl<T: Send + Sync + 'static> Handler<crate::supervision::Fail> for KafkaConsumer<T> {
    type Result = ();

    fn handle(&mut self, _: crate::supervision::Fail, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Retries `attempt` with exponential backoff (100 ms .. 5 s) until it succeeds.
async fn retry<R, F, Fut>(logger: &Logger, what: &str, mut attempt: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(r) => return r,
            Err(e) => {
                warn!(logger, "retrying"; "what" => what, "error" => format!("{e:#}"), "backoff_ms" => backoff.as_millis() as u64);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The consume loop; returns only on an unrecoverable client error.
async fn run<T: Send + Sync + 'static>(
    config: ConsumerConfig,
    decoder: Decoder<T>,
    sink: ObservedRecipient<ApplyBatch<T>>,
    positions: ObservedRecipient<LoadPositions>,
    logger: Logger,
) -> anyhow::Result<()> {
    let mut all_topics = config.topics.clone();
    all_topics.extend(config.topics.iter().map(|t| format!("{t}.dlq")));
    retry(&logger, "creating topics", || async {
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

    let context = GroupContext {
        inner: SlogContext::new(logger.clone()),
        logger: logger.clone(),
        service: config.service,
        group: config.group.clone(),
        positions,
    };
    let mut client = kafka::client_config(&config.brokers, config.service);
    if let Some(instance) = &config.instance_id {
        client.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<GroupContext> = client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("max.poll.interval.ms", "600000")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", "1000")
        // The broker answers a fetch as soon as records arrive; the wait only paces an idle
        // consumer.
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().max(1).to_string(),
        )
        // Prefetch, sized by the pipeline benchmark (a backlog of 1 000 000 events, two groups in
        // one process). librdkafka keeps a received batch's (decompressed) buffer until its last
        // record is consumed, so memory follows how much is fetched ahead: with its defaults
        // the runtime peaked at 270-280 MiB. At most 4 MiB queued and 2 MiB per fetch (512 KiB
        // per partition) keep it near 120 MiB with batches of 50 000. Smaller fetches starve
        // the consumers: with 1 MiB (256 KiB) batches stayed smaller and the backlog took 6 %
        // longer; with a 2 MiB queue, 25 % longer. A full queue must not stall fetching for the
        // default second (4 MiB a second: 33 000 records/s); 10 ms keeps the queue fed.
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.max.bytes", "2097152")
        .set("max.partition.fetch.bytes", "524288")
        .set("fetch.queue.backoff.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create_with_context(context)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let dlq = kafka::idempotent_producer(
        &config.brokers,
        &format!("{}-dlq", config.service),
        Duration::from_secs(30),
        logger.clone(),
    )?;

    // One stream for the consumer's life: `recv` makes (and registers a waker slot for) a new
    // one per record.
    let mut stream = consumer.stream();
    // One batch is applied while the next is read and decoded; batches still apply one at a
    // time, in order. The next batch takes what arrives until the previous one is applied (and
    // at least `max_wait` after its first record): the slower the sink, the larger its batches.
    let mut in_flight: Option<(Arc<Batch<T>>, Instant)> = None;
    let mut topic_names = TopicNames::default();
    loop {
        let applying = async {
            if let Some((batch, started)) = in_flight.take() {
                apply(&consumer, &sink, batch, started, &config, &logger).await?;
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
        // Poison records reach their dead-letter topic before the batch moves past them.
        for (message, reason) in &collected.poison {
            dead_letter(&dlq, message, reason, &config, &logger).await;
        }
        let batch = Arc::new(Batch {
            records: collected.records,
            positions: collected
                .next
                .into_iter()
                .map(|((t, p), o)| (t.to_string(), p, o))
                .collect(),
        });
        in_flight = Some((batch, collected.started));
    }
}

/// Hands `batch` to the sink until it is durable, counts its records and tells Kafka the new
/// positions.
async fn apply<T: Send + Sync + 'static>(
    consumer: &StreamConsumer<GroupContext>,
    sink: &ObservedRecipient<ApplyBatch<T>>,
    batch: Arc<Batch<T>>,
    started: Instant,
    config: &ConsumerConfig,
    logger: &Logger,
) -> anyhow::Result<()> {
    let applied = retry(logger, "applying a batch", || {
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
    let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &batch.records {
        *per_topic.entry(&record.topic).or_default() += 1;
    }
    for (topic, n) in per_topic {
        let histogram = KAFKA_PROCESSING_DURATION.with_label_values(&[config.service, topic]);
        for _ in 0..n {
            histogram.observe(elapsed);
        }
    }
    // Kafka's own committed offsets only speed up resumption and feed lag metrics; the
    // sink's positions are the truth.
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in &batch.positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        warn!(logger, "offset commit to Kafka failed (positions are safe in the store)"; "error" => %e);
    }
    Ok(())
}

/// Adds `(record, status)` pairs to `kafka_messages_consumed_total`, one increment per
/// label set.
fn count_records<'a, T: 'a>(
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

/// Most records a batch reserves room for up front (112 bytes each for the services' facts);
/// a larger `max_records` grows past it.
const RESERVED_RECORDS: usize = 100_000;

/// One batch as read: decoded records, poison records (kept whole for the dead-letter topic)
/// and the next offset of every partition read.
struct Collected<T> {
    records: Vec<Consumed<T>>,
    poison: Vec<(OwnedMessage, String)>,
    next: BTreeMap<(Arc<str>, i32), i64>,
    /// When the first record arrived.
    started: Instant,
}

/// One shared name per topic, so that records do not each carry a copy.
#[derive(Default)]
struct TopicNames(Vec<Arc<str>>);

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
async fn collect<T>(
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

/// Publishes a poison record to `<topic>.dlq` (retrying until the broker acknowledges it).
async fn dead_letter(
    producer: &FutureProducer<SlogContext>,
    message: &OwnedMessage,
    reason: &str,
    config: &ConsumerConfig,
    logger: &Logger,
) {
    let topic = format!("{}.dlq", message.topic());
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    warn!(logger, "poison record sent to the dead-letter topic"; "topic" => message.topic(), "partition" => message.partition(), "offset" => message.offset(), "reason" => reason);
    retry(logger, "publishing to the dead-letter topic", || async {
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

crate::observed_handlers!(impl[T: Send + Sync + 'static] KafkaConsumer<T> => Pause, Resume, crate::supervision::Fail);
