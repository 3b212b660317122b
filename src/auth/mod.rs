//! Authentication: HS256 JWTs (`sub`, `role`, `exp`, `iat`, `ver`), argon2id password hashes,
//! and the [`Caller`] extractor every protected handler takes.
//!
//! - [`revocations`]: per-user token versions; a token older than its user's version is
//!   refused by every service, checked in memory.
//! - [`listener`]: the actor that keeps a runtime's revocation list current.

pub mod listener;
pub mod revocations;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use anyhow::Context as _;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Params};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;
use crate::error::ApiError;
use revocations::Revocations;

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
    /// The user's token version when the token was issued: once the user's version is higher
    /// (a password change, a logout everywhere), the token is refused.
    #[serde(default)]
    pub ver: i32,
}

/// The shortest `JWT_SECRET` the runtime accepts: an HS256 key should carry at least 256 bits,
/// and a short, memorable secret (such as a documented default) lets anyone forge tokens.
pub const MIN_SECRET_BYTES: usize = 32;

/// Signing and verification keys derived from `JWT_SECRET` (and `JWT_SECRET_PREVIOUS`).
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The key of `JWT_SECRET_PREVIOUS`: verifies, never signs.
    previous: Option<DecodingKey>,
    validation: Validation,
    /// The users whose tokens of older versions are refused.
    revocations: Revocations,
    /// Tells these keys' entries of [`VERIFIED`] from those of other keys in the same process
    /// (tests build several); clones share it, as they share the keys.
    id: u64,
}

/// Tokens whose signature this thread checked lately, at most this many. A storefront's user
/// sends the same token with every request of a session, and checking it (base64, HMAC-SHA256,
/// the claims' JSON) costs more than the rest of a cached answer; keeping the verified claims
/// by the token's exact text skips that, and a byte-identical token cannot sign differently.
const VERIFIED_PER_THREAD: usize = 512;

thread_local! {
    /// Verified tokens by their text: the [`JwtKeys::id`] that verified each, and its claims.
    /// Emptied when full (a per-thread working set, not a record).
    static VERIFIED: RefCell<HashMap<Box<str>, (u64, Claims)>> = RefCell::new(HashMap::new());
}

/// Numbers [`JwtKeys`] as they are built.
static NEXT_KEYS_ID: AtomicU64 = AtomicU64::new(0);

/// Refuses a configured secret shorter than [`MIN_SECRET_BYTES`], naming its variable.
pub fn check_secret(name: &str, secret: &Secret) -> anyhow::Result<()> {
    anyhow::ensure!(
        secret.expose().len() >= MIN_SECRET_BYTES,
        "{name} is shorter than {MIN_SECRET_BYTES} bytes; use a random value (e.g. `openssl rand -hex 32`)"
    );
    Ok(())
}

impl JwtKeys {
    /// Keys for the configured secrets; refuses one shorter than [`MIN_SECRET_BYTES`].
    pub fn configured(secret: &Secret, previous: Option<&Secret>) -> anyhow::Result<Self> {
        check_secret("JWT_SECRET", secret)?;
        let mut keys = Self::new(secret)?;
        if let Some(previous) = previous {
            check_secret("JWT_SECRET_PREVIOUS", previous)?;
            keys.previous = Some(
                DecodingKey::from_secret(previous.expose().as_bytes())
                    .context("JWT_SECRET_PREVIOUS as a verification key")?,
            );
        }
        Ok(keys)
    }

