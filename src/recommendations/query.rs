//! [`RecommendationsActor`]: answers recommendation queries, through the cache actor when Redis
//! answers and from Postgres otherwise.
//!
//! The global rankings (`GET /recommendations`, the answers every storefront page shares) are
//! refreshed ahead of their readers: each is kept under a key of its own, stamped with the
//! ranking generation it was computed at, and after every flush that changes the ranking the
//! ranking actor sends [`Refresh`], which recomputes every global answer asked for within the
//! cache TTL and replaces it (an older stamp never replaces a newer one). Steady writes therefore
//! keep these answers fresh instead of emptying the cache. Personal and similar answers, one per
//! user or product, carry the generation in their key instead: a flush makes them misses.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bigdecimal::BigDecimal;
use chrono::Utc;
use futures_util::{stream, StreamExt};
use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};
use recsys_actors::cache::refresh::{
    CacheDelete, CacheGetStamped, CacheMark, CacheMarked, CacheSetNewer,
};
use recsys_actors::cache::{CacheActor, CacheGet, CacheRaise, CacheSet};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::price_string;
use serde::{Deserialize, Serialize};
use slog::{debug, warn, Logger};
use uuid::Uuid;

use super::error::RecommendationsError;
use super::micro::Refreshes;
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

/// `recommendation_joined_computations_total`: cache misses answered by a computation of the
/// same answer that another request had started (see [`InFlight`]).
pub static JOINED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "recommendation_joined_computations_total",
        "Cache misses answered by the computation another request of the same answer started"
    )
    .expect("metric registers once")
});

/// `recommendation_refresh_seconds`: one refresh of the global answers a ranking change altered,
/// from its start to the last answer written.
pub static REFRESH_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "recommendation_refresh_seconds",
        "Time to recompute and store the global answers a ranking change altered",
        vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5]
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

/// How long the published generation lives in Redis unless published again: it is every 2 s
/// while the ranking actor runs, so only the key of a deployment that stopped expires.
const GENERATION_TTL: Duration = Duration::from_secs(3600);

/// Global answers a refresh recomputes at most: the most recently asked for. Their number bounds
/// the work of one refresh whatever clients ask; an answer beyond it is dropped, and computed on
/// its next read.
const MAX_REFRESHED: usize = 128;

/// Global answers one refresh computes at once (each holds a Postgres connection).
const REFRESH_CONCURRENCY: usize = 4;

