//! Wiring: one actix System hosting the chosen services. Starts the supervised actors, binds one
//! HTTP server per service, and shuts everything down in order on SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use recsys_actors::kafka;
use recsys_actors::observe::{Observed, ObservedAddr};
use recsys_actors::outbox_relay::{Drain, OutboxRelay, RelayConfig};
use recsys_actors::supervision::start_supervised;
use recsys_schema::topics;
use slog::{info, o, warn, Logger};

use crate::analytics::aggregation::{self, AggregationActor};
use crate::analytics::query::AnalyticsQueries;
use crate::auth::{self, JwtKeys};
use crate::config::{Service, Settings};
use crate::consumption::{self, Fact, Snapshots};
use crate::db::{self, Pool};
use crate::http::{self, Readiness, ServiceInfo};
use crate::openapi::Api;
use crate::outbox::PgOutbox;
use crate::products::actor::ProductsActor;
use crate::recommendations::micro::MicroCache;
use crate::recommendations::query::{self, RecommendationsActor};
use crate::recommendations::ranking::{self, RankingActor};
use crate::users::actor::{EnsureAdmin, UsersActor};
use crate::{metrics, validate};
use recsys_actors::cache::CacheActor;
use recsys_actors::kafka_consumer::{
    ApplyBatch, ConsumerConfig, KafkaConsumer, Leave, LoadPositions,
};

/// The `service` label of machinery shared by the hosted services (the outbox relay serves
/// both users and products).
pub const RUNTIME: &str = "runtime";

/// Starts the generic consumer of both topics for `service` (group `<prefix><service>`),
/// feeding `sink`, on its own arbiter.
fn start_consumer<S>(
    settings: &Settings,
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
    let config = ConsumerConfig {
        service,
        brokers: settings.kafka_address.clone(),
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
        KafkaConsumer::new(
            config,
            Arc::new(move |bytes: &[u8]| consumption::decode_fact(bytes, snapshots)),
            sink.recipient(),
            sink.recipient(),
            logger.new(o!("actor" => "consumer")),
        ),
    )
}

/// The actors of the analytics service.
#[derive(Clone)]
pub struct AnalyticsActors {
    /// Answers statistics queries.
    pub queries: ObservedAddr<AnalyticsQueries>,
    /// Folds batches into the statistics; sink of the consumer.
    pub aggregation: ObservedAddr<AggregationActor>,
    /// Reads both topics (group `<prefix>analytics`).
    pub consumer: ObservedAddr<KafkaConsumer<Fact>>,
}

impl AnalyticsActors {
    /// Starts the aggregation, query and consumer actors under supervisors.
    fn start(settings: &Settings, pool: &Pool, logger: &Logger) -> Self {
        aggregation::init_metrics();
        let logger = logger.new(o!("service" => "analytics"));
        let arbiter = Arbiter::new().handle();
        let group = format!("{}analytics", settings.kafka_topic_prefix);
        let aggregation = start_supervised(
            &arbiter,
            "analytics",
            settings.actor_mailbox_limit,
            AggregationActor::new(
                pool.clone(),
                group.clone(),
                logger.new(o!("actor" => "aggregation")),
            ),
        );
        let queries = start_supervised(
            &arbiter,
            "analytics",
            settings.actor_mailbox_limit,
            AnalyticsQueries::new(pool.clone()),
        );
        let consumer = start_consumer(
            settings,
            "analytics",
            group,
            Snapshots::Drop,
            aggregation.clone(),
            &logger,
        );
        Self {
            queries,
            aggregation,
            consumer,
        }
    }
}

/// The actors of the recommendations service.
#[derive(Clone)]
pub struct RecommendationsActors {
    /// Answers queries.
    pub query: ObservedAddr<RecommendationsActor>,
    /// Owns the scores; sink of the consumer.
    pub ranking: ObservedAddr<RankingActor>,
    /// Fronts Redis.
    pub cache: ObservedAddr<CacheActor>,
    /// Reads both topics (group `<prefix>recommendations`).
    pub consumer: ObservedAddr<KafkaConsumer<Fact>>,
}

