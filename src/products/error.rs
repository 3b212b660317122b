//! [`ProductsError`]: what can go wrong in the catalog's domain. The actor and the store answer
//! it; `http.rs` alone decides what a client sees.

use crate::db::DbError;
use crate::idempotency::IdempotencyError;

/// A catalog operation that did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProductsError {
    /// No product with this id, or it was deleted.
    #[error("product not found")]
    ProductNotFound,
    /// An `Idempotency-Key` that is in use or was used for another request.
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Db(#[from] DbError),
}

crate::db::from_db_errors!(ProductsError);
