//! The contract between the runtime and a hosted service: what the runtime hands a service when
//! it starts it ([`Host`]), and what a started service hands back ([`Hosted`]), so that each
//! service folder starts its own actors and registers its own routes, and [`crate::startup`]
//! only orders start and shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix::Arbiter;
use actix_web::web;
use futures_util::future::BoxFuture;
use recsys_actors::kafka_consumer::{
    ApplyBatch, ConsumerConfig, KafkaConsumer, Leave, LoadPositions,
};
use recsys_actors::observe::{Observed, ObservedAddr, ObservedRecipient};
use recsys_actors::outbox_relay::Wake;
use recsys_actors::supervision::start_supervised;
use recsys_schema::topics;
use slog::{info, o, warn, Logger};

use crate::auth::JwtKeys;
use crate::config::{Service, Settings};
use crate::consumption::{self, Fact, Snapshots};
use crate::db::Pool;
use crate::openapi::Api;
use recsys_actors::cache::CacheActor;
use recsys_actors::kafka::Brokers;

/// What every service starts with.
pub struct Host<'a> {
    pub settings: &'a Settings,
    /// The Kafka brokers and the properties every client gets.
    pub brokers: Brokers,
    pub pool: Pool,
    /// Signs and checks tokens; one key for every service of the process.
    pub keys: JwtKeys,
    /// Wakes the outbox relay after a commit; `None` when no relay runs in this process.
    pub wake: Option<ObservedRecipient<Wake>>,
    pub logger: Logger,
}

impl Host<'_> {
    /// A cache actor on the configured Redis (`REDIS_ADDRESS`, `REDIS_CA_FILE`,
    /// `REDIS_TIMEOUT_MS`), logging to `logger`.
    pub fn cache(&self, logger: Logger) -> anyhow::Result<CacheActor> {
        let settings = self.settings;
        let root_ca = match &settings.redis_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("REDIS_CA_FILE {}: {e}", path.display()))?,
            ),
            None => None,
        };
        CacheActor::new(
            &settings.redis_address,
            root_ca,
            Duration::from_millis(settings.redis_timeout_ms.max(1)),
            logger,
        )
    }

    /// How long a request handler waits for an actor's answer.
    pub fn request_timeout(&self) -> Duration {
        self.settings.request_timeout()
    }

    /// The group `<prefix><service>` a consuming service reads both topics in.
    pub fn group(&self, service: &str) -> String {
        format!("{}{service}", self.settings.kafka_topic_prefix)
    }

    /// Starts the generic consumer of both topics for `service` in `group`, feeding `sink`, on
    /// an arbiter of its own (its poll loop never shares a thread with the sink).
    pub fn start_consumer<S>(
        &self,
        service: &'static str,
        group: String,
        snapshots: Snapshots,
        sink: ObservedAddr<S>,
        logger: &Logger,
    ) -> ObservedAddr<KafkaConsumer<Fact>>
    where
        S: actix::Actor<Context = actix::Context<S>>
            + actix::Handler<Observed<ApplyBatch<Fact>>>
            + actix::Handler<Observed<LoadPositions>>,
    {
        let settings = self.settings;
        let config = ConsumerConfig {
            service,
            brokers: self.brokers.clone(),
            group,
            topics: vec![
                topics::prefixed(&settings.kafka_topic_prefix, topics::USER_UPDATES),
                topics::prefixed(&settings.kafka_topic_prefix, topics::PRODUCT_UPDATES),
            ],
            layout: settings.topic_layout(),
            max_records: settings.consumer_max_batch.max(1),
            max_wait: Duration::from_millis(settings.consumer_max_wait_ms),
            session_timeout: Duration::from_millis(settings.kafka_session_timeout_ms),
            fetch_wait: Duration::from_millis(settings.kafka_fetch_wait_ms),
            instance_id: settings.kafka_group_instance_id.clone(),
        };
        start_supervised(
            &Arbiter::new().handle(),
            service,
            settings.actor_mailbox_limit,
            &self.logger,
            KafkaConsumer::new(
                config,
                Arc::new(move |bytes: &[u8]| consumption::decode_fact(bytes, snapshots)),
                sink.recipient(),
                sink.recipient(),
                logger.new(o!("actor" => "consumer")),
            ),
        )
    }
}

/// The ports this runtime's services listen on, filled in as each server binds (a port of 0
/// is known only then), so that a page one service serves can point at another service of the
/// same runtime. Every server's handlers can read it (`web::Data<Listening>`).
#[derive(Clone, Default)]
pub struct Listening(Arc<RwLock<BTreeMap<Service, u16>>>);

impl Listening {
    /// Records that `service` listens on `port`.
    pub fn insert(&self, service: Service, port: u16) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service, port);
    }

    /// The port `service` listens on, when this runtime hosts it.
    pub fn port(&self, service: Service) -> Option<u16> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&service)
            .copied()
    }
}

/// A started service, as the runtime drives it.
pub trait Hosted: Send + Sync + 'static {
    /// Registers the service's routes in `api` (which documents them) and the data its
    /// handlers read in `cfg`. Runs once per HTTP worker.
    fn configure(&self, cfg: &mut web::ServiceConfig, api: &mut Api);

    /// What must stop before the outbox drains at shutdown: a consuming service's consumer
    /// leaves its group, so that a restarted runtime gets the partitions at once.
    fn leave(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// `consumer` leaves its group; answers once the broker has confirmed (or the consumer is gone).
pub fn leave_group(
    consumer: &ObservedAddr<KafkaConsumer<Fact>>,
    logger: &Logger,
) -> BoxFuture<'static, ()> {
    let (consumer, logger) = (consumer.clone(), logger.clone());
    Box::pin(async move {
        match consumer.send(Leave).await {
            Ok(()) => info!(logger, "consumer left its group"),
            Err(e) => warn!(logger, "consumer unavailable at exit"; "error" => %e),
        }
    })
}
