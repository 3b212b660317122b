//! # recsys-schema: the one place that defines a table or an event
//!
//! ## Layout
//!
//! - [`tables`]: diesel `table!` definitions, mirroring `migrations/`.
//! - [`events`]: the event envelope carried on both topics and every event payload.
//! - [`topics`]: topic names and the JSON Schema document of each topic
//!   (`user-updates.schema.json`, `product-updates.schema.json` beside this crate's `Cargo.toml`).
//!
//! Services depend on this crate; nothing here knows about HTTP, actors or Kafka clients. The
//! `openapi` feature adds the OpenAPI schemas of the event types the HTTP API shows.

pub mod events;
pub mod tables;
pub mod topics;
