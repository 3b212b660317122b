//! Routes of the users service. Handlers authenticate, validate, send one typed message to
//! [`UsersActor`] and map the reply; a lost message becomes a `503`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::Action;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::actor::{
    BatchAction, GetUser, Login, LogoutEverywhere, RecordActivity, RecordBatch, RegisterUser,
    Registered, UpdateUser, UserView, UsersActor,
};
use super::error::UsersError;
use crate::auth::{Backend, Caller, JwtKeys, Recorder};
use crate::error::{ApiError, ErrorBody};
use crate::http::Object;
use crate::idempotency::{IdempotencyKey, KeyOwner};
use crate::openapi::Api;
use crate::validate::{self, Given};

/// Longest accepted name.
const MAX_NAME: usize = 100;

/// The documented `name` of a new account.
fn name_schema() -> RefOr<Schema> {
    validate::text_schema(MAX_NAME, false, "")
}

/// The documented `name` of an update.
fn optional_name_schema() -> RefOr<Schema> {
    validate::text_schema(MAX_NAME, true, "Absent or `null` leaves the name as it is.")
}

/// Registers (and documents) the users routes.
pub fn routes(api: &mut Api) {
    api.add(__path_register, register)
        .alias("/users", "register_at_users", __path_register, register)
        .add(__path_login, login)
        .add(__path_get_user, get_user)
        .add(__path_update_user, update_user)
        .add(__path_logout_everywhere, logout_everywhere)
        .add(__path_record_activity, record_activity)
        .add(__path_record_batch, record_batch)
        .body_limit("/activity/batch", MAX_BATCH_BYTES);
    for path in [
        "/users/register",
        "/users",
        "/users/{id}/activity",
        "/activity/batch",
    ] {
        api.idempotent(path);
    }
}

/// Largest `POST /activity/batch` body: 1000 actions of about 200 bytes, with room to spare.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// `POST /users/register` and `POST /users`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
struct RegisterBody {
    #[schema(schema_with = name_schema)]
    name: String,
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters; an account without one cannot log in.
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
}

/// Creates an account and returns a token for it (also served at `POST /users`).
#[utoipa::path(
    post,
    path = "/users/register",
    tag = "users",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 409, description = "The email is already registered", body = ErrorBody),
    )
)]
async fn register(
    users: web::Data<ObservedAddr<UsersActor>>,
    key: IdempotencyKey,
    body: web::Json<Object<RegisterBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let claim = key.claim(KeyOwner::Anonymous, "POST /users/register", &body)?;
    let msg = RegisterUser {
        name: validate::text("name", &body.name, MAX_NAME)?,
        email: validate::email(&body.email)?,
        password: body
            .password
            .as_deref()
            .map(validate::password)
            .transpose()?,
        claim,
    };
    let registered = users.send(msg).await??;
    Ok(registered.respond(StatusCode::CREATED, |r| r))
}

/// `POST /users/login`.
#[derive(Debug, Deserialize, ToSchema)]
struct LoginBody {
    email: String,
    password: String,
}

/// A bearer token (JWT).
#[derive(Serialize, ToSchema)]
struct TokenBody {
    token: String,
}

/// Exchanges email and password for a token. A wrong password and an unknown email get the same
/// answer; repeated failures per email and per client address are refused for a while.
#[utoipa::path(
    post,
    path = "/users/login",
    tag = "users",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn login(
    users: web::Data<ObservedAddr<UsersActor>>,
    request: HttpRequest,
    body: web::Json<Object<LoginBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let unauthorized = || ApiError::from(UsersError::BadCredentials);
    // Malformed credentials get the same answer as wrong ones.
    let email = validate::email(&body.email).map_err(|_| unauthorized())?;
    let password = validate::password(&body.password).map_err(|_| unauthorized())?;
    // The peer address, not a forwarding header a client could set.
    let client = request.peer_addr().map(|peer| peer.ip());
    let token = users
        .send(Login {
            email,
            password,
            client,
        })
        .await??;
    Ok(HttpResponse::Ok().json(TokenBody { token }))
}

/// A user's profile: the user themself or an admin.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn get_user(
    users: web::Data<ObservedAddr<UsersActor>>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    caller.require_self_or_admin(id)?;
    let user = users
        .send(GetUser { id })
        .await?
        .map_err(account_gone(&caller, id))?;
    Ok(HttpResponse::Ok().json(user))
}

