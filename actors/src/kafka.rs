//! librdkafka plumbing shared by every Kafka-facing actor: client settings, the idempotent
//! producer, topic creation and a reachability probe. librdkafka's own log lines go to slog.
//!
//! Every client (producer, consumers, admin, probe) is made from one [`Brokers`]: the bootstrap
//! list and the librdkafka properties the operator passed through (TLS, SASL and anything
//! else librdkafka takes), so that one setting secures them all.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use slog::{error, info, warn, Logger};

/// A librdkafka client context that forwards librdkafka's logs and errors to slog.
#[derive(Clone)]
pub struct SlogContext {
    logger: Logger,
}

impl SlogContext {
    /// A context logging to `logger`.
    pub fn new(logger: Logger) -> Self {
        Self { logger }
    }
}

impl ClientContext for SlogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(self.logger, "librdkafka"; "facility" => fac, "message" => log_message)
            }
            RDKafkaLogLevel::Warning => {
                warn!(self.logger, "librdkafka"; "facility" => fac, "message" => log_message)
            }
            _ => info!(self.logger, "librdkafka"; "facility" => fac, "message" => log_message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(self.logger, "kafka client error"; "error" => %error, "reason" => reason);
    }
}

/// The brokers and how to reach them: the bootstrap list and librdkafka properties applied to
/// every client (e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
/// `sasl.username`, `sasl.password`, `ssl.ca.location`).
///
/// Property values may be secrets: `Debug` and [`Brokers::describe`] show their names only.
#[derive(Clone)]
pub struct Brokers {
    bootstrap: String,
    properties: Arc<[(String, String)]>,
}

impl Brokers {
    /// The brokers at `bootstrap` (comma separated), reached with librdkafka's defaults.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            properties: Arc::new([]),
        }
    }

    /// The same brokers, every client also given `properties` (which win over recsys's own
    /// settings of the same name).
    pub fn with_properties(self, properties: Vec<(String, String)>) -> Self {
        Self {
            properties: properties.into(),
            ..self
        }
    }

    /// The bootstrap list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The bootstrap list and the names (never the values) of the extra properties, for logs.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        if names.is_empty() {
            self.bootstrap.clone()
        } else {
            format!("{} ({})", self.bootstrap, names.join(", "))
        }
    }
}

impl fmt::Debug for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Brokers({})", self.describe())
    }
}

/// Base settings of every client: the bootstrap list, quick reconnects after a broker outage,
/// then the operator's properties.
pub fn client_config(brokers: &Brokers, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers.bootstrap)
        .set("client.id", client_id)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log.connection.close", "false")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in brokers.properties.iter() {
        config.set(key, value);
    }
    config
}

/// The idempotent producer (`enable.idempotence=true`, `acks=all`): retries never duplicate or
/// reorder records of one partition. A record that cannot be delivered within `delivery_timeout`
/// fails (and is retried by its caller).
pub fn idempotent_producer(
    brokers: &Brokers,
    client_id: &str,
    delivery_timeout: Duration,
    logger: Logger,
) -> KafkaResult<FutureProducer<SlogContext>> {
    client_config(brokers, client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        // After a broker comes back from a long pause, librdkafka can lose track of a
        // partition's leader ("new leader-1 not found in cache") and hold its records until the
        // next full metadata refresh: every 10 s, not librdkafka's 5 minutes.
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create_with_context(SlogContext::new(logger))
}

/// A plain (non-idempotent, never producing) client for [`probe`]: it registers no producer id
/// with the broker.
pub fn probe_client(brokers: &Brokers, logger: Logger) -> KafkaResult<FutureProducer<SlogContext>> {
    client_config(brokers, "recsys-probe").create_with_context(SlogContext::new(logger))
}

/// How the topics a service needs are created when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    /// Partitions per topic.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication: i32,
    /// The topics' `min.insync.replicas`: how many replicas hold a record before an `acks=all`
    /// producer is told it is written.
    pub min_insync_replicas: i32,
    /// The topics' `retention.ms` (-1: records are kept for ever).
    pub retention_ms: i64,
}

/// Creates each of `topics` with `layout` unless it already exists.
pub async fn ensure_topics(
    brokers: &Brokers,
    topics: &[String],
    layout: TopicLayout,
    timeout: Duration,
    logger: &Logger,
) -> KafkaResult<()> {
    let admin: AdminClient<SlogContext> = client_config(brokers, "recsys-admin")
        .create_with_context(SlogContext::new(logger.clone()))?;
    let min_insync = layout.min_insync_replicas.to_string();
    let retention = layout.retention_ms.to_string();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                layout.partitions,
                TopicReplication::Fixed(layout.replication),
            )
            .set("min.insync.replicas", &min_insync)
            .set("retention.ms", &retention)
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(topic) => {
                info!(logger, "topic created"; "topic" => topic, "partitions" => layout.partitions, "replication" => layout.replication, "min_insync_replicas" => layout.min_insync_replicas)
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                warn!(logger, "topic creation failed"; "topic" => &topic, "error" => %code);
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// The number of partitions of each of `topics` (in the same order), from the cluster's
/// metadata. Fails if a topic is unknown or has no partitions.
///
/// Blocking inside librdkafka, so it runs on tokio's blocking pool.
pub async fn partition_counts(
    producer: FutureProducer<SlogContext>,
    topics: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .map(|topic| {
                let metadata = producer.client().fetch_metadata(Some(topic), timeout)?;
                let count = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len());
                anyhow::ensure!(count > 0, "topic {topic} has no partitions in the metadata");
                Ok(i32::try_from(count)?)
            })
            .collect()
    })
    .await?
}

/// Asks the cluster for its metadata: `Ok` when a broker answered within `timeout`.
///
/// Blocking inside librdkafka, so it runs on tokio's blocking pool.
pub async fn probe(producer: FutureProducer<SlogContext>, timeout: Duration) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
