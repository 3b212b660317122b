//! Idempotent writes: a client that sends a write with an `Idempotency-Key` header may send it
//! again (after a timeout, a `503`, a lost connection) and gets the first answer back instead
//! of a second write.
//!
//! A keyed write runs in one transaction that starts with [`replay`]: it takes a
//! transaction-scoped advisory lock on the caller's key (held by another request:
//! [`IdempotencyError::InFlight`], answered `409` at once rather than waiting), then looks the
//! key up. Recorded within [`RETENTION`] for the same request, the stored answer is the answer
//! and nothing is written; for another request, [`IdempotencyError::Mismatch`] (`422`). Not
//! recorded, the write runs and [`record`] stores its answer in the same transaction, so a key
//! is recorded exactly when its write committed, and a write that failed records nothing (its
//! retry runs again). The lock is taken in a statement of its own: the lookup after it sees
//! everything committed before the lock was granted.
//!
//! A recorded action (`POST /users/{id}/activity`) is written in the group commit's one
//! statement instead (`users::store::record_activities`): the statement takes the key's lock,
//! records the key and writes the row together, and a keyed row it did not write is judged
//! afterwards from the key's record ([`judge`]), so keyed actions keep the group commit.
//!
//! Keys belong to a caller ([`KeyOwner`]): the same key from two users is two keys. A request is
//! identified by its operation and body, as a fingerprint ([`Fingerprints`]).

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest, HttpResponse};
use diesel::sql_types::{BigInt, Bytea, Jsonb, Text};
use diesel::{OptionalExtension as _, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hmac::{KeyInit as _, Mac as _};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::config::Secret;
use crate::db::{self, DbError, Pool};
use crate::error::ApiError;

/// The request header carrying the key.
pub const HEADER: &str = "idempotency-key";

/// The response header marking an answer given again.
pub const REPLAYED: &str = "idempotent-replayed";

/// Longest accepted key.
pub const MAX_KEY: usize = 255;

/// How long a key's answer is kept: a retry within it is answered from the record.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often a service that writes keyed requests deletes the records past [`RETENTION`].
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A keyed request that cannot be answered now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdempotencyError {
    /// Another request with this key holds it (it has not committed or failed yet).
    #[error(
        "a request with this Idempotency-Key is still in progress; retry once it has finished"
    )]
    InFlight,
    /// The key was used, within its retention, for another request.
    #[error("this Idempotency-Key was already used for a different request")]
    Mismatch,
    /// Looking the key up or recording it failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

db::from_db_errors!(IdempotencyError);

/// Who a key belongs to.
#[derive(Debug, Clone, Copy)]
pub enum KeyOwner {
    /// A request without credentials (a registration).
    Anonymous,
    /// The holder of a token of this user.
    User(Uuid),
    /// A storefront back end (`X-API-Key`).
    ApiKey,
}

impl std::fmt::Display for KeyOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOwner::Anonymous => f.write_str("anonymous"),
            KeyOwner::User(id) => write!(f, "user:{id}"),
            KeyOwner::ApiKey => f.write_str("api-key"),
        }
    }
}

/// Fingerprints requests: HMAC-SHA-256 under a key derived from the token secret, so that the
/// stored fingerprint of a body holding a password cannot be checked against guesses by whoever
/// reads the table. One per process, shared by the HTTP workers as app data.
#[derive(Clone)]
pub struct Fingerprints {
    current: Arc<hmac::Hmac<Sha256>>,
    /// Under `JWT_SECRET_PREVIOUS`: a record made before a rotation still matches.
    previous: Option<Arc<hmac::Hmac<Sha256>>>,
}

impl Fingerprints {
    /// Fingerprints under a key derived from `secret` (the token secret), also recognising
    /// those made under `previous` (the secret it replaced).
    pub fn new(secret: &Secret, previous: Option<&Secret>) -> Self {
        let derive = |secret: &Secret| {
            let mut derive = hmac::Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC takes a key of any length");
            derive.update(b"recsys idempotency fingerprint");
            let key = derive.finalize().into_bytes();
            Arc::new(
                hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length"),
            )
        };
        Self {
            current: derive(secret),
            previous: previous.map(derive),
        }
    }