/// `PUT`/`PATCH /users/{id}`: any subset of the fields.
#[derive(Debug, Deserialize, ToSchema)]
struct UpdateBody {
    #[schema(schema_with = optional_name_schema)]
    name: Option<String>,
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
    /// The user's password now: required to change `email` or `password`, except for an admin
    /// changing another user's (`403` without it or with a wrong one). A wrong one counts as a
    /// failed login.
    #[schema(write_only)]
    current_password: Option<String>,
}

/// Schema only: an [`UpdateBody`] that changes something ([`validate::at_least_one`]): a `name`,
/// `email` or `password` other than `null`.
struct UpdateRequest;

impl utoipa::PartialSchema for UpdateRequest {
    fn schema() -> RefOr<Schema> {
        let text = Given::Value(&[Type::String]);
        validate::at_least_one(
            &UpdateBody::name(),
            &[("name", text), ("email", text), ("password", text)],
        )
    }
}

impl ToSchema for UpdateRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UpdateBody::name().into(), UpdateBody::schema()));
        <UpdateBody as ToSchema>::schemas(schemas);
    }
}

/// The updated profile, and a fresh token when the caller changed their own password (every
/// token issued before the change is refused from now on).
#[derive(Debug, Serialize, ToSchema)]
struct UpdatedBody {
    #[serde(flatten)]
    user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// Changes any of name, email and password (at least one): the user themself or an admin. A
/// new email or password needs `current_password` (an admin changing another user's needs
/// none; that change is logged). A new password revokes every token issued before it.
#[utoipa::path(
    method(put, patch),
    path = "/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UpdateRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated profile (with a new token after the caller's own password change)", body = UpdatedBody),
        (status = 400, description = "Nothing to update, or an invalid field", body = ErrorBody),
        (status = 403, description = "No `current_password` for a new email or password, a wrong one, or not the caller's account", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The email is already registered", body = ErrorBody),
        (status = 429, description = "Too many failed attempts at the current password; see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn update_user(
    users: web::Data<ObservedAddr<UsersActor>>,
    keys: web::Data<JwtKeys>,
    request: HttpRequest,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<Object<UpdateBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    caller.require_self_or_admin(id)?;
    let Object(body) = body.into_inner();
    if body.name.is_none() && body.email.is_none() && body.password.is_none() {
        return Err(ApiError::invalid(
            "nothing to update: give name, email or password",
        ));
    }
    let msg = UpdateUser {
        id,
        name: body
            .name
            .as_deref()
            .map(|n| validate::text("name", n, MAX_NAME))
            .transpose()?,
        email: body.email.as_deref().map(validate::email).transpose()?,
        password: body
            .password
            .as_deref()
            .map(validate::password)
            .transpose()?,
        by_admin: (caller.is_admin() && caller.id() != id).then(|| caller.id()),
    };
    let credentials = msg.email.is_some() || msg.password.is_some();
    if credentials && msg.by_admin.is_none() {
        // Not a malformed request (the same body is fine from an admin for another account):
        // the caller has not proved they hold the account, as with a wrong one.
        let current = body.current_password.as_deref().ok_or_else(|| {
            ApiError::Forbidden(
                "current_password is required to change the email or the password".into(),
            )
        })?;
        check_current_password(&users, &request, &caller, id, current).await?;
    }
    let updated = users.send(msg).await?.map_err(account_gone(&caller, id))?;
    let token = match updated.token_version {
        Some(version) if caller.id() == id => Some(keys.issue(id, caller.0.role, version)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(UpdatedBody {
        user: updated.user,
        token,
    }))
}

/// Checks `current` as a login of the account `id` would (the same lockout counts it): `403`
/// when wrong.
async fn check_current_password(
    users: &ObservedAddr<UsersActor>,
    request: &HttpRequest,
    caller: &Caller,
    id: Uuid,
    current: &str,
) -> Result<(), ApiError> {
    let wrong = || ApiError::Forbidden("current_password is wrong".into());
    let password = validate::password(current).map_err(|_| wrong())?;
    let user = users
        .send(GetUser { id })
        .await?
        .map_err(account_gone(caller, id))?;
    let checked = users
        .send(Login {
            email: user.email,
            password,
            client: request.peer_addr().map(|peer| peer.ip()),
        })
        .await?;
    match checked {
        Ok(_) => Ok(()),
        Err(UsersError::BadCredentials) => Err(wrong()),
        Err(other) => Err(other.into()),
    }
}

/// Refuses every token of the user issued until now, on every service and instance: the user
/// themself or an admin. Log in again for a new one.
#[utoipa::path(
    post,
    path = "/users/{id}/logout-everywhere",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every token issued so far is refused"),
        (status = 403, description = "Not the caller's account", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn logout_everywhere(
    users: web::Data<ObservedAddr<UsersActor>>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    caller.require_self_or_admin(id)?;
    users
        .send(LogoutEverywhere { id })
        .await?
        .map_err(account_gone(&caller, id))?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /users/{id}/activity`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
struct ActivityBody {
    #[serde(rename = "type")]
    action: Action,
    product_id: Uuid,
    /// 1 to 1000; default 1.
    #[serde(default, deserialize_with = "validate::optional_count")]
    #[schema(minimum = 1, maximum = 1000)]
    quantity: Option<u32>,
}

/// The id of the event the action became.
#[derive(Serialize, ToSchema)]
struct Accepted {
    event_id: Uuid,
}

/// Records what the user did with a product: the user themself (a token), or a storefront back
/// end for any user (`X-API-Key`); the event is on `user-updates` once the outbox relays it.
#[utoipa::path(
    post,
    path = "/users/{id}/activity",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = ActivityBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Recorded", body = Accepted),
    )
)]
async fn record_activity(
    users: web::Data<ObservedAddr<UsersActor>>,
    recorder: Recorder,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: web::Json<Object<ActivityBody>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = id.into_inner();
    let caller = match recorder {
        Recorder::User(caller) if caller.id() != user_id => {
            return Err(ApiError::Forbidden(
                "only the user may record their own activity".into(),
            ));
        }
        Recorder::User(caller) => Some(caller),
        Recorder::Backend => None,
    };
    let Object(body) = body.into_inner();
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=1000).contains(&quantity) {
        return Err(ApiError::invalid("quantity must be between 1 and 1000"));
    }
    let owner = match &caller {
        Some(caller) => KeyOwner::User(caller.id()),
        None => KeyOwner::ApiKey,
    };
    let claim = key.claim(owner, &format!("POST /users/{user_id}/activity"), &body)?;
    let answer = users
        .send(RecordActivity {
            user_id,
            product_id: body.product_id,
            action: body.action,
            quantity,
            claim,
        })
        .await?
        .map_err(|e| match &caller {
            Some(caller) => account_gone(caller, user_id)(e),
            None => e.into(),
        })?;
    Ok(answer.respond(StatusCode::ACCEPTED, |event_id| Accepted { event_id }))
}

/// How far ahead of this server's clock a batch action's `occurred_at` may be (clock skew).
const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// How old a batch action may be: 30 days, 30 half-lives of the default popularity decay, where
/// an action weighs less than a billionth of a fresh one (analytics still counts it exactly).
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Most actions in one batch.
const MAX_BATCH: usize = 1000;

/// `POST /activity/batch`: what a storefront back end sends.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
struct BatchBody {
    /// 1 to 1000 actions, written all or nothing, in this order.
    #[schema(value_type = Vec<BatchItem>, min_items = 1, max_items = 1000)]
    actions: Vec<serde_json::Value>,
}

/// One action of a batch (checked field by field, so that a 400 names every bad one).
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
struct BatchItem {
    user_id: Uuid,
    #[serde(rename = "type")]
    action: Action,
    product_id: Uuid,
    /// 1 to 1000; default 1.
    #[schema(minimum = 1, maximum = 1000)]
    quantity: Option<u32>,
    /// When the user did it (RFC 3339): at most 5 minutes ahead of the server's clock, at most
    /// 30 days old; default now. Rankings and analytics count the action at this time.
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a batch became.
#[derive(Serialize, ToSchema)]
struct BatchAccepted {
    accepted: usize,
    /// The event id of each action, in the order sent.
    event_ids: Vec<Uuid>,
}

/// Records a batch of actions for any users (storefront back ends, `X-API-Key`): all or
/// nothing; a 400 names the index and the field of every bad action.
#[utoipa::path(
    post,
    path = "/activity/batch",
    tag = "users",
    request_body = BatchBody,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Every action recorded", body = BatchAccepted),
    )
)]
async fn record_batch(
    users: web::Data<ObservedAddr<UsersActor>>,
    _backend: Backend,
    key: IdempotencyKey,
    body: web::Json<Object<BatchBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let claim = key.claim(KeyOwner::ApiKey, "POST /activity/batch", &body)?;
    let actions = body.actions;
    if actions.is_empty() || actions.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "actions must hold 1 to {MAX_BATCH} actions"
        )));
    }
    let now = chrono::Utc::now();
    let mut valid = Vec::with_capacity(actions.len());
    let mut problems = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        match batch_action(action, now) {
            Ok(action) => valid.push(action),
            Err(fields) => problems.extend(fields.into_iter().map(|(field, why)| {
                if field.is_empty() {
                    format!("actions[{i}]: {why}")
                } else {
                    format!("actions[{i}].{field}: {why}")
                }
            })),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems.join("; ")));
    }
    let answer = users
        .send(RecordBatch {
            actions: valid,
            claim,
        })
        .await??;
    Ok(
        answer.respond(StatusCode::ACCEPTED, |event_ids| BatchAccepted {
            accepted: event_ids.len(),
            event_ids,
        }),
    )
}

/// One batch action, or what is wrong with each of its fields.
fn batch_action(
    value: &serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BatchAction, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let Some(fields) = value.as_object() else {
        return Err(vec![("", "must be an object".into())]);
    };
    let mut uuid = |name: &'static str| -> Option<Uuid> {
        let parsed = fields
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok());
        if parsed.is_none() {
            problems.push((name, "must be a UUID".into()));
        }
        parsed
    };
    let (user_id, product_id) = (uuid("user_id"), uuid("product_id"));
    let action = match fields.get("type") {
        Some(v) => serde_json::from_value::<Action>(v.clone()).ok(),
        None => None,
    };
    if action.is_none() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        problems.push(("type", format!("must be one of {}", names.join(", "))));
    }
    let quantity = match fields.get("quantity") {
        None | Some(serde_json::Value::Null) => Some(1),
        Some(v) => validate::integral(v)
            .filter(|q| (1..=1000).contains(q))
            .map(|q| q as u32),
    };
    if quantity.is_none() {
        problems.push(("quantity", "must be between 1 and 1000".into()));
    }
    let occurred_at = match fields.get("occurred_at") {
        None | Some(serde_json::Value::Null) => Some(now),
        Some(v) => match v.as_str().map(chrono::DateTime::parse_from_rfc3339) {
            Some(Ok(at)) => {
                let at = at.with_timezone(&chrono::Utc);
                if at > now + MAX_SKEW {
                    problems.push(("occurred_at", "is more than 5 minutes in the future".into()));
                    None
                } else if at < now - MAX_AGE {
                    problems.push(("occurred_at", "is more than 30 days old".into()));
                    None
                } else {
                    Some(at)
                }
            }
            _ => {
                problems.push(("occurred_at", "must be an RFC 3339 timestamp".into()));
                None
            }
        },
    };
    match (user_id, product_id, action, quantity, occurred_at) {
        (Some(user_id), Some(product_id), Some(action), Some(quantity), Some(occurred_at))
            if problems.is_empty() =>
        {
            Ok(BatchAction {
                user_id,
                product_id,
                action,
                quantity,
                occurred_at,
            })
        }
        _ => Err(problems),
    }
}

/// A token whose own account no longer exists authenticates nobody: its holder gets `401`, not
/// `404` (an admin asking about a missing account still gets `404`).
fn account_gone(caller: &Caller, id: Uuid) -> impl FnOnce(UsersError) -> ApiError {
    let own = caller.id() == id;
    move |error| match error {
        UsersError::UserNotFound if own => {
            ApiError::Unauthorized("account no longer exists".into())
        }
        other => other.into(),
    }
}

/// What a client sees of each users failure.
impl From<UsersError> for ApiError {
    fn from(e: UsersError) -> Self {
        match e {
            UsersError::EmailTaken => ApiError::Conflict(e.to_string()),
            UsersError::UserNotFound => ApiError::NotFound(e.to_string()),
            UsersError::BadCredentials => ApiError::Unauthorized(e.to_string()),
            UsersError::LockedOut { retry_after } => ApiError::TooManyRequests { retry_after },
            // Named the way a batch's bad fields are.
            UsersError::UnknownUsers(indexes) if !indexes.is_empty() => ApiError::invalid(
                indexes
                    .iter()
                    .map(|i| format!("actions[{i}].user_id: no such user"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            UsersError::UnknownUsers(_) => ApiError::invalid(e.to_string()),
            UsersError::Restarting => ApiError::Unavailable(e.to_string()),
            UsersError::Idempotency(refused) => refused.into(),
            UsersError::HasherRefused(refused) => refused.into(),
            UsersError::Hashing(_) => ApiError::Unexpected(anyhow::Error::new(e)),
            UsersError::Db(db) => db.into(),
        }
    }
}