/// How the global ranking orders products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
        let mut key = String::new();
        self.write_key(limit, &mut key);
        key
    }

    /// Appends [`Query::key`] to `out` (a caller's reused buffer).
    pub fn write_key(&self, limit: i64, out: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let categories = match self {
            Query::Global { categories, sort } => {
                let _ = write!(out, "global:{}:{limit}:", sort.as_str());
                categories
            }
            Query::ForUser {
                user_id,
                categories,
                exclude,
            } => {
                let _ = write!(out, "user:{user_id}:{limit}:{}:", exclude.as_str());
                categories
            }
            Query::Similar {
                product_id,
                categories,
            } => {
                let _ = write!(out, "similar:{product_id}:{limit}:");
                categories
            }
        };
        match categories.is_empty() {
            true => out.push_str("[]"),
            false => out.push_str(&serde_json::to_string(categories).expect("strings serialize")),
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

/// Where the requests that joined a computation wait for its answer.
type Waiters = Vec<tokio::sync::oneshot::Sender<Result<String, RecommendationsError>>>;

/// The answers being computed, by cache key: one computation per key at a time, so that the
/// readers of an answer that just expired (or of a generation just published) wait for one
/// statement instead of each running it. A computation leaves the map when it finishes; the
/// next miss of its key starts another.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashMap<String, Waiters>>>);

impl InFlight {
    /// The answer under `key`: joins the computation running for it, or runs `compute` and
    /// hands its answer to the requests that joined meanwhile.
    async fn answer<F>(&self, key: String, compute: F) -> Result<String, RecommendationsError>
    where
        F: std::future::Future<Output = Result<String, RecommendationsError>>,
    {
        let joined = {
            let mut running = self.lock();
            match running.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    running.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(answer) = joined {
            JOINED.inc();
            // A computation dropped unfinished (its actor stopping) leaves each to its own.
            return match answer.await {
                Ok(answer) => answer,
                Err(_) => compute.await,
            };
        }
        let leader = Leader {
            map: self,
            key: Some(key),
        };
        let answer = compute.await;
        for waiter in leader.finish() {
            let _ = waiter.send(answer.clone());
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiters>> {
        // The map is left consistent at every unlock; a panic elsewhere cannot corrupt it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The request computing an answer: removes its key when it finishes, or is dropped.
struct Leader<'a> {
    map: &'a InFlight,
    /// `None` once finished.
    key: Option<String>,
}

impl Leader<'_> {
    /// Removes the key; answers the requests that joined.
    fn finish(mut self) -> Waiters {
        let key = self.key.take().expect("a leader finishes once");
        self.map.lock().remove(&key).unwrap_or_default()
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.map.lock().remove(&key);
        }
    }
}

/// Answers one query, best first, at most `limit` (1..=100) items.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Answer, RecommendationsError>")]
pub struct Recommend {
    pub query: Query,
    pub limit: i64,
}

/// The ranking reached `generation` (sent by the ranking actor after each flush that changed it,
/// and every 2 s with the stored generation): publish it, and recompute the global answers asked
/// for recently. One refresh runs at a time; generations that arrive meanwhile are refreshed
/// once, after it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Refresh {
    pub generation: u64,
    /// Which global answers the generations since the last refresh can have altered.
    pub changed: Changed,
}

/// Which global answers a change can alter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Any of them (a refresh made up for ones that may have been lost).
    Everything,
    /// Those of these categories, and those of every category (no `category` parameter).
    Categories(BTreeSet<String>),
}

impl Changed {
    /// Both changes.
    fn and(self, other: Changed) -> Changed {
        match (self, other) {
            (Changed::Categories(mut a), Changed::Categories(b)) => {
                a.extend(b);
                Changed::Categories(a)
            }
            _ => Changed::Everything,
        }
    }

    /// Whether the answer of a query naming `categories` (none: every category) can change.
    fn alters(&self, categories: &[String]) -> bool {
        match self {
            Changed::Everything => true,
            Changed::Categories(changed) => {
                categories.is_empty() || categories.iter().any(|c| changed.contains(c))
            }
        }
    }
}

/// A global query as kept in the set of asked-for queries (a member of `rec:asked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Asked {
    categories: Vec<String>,
    sort: Sort,
    limit: i64,
}

impl Asked {
    fn recommend(self) -> Recommend {
        Recommend {
            query: Query::Global {
                categories: self.categories,
                sort: self.sort,
            },
            limit: self.limit,
        }
    }
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
    /// The highest generation this process has refreshed the global answers to.
    refreshed: u64,
    /// Whether a refresh is running.
    refreshing: bool,
    /// Counts the refreshes finished, for the workers' micro-caches.
    refreshes: Refreshes,
    /// The highest generation asked for while a refresh was running, and what the generations
    /// since the running refresh's changed.
    pending: Option<(u64, Changed)>,
    /// The answers being computed for readers that missed the cache.
    in_flight: InFlight,
    logger: Logger,
}

impl RecommendationsActor {
    /// A query actor reading `pool` through `cache`, scoring with `(weights, half_lives)`.
    pub fn new(
        pool: Pool,
        cache: ObservedAddr<CacheActor>,
        key_prefix: String,
        (weights, half_lives): (Weights, HalfLives),
        ttl: Duration,
        refreshes: Refreshes,
        logger: Logger,
    ) -> Self {
        Self {
            pool,
            cache,
            key_prefix,
            weights,
            half_lives,
            ttl,
            refreshed: 0,
            refreshing: false,
            refreshes,
            pending: None,
            in_flight: InFlight::default(),
            logger,
        }
    }
}

/// The Redis key of an answer: the generation it was computed at, and a digest of the query
/// (`query` may name 20 categories of 100 characters; the digest keeps every key within 57
/// bytes plus the prefix, whatever a client asks).
fn answer_key(prefix: &str, generation: impl std::fmt::Display, query: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(query.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}rec:{generation}:{hex}")
}

/// The Redis key of a global answer: a digest of the query, as for [`answer_key`], without the
/// generation (the value carries it).
fn top_key(prefix: &str, msg: &Recommend) -> String {
    answer_key(prefix, "top", &msg.query.key(msg.limit))
}

/// Computes the global answer to `msg` from Postgres: its JSON, and the write that stores it
/// under `key`, stamped with the generation it was computed at.
async fn global_answer(
    pool: &Pool,
    msg: &Recommend,
    (weights, half_lives): (&Weights, HalfLives),
    key: String,
    ttl: Duration,
) -> Result<(String, CacheSetNewer), RecommendationsError> {
    let (items, generation) = query(pool, msg, weights, half_lives).await?;
    let json = encode(&items)?;
    let set = CacheSetNewer {
        key,
        version: generation,
        value: json.clone(),
        ttl,
    };
    Ok((json, set))
}

/// The Redis key of the set of global queries asked for recently.
fn asked_key(prefix: &str) -> String {
    format!("{prefix}rec:asked")
}

/// The Redis key holding the current ranking generation under `prefix`.
fn generation_key(prefix: &str) -> String {
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

/// Cache first, Postgres on a miss or without Redis: a global query by its own key (kept fresh
/// by [`Refresh`]), any other by the current generation.
impl Handler<Recommend> for RecommendationsActor {
    type Result = ResponseFuture<Result<Answer, RecommendationsError>>;

    fn handle(&mut self, msg: Recommend, _: &mut Self::Context) -> Self::Result {
        let (pool, cache, prefix) = (
            self.pool.clone(),
            self.cache.clone(),
            self.key_prefix.clone(),
        );
        let (weights, half_lives, ttl) = (self.weights, self.half_lives, self.ttl);
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            if let Query::Global { categories, sort } = &msg.query {
                let key = top_key(&prefix, &msg);
                let flight = key.clone();
                if let Ok(Some(answer)) = cache.send(CacheGetStamped { key: key.clone() }).await {
                    return Ok(hit(answer.value));
                }
                // Marked before it is computed: a flush that commits after this answer's
                // generation was read is followed by a refresh that finds the mark and writes a
                // newer answer (this one's older stamp then cannot replace it). A query dropped
                // to keep the set bounded loses its answer, which no refresh would renew.
                let asked = Asked {
                    categories: categories.clone(),
                    sort: *sort,
                    limit: msg.limit,
                };
                let member = serde_json::to_string(&asked)
                    .map_err(|e| RecommendationsError::Encoding(e.into()))?;
                let mark = CacheMark {
                    set: asked_key(&prefix),
                    member,
                    keep: ttl,
                    cap: MAX_REFRESHED,
                };
                if let Ok(Some(dropped)) = cache.send(mark).await {
                    if !dropped.is_empty() {
                        let keys = top_keys(&prefix, &dropped);
                        cache.do_send(CacheDelete { keys });
                    }
                }
                let compute = async move {
                    let (json, set) =
                        global_answer(&pool, &msg, (&weights, half_lives), key, ttl).await?;
                    cache.do_send(set);
                    Ok(json)
                };
                return in_flight.answer(flight, compute).await.map(miss);
            }
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
                    return Ok(hit(json));
                }
            }
            // Without Redis the query itself names the computation.
            let flight = key.clone().unwrap_or_else(|| msg.query.key(msg.limit));
            let compute = async move {
                let (items, _) = query(&pool, &msg, &weights, half_lives).await?;
                let json = encode(&items)?;
                if let Some(key) = key {
                    cache.do_send(CacheSet {
                        key,
                        value: json.clone(),
                        ttl,
                    });
                }
                Ok(json)
            };
            in_flight.answer(flight, compute).await.map(miss)
        })
    }
}