impl RecommendationsActors {
    /// Starts the cache, ranking, query and consumer actors under supervisors.
    fn start(settings: &Settings, pool: &Pool, logger: &Logger) -> anyhow::Result<Self> {
        ranking::init_metrics();
        query::init_metrics();
        let logger = logger.new(o!("service" => "recommendations"));
        let arbiter = Arbiter::new().handle();
        let cache = CacheActor::new(
            &settings.redis_address,
            Duration::from_millis(settings.redis_timeout_ms.max(1)),
            logger.new(o!("actor" => "cache")),
        )?;
        let cache = start_supervised(
            &arbiter,
            "recommendations",
            settings.actor_mailbox_limit,
            cache,
        );
        let group = format!("{}recommendations", settings.kafka_topic_prefix);
        let ranking = start_supervised(
            &arbiter,
            "recommendations",
            settings.actor_mailbox_limit,
            RankingActor::new(
                pool.clone(),
                group.clone(),
                settings.ranking_weights,
                settings.ranking_half_life.0,
                cache.clone(),
                query::generation_key(&settings.redis_key_prefix),
                logger.new(o!("actor" => "ranking")),
            ),
        );
        let query = start_supervised(
            &arbiter,
            "recommendations",
            settings.actor_mailbox_limit,
            RecommendationsActor::new(
                pool.clone(),
                cache.clone(),
                settings.redis_key_prefix.clone(),
                settings.ranking_weights,
                settings.ranking_half_life.0,
                Duration::from_secs(settings.recommendation_cache_ttl_secs.max(1)),
                logger.new(o!("actor" => "query")),
            ),
        );
        let consumer = start_consumer(
            settings,
            "recommendations",
            group,
            Snapshots::Keep,
            ranking.clone(),
            &logger,
        );
        Ok(Self {
            query,
            ranking,
            cache,
            consumer,
        })
    }
}

/// A running runtime: its servers, its actors, and how to stop them.
pub struct Application {
    ports: BTreeMap<Service, u16>,
    servers: Vec<(Service, ServerHandle)>,
    running: Vec<Server>,
    relay: Option<ObservedAddr<OutboxRelay>>,
    users: Option<ObservedAddr<UsersActor>>,
    products: Option<ObservedAddr<ProductsActor>>,
    recommendations: Option<RecommendationsActors>,
    analytics: Option<AnalyticsActors>,
    pool: Pool,
    logger: Logger,
}