    /// The fingerprint of `request` sent to `operation` under the current key and, after a
    /// rotation, under the previous one: its JSON with the members of every object in order,
    /// so that two bodies meaning the same are one request.
    fn of(&self, operation: &str, request: &impl Serialize) -> (Vec<u8>, Option<Vec<u8>>) {
        let value = serde_json::to_value(request).expect("a request body serializes");
        let mut text = Vec::with_capacity(256);
        text.extend_from_slice(operation.as_bytes());
        text.push(0);
        canonical(&value, &mut text);
        let print = |key: &hmac::Hmac<Sha256>| {
            let mut mac = key.clone();
            mac.update(&text);
            mac.finalize().into_bytes().to_vec()
        };
        (print(&self.current), self.previous.as_deref().map(print))
    }
}

/// Writes `value` as JSON with the members of every object sorted by name.
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(members) => {
            let mut members: Vec<_> = members.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, name);
                out.push(b':');
                canonical(member, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => write_json(out, other),
    }
}

/// Appends the JSON of a name or a scalar.
fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("JSON of a name or a scalar cannot fail");
}

/// A keyed request: its owner, its key and its fingerprint.
#[derive(Debug, Clone)]
pub struct Claim {
    owner: String,
    key: String,
    fingerprint: Vec<u8>,
    /// Its fingerprint under the secret before a rotation, if there is one.
    previous: Option<Vec<u8>>,
}

impl Claim {
    /// Who sent the key (`caller` of its record).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fingerprint of the request.
    pub fn fingerprint(&self) -> &[u8] {
        &self.fingerprint
    }

    /// The advisory lock of this owner's key: 64 bits of a SHA-256 of both (a collision
    /// only makes one of two unrelated requests wait for a retry).
    pub fn lock(&self) -> i64 {
        let digest = Sha256::new()
            .chain_update(self.owner.as_bytes())
            .chain_update([0])
            .chain_update(self.key.as_bytes())
            .finalize();
        i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
    }
}

/// The `Idempotency-Key` of a request, if it sent one (extractor; a malformed key is `400`).
pub struct IdempotencyKey {
    key: Option<String>,
    fingerprints: Option<web::Data<Fingerprints>>,
}

impl IdempotencyKey {
    /// The claim of this request: `owner` sending `request` to `operation` (the method and
    /// the path with its parameters); `None` without a key.
    pub fn claim(
        &self,
        owner: KeyOwner,
        operation: &str,
        request: &impl Serialize,
    ) -> Result<Option<Claim>, ApiError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let fingerprints = self.fingerprints.as_ref().ok_or_else(|| {
            ApiError::Unexpected(anyhow::anyhow!("request fingerprints not configured"))
        })?;
        let (fingerprint, previous) = fingerprints.of(operation, request);
        Ok(Some(Claim {
            owner: owner.to_string(),
            key: key.clone(),
            fingerprint,
            previous,
        }))
    }
}

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = match req.headers().get(HEADER) {
            None => Ok(None),
            Some(value) => match value.to_str() {
                Ok(key) if valid_key(key) => Ok(Some(key.to_string())),
                _ => Err(ApiError::invalid(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters"
                ))),
            },
        };
        ready(key.map(|key| IdempotencyKey {
            key,
            fingerprints: req.app_data::<web::Data<Fingerprints>>().cloned(),
        }))
    }
}

/// 1 to [`MAX_KEY`] printable ASCII characters (spaces only inside: HTTP trims a header).
fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !key.starts_with(' ')
        && !key.ends_with(' ')
}

/// The JSON Schema pattern of a key, as [`valid_key`] checks it.
pub const KEY_PATTERN: &str = r"^[!-~]([ -~]{0,253}[!-~])?$";

/// A write's answer, and whether it is the recorded answer of an earlier request with the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub value: T,
    /// Given again from the record: nothing was written.
    pub replayed: bool,
}

