//! Authentication: HS256 JWTs (`sub`, `role`, `exp`), argon2id password hashes, and the
//! [`Caller`] extractor every protected handler takes.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;
use crate::error::ApiError;

/// How long a token is valid.
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May act on its own account.
    User,
    /// May act on every account and write the catalog.
    Admin,
}

impl Role {
    /// The database and claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Parses the database value; anything unknown is the least privileged role.
    pub fn from_db(s: &str) -> Self {
        if s == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// The claims of a recsys token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
}

/// The shortest `JWT_SECRET` the runtime accepts: an HS256 key should carry at least 256 bits,
/// and a short, memorable secret (such as a documented default) lets anyone forge tokens.
pub const MIN_SECRET_BYTES: usize = 32;

/// Signing and verification keys derived from `JWT_SECRET`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Keys for a configured secret; refuses one shorter than [`MIN_SECRET_BYTES`].
    pub fn configured(secret: &Secret) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.expose().len() >= MIN_SECRET_BYTES,
            "JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes; use a random value (e.g. `openssl rand -hex 32`)"
        );
        Ok(Self::new(secret))
    }

    /// Keys for `secret`.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// A token for `user_id` with `role`, valid for [`TOKEN_TTL_SECS`].
    pub fn issue(&self, user_id: Uuid, role: Role) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            role,
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The claims of a valid, unexpired HS256 token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))
    }
}

/// A random 256-bit secret, hex encoded (used when `JWT_SECRET` is unset).
pub fn random_secret() -> Secret {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// The caller's user id.
    pub fn id(&self) -> Uuid {
        self.0.sub
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// `Ok` for admins, `403` otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("admin role required".into()))
        }
    }

    /// `Ok` when the caller is `user_id` or an admin, `403` otherwise.
    pub fn require_self_or_admin(&self, user_id: Uuid) -> Result<(), ApiError> {
        if self.id() == user_id || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "not allowed to access this user".into(),
            ))
        }
    }
}

/// `Authorization: Bearer <jwt>`, or the bare token as the seed accepted.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// An authenticated admin: extraction fails with `401` without a valid token and `403` for a
/// non-admin, before any other parameter of the request is looked at.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            caller.require_admin()?;
            Ok(Admin(caller))
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let keys = req
        .app_data::<web::Data<JwtKeys>>()
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("JwtKeys not configured")))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization header".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid Authorization header".into()))?
        .trim();
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        Some(_) => {
            return Err(ApiError::Unauthorized(
                "unsupported authorization scheme".into(),
            ))
        }
        None => header,
    };
    keys.verify(token).map(Caller)
}

/// Hashes `password` with argon2id and a random salt (CPU heavy: call off the actor thread).
pub fn hash_password(password: &Secret) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Whether `password` matches `hash` (CPU heavy: call off the actor thread). `None` runs a
/// verification against a fixed hash so that unknown accounts take as long as known ones.
pub fn verify_password(password: &Secret, hash: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password(&Secret::new("not-a-real-password")).expect("hashing works")
    });
    let (hash, real) = match hash {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let ok = PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A token issued with one secret verifies with it and fails with another.
    fn tokens_verify_only_with_their_secret() {
        let keys = JwtKeys::new(&Secret::new("one"));
        let id = Uuid::new_v4();
        let claims = keys.verify(&keys.issue(id, Role::Admin)).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Admin);
        let other = JwtKeys::new(&Secret::new("two"));
        assert!(other.verify(&keys.issue(id, Role::User)).is_err());
    }

    #[test]
    /// A hash verifies its password only; a missing hash never verifies.
    fn password_hashes_verify() {
        let hash = hash_password(&Secret::new("correct horse")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&Secret::new("correct horse"), Some(&hash)));
        assert!(!verify_password(&Secret::new("wrong horse"), Some(&hash)));
        assert!(!verify_password(&Secret::new("correct horse"), None));
    }
}
