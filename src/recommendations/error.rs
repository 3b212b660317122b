//! [`RecommendationsError`]: what can go wrong answering a recommendation query. The query actor
//! and the store answer it; `http.rs` alone decides what a client sees.

use std::sync::Arc;

use crate::db::DbError;

/// A query that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecommendationsError {
    /// Similar products of a product never seen, or deleted.
    #[error("product not found")]
    ProductNotFound,
    /// The answer could not be written as JSON (a bug).
    #[error("encoding the answer: {0}")]
    Encoding(Arc<serde_json::Error>),
    #[error(transparent)]
    Db(#[from] DbError),
}

crate::db::from_db_errors!(RecommendationsError);