impl<T> Answer<T> {
    /// The answer of a write that ran now.
    pub fn fresh(value: T) -> Self {
        Self {
            value,
            replayed: false,
        }
    }

    /// The answer with its value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            replayed: self.replayed,
        }
    }

    /// The response: `status` and the JSON of `body(value)`, marked `Idempotent-Replayed: true`
    /// when given again.
    pub fn respond<B: Serialize>(
        self,
        status: StatusCode,
        body: impl FnOnce(T) -> B,
    ) -> HttpResponse {
        let mut response = HttpResponse::build(status);
        if self.replayed {
            response.insert_header((REPLAYED, "true"));
        }
        response.json(body(self.value))
    }
}

/// The live record of a key, as a lookup reads it.
#[derive(Debug, Clone, QueryableByName)]
pub struct Recorded {
    #[diesel(sql_type = Bytea)]
    pub fingerprint: Vec<u8>,
    #[diesel(sql_type = Jsonb)]
    pub answer: serde_json::Value,
}

/// What a key's live record (if any) means for `claim`: its answer for the same request
/// (`Some`: answer it again), nothing recorded (`None`), or [`IdempotencyError::Mismatch`].
pub fn judge<T: DeserializeOwned>(
    claim: &Claim,
    recorded: Option<Recorded>,
) -> Result<Option<T>, IdempotencyError> {
    let same = |recorded: &Recorded| {
        recorded.fingerprint == claim.fingerprint
            || claim.previous.as_ref() == Some(&recorded.fingerprint)
    };
    match recorded {
        None => Ok(None),
        Some(recorded) if !same(&recorded) => Err(IdempotencyError::Mismatch),
        Some(recorded) => serde_json::from_value(recorded.answer)
            .map(Some)
            .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)).into()),
    }
}

/// [`RETENTION`] in seconds, as statements bind it (`make_interval(secs => ..)`).
pub fn retention_secs() -> f64 {
    RETENTION.as_secs_f64()
}

/// Call first in the transaction of a keyed write: takes the key's lock and answers the
/// recorded answer of the same request, if there is one (the write must then not run).
/// Without a claim, `None` and nothing done.
pub async fn replay<T: DeserializeOwned>(
    conn: &mut AsyncPgConnection,
    claim: Option<&Claim>,
) -> Result<Option<T>, IdempotencyError> {
    let Some(claim) = claim else {
        return Ok(None);
    };
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let locked: Locked = db::prepared("SELECT pg_try_advisory_xact_lock($1) AS locked")
        .bind::<BigInt, _>(claim.lock())
        .get_result(conn)
        .await?;
    if !locked.locked {
        return Err(IdempotencyError::InFlight);
    }
    let recorded: Option<Recorded> = db::prepared(
        "SELECT fingerprint, answer FROM idempotency_keys \
         WHERE caller = $1 AND key = $2 AND created_at > now() - make_interval(secs => $3)",
    )
    .bind::<Text, _>(claim.owner.as_str())
    .bind::<Text, _>(claim.key.as_str())
    .bind::<diesel::sql_types::Double, _>(retention_secs())
    .get_result(conn)
    .await
    .optional()?;
    judge(claim, recorded)
}

/// Call last in the transaction of a keyed write that ran: records `answer` for the key (over
/// a dead record of it). Without a claim, nothing done.
pub async fn record<T: Serialize>(
    conn: &mut AsyncPgConnection,
    claim: Option<&Claim>,
    answer: &T,
) -> Result<(), IdempotencyError> {
    let Some(claim) = claim else {
        return Ok(());
    };
    let answer = serde_json::to_value(answer)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let written = db::prepared(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, answer) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (caller, key) DO UPDATE \
           SET fingerprint = EXCLUDED.fingerprint, answer = EXCLUDED.answer, \
               created_at = EXCLUDED.created_at \
           WHERE idempotency_keys.created_at <= now() - make_interval(secs => $5)",
    )
    .bind::<Text, _>(claim.owner.as_str())
    .bind::<Text, _>(claim.key.as_str())
    .bind::<Bytea, _>(claim.fingerprint.as_slice())
    .bind::<Jsonb, _>(answer)
    .bind::<diesel::sql_types::Double, _>(retention_secs())
    .execute(conn)
    .await?;
    // A live record the lookup did not see cannot exist while the lock is held; should one
    // anyway, the write rolls back rather than be answered twice.
    if written == 1 {
        Ok(())
    } else {
        Err(IdempotencyError::InFlight)
    }
}