impl Application {
    /// Migrates the database, starts the actors of `services` and binds their HTTP servers
    /// (port 0 picks a free port; see [`Application::port`]). Call inside an actix System.
    pub async fn build(
        settings: Settings,
        services: &[Service],
        logger: Logger,
    ) -> anyhow::Result<Self> {
        metrics::init();
        let url = settings.postgres.url();
        let applied = db::migrate(&url).await?;
        info!(logger, "database migrated"; "applied" => applied.len());
        let pool = db::pool(&settings.postgres);

        let keys = match &settings.jwt_secret {
            Some(secret) => JwtKeys::configured(secret)?,
            None => {
                warn!(logger, "JWT_SECRET is not set: using a random key; every token dies with this process. Set JWT_SECRET in any real deployment!");
                JwtKeys::new(&auth::random_secret())?
            }
        };

        let relay = if services.iter().any(|s| s.writes_events()) {
            let config = RelayConfig {
                brokers: settings.kafka_address.clone(),
                topic_prefix: settings.kafka_topic_prefix.clone(),
                topics: vec![
                    topics::USER_UPDATES.to_string(),
                    topics::PRODUCT_UPDATES.to_string(),
                ],
                layout: settings.topic_layout(),
                batch_size: 500,
                poll_interval: settings.outbox_poll_interval(),
                delivery_timeout: Duration::from_millis(settings.kafka_delivery_timeout_ms),
            };
            let relay_logger = logger.new(o!("actor" => "outbox_relay"));
            let relay = OutboxRelay::new(
                config,
                Arc::new(PgOutbox::new(
                    pool.clone(),
                    settings.outbox_vacuum_rows,
                    relay_logger.clone(),
                )),
                relay_logger,
            )?;
            Some(start_supervised(
                &Arbiter::new().handle(),
                RUNTIME,
                settings.actor_mailbox_limit,
                relay,
            ))
        } else {
            None
        };
        let wake = relay.as_ref().map(|r| r.recipient());

        let users = services.contains(&Service::Users).then(|| {
            start_supervised(
                &Arbiter::new().handle(),
                "users",
                settings.actor_mailbox_limit,
                UsersActor::new(
                    pool.clone(),
                    keys.clone(),
                    wake.clone(),
                    crate::users::hasher::start("users", settings.actor_mailbox_limit),
                    settings.login_limits(),
                    recsys_actors::group_commit::Limits {
                        max_in_flight: settings.activity_writers,
                        max_batch: settings.activity_max_batch,
                    },
                    logger.new(o!("service" => "users")),
                ),
            )
        });
        let products = services.contains(&Service::Products).then(|| {
            start_supervised(
                &Arbiter::new().handle(),
                "products",
                settings.actor_mailbox_limit,
                ProductsActor::new(
                    pool.clone(),
                    wake.clone(),
                    logger.new(o!("service" => "products")),
                ),
            )
        });

        let recommendations = if services.contains(&Service::Recommendations) {
            Some(RecommendationsActors::start(&settings, &pool, &logger)?)
        } else {
            None
        };

        let analytics = services
            .contains(&Service::Analytics)
            .then(|| AnalyticsActors::start(&settings, &pool, &logger));

        if let (Some(users), Some(email), Some(password)) =
            (&users, &settings.admin_email, &settings.admin_password)
        {
            let email = validate::email(email).context("ADMIN_EMAIL is not a valid email")?;
            let password =
                validate::password(password.expose()).context("ADMIN_PASSWORD is invalid")?;
            let id = users
                .send(EnsureAdmin { email, password })
                .await?
                .map_err(|e| anyhow::anyhow!("ensuring the admin account: {e}"))?;
            info!(logger, "admin account ready"; "user_id" => %id);
        }

        let readiness = Readiness {
            pool: pool.clone(),
            kafka: kafka::probe_client(
                &settings.kafka_address,
                logger.new(o!("client" => "readiness")),
            )?,
        };

        let mut ports = BTreeMap::new();
        let mut servers = Vec::new();
        let mut running = Vec::new();
        let timeout = settings.request_timeout();
        let micro_ttl = Duration::from_millis(settings.recommendation_local_ttl_ms);
        for &service in services {
            let listener =
                TcpListener::bind((settings.bind_address.as_str(), settings.port(service)))
                    .with_context(|| format!("binding the {} port", service.name()))?;
            let port = listener.local_addr()?.port();
            let info = ServiceInfo {
                name: service.name(),
                logger: logger.new(o!("service" => service.name())),
            };
            let (keys, readiness, users, products, recommendations, analytics) = (
                keys.clone(),
                readiness.clone(),
                users.clone(),
                products.clone(),
                recommendations.clone(),
                analytics.clone(),
            );
            let server = HttpServer::new(move || {
                let mut api = Api::new(service.name());
                http::common_routes(&mut api);
                let mut app = App::new()
                    .app_data(web::Data::new(info.clone()))
                    .app_data(web::Data::new(readiness.clone()))
                    .app_data(web::Data::new(keys.clone()))
                    .configure(http::extractor_config)
                    .wrap(http::json_error_bodies())
                    .wrap(from_fn(http::observe))
                    .default_service(web::to(http::not_found));
                match service {
                    Service::Users => {
                        if let Some(users) = &users {
                            app = app.app_data(web::Data::new(users.with_timeout(timeout)));
                            crate::users::http::routes(&mut api);
                        }
                    }
                    Service::Products => {
                        if let Some(products) = &products {
                            app = app.app_data(web::Data::new(products.with_timeout(timeout)));
                            crate::products::http::routes(&mut api);
                        }
                    }
                    Service::Recommendations => {
                        if let Some(recommendations) = &recommendations {
                            app = app
                                .app_data(web::Data::new(
                                    recommendations.query.with_timeout(timeout),
                                ))
                                .app_data(web::Data::new(MicroCache::new(micro_ttl)));
                            crate::recommendations::http::routes(&mut api);
                        }
                    }
                    Service::Analytics => {
                        if let Some(analytics) = &analytics {
                            app = app
                                .app_data(web::Data::new(analytics.queries.with_timeout(timeout)));
                            crate::analytics::http::routes(&mut api);
                        }
                    }
                }
                app.configure(|cfg| api.register(cfg))
            })
            .workers(settings.http_workers.max(1))
            .disable_signals()
            .shutdown_timeout(10)
            .listen(listener)?
            .run();
            info!(logger, "service listening"; "service" => service.name(), "port" => port);
            ports.insert(service, port);
            servers.push((service, server.handle()));
            running.push(server);
        }

        Ok(Self {
            ports,
            servers,
            running,
            relay,
            users,
            products,
            recommendations,
            analytics,
            pool,
            logger,
        })
    }