    /// Keys for `secret`.
    pub fn new(secret: &Secret) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let key = secret.expose().as_bytes();
        Ok(Self {
            encoding: EncodingKey::from_secret(key).context("JWT_SECRET as a signing key")?,
            decoding: DecodingKey::from_secret(key).context("JWT_SECRET as a verification key")?,
            previous: None,
            validation,
            revocations: Revocations::default(),
            id: NEXT_KEYS_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The revocation list these keys check every token against.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// A token for `user_id` with `role` at token version `version`, valid for
    /// [`TOKEN_TTL_SECS`].
    pub fn issue(&self, user_id: Uuid, role: Role, version: i32) -> String {
        self.issue_at(user_id, role, Utc::now(), version)
    }

    /// The token for `user_id` with `role` at `version` issued at `at` (to the second), valid
    /// for [`TOKEN_TTL_SECS`] from then: the same arguments give the same token.
    pub fn issue_at(
        &self,
        user_id: Uuid,
        role: Role,
        at: chrono::DateTime<Utc>,
        version: i32,
    ) -> String {
        let iat = at.timestamp();
        let claims = Claims {
            sub: user_id,
            role,
            iat,
            exp: iat + TOKEN_TTL_SECS,
            ver: version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The claims of a valid, unexpired HS256 token signed with the current key or the
    /// previous one, and not revoked. The signature of a token this thread verified lately is
    /// not checked again; its expiry and revocation are, every time.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = match self.verified_lately(token) {
            Some(claims) => claims,
            None => {
                let claims = std::iter::once(&self.decoding)
                    .chain(&self.previous)
                    .find_map(|key| {
                        jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok()
                    })
                    .map(|data| data.claims)
                    .ok_or_else(|| ApiError::Unauthorized("invalid or expired token".into()))?;
                VERIFIED.with_borrow_mut(|verified| {
                    if verified.len() >= VERIFIED_PER_THREAD {
                        verified.clear();
                    }
                    verified.insert(token.into(), (self.id, claims.clone()));
                });
                claims
            }
        };
        if self.revocations.refuses(claims.sub, claims.ver) {
            return Err(ApiError::Unauthorized(
                "token revoked (password changed or logged out everywhere); log in again".into(),
            ));
        }
        Ok(claims)
    }

    /// The claims of `token` if these keys verified it on this thread and it has not expired
    /// since. Without the leeway a fresh check grants: an entry near its expiry is checked
    /// again, by the rule that applies to every token.
    fn verified_lately(&self, token: &str) -> Option<Claims> {
        VERIFIED.with_borrow(|verified| {
            let (id, claims) = verified.get(token)?;
            (*id == self.id && Utc::now().timestamp() < claims.exp).then(|| claims.clone())
        })
    }
}

/// A random 256-bit secret, hex encoded (`--dev` without `JWT_SECRET`).
pub fn random_secret() -> Secret {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
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

/// The header a storefront back end authenticates with.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key storefront back ends send in `X-API-Key` (`API_KEY`); `None`: nobody is accepted by
/// key.
#[derive(Clone, Default)]
pub struct ApiKey(Option<std::sync::Arc<[u8]>>);

impl ApiKey {
    /// Shortest accepted key, as for `JWT_SECRET`.
    pub const MIN_BYTES: usize = 32;

    /// The configured key; refuses one shorter than [`ApiKey::MIN_BYTES`].
    pub fn new(key: Option<&Secret>) -> anyhow::Result<Self> {
        match key {
            None => Ok(Self(None)),
            Some(key) if key.expose().len() < Self::MIN_BYTES => Err(anyhow::anyhow!(
                "API_KEY must be at least {} bytes",
                Self::MIN_BYTES
            )),
            Some(key) => Ok(Self(Some(key.expose().as_bytes().into()))),
        }
    }

    /// Whether `given` is the key, compared in constant time (every byte, whatever differs).
    fn accepts(&self, given: &[u8]) -> bool {
        let Some(key) = &self.0 else {
            return false;
        };
        let differences = key
            .iter()
            .zip(given)
            .fold(u8::from(key.len() != given.len()), |acc, (a, b)| {
                acc | (a ^ b)
            });
        std::hint::black_box(differences) == 0
    }
}

/// Who records an action: the user themself (a token of theirs) or a storefront back end (the
/// `X-API-Key` header), which may record for any user. A request that sends `X-API-Key` is
/// judged by its key alone: a wrong one is `401`, whatever token comes with it.
pub enum Recorder {
    User(Caller),
    Backend,
}

impl FromRequest for Recorder {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.headers().get(API_KEY_HEADER) {
            Some(_) => Backend::check(req).map(|Backend| Recorder::Backend),
            None => authenticate(req).map(Recorder::User),
        })
    }
}

/// A storefront back end: extraction fails with `401` unless the request carries the
/// configured `X-API-Key`.
pub struct Backend;

impl Backend {
    fn check(req: &HttpRequest) -> Result<Self, ApiError> {
        let given = req
            .headers()
            .get(API_KEY_HEADER)
            .ok_or_else(|| ApiError::Unauthorized("missing X-API-Key header".into()))?;
        let accepted = req
            .app_data::<web::Data<ApiKey>>()
            .is_some_and(|key| key.accepts(given.as_bytes()));
        if accepted {
            Ok(Backend)
        } else {
            Err(ApiError::Unauthorized("invalid API key".into()))
        }
    }
}

impl FromRequest for Backend {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Backend::check(req))
    }
}

/// The working memory of argon2 (19 MiB with the default parameters), kept and reused by
/// whoever hashes: each call of the crate's allocating API takes a fresh block of that size,
/// and glibc keeps such blocks in its per-thread arenas once its mmap threshold has grown past
/// them, so the resident memory grows with every burst of registrations. Kept by each hashing
/// thread, it stays at one block per thread (docs/benchmarks.md, "Figures behind the settings").
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

impl HashMemory {
    /// The first `blocks` blocks, grown once to the largest request seen.
    fn blocks(&mut self, blocks: usize) -> &mut [argon2::Block] {
        if self.0.len() < blocks {
            self.0.resize(blocks, argon2::Block::default());
        }
        &mut self.0[..blocks]
    }

