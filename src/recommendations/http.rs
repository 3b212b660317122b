//! Routes of the recommendations service. Handlers validate, authorize, send one
//! [`Recommend`] to the query actor and pass its JSON (an array of [`Item`]s, best first)
//! through with `X-Cache: hit|miss`. [`routes`] registers and documents them through [`Api`].

use actix_web::{web, HttpResponse};
use recsys_actors::observe::ObservedAddr;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::RecommendationsError;
use super::micro::MicroCache;
use super::query::{CacheResult, Exclude, Item, Query, Recommend, RecommendationsActor, Sort};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::http::QueryParams;
use crate::openapi::{string_enum_schema, Api};
use crate::validate;

/// Registers (and documents) the recommendations routes.
pub fn routes(api: &mut Api) {
    api.add(__path_global, global)
        .add(__path_for_user, for_user)
        .add(__path_similar, similar);
}

/// `?limit=&category=&category=`, as every route documents it; read with [`QueryParams`] (a
/// repeated `category` is more than `web::Query` reads). Schema only.
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct Params {
    /// How many products at most, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    limit: Option<i64>,
    /// Only products of any of these categories (repeat the parameter: `?category=a&category=b`;
    /// at most 20 values, each at most 100 characters without control characters; none or only
    /// empty ones: every category). An unknown category matches nothing.
    #[param(style = Form, explode, value_type = Option<validate::Categories>, inline)]
    category: Option<Vec<String>>,
}

/// `?limit=&category=&sort=` of the global ranking, as documented. Schema only.
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct GlobalParams {
    /// How many products at most, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    limit: Option<i64>,
    /// As for every route: products of any of these categories.
    #[param(style = Form, explode, value_type = Option<validate::Categories>, inline)]
    category: Option<Vec<String>>,
    /// `popular` (the default: decayed with `RANKING_HALF_LIFE`) or `trending` (decayed with
    /// `RANKING_TRENDING_HALF_LIFE`, 1 h by default: what is popular now).
    #[param(value_type = Option<SortValue>, inline)]
    sort: Option<String>,
}

string_enum_schema!(
    /// The `sort` values, from [`Sort::as_str`].
    SortValue,
    Sort::ALL.map(Sort::as_str),
    Some(Sort::Popular.as_str())
);

/// `?limit=&category=&exclude=` of the personal ranking, as documented. Schema only.
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct PersonalParams {
    /// How many products at most, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    limit: Option<i64>,
    /// As for the global ranking.
    #[param(style = Form, explode, value_type = Option<validate::Categories>, inline)]
    category: Option<Vec<String>>,
    /// Which of the user's own products to leave out: `purchased` (the default), `interacted`
    /// (everything the user viewed, carted or bought) or `none`.
    #[param(value_type = Option<ExcludeValue>, inline)]
    exclude: Option<String>,
}

string_enum_schema!(
    /// The `exclude` values, from [`Exclude::as_str`].
    ExcludeValue,
    Exclude::ALL.map(Exclude::as_str),
    Some(Exclude::Purchased.as_str())
);

/// The `limit` and `category` of a request.
fn limit_and_categories(params: &QueryParams) -> Result<(i64, Vec<String>), ApiError> {
    Ok((
        validate::limit(params.one("limit")?, 10, 100)?,
        validate::categories(params.all("category"))?,
    ))
}

string_enum_schema!(
    /// The `X-Cache` header values, from [`CacheResult::as_str`].
    XCache,
    [CacheResult::Hit, CacheResult::Miss].map(CacheResult::as_str),
    None
);

