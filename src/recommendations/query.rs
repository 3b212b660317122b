//! [`RecommendationsActor`]: answers recommendation queries, through the cache actor when Redis
//! answers and from Postgres otherwise. Cache keys carry every parameter and the ranking
//! generation, so a flushed change is never hidden by the cache; the TTL is only a backstop.

use std::sync::LazyLock;
use std::time::Duration;

use actix::prelude::*;
use bigdecimal::BigDecimal;
use chrono::Utc;
use prometheus::{register_int_counter_vec, IntCounterVec};
use recsys_actors::cache::{CacheActor, CacheGet, CacheSet};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::price_string;
use serde::Serialize;
use slog::{warn, Logger};
use uuid::Uuid;

use super::error::RecommendationsError;
use super::score::{HalfLives, Weights};
use super::store::{self, Ranked};
use crate::db::Pool;

/// `recommendation_cache_requests_total{result}`: `hit` or `miss`.
pub static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "recommendation_cache_requests_total",
        "Recommendation queries answered from the cache (hit) or Postgres (miss)",
        &["result"]
    )
    .expect("metric registers once")
});

/// One recommended product. An answer is a JSON array of these, best first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Item {
    pub product_id: Uuid,
    pub name: String,
    /// A decimal string with exactly two places, e.g. `"12.30"`.
    #[serde(serialize_with = "price_string::serialize")]
    #[schema(value_type = String, pattern = "^-?[0-9]+\\.[0-9]{2}$")]
    pub price: BigDecimal,
    pub category: Option<String>,
    /// Decayed popularity (global), boosted popularity (personal) or co-occurrence weight
    /// (similar); 0 for products without activity.
    pub score: f64,
}

/// How the global ranking orders products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By popularity: the accumulator with `RANKING_HALF_LIFE` (the default).
    #[default]
    Popular,
    /// By what is popular now: the accumulator with `RANKING_TRENDING_HALF_LIFE`.
    Trending,
}

impl Sort {
    /// Every order, in the order the API documents them.
    pub const ALL: [Sort; 2] = [Sort::Popular, Sort::Trending];

    /// The `sort` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Popular => "popular",
            Sort::Trending => "trending",
        }
    }
}

impl std::str::FromStr for Sort {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Sort::ALL.into_iter().find(|e| e.as_str() == s).ok_or(())
    }
}

/// Which of the user's own products the personal ranking leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exclude {
    /// What the user bought (the default).
    #[default]
    Purchased,
    /// Everything the user viewed, carted or bought.
    Interacted,
    /// Nothing.
    Nothing,
}

impl Exclude {
    /// Every choice, in the order the API documents them.
    pub const ALL: [Exclude; 3] = [Exclude::Purchased, Exclude::Interacted, Exclude::Nothing];

    /// The `exclude` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclude::Purchased => "purchased",
            Exclude::Interacted => "interacted",
            Exclude::Nothing => "none",
        }
    }
}

impl std::str::FromStr for Exclude {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Exclude::ALL.into_iter().find(|e| e.as_str() == s).ok_or(())
    }
}

/// What to recommend. `categories` (sorted, without duplicates; see
/// [`crate::validate::categories`]) keeps only products of those categories; empty keeps all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The global ranking, by popularity or trending.
    Global { categories: Vec<String>, sort: Sort },
    /// The ranking personalised for a user.
    ForUser {
        user_id: Uuid,
        categories: Vec<String>,
        exclude: Exclude,
    },
    /// Products bought or carted together with this one.
    Similar {
        product_id: Uuid,
        categories: Vec<String>,
    },
}

impl Query {
    /// The cache key part naming this query and `limit`.
    pub fn key(&self, limit: i64) -> String {
        let json = |categories: &Vec<String>| {
            serde_json::to_string(categories).expect("strings serialize")
        };
        match self {
            Query::Global { categories, sort } => {
                format!("global:{}:{limit}:{}", sort.as_str(), json(categories))
            }
            Query::ForUser {
                user_id,
                categories,
                exclude,
            } => format!(
                "user:{user_id}:{limit}:{}:{}",
                exclude.as_str(),
                json(categories)
            ),
            Query::Similar {
                product_id,
                categories,
            } => format!("similar:{product_id}:{limit}:{}", json(categories)),
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

impl CacheResult {
    /// The `X-Cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        }
    }
}

/// An answer: the JSON array (as sent to clients) and where it came from.
#[derive(Debug, Clone)]
pub struct Answer {
    pub json: String,
    pub cache: CacheResult,
}

/// Answers one query, best first, at most `limit` (1..=100) items.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Answer, RecommendationsError>")]
pub struct Recommend {
    pub query: Query,
    pub limit: i64,
}

/// The query actor.
pub struct RecommendationsActor {
    pool: Pool,
    cache: ObservedAddr<CacheActor>,
    /// Prefix of every Redis key of this deployment.
    key_prefix: String,
    weights: Weights,
    half_lives: HalfLives,
    ttl: Duration,
    logger: Logger,
}

impl RecommendationsActor {
    /// A query actor reading `pool` through `cache`.
    pub fn new(
        pool: Pool,
        cache: ObservedAddr<CacheActor>,
        key_prefix: String,
        weights: Weights,
        half_lives: HalfLives,
        ttl: Duration,
        logger: Logger,
    ) -> Self {
        Self {
            pool,
            cache,
            key_prefix,
            weights,
            half_lives,
            ttl,
            logger,
        }
    }
}

/// The Redis key of an answer: the generation it was computed at, and a digest of the query
/// (`query` may name 20 categories of 100 characters; the digest keeps every key within 57
/// bytes plus the prefix, whatever a client asks).
fn answer_key(prefix: &str, generation: u64, query: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(query.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}rec:{generation}:{hex}")
}

/// The Redis key holding the current ranking generation under `prefix`.
pub fn generation_key(prefix: &str) -> String {
    format!("{prefix}rec:generation")
}

impl Actor for RecommendationsActor {
    type Context = Context<Self>;
}

impl Supervised for RecommendationsActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "recommendations actor restarting");
    }
}

