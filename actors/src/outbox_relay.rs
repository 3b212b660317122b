//! The outbox relay actor: publishes a transactional outbox to Kafka.
//!
//! Services write a state change and its event in one database transaction (the outbox row);
//! this actor publishes pending rows in order through the idempotent producer and deletes a row
//! only after the broker acknowledged it. With the broker down, writes keep succeeding and rows
//! accumulate; they go out, in order, once it is back. A crash between publish and delete
//! publishes the row again (at-least-once).
//!
//! Before a row is first sent, the store stamps it with a stream (the partition chosen for its
//! key) and the next sequence number of that (topic, stream), and commits the stamp; the record
//! goes to that partition with the stamp in its headers (see [`crate::sequence`]). Every copy
//! of one row therefore carries the same stamp, which is how consumers apply each event once.
//!
//! The storage side is the [`OutboxStore`] trait, so the relay knows no table and no service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use slog::{debug, error, info, warn, Logger};

use crate::kafka::{self, SlogContext};
use crate::metrics::{
    KAFKA_MESSAGES_PRODUCED, OUTBOX_DELIVERY, OUTBOX_OLDEST_AGE, OUTBOX_PENDING, OUTBOX_RELAY_BUSY,
};
use crate::sequence;

/// One pending outbox row, stamped.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Position in the outbox; rows are stamped in ascending id order.
    pub id: i64,
    /// Logical topic, without the deployment's topic prefix.
    pub topic: String,
    /// Kafka message key.
    pub key: String,
    /// Record value.
    pub payload: String,
    /// The partition the record goes to, which also names its sequence stream.
    pub stream: i32,
    /// Sequence number within (topic, stream), from 1, dense.
    pub seq: i64,
    /// When the row's transaction wrote it.
    pub written_at: std::time::SystemTime,
}

/// Partitions of each logical topic (what [`sequence::partition_for`] divides keys among).
pub type PartitionCounts = Arc<HashMap<String, i32>>;

/// Publishes one batch: gets the records in order and answers the ids the broker acknowledged.
pub type Publish = Box<dyn FnOnce(Vec<OutboxRecord>) -> BoxFuture<'static, Vec<i64>> + Send>;

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Another relay holds the outbox; nothing was done.
    Busy,
    /// `published` rows were acknowledged and removed out of `claimed` rows read.
    Done { claimed: usize, published: usize },
}

/// The backlog of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pending {
    /// Rows not yet published.
    pub rows: i64,
    /// Age of the oldest of them; zero when there are none.
    pub oldest_age: Duration,
}

impl Pending {
    /// Sets `outbox_pending` and `outbox_oldest_pending_age_seconds`.
    fn record(&self) {
        OUTBOX_PENDING.set(self.rows);
        OUTBOX_OLDEST_AGE.set(self.oldest_age.as_secs_f64());
    }
}

/// Where the outbox lives. Implementations must serialize relays (at most one publishes at a
/// time, e.g. with a database lock held during [`OutboxStore::relay_batch`]) and remove exactly
/// the acknowledged ids.
pub trait OutboxStore: Send + Sync + 'static {
    /// Reads up to `limit` pending rows (rows stamped earlier first, then the oldest others),
    /// stamps the unstamped ones and **commits the stamps** before handing the rows to
    /// `publish`, then removes the ids it returns.
    ///
    /// Stamping: a row's stream is [`sequence::partition_for`] its key among `partitions` of
    /// its topic; its sequence number is the next of that (topic, stream), dense from 1. A
    /// stamp never changes afterwards.
    fn relay_batch(
        &self,
        limit: i64,
        partitions: PartitionCounts,
        publish: Publish,
    ) -> BoxFuture<'static, anyhow::Result<BatchOutcome>>;

    /// Number of rows not yet published.
    fn pending(&self) -> BoxFuture<'static, anyhow::Result<Pending>>;

    /// Brings the outbox in line with what the topics already hold (see [`Published`]): raises
    /// each (topic, stream)'s last number to at least the highest published, and removes the
    /// pending rows `published` says are on the topics. `None` when another relay holds the
    /// outbox (it reconciled when it started).
    fn reconcile(
        &self,
        published: Published,
    ) -> BoxFuture<'static, anyhow::Result<Option<Reconciled>>>;
}

