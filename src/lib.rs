//! # recsys: a product-recommendation platform on one actix runtime
//!
//! Four services, each a supervised group of actors behind its own HTTP port, talking to each
//! other only through Kafka: users (:8080), products (:8081), recommendations (:8082) and
//! analytics (:8083). `recsys serve --services a,b` hosts a subset.
//!
//! ## Layout
//!
//! - [`cli`], [`config`]: the command line and the settings (environment variables).
//! - [`startup`]: the wiring: the outbox relay, one HTTP server per service, ordered shutdown.
//! - [`users`], [`products`], [`recommendations`], [`analytics`]: one folder per service, the
//!   whole service: `mod.rs` starts its actors and registers its routes, `http.rs` (routes),
//!   the actors (one file each, messages beside them), `store.rs` (the SQL).
//! - [`host`]: what the runtime hands a service when it starts it, and what it hands back.
//! - [`http`]: health, readiness, metrics and JSON errors shared by every port.
//! - [`cors`]: CORS headers and preflights for the origins `CORS_ORIGINS` allows.
//! - [`reference`]: `/docs`, the interactive API reference of each port.
//! - [`openapi`]: registers each route and documents it in the service's `/openapi.json`.
//! - [`auth`]: JWTs, password hashing, the [`auth::Caller`] extractor, token revocation.
//! - [`rebuild`]: `recsys rebuild`: a read model recomputed from the topics.
//! - [`demo`]: `recsys demo`: a catalog, shoppers and their actions, through the public APIs.
//! - [`progress`]: the progress bar (or lines) of `rebuild` and `demo`.
//! - [`db`], [`outbox`]: the Postgres pool and migrations; the transactional outbox.
//! - [`idempotency`]: `Idempotency-Key`: a retried write answered from its first commit.
//! - [`consumption`]: consumer positions and applied event ids in Postgres; record decoding.
//! - [`error`]: the one error type and its mapping to HTTP.
//! - [`metrics`], [`telemetry`]: Prometheus families and slog setup.
//! - [`validate`]: input checks.
//!
//! Generic actor machinery lives in the `recsys-actors` crate (`actors/`); tables and events in
//! `recsys-schema` (`schema/`).

pub mod analytics;
pub mod auth;
pub mod cli;
pub mod config;
pub mod consumption;
pub mod cors;
pub mod db;
pub mod demo;
pub mod error;
pub mod host;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod products;
pub mod progress;
pub mod rebuild;
pub mod recommendations;
pub mod reference;
pub mod startup;
pub mod telemetry;
pub mod users;
pub mod validate;
