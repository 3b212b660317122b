//! The recommendations service (:8082): ranks products by what users do.
//!
//! - [`Recommendations`]: starts the service (cache, ranking, queries, the consumer) and
//!   registers its routes.
//! - [`http`]: the routes.
//! - [`error`]: [`error::RecommendationsError`], what can go wrong answering a query (mapped to
//!   HTTP in `http.rs`).
//! - [`fold`]: [`fold::Fold`], one batch folded into score deltas, counters and catalog
//!   changes (pure; unit-tested).
//! - [`micro`]: the per-worker micro-cache of answers in front of the query actor.
//! - [`query`]: [`query::RecommendationsActor`], answering queries through the cache actor.
//! - [`ranking`]: [`ranking::RankingActor`], the popularity-ranking actor and consumer sink.
//! - [`score`]: the ranking formula (weights, forward decay).
//! - [`store`]: the SQL.
//!
//! The generic Kafka consumer actor feeds the ranking actor from `user-updates` and
//! `product-updates` (group `recommendations`); the generic cache actor fronts Redis.

pub mod error;
pub mod fold;
pub mod http;
pub mod micro;
pub mod query;
pub mod ranking;
pub mod score;
pub mod store;

use std::time::Duration;

use actix::Arbiter;
use actix_web::web;
use anyhow::Context as _;
use futures_util::future::BoxFuture;
use recsys_actors::cache::CacheActor;
use recsys_actors::kafka_consumer::KafkaConsumer;
use recsys_actors::observe::ObservedAddr;
use recsys_actors::supervision::start_supervised;
use slog::{o, Logger};

use crate::consumption::{Fact, Snapshots};
use crate::host::{self, Host, Hosted};
use crate::openapi::Api;
use micro::{MicroCache, Refreshes};
use query::RecommendationsActor;
use ranking::RankingActor;
use score::{HalfLife, HalfLives, Weights};

/// The `service` label of the recommendations service's actors and metrics, and its group's
/// name.
pub const NAME: &str = "recommendations";

/// The running recommendations service.
#[derive(Clone)]
pub struct Recommendations {
    /// Answers queries.
    pub query: ObservedAddr<RecommendationsActor>,
    /// Owns the scores; sink of the consumer.
    pub ranking: ObservedAddr<RankingActor>,
    /// Fronts Redis.
    pub cache: ObservedAddr<CacheActor>,
    /// Reads both topics (group `<prefix>recommendations`).
    pub consumer: ObservedAddr<KafkaConsumer<Fact>>,
    timeout: Duration,
    /// How long a worker's micro-cache keeps an answer.
    micro_ttl: Duration,
    /// The query actor's finished refreshes, which retire the micro-caches' answers.
    refreshes: Refreshes,
    logger: Logger,
}

impl Recommendations {
    /// Starts the cache, ranking, query and consumer actors under supervisors. Fails on
    /// `RANKING_WEIGHTS`, `RANKING_HALF_LIFE` or `RANKING_TRENDING_HALF_LIFE` it cannot read,
    /// or a bad Redis address.
    pub fn start(host: &Host<'_>) -> anyhow::Result<Self> {
        let settings = host.settings;
        let weights: Weights = settings
            .ranking_weights
            .parse()
            .map_err(anyhow::Error::msg)
            .context("RANKING_WEIGHTS")?;
        let half_life = |text: &str, name: &'static str| -> anyhow::Result<Duration> {
            let HalfLife(half_life) = text.parse().map_err(anyhow::Error::msg).context(name)?;
            Ok(half_life)
        };
        let half_lives = HalfLives {
            popular: half_life(&settings.ranking_half_life, "RANKING_HALF_LIFE")?,
            trending: half_life(
                &settings.ranking_trending_half_life,
                "RANKING_TRENDING_HALF_LIFE",
            )?,
        };
        ranking::init_metrics();
        query::init_metrics();
        let logger = host.logger.new(o!("service" => NAME));
        let limit = settings.actor_mailbox_limit;
        let arbiter = Arbiter::new().handle();
        let cache = host.cache(logger.new(o!("actor" => "cache")))?;
        let cache = start_supervised(&arbiter, NAME, limit, &host.logger, cache);
        let group = host.group(NAME);
        let refreshes = Refreshes::default();
        let query = start_supervised(
            &arbiter,
            NAME,
            limit,
            &host.logger,
            RecommendationsActor::new(
                host.pool.clone(),
                cache.clone(),
                settings.redis_key_prefix.clone(),
                (weights, half_lives),
                Duration::from_secs(settings.recommendation_cache_ttl_secs.max(1)),
                refreshes.clone(),
                logger.new(o!("actor" => "query")),
            ),
        );
        let ranking = start_supervised(
            &arbiter,
            NAME,
            limit,
            &host.logger,
            RankingActor::new(
                host.pool.clone(),
                group.clone(),
                weights,
                half_lives,
                query.clone(),
                logger.new(o!("actor" => "ranking")),
            ),
        );
        let consumer = host.start_consumer(NAME, group, Snapshots::Keep, ranking.clone(), &logger);
        Ok(Self {
            query,
            ranking,
            cache,
            consumer,
            timeout: host.request_timeout(),
            micro_ttl: Duration::from_millis(settings.recommendation_local_ttl_ms),
            refreshes,
            logger,
        })
    }
}

impl Hosted for Recommendations {
    fn configure(&self, cfg: &mut web::ServiceConfig, api: &mut Api) {
        cfg.app_data(web::Data::new(self.query.with_timeout(self.timeout)))
            // One micro-cache per worker: configure runs once per worker.
            .app_data(web::Data::new(MicroCache::new(
                self.micro_ttl,
                self.refreshes.clone(),
            )));
        http::routes(api);
    }

    fn leave(&self) -> BoxFuture<'static, ()> {
        host::leave_group(&self.consumer, &self.logger)
    }
}
