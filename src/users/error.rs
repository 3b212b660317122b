//! [`UsersError`]: what can go wrong in the users service's domain. The actor and the store
//! answer it; `http.rs` alone decides what a client sees.

use std::sync::Arc;
use std::time::Duration;

use recsys_actors::observe::Refused;

use crate::db::DbError;
use crate::idempotency::IdempotencyError;

/// A users operation that did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UsersError {
    /// Another account has this email.
    #[error("email already registered")]
    EmailTaken,
    /// No account with this id (or it was removed meanwhile).
    #[error("user not found")]
    UserNotFound,
    /// Unknown email, wrong password, or an account without one: one answer for all, so the
    /// answer tells nothing about which accounts exist.
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many failed logins for this email or client address; the next attempt is admitted
    /// after `retry_after`.
    #[error("too many failed attempts")]
    LockedOut {
        /// How long until the next attempt is admitted.
        retry_after: Duration,
    },
    /// Actions of a batch name users that do not exist (their indexes in the batch); nothing
    /// of the batch was written.
    #[error("no such user")]
    UnknownUsers(Vec<usize>),
    /// The actor restarted while the request waited in a group commit; nothing was written.
    #[error("service restarting; retry later")]
    Restarting,
    /// An `Idempotency-Key` that is in use or was used for another request.
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// The hashing threads refused the password (overloaded, or restarting).
    #[error("password hashing: {0}")]
    HasherRefused(#[from] Refused),
    /// argon2 itself failed (a bug: its parameters are fixed).
    #[error("password hashing failed: {0:#}")]
    Hashing(Arc<anyhow::Error>),
    #[error(transparent)]
    Db(#[from] DbError),
}

crate::db::from_db_errors!(UsersError);