/// Cache first (keyed by the current generation), Postgres on a miss or without Redis.
impl Handler<Recommend> for RecommendationsActor {
    type Result = ResponseFuture<Result<Answer, RecommendationsError>>;

    fn handle(&mut self, msg: Recommend, _: &mut Self::Context) -> Self::Result {
        let (pool, cache, prefix) = (
            self.pool.clone(),
            self.cache.clone(),
            self.key_prefix.clone(),
        );
        let (weights, half_lives, ttl) = (self.weights, self.half_lives, self.ttl);
        Box::pin(async move {
            let generation = cache
                .send(CacheGet {
                    key: generation_key(&prefix),
                })
                .await
                .ok()
                .flatten()
                .and_then(|g| g.parse::<u64>().ok());
            let key = generation.map(|g| answer_key(&prefix, g, &msg.query.key(msg.limit)));
            if let Some(key) = &key {
                if let Ok(Some(json)) = cache.send(CacheGet { key: key.clone() }).await {
                    CACHE_REQUESTS.with_label_values(&["hit"]).inc();
                    return Ok(Answer {
                        json,
                        cache: CacheResult::Hit,
                    });
                }
            }
            let items = query(&pool, &msg, &weights, half_lives).await?;
            let json = serde_json::to_string(&items)
                .map_err(|e| RecommendationsError::Encoding(e.into()))?;
            if let Some(key) = key {
                cache.do_send(CacheSet {
                    key,
                    value: json.clone(),
                    ttl,
                });
            }
            CACHE_REQUESTS.with_label_values(&["miss"]).inc();
            Ok(Answer {
                json,
                cache: CacheResult::Miss,
            })
        })
    }
}

async fn query(
    pool: &Pool,
    msg: &Recommend,
    weights: &Weights,
    half_lives: HalfLives,
) -> Result<Vec<Item>, RecommendationsError> {
    let mut conn = pool.get().await?;
    let state = store::state(&mut conn).await?;
    let decays = half_lives.decays(state.t0, state.trend_t0);
    let decay = decays.popular;
    let now = Utc::now();
    let items = |rows: Vec<Ranked>, score: &dyn Fn(f64) -> f64| -> Vec<Item> {
        rows.into_iter()
            .map(|r| Item {
                score: r.weight.map(score).unwrap_or(0.0),
                product_id: r.product_id,
                name: r.name,
                price: r.price,
                category: r.category,
            })
            .collect()
    };
    let decayed = |rows: Vec<Ranked>| items(rows, &|w| decay.score(w, now));
    match &msg.query {
        Query::Global { categories, sort } => {
            let decay = match sort {
                Sort::Popular => decays.popular,
                Sort::Trending => decays.trending,
            };
            let rows = store::top(&mut conn, categories, *sort, msg.limit).await?;
            Ok(items(rows, &|w| decay.score(w, now)))
        }
        Query::ForUser {
            user_id,
            categories,
            exclude,
        } => match store::for_user(
            &mut conn, *user_id, categories, *exclude, weights, msg.limit,
        )
        .await?
        {
            Some(rows) => Ok(decayed(rows)),
            None => Ok(decayed(
                store::top(&mut conn, categories, Sort::Popular, msg.limit).await?,
            )),
        },
        Query::Similar {
            product_id,
            categories,
        } => {
            let rows = store::similar(&mut conn, *product_id, categories, weights, msg.limit)
                .await?
                .ok_or_else(|| RecommendationsError::ProductNotFound)?;
            // Co-occurrence weights are counts, not decayed.
            Ok(items(rows, &|w| w))
        }
    }
}

/// Registers the query metric family.
pub fn init_metrics() {
    LazyLock::force(&CACHE_REQUESTS);
}

recsys_actors::observed_handlers!(RecommendationsActor => Recommend);
recsys_actors::restart_on_fail!(RecommendationsActor);
