//! Routes of the recommendations service. Handlers validate, authorize, send one
//! [`Recommend`] to the query actor and pass its JSON through with `X-Cache: hit|miss`.

use actix_web::{web, HttpResponse};
use recsys_actors::observe::ObservedAddr;
use serde::Deserialize;
use uuid::Uuid;

use super::query::{Query, Recommend, RecommendationsActor};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::validate;

/// Registers the recommendations routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/recommendations").route(web::get().to(global)))
        .service(web::resource("/recommendations/users/{user_id}").route(web::get().to(for_user)))
        .service(
            web::resource("/recommendations/products/{product_id}/similar")
                .route(web::get().to(similar)),
        );
}

/// `?limit=&category=`.
#[derive(Debug, Deserialize)]
struct Params {
    limit: Option<i64>,
    category: Option<String>,
}

async fn answer(
    actor: &ObservedAddr<RecommendationsActor>,
    query: Query,
    limit: Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let limit = validate::limit(limit, 10, 100)?;
    let answer = actor.send(Recommend { query, limit }).await??;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Cache", answer.cache.as_str()))
        .content_type("application/json")
        .body(answer.json))
}

async fn global(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let category = validate::optional_text("category", params.category.as_deref(), 100)?;
    answer(&actor, Query::Global { category }, params.limit).await
}

async fn for_user(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    caller: Caller,
    user_id: web::Path<Uuid>,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let user_id = user_id.into_inner();
    caller.require_self_or_admin(user_id)?;
    answer(&actor, Query::ForUser { user_id }, params.limit).await
}

async fn similar(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    product_id: web::Path<Uuid>,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let product_id = product_id.into_inner();
    answer(&actor, Query::Similar { product_id }, params.limit).await
}
