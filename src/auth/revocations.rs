//! Token revocation: per-user token versions, and the in-memory list every service checks.
//!
//! A token carries its user's version when it was issued (`ver`, 0 for a user who never
//! revoked). A password change or `POST /users/{id}/logout-everywhere` raises the version in
//! `token_revocations`, in the transaction of the change, and NOTIFYs `token_revocations`; every
//! runtime keeps the versions raised within a token's lifetime in a [`Revocations`] list (filled
//! at start, kept current by [`super::listener::RevocationListener`]), so checking a token costs
//! a read lock and a hash lookup, never a round trip. A revocation older than a token's lifetime
//! can refuse no live token (every token issued before it has expired), so the list forgets it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{Int4, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::TOKEN_TTL_SECS;

/// The channel revocations are announced on, with payload `<user id>:<version>`.
pub const CHANNEL: &str = "token_revocations";

/// How long a revocation is kept in memory: a token's lifetime, plus the verification leeway
/// and a margin for clocks.
fn horizon() -> Duration {
    Duration::seconds(TOKEN_TTL_SECS + 300)
}

/// The versions raised within a token's lifetime, by user; shared by every service of a
/// runtime.
#[derive(Clone, Default)]
pub struct Revocations(Arc<RwLock<HashMap<Uuid, Raised>>>);

#[derive(Debug, Clone, Copy)]
struct Raised {
    version: i32,
    at: DateTime<Utc>,
}

impl Revocations {
    /// Whether a token of `user` issued at `version` has been revoked since.
    pub fn refuses(&self, user: Uuid, version: i32) -> bool {
        self.0
            .read()
            .map(|map| map.get(&user).is_some_and(|r| version < r.version))
            // A poisoned lock means a writer panicked mid-update: refuse rather than guess.
            .unwrap_or(true)
    }

    /// Records that `user`'s version rose to `version` at `at` (a lower version than the one
    /// known changes nothing: announcements may arrive out of order).
    pub fn record(&self, user: Uuid, version: i32, at: DateTime<Utc>) {
        if let Ok(mut map) = self.0.write() {
            let entry = map.entry(user).or_insert(Raised { version, at });
            if version >= entry.version {
                *entry = Raised { version, at };
            }
        }
    }

    /// Replaces the whole list with `rows` (the table's recent rows) and forgets what is older
    /// than a token's lifetime.
    fn replace(&self, rows: Vec<Row>) {
        let map = rows
            .into_iter()
            .map(|r| {
                (
                    r.user_id,
                    Raised {
                        version: r.version,
                        at: r.revoked_at,
                    },
                )
            })
            .collect();
        if let Ok(mut current) = self.0.write() {
            *current = map;
        }
    }

    /// Forgets revocations older than a token's lifetime.
    pub fn prune(&self, now: DateTime<Utc>) {
        if let Ok(mut map) = self.0.write() {
            map.retain(|_, r| now - r.at < horizon());
        }
    }

    /// How many users the list holds (for tests and logs).
    pub fn len(&self) -> usize {
        self.0.read().map_or(0, |m| m.len())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the revocations of the last token lifetime from the table.
    pub async fn load(&self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
        let rows = diesel::sql_query(
            "SELECT user_id, version, revoked_at FROM token_revocations WHERE revoked_at > $1",
        )
        .bind::<Timestamptz, _>(Utc::now() - horizon())
        .load::<Row>(conn)
        .await?;
        self.replace(rows);
        Ok(())
    }
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Int4)]
    version: i32,
    #[diesel(sql_type = Timestamptz)]
    revoked_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = Int4)]
    version: i32,
}

/// Raises `user`'s token version and announces it (delivered when the transaction commits);
/// answers the new version. Run it in the transaction of the change it goes with.
pub async fn revoke(conn: &mut AsyncPgConnection, user: Uuid) -> diesel::QueryResult<i32> {
    let raised = diesel::sql_query(
        "WITH raised AS ( \
           INSERT INTO token_revocations (user_id, version, revoked_at) VALUES ($1, 1, now()) \
           ON CONFLICT (user_id) DO UPDATE \
             SET version = token_revocations.version + 1, revoked_at = now() \
           RETURNING user_id, version) \
         SELECT r.version FROM raised r CROSS JOIN LATERAL \
           (SELECT pg_notify('token_revocations', r.user_id::text || ':' || r.version)) AS n",
    )
    .bind::<SqlUuid, _>(user)
    .get_result::<Version>(conn)
    .await?;
    Ok(raised.version)
}

/// `user`'s current token version (0 when never revoked): what a token issued now carries.
pub async fn current_version(conn: &mut AsyncPgConnection, user: Uuid) -> diesel::QueryResult<i32> {
    let versions = diesel::sql_query("SELECT version FROM token_revocations WHERE user_id = $1")
        .bind::<SqlUuid, _>(user)
        .load::<Version>(conn)
        .await?;
    Ok(versions.first().map_or(0, |v| v.version))
}

/// Parses an announcement's payload, `<user id>:<version>`.
pub fn parse(payload: &str) -> Option<(Uuid, i32)> {
    let (user, version) = payload.split_once(':')?;
    Some((user.parse().ok()?, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_older_than_the_users_version_is_refused() {
        let list = Revocations::default();
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!list.refuses(user, 0));
        list.record(user, 2, Utc::now());
        assert!(list.refuses(user, 0) && list.refuses(user, 1));
        assert!(
            !list.refuses(user, 2),
            "a token issued after the revocation"
        );
        assert!(!list.refuses(other, 0));
        list.record(user, 1, Utc::now());
        assert!(list.refuses(user, 1), "a late announcement lowers nothing");
    }

    #[test]
    fn revocations_older_than_a_token_lifetime_are_forgotten() {
        let list = Revocations::default();
        let now = Utc::now();
        list.record(Uuid::new_v4(), 1, now - Duration::hours(25));
        list.record(Uuid::new_v4(), 1, now - Duration::hours(1));
        list.prune(now);
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn payloads_parse() {
        let user = Uuid::new_v4();
        assert_eq!(parse(&format!("{user}:3")), Some((user, 3)));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse(&format!("{user}:x")), None);
    }
}
