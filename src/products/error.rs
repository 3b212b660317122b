//! [`ProductsError`]: what can go wrong in the catalog's domain. The actor and the store answer
//! it; `http.rs` alone decides what a client sees.

use crate::db::DbError;

/// A catalog operation that did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProductsError {
    /// No product with this id, or it was deleted.
    #[error("product not found")]
    ProductNotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

crate::db::from_db_errors!(ProductsError);