    /// The port `service` listens on.
    pub fn port(&self, service: Service) -> Option<u16> {
        self.ports.get(&service).copied()
    }

    /// The users actor, when hosted.
    pub fn users(&self) -> Option<ObservedAddr<UsersActor>> {
        self.users.clone()
    }

    /// The products actor, when hosted.
    pub fn products(&self) -> Option<ObservedAddr<ProductsActor>> {
        self.products.clone()
    }

    /// The recommendations actors, when hosted.
    pub fn recommendations(&self) -> Option<RecommendationsActors> {
        self.recommendations.clone()
    }

    /// The analytics actors, when hosted.
    pub fn analytics(&self) -> Option<AnalyticsActors> {
        self.analytics.clone()
    }

    /// The outbox relay, when hosted.
    pub fn relay(&self) -> Option<ObservedAddr<OutboxRelay>> {
        self.relay.clone()
    }

    /// The database pool.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Serves in the background (tests); the servers stop with the System.
    pub fn spawn(mut self) -> Self {
        for server in self.running.drain(..) {
            actix_web::rt::spawn(server);
        }
        self
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, lets in-flight requests finish,
    /// drains the outbox and flushes the producer.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let mut servers: Vec<_> = self.running.drain(..).map(actix_web::rt::spawn).collect();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            (result, index, _) = futures_util::future::select_all(servers.iter_mut()) => {
                warn!(self.logger, "a server stopped on its own"; "index" => index, "result" => format!("{result:?}"));
                "server exit"
            }
        };
        info!(self.logger, "shutting down"; "signal" => signal);
        self.shutdown().await
    }

    /// Graceful stop: servers first (in-flight requests finish), then consumers leave their
    /// groups (so a restarted runtime gets the partitions at once), then the outbox drain.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        for (service, handle) in &self.servers {
            handle.stop(true).await;
            info!(self.logger, "server stopped"; "service" => service.name());
        }
        let consumers = [
            (
                "recommendations",
                self.recommendations.as_ref().map(|r| &r.consumer),
            ),
            ("analytics", self.analytics.as_ref().map(|a| &a.consumer)),
        ];
        // Both leave at once: closing a client waits for the broker to confirm.
        let leaving = consumers
            .into_iter()
            .filter_map(|(service, consumer)| Some((service, consumer?.clone())))
            .map(|(service, consumer)| async move {
                match consumer.send(Leave).await {
                    Ok(()) => info!(self.logger, "consumer left its group"; "service" => service),
                    Err(e) => warn!(self.logger, "consumer unavailable at exit"; "error" => %e),
                }
            });
        futures_util::future::join_all(leaving).await;
        if let Some(relay) = &self.relay {
            match relay
                .send(Drain {
                    deadline: Duration::from_secs(10),
                })
                .await
            {
                Ok(Ok(0)) => info!(self.logger, "outbox drained"),
                Ok(Ok(left)) => {
                    warn!(self.logger, "outbox not empty at exit; it is published at next start"; "pending" => left)
                }
                Ok(Err(e)) => {
                    warn!(self.logger, "outbox drain failed"; "error" => format!("{e:#}"))
                }
                Err(e) => warn!(self.logger, "outbox relay unavailable at exit"; "error" => %e),
            }
        }
        Ok(())
    }
}
