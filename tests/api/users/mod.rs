//! The users service over HTTP, one file per endpoint: registration, login, profile reads (and
//! the tokens that authorize them), profile updates, token revocation and activity.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

mod activity;
mod login;
mod profile;
mod register;
mod revocation;
mod update;

/// The rejection of a malformed request: `400` with code `invalid_request`.
const INVALID: (u16, &str) = (400, "invalid_request");

/// The rejection of a caller who may not act on that user: `403` with code `forbidden`.
const FORBIDDEN: (u16, &str) = (403, "forbidden");

/// The recsys claims of a token for `sub` with `role`, expiring `exp_offset` seconds from now.
fn claims(sub: Uuid, role: &str, exp_offset: i64) -> Value {
    let now = Utc::now().timestamp();
    json!({"sub": sub, "role": role, "exp": now + exp_offset, "iat": now - 7200})
}

/// An HS256 token with the recsys claims, signed with `secret`, expiring `exp_offset` seconds
/// from now. Signed by hand, so that any secret a forger might try works, the empty one too
/// (the JWT library refuses to sign with that).
pub fn sign(secret: &str, sub: Uuid, role: &str, exp_offset: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{KeyInit as _, Mac as _};
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = b64(claims(sub, role, exp_offset).to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&mac.finalize().into_bytes()))
}

/// A timestamp field of a JSON body.
fn timestamp(body: &Value, field: &str) -> DateTime<Utc> {
    serde_json::from_value(body[field].clone())
        .unwrap_or_else(|e| panic!("{field} is not a timestamp ({e}): {body}"))
}

/// The user's own path.
fn user_path(id: Uuid) -> String {
    format!("/users/{id}")
}

/// Asserts that `reply` is the JSON error `status` with `code` and a message, like
/// [`Reply::assert_error`], naming `case` (the row of a table) when it is not.
#[track_caller]
fn assert_rejected(case: &str, reply: &Reply, (status, code): (u16, &str)) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "{case}: unexpected status; body: {}",
        reply.text
    );
    assert_eq!(
        reply.body["error"]["code"], code,
        "{case}: unexpected body: {}",
        reply.text
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: error without a message: {}",
        reply.text
    );
}

/// How many outbox rows were ever inserted (the id sequence's high-water mark; the relay deletes
/// rows once published, so a plain count could miss a write).
async fn outbox_high_water(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Mark {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .unwrap();
    diesel::sql_query(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM outbox_id_seq",
    )
    .get_result::<Mark>(&mut conn)
    .await
    .unwrap()
    .n
}
