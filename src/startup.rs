//! Wiring: one actix System hosting the chosen services. Starts the outbox relay and each
//! chosen service (every service folder starts its own actors and registers its own routes, see
//! [`crate::host`]), binds one HTTP server per service, and shuts everything down in order on
//! SIGINT/SIGTERM.

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
use recsys_actors::observe::ObservedAddr;
use recsys_actors::outbox_relay::{Drain, OutboxRelay, RelayConfig};
use recsys_actors::supervision::start_supervised;
use recsys_schema::topics;
use slog::{info, o, warn, Logger};

use crate::analytics::Analytics;
use crate::auth::listener::RevocationListener;
use crate::auth::{self, JwtKeys};
use crate::config::{Service, Settings};
use crate::cors::{self, Origins};
use crate::db::{self, Pool};
use crate::host::{Host, Hosted, Listening};
use crate::http::{self, Readiness, ServiceInfo};
use crate::idempotency::Fingerprints;
use crate::metrics;
use crate::openapi::Api;
use crate::outbox::PgOutbox;
use crate::products::Products;
use crate::recommendations::Recommendations;
use crate::users::Users;
use recsys_actors::kafka::Brokers;

/// The `service` label of machinery shared by the hosted services (the outbox relay serves
/// both users and products).
pub const RUNTIME: &str = "runtime";

/// A running runtime: its servers, its services, and how to stop them.
pub struct Application {
    ports: BTreeMap<Service, u16>,
    servers: Vec<(Service, ServerHandle)>,
    running: Vec<Server>,
    relay: Option<ObservedAddr<OutboxRelay>>,
    /// Keeps the token revocation list current.
    revocation_listener: ObservedAddr<RevocationListener>,
    users: Option<Users>,
    products: Option<Products>,
    recommendations: Option<Recommendations>,
    analytics: Option<Analytics>,
    pool: Pool,
    logger: Logger,
}

impl Application {
    /// Migrates the database, starts the relay (when a hosted service writes events) and the
    /// services in `services`, and binds their HTTP servers (port 0 picks a free port; see
    /// [`Application::port`]). Call inside an actix System.
    pub async fn build(
        settings: Settings,
        services: &[Service],
        logger: Logger,
    ) -> anyhow::Result<Self> {
        metrics::init();
        let brokers = settings.brokers(std::env::vars())?;
        info!(logger, "kafka"; "brokers" => brokers.describe());
        let url = settings.postgres.url();
        if settings.no_migrate {
            db::check_migrated(&url).await?;
            info!(logger, "database schema is current");
        } else {
            let applied = db::migrate(&url).await?;
            info!(logger, "database migrated"; "applied" => applied.len());
        }
        let pool = db::pool(&settings.postgres)?;

        let previous = settings.jwt_secret_previous.as_ref();
        let (keys, fingerprints) = match &settings.jwt_secret {
            Some(secret) => (
                JwtKeys::configured(secret, previous)?,
                Fingerprints::new(secret, previous),
            ),
            None if settings.dev => {
                warn!(logger, "development mode without JWT_SECRET: a random key; every token dies with this process and other instances reject them");
                let secret = auth::random_secret();
                (JwtKeys::new(&secret)?, Fingerprints::new(&secret, None))
            }
            None => anyhow::bail!(
                "JWT_SECRET is not set: give every instance the same random value of at least 32 \
                 bytes (e.g. `openssl rand -hex 32`), or --dev (RECSYS_DEV=true) for a random \
                 development key"
            ),
        };

        // Tokens revoked before this start are refused from the first request on.
        keys.revocations()
            .load(&mut *pool.get().await.context("loading token revocations")?)
            .await
            .context("loading token revocations")?;
        let revocation_listener = start_supervised(
            &Arbiter::new().handle(),
            RUNTIME,
            settings.actor_mailbox_limit,
            &logger,
            RevocationListener::new(
                url.clone(),
                keys.revocations().clone(),
                logger.new(o!("actor" => "revocations")),
            ),
        );

        let relay = if services.iter().any(|s| s.writes_events()) {
            Some(start_relay(&settings, &brokers, &pool, &logger)?)
        } else {
            None
        };
        let host = Host {
            settings: &settings,
            brokers: brokers.clone(),
            pool: pool.clone(),
            keys: keys.clone(),
            wake: relay.as_ref().map(|r| r.recipient()),
            logger: logger.clone(),
        };
        let hosts = |service| services.contains(&service);
        let users = match hosts(Service::Users) {
            true => Some(Users::start(&host).await?),
            false => None,
        };
        let products = hosts(Service::Products).then(|| Products::start(&host));
        let recommendations = match hosts(Service::Recommendations) {
            true => Some(Recommendations::start(&host)?),
            false => None,
        };
        let analytics = hosts(Service::Analytics).then(|| Analytics::start(&host));

        let readiness = Readiness {
            pool: pool.clone(),
            kafka: kafka::probe_client(&brokers, logger.new(o!("client" => "readiness")))?,
        };

        let mut app = Self {
            ports: BTreeMap::new(),
            servers: Vec::new(),
            running: Vec::new(),
            relay,
            revocation_listener,
            users,
            products,
            recommendations,
            analytics,
            pool,
            logger,
        };
        let listening = Listening::default();
        for &service in services {
            let hosted = app
                .hosted(service)
                .expect("every chosen service was started");
            let listener =
                TcpListener::bind((settings.bind_address.as_str(), settings.port(service)))
                    .with_context(|| format!("binding the {} port", service.name()))?;
            let port = listener.local_addr()?.port();
            let info = ServiceInfo {
                name: service.name(),
                logger: app.logger.new(o!("service" => service.name())),
            };
            let (keys, fingerprints, readiness) =
                (keys.clone(), fingerprints.clone(), readiness.clone());
            let origins = Origins::new(&settings.cors_origins);
            listening.insert(service, port);
            let listening = listening.clone();
            let server = HttpServer::new(move || {
                let mut api = Api::new(service.name());
                http::common_routes(&mut api);
                let hosted = hosted.clone();
                App::new()
                    .app_data(web::Data::new(info.clone()))
                    .app_data(web::Data::new(readiness.clone()))
                    .app_data(web::Data::new(keys.clone()))
                    .app_data(web::Data::new(fingerprints.clone()))
                    .app_data(web::Data::new(origins.clone()))
                    .app_data(web::Data::new(listening.clone()))
                    .configure(http::extractor_config)
                    .wrap(http::json_error_bodies())
                    .wrap(from_fn(cors::cors))
                    .wrap(from_fn(http::observe))
                    .default_service(web::to(http::not_found))
                    .configure(move |cfg| {
                        hosted.configure(cfg, &mut api);
                        api.register(cfg)
                    })
            })
            .workers(settings.http_workers(service))
            .disable_signals()
            .shutdown_timeout(10)
            .listen(listener)?
            .run();
            info!(app.logger, "service listening"; "service" => service.name(), "port" => port,
                "address" => format!("http://{}:{port}", settings.bind_address));
            app.ports.insert(service, port);
            app.servers.push((service, server.handle()));
            app.running.push(server);
        }
        Ok(app)
    }