/// What the tail of each topic holds, read when a relay starts: after a database restored
/// from an older backup, the outbox may hold rows that were published after the backup was
/// taken, and its sequences may lag the numbers already on the topics. Publishing those rows
/// again, under new numbers, would count them twice; stamping new rows with numbers already
/// used would make consumers skip them.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// The highest number seen per (logical topic, stream).
    pub last_seq: HashMap<(String, i32), i64>,
    /// The values of the records read, per logical topic (a row whose payload is among them
    /// was published: payloads carry their event's unique id).
    pub payloads: HashMap<String, std::collections::HashSet<String>>,
}

/// What a reconciliation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Sequences raised to a number the topics already hold.
    pub raised: usize,
    /// Pending rows removed because the topics already hold them.
    pub removed: usize,
}

/// How the relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bootstrap servers.
    pub brokers: kafka::Brokers,
    /// Prefix put before every logical topic name (`KAFKA_TOPIC_PREFIX`).
    pub topic_prefix: String,
    /// Logical topics to create at start when missing.
    pub topics: Vec<String>,
    /// How a missing topic is created.
    pub layout: kafka::TopicLayout,
    /// Rows per batch.
    pub batch_size: i64,
    /// How often the outbox is polled when nobody wakes the relay.
    pub poll_interval: Duration,
    /// How long one record may wait for the broker before its delivery fails and is retried.
    pub delivery_timeout: Duration,
    /// Under load, the next batch starts no sooner than this after the last one started, so that
    /// it carries the rows written meanwhile (see [`GATHER_ROWS`]); zero starts it as soon as the
    /// last one is done.
    pub gather: Duration,
}

/// A batch of at least this many rows (but not a full one) means the relay is under load: the
/// next batch waits for [`RelayConfig::gather`]. Below it, the relay answers every write at once,
/// so that a quiet system publishes with no added delay. Each batch costs the brokers a produce
/// request per leader, replicated to every follower, and the relay about six round trips to
/// Postgres, whatever its size: fewer, larger batches spend less of the CPU the writes share.
pub const GATHER_ROWS: usize = 32;

/// What the relay remembers of its last batch, to tell whether it is under load.
#[derive(Debug, Clone, Copy)]
struct LastBatch {
    started: Instant,
    rows: usize,
    /// It claimed the batch size: more rows are waiting.
    full: bool,
}

/// How soon a woken relay that found another process's relay publishing tries again.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// The relay actor. Start it under a supervisor; it resumes from the outbox table.
pub struct OutboxRelay {
    config: RelayConfig,
    store: Arc<dyn OutboxStore>,
    producer: FutureProducer<SlogContext>,
    logger: Logger,
    /// A batch is in flight.
    busy: bool,
    /// Somebody asked for a batch while one was in flight or held.
    again: bool,
    /// The next batch is held until the last one's gathering time is over.
    held: bool,
    /// The last batch that claimed rows or found none (not one that found the outbox busy).
    last: Option<LastBatch>,
    /// A write of this process woke the relay since its last batch started. Such a batch that
    /// finds another process's relay publishing tries again after [`BUSY_RETRY`]: the other
    /// relay may have read the outbox before the write committed, and nothing else would
    /// publish the row before the next poll.
    woken: bool,
    /// Partitions per logical topic, once the topics are known to exist.
    partitions: Option<PartitionCounts>,
    /// A pending-count query is in flight.
    counting: bool,
}

impl OutboxRelay {
    /// A relay publishing `store` with a fresh idempotent producer.
    pub fn new(
        config: RelayConfig,
        store: Arc<dyn OutboxStore>,
        logger: Logger,
    ) -> anyhow::Result<Self> {
        let producer = kafka::idempotent_producer(
            &config.brokers,
            "recsys-outbox-relay",
            config.delivery_timeout,
            logger.clone(),
        )?;
        Ok(Self {
            config,
            store,
            producer,
            logger,
            busy: false,
            again: false,
            held: false,
            last: None,
            woken: false,
            partitions: None,
            counting: false,
        })
    }

