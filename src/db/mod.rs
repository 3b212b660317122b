//! Postgres access: the diesel-async bb8 pool, the embedded migrations, a readiness probe and
//! [`Prepared`] statements.
//!
//! - [`tls`]: connections as libpq makes them from a URL's `sslmode` and `sslrootcert`.

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::HasSqlType;
use diesel::ConnectionError;
use diesel::QueryResult;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection as _, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::{PostgresSettings, Secret};

/// The connection pool every service shares.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A pool for `settings`; connections are opened lazily, so this succeeds with Postgres down.
///
/// A connection is checked on checkout without a round trip: one whose socket closed (the
/// server restarted, a proxy cut it) or whose transaction state broke is replaced, any other is
/// used. diesel-async's default check sends `SELECT 1` first, a round trip before every
/// statement, which the write path cannot afford (docs/benchmarks.md, "Figures behind the settings").
pub fn pool(settings: &PostgresSettings) -> anyhow::Result<Pool> {
    let target = tls::Target::parse(settings.url().expose())?;
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_url| {
        let target = target.clone();
        Box::pin(async move {
            let mut conn = target.connect().await?;
            // Every statement of the service is short and prepared; a generic plan's estimate
            // (a `LIMIT` from a parameter counts as a tenth of the table) can pass the JIT
            // threshold and compile for tens of milliseconds a statement that runs in a few.
            conn.batch_execute("SET jit = off")
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    config.recycling_method =
        RecyclingMethod::CustomFunction(Box::new(|conn: &mut AsyncPgConnection| {
            Box::pin(async move {
                if conn.is_broken() {
                    Err(diesel::result::Error::BrokenTransactionManager)
                } else {
                    Ok(())
                }
            })
        }));
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url().expose(),
        config,
    );
    Ok(bb8::Pool::builder()
        .max_size(settings.db_pool_size.max(1))
        .connection_timeout(Duration::from_millis(settings.db_timeout_ms.max(1)))
        .build_unchecked(manager))
}

/// One connection of its own (not pooled) to the database at `url`, TLS as the URL asks.
pub async fn connect(url: &Secret) -> anyhow::Result<AsyncPgConnection> {
    let target = tls::Target::parse(url.expose())?;
    target
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to Postgres: {e}"))
}

/// Arbitrary constant naming the advisory lock migrations are applied under.
const MIGRATION_LOCK: i64 = 0x7265_6373_6d69; // "recsmi"

/// Applies the pending migrations; answers the versions applied. Runs under a session-level
/// advisory lock, so that runtimes starting together on one database migrate one after the
/// other (the later ones find nothing pending) instead of racing on the same `CREATE`s.
pub async fn migrate(url: &Secret) -> anyhow::Result<Vec<String>> {
    let conn = connect(url)
        .await
        .context("connecting to Postgres to migrate")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        let lock = |conn: &mut AsyncConnectionWrapper<AsyncPgConnection>, sql: &str| {
            diesel::RunQueryDsl::execute(
                diesel::sql_query(sql).bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK),
                conn,
            )
        };
        lock(&mut conn, "SELECT pg_advisory_lock($1)").context("taking the migration lock")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.iter().map(|v| v.to_string()).collect())
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"));
        // Closing the connection releases the lock too; this is the early release.
        let _ = lock(&mut conn, "SELECT pg_advisory_unlock($1)");
        applied
    })
    .await
    .context("migration task")?
}

/// Fails unless every migration of this binary is applied (`serve --no-migrate`).
pub async fn check_migrated(url: &Secret) -> anyhow::Result<()> {
    let conn = connect(url)
        .await
        .context("connecting to Postgres to check the schema")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        let pending: Vec<String> = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("reading the applied migrations: {e}"))?
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        anyhow::ensure!(
            pending.is_empty(),
            "the database schema is not current ({} migrations pending: {}); run `recsys migrate` \
             first, or serve without --no-migrate",
            pending.len(),
            pending.join(", ")
        );
        Ok(())
    })
    .await
    .context("schema check task")?
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

/// A database failure as the services see it, classified by its kind (never by its text).
/// Cheap to clone, so one failed batch can answer each of its requests with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// Postgres cannot serve now: no pooled connection within the timeout, a connection that
    /// could not be opened or was lost, a server shutting down or out of connections. A later
    /// retry may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(Arc<str>),
    /// Anything else (a bug, a broken invariant); not the client's to retry.
    #[error("database error")]
    Failed(#[source] Arc<diesel::result::Error>),
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => DbError::Unavailable(info.message().into()),
            Error::DatabaseError(_, info) if info.sqlstate().is_some_and(|s| unavailable(&s)) => {
                DbError::Unavailable(info.message().into())
            }
            Error::BrokenTransactionManager => {
                DbError::Unavailable("the connection's transaction state broke".into())
            }
            _ => DbError::Failed(Arc::new(e)),
        }
    }
}

/// SQLSTATE classes that say the server cannot serve now rather than that the statement is
/// wrong: 08 connection exception, 53 insufficient resources (too many connections, disk
/// full), 57 operator intervention (shutdown, cannot connect now, statement timeout).
fn unavailable(state: &diesel::result::SqlState) -> bool {
    matches!(state.class().as_str(), "08" | "53" | "57")
}

/// No pooled connection within the timeout, or Postgres refused to open one.
impl<E: std::fmt::Display> From<bb8::RunError<E>> for DbError {
    fn from(e: bb8::RunError<E>) -> Self {
        match e {
            bb8::RunError::TimedOut => {
                DbError::Unavailable("no connection within the timeout".into())
            }
            bb8::RunError::User(e) => DbError::Unavailable(e.to_string().into()),
        }
    }
}

