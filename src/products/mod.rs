//! The products service (:8081): the catalog.
//!
//! - [`Products`]: starts the service and registers its routes.
//! - [`http`]: the routes; reads are public, writes need an admin token.
//! - [`actor`]: [`actor::ProductsActor`] and its messages; it owns every catalog write and its event.
//! - [`error`]: [`error::ProductsError`], what can go wrong in the domain (mapped to HTTP in
//!   `http.rs`).
//! - [`store`]: the SQL.

pub mod actor;
pub mod error;
pub mod http;
pub mod store;

use std::time::Duration;

use actix::Arbiter;
use actix_web::web;
use recsys_actors::observe::ObservedAddr;
use recsys_actors::supervision::start_supervised;
use slog::o;

use crate::host::{Host, Hosted};
use crate::openapi::Api;
use actor::ProductsActor;

/// The `service` label of the products service's actors and metrics.
pub const NAME: &str = "products";

/// The running products service.
#[derive(Clone)]
pub struct Products {
    /// Owns every catalog write; what the handlers message.
    pub actor: ObservedAddr<ProductsActor>,
    timeout: Duration,
}

impl Products {
    /// Starts the products actor under a supervisor.
    pub fn start(host: &Host<'_>) -> Self {
        let actor = start_supervised(
            &Arbiter::new().handle(),
            NAME,
            host.settings.actor_mailbox_limit,
            &host.logger,
            ProductsActor::new(
                host.pool.clone(),
                host.wake.clone(),
                host.logger.new(o!("service" => NAME)),
            ),
        );
        Self {
            actor,
            timeout: host.request_timeout(),
        }
    }
}

impl Hosted for Products {
    fn configure(&self, cfg: &mut web::ServiceConfig, api: &mut Api) {
        cfg.app_data(web::Data::new(self.actor.with_timeout(self.timeout)));
        http::routes(api);
    }
}
