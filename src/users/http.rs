//! Routes of the users service. Handlers authenticate, validate, send one typed message to
//! [`UsersActor`] and map the reply; a lost message becomes a `503`.

use actix_web::{web, HttpRequest, HttpResponse};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::Action;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::actor::{GetUser, Login, RecordActivity, RegisterUser, UpdateUser, UsersActor};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::validate;

/// Longest accepted name.
const MAX_NAME: usize = 100;

/// Registers the users routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users/register").route(web::post().to(register)))
        .service(web::resource("/users").route(web::post().to(register)))
        .service(web::resource("/users/login").route(web::post().to(login)))
        .service(
            web::resource("/users/{id}")
                .route(web::get().to(get_user))
                .route(web::put().to(update_user))
                .route(web::patch().to(update_user)),
        )
        .service(web::resource("/users/{id}/activity").route(web::post().to(record_activity)));
}

/// `POST /users/register` and `POST /users`.
#[derive(Debug, Deserialize)]
struct RegisterBody {
    name: String,
    email: String,
    password: Option<String>,
}

async fn register(
    users: web::Data<ObservedAddr<UsersActor>>,
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let msg = RegisterUser {
        name: validate::text("name", &body.name, MAX_NAME)?,
        email: validate::email(&body.email)?,
        password: body
            .password
            .as_deref()
            .map(validate::password)
            .transpose()?,
    };
    let registered = users.send(msg).await??;
    Ok(HttpResponse::Created().json(registered))
}

/// `POST /users/login`.
#[derive(Debug, Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct TokenBody {
    token: String,
}

async fn login(
    users: web::Data<ObservedAddr<UsersActor>>,
    request: HttpRequest,
    body: web::Json<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let unauthorized = || ApiError::Unauthorized("invalid email or password".into());
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
#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
}

async fn update_user(
    users: web::Data<ObservedAddr<UsersActor>>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    caller.require_self_or_admin(id)?;
    let body = body.into_inner();
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
    };
    let user = users.send(msg).await?.map_err(account_gone(&caller, id))?;
    Ok(HttpResponse::Ok().json(user))
}

/// `POST /users/{id}/activity`.
#[derive(Debug, Deserialize)]
struct ActivityBody {
    #[serde(rename = "type")]
    action: Action,
    product_id: Uuid,
    quantity: Option<u32>,
}

#[derive(Serialize)]
struct Accepted {
    event_id: Uuid,
}

async fn record_activity(
    users: web::Data<ObservedAddr<UsersActor>>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<ActivityBody>,
) -> Result<HttpResponse, ApiError> {
    let user_id = id.into_inner();
    if caller.id() != user_id {
        return Err(ApiError::Forbidden(
            "only the user may record their own activity".into(),
        ));
    }
    let body = body.into_inner();
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=1000).contains(&quantity) {
        return Err(ApiError::invalid("quantity must be between 1 and 1000"));
    }
    let event_id = users
        .send(RecordActivity {
            user_id,
            product_id: body.product_id,
            action: body.action,
            quantity,
        })
        .await?
        .map_err(account_gone(&caller, user_id))?;
    Ok(HttpResponse::Accepted().json(Accepted { event_id }))
}

/// A token whose own account no longer exists authenticates nobody: its holder gets `401`, not
/// `404` (an admin asking about a missing account still gets `404`).
fn account_gone(caller: &Caller, id: Uuid) -> impl FnOnce(ApiError) -> ApiError {
    let own = caller.id() == id;
    move |error| match error {
        ApiError::NotFound(_) if own => ApiError::Unauthorized("account no longer exists".into()),
        other => other,
    }
}