    /// The argon2 output of `password` and `salt` under `argon` (its algorithm, version and
    /// parameters).
    fn compute(
        &mut self,
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &Salt,
    ) -> anyhow::Result<Output> {
        let params = argon.params();
        let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let memory = self.blocks(params.block_count());
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let out = buffer
            .get_mut(..length)
            .context("argon2 output longer than a PHC hash holds")?;
        argon
            .hash_password_into_with_memory(password, salt, out, &mut *memory)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Output::new(out).map_err(|e| anyhow::anyhow!("argon2 output: {e}"))
    }

    /// Hashes `password` with argon2id (default parameters) and a random salt; answers the PHC
    /// string. CPU heavy: call off the actor thread.
    pub fn hash(&mut self, password: &Secret) -> anyhow::Result<String> {
        let salt = Salt::generate();
        let argon = Argon2::default();
        let output = self
            .compute(&argon, password.expose().as_bytes(), &salt)
            .context("hashing password")?;
        let params = ParamsString::try_from(argon.params())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
        let phc = PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(argon2::Version::default().into()),
            params,
            salt: Some(salt),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches `hash` (`None`: verified against a fixed hash, so that
    /// unknown accounts take as long as known ones; never matches). CPU heavy: call off the
    /// actor thread.
    pub fn verify(&mut self, password: &Secret, hash: Option<&str>) -> bool {
        static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            HashMemory::default()
                .hash(&Secret::new("not-a-real-password"))
                .expect("hashing works")
        });
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (DUMMY.as_str(), false),
        };
        let matches = (|| -> anyhow::Result<bool> {
            let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
            let parsed = PasswordHash::new(hash).map_err(|e| error(&e))?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                return Ok(false);
            };
            let algorithm =
                argon2::Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| error(&e))?;
            let version = parsed
                .version
                .map(argon2::Version::try_from)
                .transpose()
                .map_err(|e| error(&e))?
                .unwrap_or_default();
            let params = Params::try_from(&parsed).map_err(|e| error(&e))?;
            let argon = Argon2::new(algorithm, version, params);
            // `Output` compares in constant time.
            Ok(self.compute(&argon, password.expose().as_bytes(), &salt)? == expected)
        })()
        .unwrap_or(false);
        matches && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A token issued with one secret verifies with it and fails with another.
    fn tokens_verify_only_with_their_secret() {
        let keys = JwtKeys::new(&Secret::new("one")).unwrap();
        let id = Uuid::new_v4();
        let claims = keys.verify(&keys.issue(id, Role::Admin, 0)).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Admin);
        let other = JwtKeys::new(&Secret::new("two")).unwrap();
        assert!(other.verify(&keys.issue(id, Role::User, 0)).is_err());
    }

    #[test]
    /// A token this thread verified already is still refused by other keys, once revoked, and
    /// with any byte changed.
    fn verified_tokens_are_remembered_only_for_their_keys() {
        let keys = JwtKeys::new(&Secret::new("one")).unwrap();
        let id = Uuid::new_v4();
        let token = keys.issue(id, Role::User, 1);
        assert_eq!(keys.verify(&token).unwrap().sub, id);
        assert_eq!(keys.clone().verify(&token).unwrap().sub, id);
        let other = JwtKeys::new(&Secret::new("one, but other keys")).unwrap();
        assert!(other.verify(&token).is_err());
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(keys
            .verify(std::str::from_utf8(&tampered).unwrap())
            .is_err());
        keys.revocations().record(id, 2, Utc::now());
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    /// A hash verifies its password only; a missing hash never verifies.
    fn password_hashes_verify() {
        let mut memory = HashMemory::default();
        let hash = memory.hash(&Secret::new("correct horse")).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(memory.verify(&Secret::new("correct horse"), Some(&hash)));
        assert!(!memory.verify(&Secret::new("wrong horse"), Some(&hash)));
        assert!(!memory.verify(&Secret::new("correct horse"), None));
        assert!(!memory.verify(&Secret::new("correct horse"), Some("not a hash")));
    }

    #[test]
    /// Hashes written with the argon2 crate's own API (as stored before) verify here, with
    /// their own parameters, and the crate's verifier accepts the hashes written here.
    fn hashes_agree_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = HashMemory::default();
        let salt = Salt::generate();
        let cheap = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        for argon in [Argon2::default(), cheap] {
            let theirs = argon
                .hash_password_with_salt(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert!(memory.verify(&Secret::new("correct horse"), Some(&theirs)));
            assert!(!memory.verify(&Secret::new("wrong horse"), Some(&theirs)));
        }
        let ours = memory.hash(&Secret::new("correct horse")).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
    }
}
