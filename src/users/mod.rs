//! The users service (:8080): accounts, login, profiles and user actions.
//!
//! - [`http`]: the routes; thin handlers that authenticate, validate and message the actor.
//! - [`actor`]: [`actor::UsersActor`] and its messages; it owns every users write and its event.
//! - [`hasher`]: argon2 on a fixed set of threads.
//! - [`store`]: the SQL.
//! - [`throttle`]: the login lockout after repeated failures.

pub mod actor;
pub mod hasher;
pub mod http;
pub mod store;
pub mod throttle;