    /// The relay's producer (for broker reachability probes).
    pub fn producer(&self) -> FutureProducer<SlogContext> {
        self.producer.clone()
    }

    /// Makes a fresh [`Publish`] for each batch.
    fn publisher(&self) -> impl Fn() -> Publish + Send + 'static {
        let producer = self.producer.clone();
        let prefix = self.config.topic_prefix.clone();
        let logger = self.logger.clone();
        move || -> Publish {
            let (producer, prefix, logger) = (producer.clone(), prefix.clone(), logger.clone());
            Box::new(move |records| Box::pin(publish(producer, prefix, records, logger)))
        }
    }

    /// Updates `outbox_pending` and the oldest row's age, also while a batch waits for the
    /// broker.
    fn refresh_pending(&mut self, ctx: &mut Context<Self>) {
        if self.counting {
            return;
        }
        self.counting = true;
        let store = self.store.clone();
        ctx.spawn(
            async move { store.pending().await }
                .into_actor(self)
                .map(|pending, act, _| {
                    act.counting = false;
                    if let Ok(pending) = pending {
                        pending.record();
                    }
                }),
        );
    }

    /// Runs one batch unless one is in flight or held (see [`Self::gathering`]); chains
    /// another while batches come back full or writes woke the relay meanwhile.
    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.held {
            self.again = true;
            return;
        }
        if let Some(wait) = self.gathering() {
            self.held = true;
            ctx.run_later(wait, |act, ctx| {
                act.held = false;
                act.run_batch(ctx);
            });
            return;
        }
        self.busy = true;
        self.again = false;
        let started = Instant::now();
        let woken = std::mem::take(&mut self.woken);
        let store = self.store.clone();
        let known = self.partitions.clone();
        let topics = self.topics_setup();
        let topics_for_reconcile = (
            self.config.brokers.clone(),
            self.config.topic_prefix.clone(),
        );
        let limit = self.config.batch_size;
        let publish = self.publisher()();
        let logger = self.logger.clone();
        let work = async move {
            let partitions = match known {
                Some(partitions) => partitions,
                // Publishing to a topic that does not exist yet would park records until they
                // time out: wait for the topics (and learn their partitions) first.
                None => match topics.ensure(&logger).await {
                    Ok(partitions) => {
                        match reconcile(&topics_for_reconcile, &store, &partitions, &logger).await {
                            Ok(()) => partitions,
                            Err(e) => {
                                warn!(logger, "cannot compare the outbox with the topics yet, outbox waits"; "error" => format!("{e:#}"));
                                return (
                                    None,
                                    Ok(BatchOutcome::Done {
                                        claimed: 0,
                                        published: 0,
                                    }),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        warn!(logger, "broker not ready, outbox waits"; "error" => format!("{e:#}"));
                        return (
                            None,
                            Ok(BatchOutcome::Done {
                                claimed: 0,
                                published: 0,
                            }),
                        );
                    }
                },
            };
            let outcome = store.relay_batch(limit, partitions.clone(), publish).await;
            (Some(partitions), outcome)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(partitions, outcome), act, ctx| {
                    act.busy = false;
                    if act.partitions.is_none() {
                        act.partitions = partitions;
                    }
                    match outcome {
                        Ok(BatchOutcome::Done { claimed, published }) => {
                            if claimed > 0 {
                                debug!(act.logger, "outbox batch"; "claimed" => claimed, "published" => published);
                            }
                            let full = claimed as i64 == act.config.batch_size && published == claimed;
                            act.last = Some(LastBatch {
                                started,
                                rows: claimed,
                                full,
                            });
                            if full || act.again {
                                act.run_batch(ctx);
                            }
                        }
                        Ok(BatchOutcome::Busy) => {
                            OUTBOX_RELAY_BUSY.inc();
                            if woken || act.again {
                                act.woken = true;
                                ctx.run_later(BUSY_RETRY, |act, ctx| act.run_batch(ctx));
                            }
                        }
                        Err(e) => error!(act.logger, "outbox batch failed"; "error" => format!("{e:#}")),
                    }
                }),
        );
    }

    /// How long the next batch must wait: under load (the last batch claimed at least
    /// [`GATHER_ROWS`], and not a full batch, which means a backlog to send at once) until
    /// [`RelayConfig::gather`] after the last one started.
    fn gathering(&self) -> Option<Duration> {
        let last = self
            .last
            .filter(|last| last.rows >= GATHER_ROWS && !last.full)?;
        Some(self.config.gather.saturating_sub(last.started.elapsed())).filter(|w| !w.is_zero())
    }

    /// What [`TopicSetup::ensure`] needs, detached from the actor.
    fn topics_setup(&self) -> TopicSetup {
        TopicSetup {
            brokers: self.config.brokers.clone(),
            prefix: self.config.topic_prefix.clone(),
            topics: self.config.topics.clone(),
            layout: self.config.layout,
            producer: self.producer.clone(),
        }
    }
}

