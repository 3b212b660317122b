//! The users service (:8080): accounts, login, profiles and user actions.
//!
//! - [`Users`]: starts the service (its actor, the hashing threads, the admin account) and
//!   registers its routes.
//! - [`http`]: the routes; thin handlers that authenticate, validate and message the actor.
//! - [`actor`]: [`actor::UsersActor`] and its messages; it owns every users write and its event.
//! - [`error`]: [`error::UsersError`], what can go wrong in the domain (mapped to HTTP in
//!   `http.rs`).
//! - [`hasher`]: argon2 on a fixed set of threads.
//! - [`store`]: the SQL.
//! - [`throttle`]: the login lockout after repeated failures.

pub mod actor;
pub mod error;
pub mod hasher;
pub mod http;
pub mod store;
pub mod throttle;

use std::time::Duration;

use actix::Arbiter;
use actix_web::web;
use anyhow::Context as _;
use recsys_actors::cache::CacheActor;
use recsys_actors::group_commit::Limits;
use recsys_actors::observe::ObservedAddr;
use recsys_actors::supervision::start_supervised;
use slog::{info, o};

use crate::auth::ApiKey;
use crate::host::{Host, Hosted};
use crate::openapi::Api;
use crate::validate;
use actor::{EnsureAdmin, UsersActor};
use hasher::HashWorker;
use throttle::{LoginLimits, SharedThrottle};

/// The `service` label of the users service's actors and metrics.
pub const NAME: &str = "users";

/// The running users service.
#[derive(Clone)]
pub struct Users {
    /// Owns every write; what the handlers message.
    pub actor: ObservedAddr<UsersActor>,
    /// The argon2 threads the actor hashes and verifies passwords on.
    pub hasher: ObservedAddr<HashWorker>,
    /// The Redis connection behind the login lockout shared by every instance.
    pub cache: ObservedAddr<CacheActor>,
    /// What `X-API-Key` must be (`API_KEY`), if anything.
    api_key: ApiKey,
    timeout: Duration,
}

impl Users {
    /// Starts the users actor under a supervisor and, when `ADMIN_EMAIL` and `ADMIN_PASSWORD`
    /// are set, makes sure that admin account exists with that password. Fails on an
    /// `API_KEY` shorter than 32 bytes.
    pub async fn start(host: &Host<'_>) -> anyhow::Result<Self> {
        let settings = host.settings;
        let api_key = ApiKey::new(settings.api_key.as_ref())?;
        let logger = host.logger.new(o!("service" => NAME));
        let hasher = hasher::start(NAME, settings.actor_mailbox_limit, &host.logger);
        let arbiter = Arbiter::new().handle();
        throttle::init_metrics();
        let limits = LoginLimits {
            per_email: settings.login_max_failures.max(1),
            per_ip: settings.login_max_failures_per_ip.max(1),
            window: Duration::from_secs(settings.login_lockout_secs),
        };
        let cache = host.cache(logger.new(o!("actor" => "cache")))?;
        let cache = start_supervised(
            &arbiter,
            NAME,
            settings.actor_mailbox_limit,
            &host.logger,
            cache,
        );
        let shared = SharedThrottle::new(cache.clone(), &settings.redis_key_prefix, limits);
        let actor = start_supervised(
            &arbiter,
            NAME,
            settings.actor_mailbox_limit,
            &host.logger,
            UsersActor::new(
                host.pool.clone(),
                host.keys.clone(),
                host.wake.clone(),
                hasher.clone(),
                (limits, shared),
                Limits {
                    max_in_flight: settings.activity_writers,
                    max_batch: settings.activity_max_batch,
                },
                logger.clone(),
            ),
        );
        if let (Some(email), Some(password)) = (&settings.admin_email, &settings.admin_password) {
            let email = validate::email(email).context("ADMIN_EMAIL is not a valid email")?;
            let password =
                validate::password(password.expose()).context("ADMIN_PASSWORD is invalid")?;
            let id = actor
                .send(EnsureAdmin { email, password })
                .await?
                .map_err(|e| anyhow::anyhow!("ensuring the admin account: {e}"))?;
            info!(logger, "admin account ready"; "user_id" => %id);
        }
        Ok(Self {
            actor,
            hasher,
            cache,
            api_key,
            timeout: host.request_timeout(),
        })
    }
}

impl Hosted for Users {
    fn configure(&self, cfg: &mut web::ServiceConfig, api: &mut Api) {
        cfg.app_data(web::Data::new(self.actor.with_timeout(self.timeout)))
            .app_data(web::Data::new(self.api_key.clone()));
        http::routes(api);
    }
}
