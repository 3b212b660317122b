//! The analytics service (:8083): exact product-popularity and user-activity statistics.
//!
//! - [`http`]: the routes (admin token required: statistics about users are private).
//! - [`aggregation`]: [`aggregation::AggregationActor`], the consumer sink: folds each batch in
//!   memory and upserts once per batch, with positions and seen publication sequences in the same
//!   transaction.
//! - [`query`]: [`query::AnalyticsQueries`], the read side.
//! - [`store`]: the SQL.
//!
//! The generic Kafka consumer actor feeds it from both topics (group `analytics`).

pub mod aggregation;
pub mod http;
pub mod query;
pub mod store;