/// How many records at the end of each partition a starting relay reads at least, to learn the
/// highest number of each stream (a record retried after later ones may sit a little before
/// the end).
const RECONCILE_TAIL: i64 = 1000;

/// Reads the tail of every partition (from a little before the oldest pending row was written,
/// and at least the last [`RECONCILE_TAIL`] records) and reconciles the outbox with it.
async fn reconcile(
    (brokers, prefix): &(kafka::Brokers, String),
    store: &Arc<dyn OutboxStore>,
    partitions: &PartitionCounts,
    logger: &Logger,
) -> anyhow::Result<()> {
    let pending = store.pending().await?;
    // Records are stamped with the time they were produced, which is after their row was
    // written; the margin covers clocks that disagree a little.
    let since = (pending.rows > 0).then(|| {
        let written = std::time::SystemTime::now()
            .checked_sub(pending.oldest_age + Duration::from_secs(300))
            .unwrap_or(std::time::UNIX_EPOCH);
        written
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    let (brokers, prefix, partitions) = (brokers.clone(), prefix.clone(), partitions.clone());
    let published =
        tokio::task::spawn_blocking(move || read_tails(&brokers, &prefix, &partitions, since))
            .await??;
    match store.reconcile(published).await? {
        Some(done) if done != Reconciled::default() => {
            warn!(logger, "outbox reconciled with the topics (a database restored from an older backup?)";
                "sequences_raised" => done.raised, "published_rows_removed" => done.removed);
        }
        _ => {}
    }
    Ok(())
}

/// The stamps and values of the records at the end of every partition (see [`reconcile`]).
fn read_tails(
    brokers: &kafka::Brokers,
    prefix: &str,
    partitions: &PartitionCounts,
    since_ms: Option<i64>,
) -> anyhow::Result<Published> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = kafka::client_config(brokers, "recsys-outbox-reconcile")
        .set("group.id", "recsys-outbox-reconcile")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut published = Published::default();
    let mut starts = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (logical, &count) in partitions.iter() {
        let topic = format!("{prefix}{logical}");
        let mut by_time = TopicPartitionList::new();
        for partition in 0..count {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            if high > low {
                ends.insert((topic.clone(), partition), high);
                by_time.add_partition_offset(
                    &topic,
                    partition,
                    Offset::Offset(since_ms.unwrap_or(i64::MAX)),
                )?;
                starts.add_partition_offset(
                    &topic,
                    partition,
                    Offset::Offset((high - RECONCILE_TAIL).max(low)),
                )?;
            }
        }
        if since_ms.is_some() && by_time.count() > 0 {
            let found = consumer.offsets_for_times(by_time, timeout)?;
            for element in found.elements() {
                if let (Offset::Offset(at), Some(start)) = (
                    element.offset(),
                    starts.find_partition(element.topic(), element.partition()),
                ) {
                    if let Offset::Offset(current) = start.offset() {
                        if at < current {
                            starts.set_partition_offset(
                                element.topic(),
                                element.partition(),
                                Offset::Offset(at),
                            )?;
                        }
                    }
                }
            }
        }
    }
    if ends.is_empty() {
        return Ok(published);
    }
    consumer.assign(&starts)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading the topics' tails took over 60 s"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let key = (message.topic().to_string(), message.partition());
        if let Some(logical) = message.topic().strip_prefix(prefix) {
            if let Ok((stream, seq)) = sequence::read(message.headers()) {
                let last = published
                    .last_seq
                    .entry((logical.to_string(), stream))
                    .or_insert(0);
                *last = (*last).max(seq);
            }
            if since_ms.is_some() {
                if let Some(Ok(value)) = message.payload_view::<str>() {
                    published
                        .payloads
                        .entry(logical.to_string())
                        .or_default()
                        .insert(value.to_string());
                }
            }
        }
        if ends
            .get(&key)
            .is_some_and(|&end| message.offset() + 1 >= end)
        {
            ends.remove(&key);
        }
    }
    Ok(published)
}

