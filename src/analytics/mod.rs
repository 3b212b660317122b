//! The analytics service (:8083): exact product-popularity and user-activity statistics.
//!
//! - [`Analytics`]: starts the service (aggregation, queries, the consumer) and registers its
//!   routes.
//! - [`http`]: the routes (admin token required: statistics about users are private).
//! - [`page`]: `GET /`, the admin's page over those routes (its files embedded in the binary).
//! - [`aggregation`]: [`aggregation::AggregationActor`], the consumer sink: folds each batch in
//!   memory and upserts once per batch, with positions and seen publication sequences in the same
//!   transaction.
//! - [`error`]: [`error::AnalyticsError`], what can go wrong answering a query (mapped to HTTP in
//!   `http.rs`).
//! - [`fold`]: [`fold::Fold`], one batch folded into deltas (pure; unit-tested).
//! - [`query`]: [`query::AnalyticsQueries`], the read side.
//! - [`store`]: the SQL.
//!
//! The generic Kafka consumer actor feeds it from both topics (group `analytics`).

pub mod aggregation;
pub mod error;
pub mod fold;
pub mod http;
pub mod page;
pub mod query;
pub mod store;

use std::time::Duration;

use actix::Arbiter;
use actix_web::web;
use futures_util::future::BoxFuture;
use recsys_actors::kafka_consumer::KafkaConsumer;
use recsys_actors::observe::ObservedAddr;
use recsys_actors::supervision::start_supervised;
use slog::{o, Logger};

use crate::consumption::{Fact, Snapshots};
use crate::host::{self, Host, Hosted};
use crate::openapi::Api;
use aggregation::AggregationActor;
use query::AnalyticsQueries;

/// The `service` label of the analytics service's actors and metrics, and its group's name.
pub const NAME: &str = "analytics";

/// The running analytics service.
#[derive(Clone)]
pub struct Analytics {
    /// Answers statistics queries.
    pub queries: ObservedAddr<AnalyticsQueries>,
    /// Folds batches into the statistics; sink of the consumer.
    pub aggregation: ObservedAddr<AggregationActor>,
    /// Reads both topics (group `<prefix>analytics`).
    pub consumer: ObservedAddr<KafkaConsumer<Fact>>,
    timeout: Duration,
    page: page::PageSettings,
    logger: Logger,
}

impl Analytics {
    /// Starts the aggregation, query and consumer actors under supervisors.
    pub fn start(host: &Host<'_>) -> Self {
        aggregation::init_metrics();
        let logger = host.logger.new(o!("service" => NAME));
        let limit = host.settings.actor_mailbox_limit;
        let arbiter = Arbiter::new().handle();
        let group = host.group(NAME);
        let aggregation = start_supervised(
            &arbiter,
            NAME,
            limit,
            &host.logger,
            AggregationActor::new(
                host.pool.clone(),
                group.clone(),
                logger.new(o!("actor" => "aggregation")),
            ),
        );
        let queries = start_supervised(
            &arbiter,
            NAME,
            limit,
            &host.logger,
            AnalyticsQueries::new(host.pool.clone()),
        );
        let consumer =
            host.start_consumer(NAME, group, Snapshots::Drop, aggregation.clone(), &logger);
        Self {
            queries,
            aggregation,
            consumer,
            timeout: host.request_timeout(),
            page: page::PageSettings::new(host.settings),
            logger,
        }
    }
}

impl Hosted for Analytics {
    fn configure(&self, cfg: &mut web::ServiceConfig, api: &mut Api) {
        cfg.app_data(web::Data::new(self.queries.with_timeout(self.timeout)));
        cfg.app_data(web::Data::new(self.page.clone()));
        http::routes(api);
        page::routes(api);
    }

    fn leave(&self) -> BoxFuture<'static, ()> {
        host::leave_group(&self.consumer, &self.logger)
    }
}