/// Lets `?` turn a diesel or pool error into `$error` through its `Db(DbError)` variant, so a
/// service's actor and store code reads like plain database code.
macro_rules! from_db_errors {
    ($error:ty) => {
        impl From<diesel::result::Error> for $error {
            fn from(e: diesel::result::Error) -> Self {
                Self::Db(e.into())
            }
        }

        impl<E: std::fmt::Display> From<bb8::RunError<E>> for $error {
            fn from(e: bb8::RunError<E>) -> Self {
                Self::Db(e.into())
            }
        }
    };
}
pub(crate) use from_db_errors;

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

/// A Postgres array literal of `values` (`{1,2,3}`): arrays of different lengths bound as text,
/// so that they fit in one `unnest` column and are cast back to `int8[]` there.
pub fn array_literal(values: &[i64]) -> String {
    let items: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// A hand-written statement that each connection prepares once and then reuses, unlike
/// `diesel::sql_query`, which diesel parses and plans again on every execution (its text
/// may differ from call to call). Build it like `sql_query`: the text with `$1`, `$2`, …,
/// then one [`Prepared::bind`] per placeholder, in their order. The text must
/// come from a bounded set (it is the cache key): constants, or formats of constants.
///
/// The hot statements are prepared because planning them costs more than running them
/// (docs/benchmarks.md, "Figures behind the settings").
pub struct Prepared<'a> {
    sql: std::borrow::Cow<'static, str>,
    binds: Vec<Box<dyn BindValue + Send + 'a>>,
}

/// One bound value with its SQL type.
trait BindValue {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// A value `V` bound as SQL type `ST`.
struct Typed<ST, V>(V, std::marker::PhantomData<fn() -> ST>);

impl<ST, V> BindValue for Typed<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.0)
    }
}

/// A statement prepared once per connection; see [`Prepared`].
pub fn prepared(sql: impl Into<std::borrow::Cow<'static, str>>) -> Prepared<'static> {
    Prepared {
        sql: sql.into(),
        binds: Vec::new(),
    }
}

impl<'a> Prepared<'a> {
    /// Binds the next placeholder to `value` as SQL type `ST`.
    pub fn bind<ST, V>(mut self, value: V) -> Prepared<'a>
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'a,
        ST: 'static,
    {
        self.binds
            .push(Box::new(Typed::<ST, V>(value, std::marker::PhantomData)));
        self
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Each `$n` of the text becomes diesel's own placeholder for bind n (a placeholder used
        // twice binds its value twice).
        let mut rest: &str = &self.sql;
        let mut used = vec![false; self.binds.len()];
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - at - 1);
            if digits == 0 {
                out.push_sql("$");
            } else {
                let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
                let bind = n
                    .checked_sub(1)
                    .and_then(|i| self.binds.get(i).map(|b| (i, b)))
                    .ok_or_else(|| {
                        diesel::result::Error::QueryBuilderError(
                            format!("placeholder ${n} has no bind").into(),
                        )
                    })?;
                used[bind.0] = true;
                bind.1.push(&mut out)?;
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        if used.contains(&false) {
            return Err(diesel::result::Error::QueryBuilderError(
                "a bind has no placeholder".into(),
            ));
        }
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    // Cached by its text and bind types rather than by type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

/// Run like any other query (`execute`, `load`, `get_result`).
impl diesel::query_dsl::RunQueryDslSupport for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::DatabaseErrorKind;
    use diesel::sql_types::{Integer, Text};

    #[test]
    /// Placeholders become diesel's own, in order; one used twice binds its value twice; a
    /// count that does not match is an error, not a wrong statement.
    fn prepared_statements_bind_each_placeholder() {
        let query = prepared("SELECT $1::int + $2, $1, '$' || $3")
            .bind::<Integer, _>(1)
            .bind::<Integer, _>(2)
            .bind::<Text, _>("x");
        assert_eq!(
            diesel::debug_query::<Pg, _>(&query).to_string(),
            r#"SELECT $1::int + $2, $3, '$' || $4 -- binds: [1, 2, 1, "x"]"#
        );
        let to_sql =
            |query: &Prepared| query.to_sql(&mut diesel::pg::PgQueryBuilder::default(), &Pg);
        let missing = prepared("SELECT $1, $2").bind::<Integer, _>(1);
        assert!(to_sql(&missing).is_err());
        let unused = prepared("SELECT $1")
            .bind::<Integer, _>(1)
            .bind::<Integer, _>(2);
        assert!(to_sql(&unused).is_err());
    }

    fn database_error(kind: DatabaseErrorKind, message: &str) -> diesel::result::Error {
        diesel::result::Error::DatabaseError(kind, Box::new(message.to_string()))
    }

    #[test]
    /// A lost connection or a broken transaction state is unavailable, whatever the message
    /// says; a constraint or a missing row is a failure even when its message names a
    /// connection.
    fn errors_are_classified_by_kind_not_text() {
        let unavailable = [
            database_error(DatabaseErrorKind::ClosedConnection, "gone"),
            database_error(DatabaseErrorKind::UnableToSendCommand, "broken pipe"),
            diesel::result::Error::BrokenTransactionManager,
        ];
        for e in unavailable {
            let text = e.to_string();
            assert!(
                matches!(DbError::from(e), DbError::Unavailable(_)),
                "{text}"
            );
        }
        let failed = [
            database_error(
                DatabaseErrorKind::UniqueViolation,
                "duplicate key value violates unique constraint \"connection_pkey\"",
            ),
            database_error(DatabaseErrorKind::Unknown, "connection string typo: a bug"),
            diesel::result::Error::NotFound,
        ];
        for e in failed {
            let text = e.to_string();
            assert!(matches!(DbError::from(e), DbError::Failed(_)), "{text}");
        }
    }
}
