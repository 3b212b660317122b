//! The recommendations service (:8082): ranks products by what users do.
//!
//! - [`http`]: the routes.
//! - [`micro`]: the per-worker micro-cache of answers in front of the query actor.
//! - [`query`]: [`query::RecommendationsActor`], answering queries through the cache actor.
//! - [`ranking`]: [`ranking::RankingActor`], the popularity-ranking actor and consumer sink.
//! - [`score`]: the ranking formula (weights, forward decay).
//! - [`store`]: the SQL.
//!
//! The generic Kafka consumer actor feeds the ranking actor from `user-updates` and
//! `product-updates` (group `recommendations`); the generic cache actor fronts Redis.

pub mod http;
pub mod micro;
pub mod query;
pub mod ranking;
pub mod score;
pub mod store;