/// Creates the relay's topics when missing and reads their partition counts.
struct TopicSetup {
    brokers: kafka::Brokers,
    prefix: String,
    /// Logical names.
    topics: Vec<String>,
    layout: kafka::TopicLayout,
    producer: FutureProducer<SlogContext>,
}

impl TopicSetup {
    async fn ensure(self, logger: &Logger) -> anyhow::Result<PartitionCounts> {
        let physical: Vec<String> = self
            .topics
            .iter()
            .map(|t| format!("{}{t}", self.prefix))
            .collect();
        let timeout = Duration::from_secs(5);
        kafka::ensure_topics(&self.brokers, &physical, self.layout, timeout, logger).await?;
        let counts = kafka::partition_counts(self.producer, physical, timeout).await?;
        Ok(Arc::new(self.topics.into_iter().zip(counts).collect()))
    }
}

/// How often `outbox_pending` and the oldest row's age are measured: as often as Prometheus
/// scrapes in the shipped configurations. Counting is a scan of the outbox, dead rows
/// included: too costly to run at every poll (docs/benchmarks.md, "Figures behind the settings").
const PENDING_REFRESH: Duration = Duration::from_secs(2);

/// How long enqueueing one record may wait for room in the producer's local queue (full only
/// when the broker has been away for a while); the rest of the batch then waits in the outbox.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// Produces `records`, each stream in sequence order, each to its stream's partition with its
/// stamp in the headers; answers the ids the broker acknowledged.
///
/// Every record is enqueued first and the acknowledgements are awaited after, so a batch costs
/// about one broker round trip, not one per record. If a record cannot be enqueued, none after
/// it is (a later record of the same key must not overtake it); they stay in the outbox.
async fn publish(
    producer: FutureProducer<SlogContext>,
    prefix: String,
    mut records: Vec<OutboxRecord>,
    logger: Logger,
) -> Vec<i64> {
    // A row stamped in an earlier batch may have a higher id than one stamped later (it
    // committed late): send each stream in number order, so consumers see no gap.
    records.sort_by(|a, b| (&a.topic, a.stream, a.seq).cmp(&(&b.topic, b.stream, b.seq)));
    let mut deliveries = Vec::with_capacity(records.len());
    'records: for record in &records {
        let topic = format!("{prefix}{}", record.topic);
        let deadline = Instant::now() + ENQUEUE_TIMEOUT;
        let delivery = loop {
            let kafka_record = FutureRecord::to(&topic)
                .partition(record.stream)
                .key(&record.key)
                .payload(&record.payload)
                .headers(sequence::headers(record.stream, record.seq));
            match producer.send_result(kafka_record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    // Room appears as the broker acknowledges what is queued.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    KAFKA_MESSAGES_PRODUCED
                        .with_label_values(&[&topic, "error"])
                        .inc();
                    warn!(logger, "enqueueing failed, the rest of the batch waits"; "topic" => &topic, "outbox_id" => record.id, "error" => %e);
                    break 'records;
                }
            }
        };
        deliveries.push((record.id, record.written_at, topic, delivery));
    }
    let mut acknowledged = Vec::with_capacity(records.len());
    for (id, written_at, topic, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(delivery)) => {
                if let Ok(took) = written_at.elapsed() {
                    OUTBOX_DELIVERY.observe(took.as_secs_f64());
                }
                KAFKA_MESSAGES_PRODUCED
                    .with_label_values(&[&topic, "ok"])
                    .inc();
                debug!(logger, "published"; "topic" => &topic, "partition" => delivery.partition, "offset" => delivery.offset, "outbox_id" => id);
                acknowledged.push(id);
            }
            Ok(Err((e, _))) => {
                KAFKA_MESSAGES_PRODUCED
                    .with_label_values(&[&topic, "error"])
                    .inc();
                warn!(logger, "delivery failed, will retry"; "topic" => &topic, "outbox_id" => id, "error" => %e);
            }
            Err(_canceled) => {
                KAFKA_MESSAGES_PRODUCED
                    .with_label_values(&[&topic, "error"])
                    .inc();
                warn!(logger, "delivery canceled, will retry"; "topic" => &topic, "outbox_id" => id);
            }
        }
    }
    acknowledged
}