/// Publishes the generation (a Lua script that only ever raises it, so a late or concurrent
/// publisher never moves it back), then recomputes the global answers asked for within the
/// cache TTL and forgets the older ones.
impl Handler<Refresh> for RecommendationsActor {
    type Result = ();

    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) {
        self.cache.do_send(CacheRaise {
            key: generation_key(&self.key_prefix),
            value: msg.generation,
            ttl: GENERATION_TTL,
        });
        if msg.generation <= self.refreshed {
            return;
        }
        if self.refreshing {
            self.pending = Some(match self.pending.take() {
                None => (msg.generation, msg.changed),
                Some((generation, changed)) => {
                    (generation.max(msg.generation), changed.and(msg.changed))
                }
            });
            return;
        }
        self.refreshing = true;
        let (pool, cache, prefix) = (
            self.pool.clone(),
            self.cache.clone(),
            self.key_prefix.clone(),
        );
        let (weights, half_lives, ttl) = (self.weights, self.half_lives, self.ttl);
        let (logger, generation, changed) = (self.logger.clone(), msg.generation, msg.changed);
        let started = std::time::Instant::now();
        let refresh = async move {
            let marked = cache
                .send(CacheMarked {
                    set: asked_key(&prefix),
                    keep: ttl,
                })
                .await
                .ok()
                .flatten()?;
            let keys = top_keys(&prefix, &marked.expired);
            cache.do_send(CacheDelete { keys });
            let asked: Vec<Asked> = marked
                .live
                .iter()
                .filter_map(|member| serde_json::from_str::<Asked>(member).ok())
                .filter(|asked| changed.alters(&asked.categories))
                .collect();
            let count = asked.len();
            let outcomes: Vec<Option<bool>> = stream::iter(asked)
                .map(|asked| {
                    let (pool, cache, prefix) = (&pool, &cache, &prefix);
                    async move {
                        let msg = asked.recommend();
                        let key = top_key(prefix, &msg);
                        let (_, set) = global_answer(pool, &msg, (&weights, half_lives), key, ttl)
                            .await
                            .ok()?;
                        cache.send(set).await.ok()
                    }
                })
                .buffer_unordered(REFRESH_CONCURRENCY)
                .collect()
                .await;
            let written = outcomes.iter().filter(|o| **o == Some(true)).count();
            let failed = outcomes.iter().filter(|o| o.is_none()).count();
            debug!(logger, "global answers refreshed"; "generation" => generation,
                "altered" => count, "written" => written, "failed" => failed,
                "forgotten" => marked.expired.len());
            (failed == 0).then_some(())
        };
        ctx.spawn(refresh.into_actor(self).map(move |done, act, ctx| {
            act.refreshing = false;
            // A refresh that could not read the set or write an answer (Redis or Postgres away)
            // leaves the generation to the next one: the ranking actor's periodic `Everything`.
            if done.is_some() {
                REFRESH_DURATION.observe(started.elapsed().as_secs_f64());
                act.refreshed = act.refreshed.max(generation);
                act.refreshes.finished();
            }
            if let Some((generation, changed)) = act.pending.take() {
                ctx.notify(Refresh {
                    generation,
                    changed,
                });
            }
        }));
    }
}

