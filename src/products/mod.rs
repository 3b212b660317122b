//! The products service (:8081): the catalog.
//!
//! - [`http`]: the routes; reads are public, writes need an admin token.
//! - [`actor`]: [`actor::ProductsActor`] and its messages; it owns every catalog write and its event.
//! - [`store`]: the SQL.

pub mod actor;
pub mod http;
pub mod store;