    /// `service` as the runtime drives it, when hosted.
    fn hosted(&self, service: Service) -> Option<Arc<dyn Hosted>> {
        fn erase<T: Hosted + Clone>(s: &Option<T>) -> Option<Arc<dyn Hosted>> {
            s.clone().map(|s| Arc::new(s) as Arc<dyn Hosted>)
        }
        match service {
            Service::Users => erase(&self.users),
            Service::Products => erase(&self.products),
            Service::Recommendations => erase(&self.recommendations),
            Service::Analytics => erase(&self.analytics),
        }
    }

    /// The actor keeping the token revocation list current.
    pub fn revocation_listener(&self) -> ObservedAddr<RevocationListener> {
        self.revocation_listener.clone()
    }

    /// The port `service` listens on.
    pub fn port(&self, service: Service) -> Option<u16> {
        self.ports.get(&service).copied()
    }

    /// The users service, when hosted.
    pub fn users(&self) -> Option<Users> {
        self.users.clone()
    }

    /// The products service, when hosted.
    pub fn products(&self) -> Option<Products> {
        self.products.clone()
    }

    /// The recommendations service, when hosted.
    pub fn recommendations(&self) -> Option<Recommendations> {
        self.recommendations.clone()
    }

    /// The analytics service, when hosted.
    pub fn analytics(&self) -> Option<Analytics> {
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
        // Every consuming service leaves at once: closing a client waits for the broker.
        let leaving = Service::ALL
            .into_iter()
            .filter_map(|service| self.hosted(service))
            .map(|hosted| hosted.leave());
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

/// Starts the outbox relay, which publishes what the writing services commit.
fn start_relay(
    settings: &Settings,
    brokers: &Brokers,
    pool: &Pool,
    logger: &Logger,
) -> anyhow::Result<ObservedAddr<OutboxRelay>> {
    let config = RelayConfig {
        brokers: brokers.clone(),
        topic_prefix: settings.kafka_topic_prefix.clone(),
        topics: vec![
            topics::USER_UPDATES.to_string(),
            topics::PRODUCT_UPDATES.to_string(),
        ],
        layout: settings.topic_layout(),
        batch_size: crate::outbox::RELAY_BATCH,
        poll_interval: settings.outbox_poll_interval(),
        delivery_timeout: Duration::from_millis(settings.kafka_delivery_timeout_ms),
        gather: Duration::from_millis(settings.outbox_gather_ms),
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
    Ok(start_supervised(
        &Arbiter::new().handle(),
        RUNTIME,
        settings.actor_mailbox_limit,
        logger,
        relay,
    ))
}
