//! [`AnalyticsError`]: what can go wrong answering a statistics query. The query actor and the
//! store answer it; `http.rs` alone decides what a client sees.

use crate::db::DbError;

/// A statistics query that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalyticsError {
    /// No event about this product has been counted.
    #[error("product never seen")]
    ProductNeverSeen,
    /// No event about this user has been counted.
    #[error("user never seen")]
    UserNeverSeen,
    #[error(transparent)]
    Db(#[from] DbError),
}

crate::db::from_db_errors!(AnalyticsError);
