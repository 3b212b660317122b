//! [`RankingActor`]: the popularity-ranking actor. It owns the scores: it is the sink of the
//! recommendations consumer, folds each batch in memory and writes it — scores, user activity,
//! catalog changes, the seen publication sequences and consumer positions — in one transaction,
//! bumping the ranking generation; then it tells the query actor, which publishes the generation
//! to the cache (part of the keys of personal and similar answers) and refreshes the global
//! answers.

use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use diesel_async::AsyncConnection;
use prometheus::{register_histogram, Histogram};
use recsys_actors::kafka_consumer::{ApplyBatch, LoadPositions};
use recsys_actors::observe::ObservedAddr;
use slog::{debug, info, warn, Logger};
use std::sync::LazyLock;

use super::fold::Fold;
use super::query::{Changed, RecommendationsActor, Refresh};
use super::score::{HalfLives, Weights};
use super::store;
use crate::consumption::{self, Fact};
use crate::db::Pool;

/// `ranking_flush_duration_seconds`: one batch written.
pub static FLUSH_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "ranking_flush_duration_seconds",
        "Time to write one batch of ranking changes",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect("metric registers once")
});

/// `ranking_batch_size`: records per flushed batch.
pub static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "ranking_batch_size",
        "Records per ranking batch",
        consumption::BATCH_SIZE_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// What a flush that changed the ranking reached: the new generation and the categories its
/// products had before and after it.
type Flushed = (i64, Vec<String>);

/// The ranking actor.
pub struct RankingActor {
    pool: Pool,
    /// Consumer group whose positions and seen sequences this actor keeps.
    group: String,
    weights: Weights,
    half_lives: HalfLives,
    /// The query actor, told each new generation.
    query: ObservedAddr<RecommendationsActor>,
    logger: Logger,
}

impl RankingActor {
    /// A ranking actor writing through `pool`.
    pub fn new(
        pool: Pool,
        group: String,
        weights: Weights,
        half_lives: HalfLives,
        query: ObservedAddr<RecommendationsActor>,
        logger: Logger,
    ) -> Self {
        Self {
            pool,
            group,
            weights,
            half_lives,
            query,
            logger,
        }
    }

    /// Tells the query actor the stored generation (at start, and every 2 s: so that a restarted
    /// Redis learns it again, its key's expiry is renewed, and a refresh lost with a process or
    /// missed while Redis was away is made up).
    fn publish_generation(&self, ctx: &mut Context<Self>) {
        let (pool, query) = (self.pool.clone(), self.query.clone());
        ctx.spawn(
            async move {
                let mut conn = pool.get().await.ok()?;
                let state = store::state(&mut conn).await.ok()?;
                query.do_send(Refresh {
                    generation: state.generation as u64,
                    changed: Changed::Everything,
                });
                Some(())
            }
            .into_actor(self)
            .map(|_, _, _| ()),
        );
    }
}

impl Actor for RankingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.logger, "ranking actor started"; "weights" => self.weights.to_string(), "half_life_s" => self.half_lives.popular.as_secs_f64(), "trending_half_life_s" => self.half_lives.trending.as_secs_f64());
        self.publish_generation(ctx);
        ctx.run_interval(Duration::from_secs(2), |act, ctx| {
            act.publish_generation(ctx)
        });
    }
}

impl Supervised for RankingActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "ranking actor restarting");
    }
}

/// Applies one batch in one transaction; answers which records were new.
impl Handler<ApplyBatch<Fact>> for RankingActor {
    type Result = ResponseFuture<anyhow::Result<Vec<bool>>>;

    fn handle(&mut self, msg: ApplyBatch<Fact>, _: &mut Self::Context) -> Self::Result {
        let (pool, group, weights, half_lives) = (
            self.pool.clone(),
            self.group.clone(),
            self.weights,
            self.half_lives,
        );
        let (query, logger) = (self.query.clone(), self.logger.clone());
        Box::pin(async move {
            let started = Instant::now();
            let batch = msg.0;
            let mut conn = pool.get().await?;
            let (applied, generation) = conn
                .transaction(
                    async move |conn| -> anyhow::Result<(Vec<bool>, Option<Flushed>)> {
                        let applied = consumption::claim(conn, &group, &batch).await?;
                        let state = store::state_for_update(conn).await?;
                        let now = Utc::now();
                        let mut decays = half_lives.decays(state.t0, state.trend_t0);
                        let factors = [decays.popular.rebase(now), decays.trending.rebase(now)];
                        if factors.iter().any(Option::is_some) {
                            let factors = factors.map(|f| f.unwrap_or(1.0));
                            let (t0, trend_t0) = (decays.popular.t0, decays.trending.t0);
                            store::rebase(conn, factors, t0, trend_t0).await?;
                        }
                        let mut fold = Fold::default();
                        for (record, applied) in batch.records.iter().zip(&applied) {
                            if *applied {
                                fold.add(&record.item, &decays, &weights);
                            }
                        }
                        // A batch that changes nothing a query reads (duplicates, registrations,
                        // profile updates) keeps the generation, and so every cached answer.
                        if fold.is_empty() {
                            return Ok((applied, None));
                        }
                        // The global answers a batch can alter are those of the categories its
                        // products had before it and, for those whose catalog row it changes
                        // (a product may move), have after it.
                        let products = fold.ranked_products();
                        let mut categories = store::categories_of(conn, &products).await?;
                        store::apply(conn, &fold).await?;
                        let moved = fold.catalog_products();
                        if !moved.is_empty() {
                            categories.extend(store::categories_of(conn, &moved).await?);
                        }
                        let generation = store::bump_generation(conn).await?;
                        Ok((applied, Some((generation, categories))))
                    },
                )
                .await?;
            FLUSH_DURATION.observe(started.elapsed().as_secs_f64());
            BATCH_SIZE.observe(applied.len() as f64);
            debug!(logger, "ranking batch flushed"; "records" => applied.len(),
                "generation" => generation.as_ref().map(|(g, _)| *g));
            if let Some((generation, categories)) = generation {
                query.do_send(Refresh {
                    generation: generation as u64,
                    changed: Changed::Categories(categories.into_iter().collect()),
                });
            }
            Ok(applied)
        })
    }
}

/// Answers stored consumer positions.
impl Handler<LoadPositions> for RankingActor {
    type Result = ResponseFuture<anyhow::Result<Vec<(String, i32, i64)>>>;

    fn handle(&mut self, msg: LoadPositions, _: &mut Self::Context) -> Self::Result {
        let (pool, group) = (self.pool.clone(), self.group.clone());
        Box::pin(async move { consumption::load_positions(&pool, &group, &msg.0).await })
    }
}

/// Registers the ranking metric families.
pub fn init_metrics() {
    LazyLock::force(&FLUSH_DURATION);
    LazyLock::force(&BATCH_SIZE);
}

recsys_actors::observed_handlers!(RankingActor => ApplyBatch<Fact>, LoadPositions);
recsys_actors::restart_on_fail!(RankingActor);
