//! Postgres access: the diesel-async bb8 pool, the embedded migrations and a readiness probe.

use std::time::Duration;

use anyhow::Context as _;
use diesel::Connection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::{PostgresSettings, Secret};

/// The connection pool every service shares.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A pool for `settings`; connections are opened lazily, so this succeeds with Postgres down.
pub fn pool(settings: &PostgresSettings) -> Pool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(settings.url().expose());
    bb8::Pool::builder()
        .max_size(settings.db_pool_size.max(1))
        .connection_timeout(Duration::from_millis(settings.db_timeout_ms.max(1)))
        .build_unchecked(manager)
}

/// Applies the pending migrations; answers the versions applied.
pub async fn migrate(url: &Secret) -> anyhow::Result<Vec<String>> {
    let url = url.expose().to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .context("connecting to Postgres to migrate")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .context("migration task")?
}

/// `SELECT 1` through the pool.
pub async fn ping(pool: &Pool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT 1")
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `e` is a foreign-key violation (the referenced row does not exist).
pub fn is_foreign_key_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _
        )
    )
}

/// Whether `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}