/// The keys of the global answers of `members` of the asked-for set.
fn top_keys(prefix: &str, members: &[String]) -> Vec<String> {
    members
        .iter()
        .filter_map(|member| serde_json::from_str::<Asked>(member).ok())
        .map(|asked| top_key(prefix, &asked.recommend()))
        .collect()
}

fn encode(items: &[Item]) -> Result<String, RecommendationsError> {
    serde_json::to_string(items).map_err(|e| RecommendationsError::Encoding(e.into()))
}

fn hit(json: String) -> Answer {
    CACHE_REQUESTS.with_label_values(&["hit"]).inc();
    Answer {
        json,
        cache: CacheResult::Hit,
    }
}

fn miss(json: String) -> Answer {
    CACHE_REQUESTS.with_label_values(&["miss"]).inc();
    Answer {
        json,
        cache: CacheResult::Miss,
    }
}

/// Answers `msg` from Postgres, with the ranking generation read before the ranking (the answer
/// reflects at least that generation).
async fn query(
    pool: &Pool,
    msg: &Recommend,
    weights: &Weights,
    half_lives: HalfLives,
) -> Result<(Vec<Item>, u64), RecommendationsError> {
    let mut conn = pool.get().await?;
    let state = store::state(&mut conn).await?;
    let generation = u64::try_from(state.generation).unwrap_or(0);
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
    let items: Result<Vec<Item>, RecommendationsError> = match &msg.query {
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
    };
    Ok((items?, generation))
}

/// Registers the query metric family.
pub fn init_metrics() {
    LazyLock::force(&CACHE_REQUESTS);
    LazyLock::force(&JOINED);
    LazyLock::force(&REFRESH_DURATION);
}

recsys_actors::observed_handlers!(RecommendationsActor => Recommend, Refresh);
recsys_actors::restart_on_fail!(RecommendationsActor);

#[cfg(test)]
mod tests {
    use super::*;

    fn categories(names: &[&str]) -> Changed {
        Changed::Categories(names.iter().map(|n| n.to_string()).collect())
    }

    fn named(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    /// A change of some categories alters the answers naming one of them and those naming none
    /// (every category); `Everything` alters all; two changes alter what either alters.
    fn changed_categories_alter_their_answers_and_the_unfiltered_ones() {
        let books = categories(&["books"]);
        assert!(books.alters(&[]));
        assert!(books.alters(&named(&["books"])));
        assert!(books.alters(&named(&["games", "books"])));
        assert!(!books.alters(&named(&["games"])));
        assert!(Changed::Everything.alters(&named(&["games"])));
        let both = books.and(categories(&["games"]));
        assert!(both.alters(&named(&["games"])) && both.alters(&named(&["books"])));
        assert!(!both.alters(&named(&["toys"])));
        assert_eq!(both.and(Changed::Everything), Changed::Everything);
    }

    #[test]
    /// An asked-for global query survives the set's member encoding unchanged, and names the
    /// same answer key as the query it came from.
    fn asked_queries_round_trip() {
        let asked = Asked {
            categories: named(&["a b", "ü\"q"]),
            sort: Sort::Trending,
            limit: 7,
        };
        let member = serde_json::to_string(&asked).unwrap();
        let back: Asked = serde_json::from_str(&member).unwrap();
        assert_eq!(back, asked);
        let query = Query::Global {
            categories: named(&["a b", "ü\"q"]),
            sort: Sort::Trending,
        };
        let msg = Recommend { query, limit: 7 };
        assert_eq!(top_keys("p:", &[member]), [top_key("p:", &msg)]);
    }
}