impl Actor for OutboxRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.logger, "outbox relay started"; "brokers" => self.config.brokers.describe(), "prefix" => &self.config.topic_prefix);
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.run_batch(ctx));
        ctx.run_interval(PENDING_REFRESH, |act, ctx| act.refresh_pending(ctx));
        self.refresh_pending(ctx);
        self.run_batch(ctx);
    }
}

impl Supervised for OutboxRelay {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        warn!(self.logger, "outbox relay restarting");
        self.busy = false;
        self.held = false;
        self.counting = false;
        self.partitions = None;
    }
}

/// A row was just committed: publish without waiting for the next poll.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Publish everything pending (until `deadline`), then flush the producer. Answers the rows
/// still pending. Sent once on shutdown.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "anyhow::Result<i64>")]
pub struct Drain {
    /// Give up waiting for the broker after this long.
    pub deadline: Duration,
}

/// Starts a batch now.
impl Handler<Wake> for OutboxRelay {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.woken = true;
        self.run_batch(ctx);
    }
}

/// Drains the outbox, bounded by the deadline.
impl Handler<Drain> for OutboxRelay {
    type Result = ResponseFuture<anyhow::Result<i64>>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let producer = self.producer.clone();
        let make_publish = self.publisher();
        let limit = self.config.batch_size;
        let logger = self.logger.clone();
        let (known, topics) = (self.partitions.clone(), self.topics_setup());
        Box::pin(async move {
            let until = Instant::now() + msg.deadline;
            let partitions = match known {
                Some(partitions) => Some(partitions),
                None => tokio::time::timeout_at(until.into(), topics.ensure(&logger))
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            while let Some(partitions) = partitions.as_ref().filter(|_| Instant::now() < until) {
                let batch = store.relay_batch(limit, partitions.clone(), make_publish());
                let outcome = tokio::time::timeout_at(until.into(), batch).await;
                match outcome {
                    Ok(Ok(BatchOutcome::Done { claimed: 0, .. })) => break,
                    // A batch started before the drain (or by another relay) holds the outbox:
                    // poll until it is done.
                    Ok(Ok(BatchOutcome::Busy)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        error!(logger, "outbox drain failed"; "error" => format!("{e:#}"));
                        break;
                    }
                    Err(_) => break,
                }
            }
            let remaining = until.saturating_duration_since(Instant::now());
            if let Err(e) = producer.flush(remaining.max(Duration::from_millis(100))) {
                warn!(logger, "producer flush incomplete"; "error" => %e);
            }
            let pending = store.pending().await?;
            pending.record();
            Ok(pending.rows)
        })
    }
}

crate::observed_handlers!(OutboxRelay => Wake, Drain);
crate::restart_on_fail!(OutboxRelay);