thread_local! {
    /// The micro-cache key of the request being answered.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The worker's micro-cache first, then the query actor (which tries Redis, then Postgres).
async fn answer(
    actor: &ObservedAddr<RecommendationsActor>,
    micro: &MicroCache,
    query: Query,
    limit: i64,
) -> Result<HttpResponse, ApiError> {
    // The key is built in a buffer each worker reuses: a hit allocates nothing for it.
    let kept = KEY.with_borrow_mut(|key| {
        key.clear();
        query.write_key(limit, key);
        micro.get(key).ok_or_else(|| key.clone())
    });
    let (body, cache) = match kept {
        Ok(body) => (body, CacheResult::Hit),
        Err(key) => {
            let asked = micro.asking();
            let answer = actor.send(Recommend { query, limit }).await??;
            let body = web::Bytes::from(answer.json);
            micro.put(key, asked, body.clone());
            (body, answer.cache)
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header(("X-Cache", cache.as_str()))
        .content_type("application/json")
        .body(body))
}

/// The global ranking (optionally of one category), best first.
#[utoipa::path(
    get,
    path = "/recommendations",
    tag = "recommendations",
    params(GlobalParams),
    responses(
        (status = 200, description = "At most `limit` products, best first: by decayed \
            popularity (or, with `sort=trending`, by the trending score), then the products \
            without activity (score 0), newest first",
            body = Vec<Item>,
            headers(("X-Cache" = inline(XCache), description = "`hit`: answered from the cache; `miss`: computed from Postgres"))),
    )
)]
async fn global(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    micro: web::Data<MicroCache>,
    params: QueryParams,
) -> Result<HttpResponse, ApiError> {
    let (limit, categories) = limit_and_categories(&params)?;
    let sort = params
        .one_of::<Sort>("sort", "sort must be popular or trending")?
        .unwrap_or_default();
    answer(&actor, &micro, Query::Global { categories, sort }, limit).await
}

/// The ranking personalised for a user: the user themself or an admin.
#[utoipa::path(
    get,
    path = "/recommendations/users/{user_id}",
    tag = "recommendations",
    params(("user_id" = Uuid, Path, description = "The user's id (not checked: an unknown \
        user, like one without activity, gets the global ranking)"), PersonalParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "At most `limit` products, without those of the user's \
            own that `exclude` names (purchased ones by default), best first: popularity \
            boosted by the user's share of activity in each category",
            body = Vec<Item>,
            headers(("X-Cache" = inline(XCache), description = "`hit`: answered from the cache; `miss`: computed from Postgres"))),
    )
)]
async fn for_user(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    micro: web::Data<MicroCache>,
    caller: Caller,
    user_id: web::Path<Uuid>,
    params: QueryParams,
) -> Result<HttpResponse, ApiError> {
    let user_id = user_id.into_inner();
    caller.require_self_or_admin(user_id)?;
    let (limit, categories) = limit_and_categories(&params)?;
    let exclude = params
        .one_of::<Exclude>(
            "exclude",
            "exclude must be one of purchased, interacted, none",
        )?
        .unwrap_or_default();
    let query = Query::ForUser {
        user_id,
        categories,
        exclude,
    };
    answer(&actor, &micro, query, limit).await
}

/// Products bought or carted together with this one, by the users who bought or carted it.
#[utoipa::path(
    get,
    path = "/recommendations/products/{product_id}/similar",
    tag = "recommendations",
    params(("product_id" = Uuid, Path, description = "The product's id"), Params),
    responses(
        (status = 200, description = "At most `limit` other products, by co-occurrence weight \
            (not decayed) descending",
            body = Vec<Item>,
            headers(("X-Cache" = inline(XCache), description = "`hit`: answered from the cache; `miss`: computed from Postgres"))),
        (status = 404, description = "No such product (unknown or deleted)", body = ErrorBody),
    )
)]
async fn similar(
    actor: web::Data<ObservedAddr<RecommendationsActor>>,
    micro: web::Data<MicroCache>,
    product_id: web::Path<Uuid>,
    params: QueryParams,
) -> Result<HttpResponse, ApiError> {
    let product_id = product_id.into_inner();
    let (limit, categories) = limit_and_categories(&params)?;
    let query = Query::Similar {
        product_id,
        categories,
    };
    answer(&actor, &micro, query, limit).await
}

/// What a client sees of each query failure.
impl From<RecommendationsError> for ApiError {
    fn from(e: RecommendationsError) -> Self {
        match e {
            RecommendationsError::ProductNotFound => ApiError::NotFound(e.to_string()),
            RecommendationsError::Encoding(_) => ApiError::Unexpected(anyhow::Error::new(e)),
            RecommendationsError::Db(db) => db.into(),
        }
    }
}