/// Deletes the records past [`RETENTION`]; answers how many.
pub async fn purge(pool: &Pool) -> Result<usize, DbError> {
    let mut conn = pool.get().await?;
    Ok(db::prepared(
        "DELETE FROM idempotency_keys WHERE created_at <= now() - make_interval(secs => $1)",
    )
    .bind::<diesel::sql_types::Double, _>(retention_secs())
    .execute(&mut conn)
    .await?)
}

/// Purges the dead records every [`PURGE_EVERY`] while the actor of `ctx` runs.
pub fn purge_while_running<A>(ctx: &mut A::Context, pool: Pool, logger: slog::Logger)
where
    A: actix::Actor<Context = actix::Context<A>>,
{
    use actix::{AsyncContext as _, WrapFuture as _};
    ctx.run_interval(PURGE_EVERY, move |actor, ctx| {
        let (pool, logger) = (pool.clone(), logger.clone());
        ctx.spawn(
            async move {
                match purge(&pool).await {
                    Ok(0) => {}
                    Ok(purged) => slog::debug!(logger, "idempotency keys purged"; "keys" => purged),
                    Err(e) => slog::warn!(logger, "purging idempotency keys failed"; "error" => %e),
                }
            }
            .into_actor(actor),
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Keys are 1 to 255 printable ASCII characters, spaces inside only; the pattern the
    /// documents declare admits the same.
    fn keys_are_short_printable_ascii() {
        let schema = serde_json::json!({"type": "string", "pattern": KEY_PATTERN});
        let pattern = jsonschema::validator_for(&schema).unwrap();
        for (key, ok) in [
            ("a", true),
            ("0f5b5b7e-3d5c-4c1e-9c55-1b7d1f0c2a11", true),
            ("order 17 / retry", true),
            (&"k".repeat(255), true),
            ("", false),
            (&"k".repeat(256), false),
            (" lead", false),
            ("trail ", false),
            ("tab\tinside", false),
            ("\u{e9}", false),
        ] {
            assert_eq!(valid_key(key), ok, "{key:?}");
            assert_eq!(
                pattern.is_valid(&serde_json::json!(key)),
                ok,
                "pattern on {key:?}"
            );
        }
    }

    #[test]
    /// Two bodies with the same members in another order are one request; another value,
    /// another operation or another secret is another fingerprint.
    fn fingerprints_ignore_member_order_only() {
        let secret = Secret::new("a-secret-of-at-least-thirty-two-bytes!!");
        let prints = Fingerprints::new(&secret, None);
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": "s"}}"#)
                .unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, {"p": 3, "q": 2}]}, "b": 1}"#)
                .unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [{"p": 3, "q": 2}, 1]}, "b": 1}"#)
                .unwrap();
        let print = |prints: &Fingerprints, op, v| prints.of(op, v).0;
        assert_eq!(print(&prints, "op", &a), print(&prints, "op", &b));
        assert_ne!(print(&prints, "op", &a), print(&prints, "op", &c));
        assert_ne!(print(&prints, "op", &a), print(&prints, "other", &a));
        let newer = Secret::new("another-secret-of-thirty-two-bytes!!!");
        let rotated = Fingerprints::new(&newer, Some(&secret));
        assert_ne!(print(&prints, "op", &a), print(&rotated, "op", &a));
        // After the rotation the old fingerprint is still recognised.
        assert_eq!(rotated.of("op", &a).1, Some(print(&prints, "op", &a)));
    }
}
