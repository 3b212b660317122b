//! [`RankingActor`]: the popularity-ranking actor. It owns the scores: it is the sink of the
//! recommendations consumer, folds each batch in memory and writes it — scores, user activity,
//! catalog changes, the seen publication sequences and consumer positions — in one transaction, then bumps
//! the ranking generation (part of every cache key) and publishes it to the cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use prometheus::{register_histogram, Histogram};
use recsys_actors::cache::{CacheActor, CacheRaise};
use recsys_actors::kafka_consumer::{ApplyBatch, LoadPositions};
use recsys_actors::observe::ObservedAddr;
use recsys_schema::events::ProductSnapshot;
use slog::{debug, info, warn, Logger};
use std::sync::LazyLock;
use uuid::Uuid;

use super::score::{Decay, Weights};
use super::store;
use crate::consumption::{self, Fact, ProductChange, What};
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

/// A catalog change, the newest version per product in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogChange {
    /// `product.created` (with its time) or `product.updated`.
    Upsert {
        snapshot: ProductSnapshot,
        created_at: Option<DateTime<Utc>>,
    },
    /// `product.deleted`.
    Deleted { version: i32 },
}

impl CatalogChange {
    fn version(&self) -> i32 {
        match self {
            CatalogChange::Upsert { snapshot, .. } => snapshot.version,
            CatalogChange::Deleted { version } => *version,
        }
    }
}

/// One batch folded in memory: what to add and upsert.
#[derive(Debug, Default)]
pub struct Fold {
    /// Accumulator delta per product.
    pub scores: HashMap<Uuid, f64>,
    /// (user, product) → [views, cart_adds, cart_removes, purchases] deltas (quantities).
    pub user_products: HashMap<(Uuid, Uuid), [i64; 4]>,
    /// The newest change per product.
    pub catalog: HashMap<Uuid, CatalogChange>,
}

impl Fold {
    /// Folds one event.
    pub fn add(&mut self, fact: &Fact, decay: &Decay, weights: &Weights) {
        match &fact.what {
            What::Activity(a) => {
                *self.scores.entry(a.product_id).or_default() +=
                    decay.contribution(weights.of(a.action), a.quantity, fact.occurred_at);
                let counters = self
                    .user_products
                    .entry((a.user_id, a.product_id))
                    .or_default();
                let slot = recsys_schema::events::Action::ALL
                    .iter()
                    .position(|x| *x == a.action)
                    .expect("every action is listed");
                counters[slot] += i64::from(a.quantity);
            }
            What::ProductCreated(change) => self.catalog_change(
                change.product_id,
                CatalogChange::Upsert {
                    snapshot: snapshot_of(change),
                    created_at: Some(fact.occurred_at),
                },
            ),
            What::ProductUpdated(change) => self.catalog_change(
                change.product_id,
                CatalogChange::Upsert {
                    snapshot: snapshot_of(change),
                    created_at: None,
                },
            ),
            What::ProductDeleted(d) => {
                self.catalog_change(d.product_id, CatalogChange::Deleted { version: d.version })
            }
            What::UserRegistered { .. } | What::UserUpdated { .. } => {}
        }
    }

    fn catalog_change(&mut self, product_id: Uuid, change: CatalogChange) {
        match self.catalog.get_mut(&product_id) {
            Some(current) if current.version() >= change.version() => {}
            Some(current) => {
                // Keep the creation time of an earlier product.created in the same batch.
                let created = match current {
                    CatalogChange::Upsert { created_at, .. } => *created_at,
                    CatalogChange::Deleted { .. } => None,
                };
                *current = match change {
                    CatalogChange::Upsert {
                        snapshot,
                        created_at,
                    } => CatalogChange::Upsert {
                        snapshot,
                        created_at: created_at.or(created),
                    },
                    deleted => deleted,
                };
            }
            None => {
                self.catalog.insert(product_id, change);
            }
        }
    }
}

/// The new state of a changed product. The recommendations consumer decodes with
/// [`Snapshots::Keep`](crate::consumption::Snapshots::Keep), so every change carries one.
fn snapshot_of(change: &ProductChange) -> ProductSnapshot {
    let snapshot = change
        .snapshot
        .as_deref()
        .expect("the recommendations consumer keeps product snapshots");
    snapshot.clone()
}

/// The ranking actor.
pub struct RankingActor {
    pool: Pool,
    /// Consumer group whose positions and seen sequences this actor keeps.
    group: String,
    weights: Weights,
    half_life: Duration,
    cache: ObservedAddr<CacheActor>,
    /// Redis key of the published generation.
    generation_key: String,
    logger: Logger,
}

impl RankingActor {
    /// A ranking actor writing through `pool`.
    pub fn new(
        pool: Pool,
        group: String,
        weights: Weights,
        half_life: Duration,
        cache: ObservedAddr<CacheActor>,
        generation_key: String,
        logger: Logger,
    ) -> Self {
        Self {
            pool,
            group,
            weights,
            half_life,
            cache,
            generation_key,
            logger,
        }
    }

    /// Publishes the stored generation (at start, and periodically so that a restarted Redis
    /// learns it again).
    fn publish_generation(&self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let cache = self.cache.clone();
        let key = self.generation_key.clone();
        ctx.spawn(
            async move {
                let mut conn = pool.get().await.ok()?;
                let state = store::state(&mut conn).await.ok()?;
                cache
                    .send(CacheRaise {
                        key,
                        value: state.generation as u64,
                    })
                    .await
                    .ok()
            }
            .into_actor(self)
            .map(|_, _, _| ()),
        );
    }
}

impl Actor for RankingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.logger, "ranking actor started"; "weights" => self.weights.to_string(), "half_life_s" => self.half_life.as_secs_f64());
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
        let (pool, group, weights, half_life) = (
            self.pool.clone(),
            self.group.clone(),
            self.weights,
            self.half_life,
        );
        let (cache, key, logger) = (
            self.cache.clone(),
            self.generation_key.clone(),
            self.logger.clone(),
        );
        Box::pin(async move {
            let started = Instant::now();
            let batch = msg.0;
            let mut conn = pool.get().await?;
            let (applied, generation) = conn
                .transaction(async move |conn| -> anyhow::Result<(Vec<bool>, i64)> {
                    let applied = consumption::claim(conn, &group, &batch).await?;
                    let state = store::state_for_update(conn).await?;
                    let now = Utc::now();
                    let mut decay = Decay {
                        half_life,
                        t0: state.t0,
                    };
                    if let Some(factor) = decay.rebase_factor(now) {
                        store::rebase(conn, factor, now).await?;
                        decay.t0 = now;
                    }
                    let mut fold = Fold::default();
                    for (record, applied) in batch.records.iter().zip(&applied) {
                        if *applied {
                            fold.add(&record.item, &decay, &weights);
                        }
                    }
                    store::apply(conn, &fold).await?;
                    let generation = store::bump_generation(conn).await?;
                    Ok((applied, generation))
                })
                .await?;
            FLUSH_DURATION.observe(started.elapsed().as_secs_f64());
            BATCH_SIZE.observe(applied.len() as f64);
            debug!(logger, "ranking batch flushed"; "records" => applied.len(), "generation" => generation);
            cache.do_send(CacheRaise {
                key,
                value: generation as u64,
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommendations::score::tests::decay;
    use bigdecimal::BigDecimal;
    use recsys_schema::events::{
        Action, Envelope, Event, ProductDeleted, UserActivity, UserRegistered,
    };

    fn at(event: Event, hours: i64) -> Fact {
        Envelope::at(event, decay().t0 + chrono::Duration::hours(hours)).into()
    }

    fn snapshot(id: Uuid, version: i32) -> ProductSnapshot {
        ProductSnapshot {
            product_id: id,
            name: format!("v{version}"),
            price: BigDecimal::from(version),
            category: None,
            version,
        }
    }

    #[test]
    /// A batch of mixed events folds into per-product score deltas, per user-product counters
    /// (quantities), and the newest catalog version; user events change nothing.
    fn folding_a_mixed_batch() {
        let (user, p1, p2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let activity = |product, action, quantity| {
            Event::UserActivity(UserActivity {
                user_id: user,
                product_id: product,
                action,
                quantity,
            })
        };
        let events = [
            at(
                Event::UserRegistered(UserRegistered {
                    user_id: user,
                    name: "u".into(),
                }),
                0,
            ),
            at(activity(p1, Action::View, 1), 0),
            at(activity(p1, Action::Purchase, 2), 1),
            at(activity(p2, Action::CartAdd, 1), 0),
            at(activity(p2, Action::CartRemove, 1), 0),
            at(Event::ProductCreated(snapshot(p1, 1)), 0),
            at(Event::ProductUpdated(snapshot(p1, 3)), 0),
            at(Event::ProductUpdated(snapshot(p1, 2)), 0),
            at(
                Event::ProductDeleted(ProductDeleted {
                    product_id: p2,
                    version: 4,
                }),
                0,
            ),
        ];
        let mut fold = Fold::default();
        for e in &events {
            fold.add(e, &decay(), &Weights::default());
        }
        assert_eq!(fold.scores[&p1], 1.0 + 10.0 * 2.0 * 2.0);
        assert_eq!(fold.scores[&p2], 0.0);
        assert_eq!(fold.user_products[&(user, p1)], [1, 0, 0, 2]);
        assert_eq!(fold.user_products[&(user, p2)], [0, 1, 1, 0]);
        match &fold.catalog[&p1] {
            CatalogChange::Upsert {
                snapshot,
                created_at,
            } => {
                assert_eq!(snapshot.version, 3);
                assert_eq!(*created_at, Some(decay().t0));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fold.catalog[&p2], CatalogChange::Deleted { version: 4 });
    }
}

recsys_actors::observed_handlers!(RankingActor => ApplyBatch<Fact>, LoadPositions);
recsys_actors::restart_on_fail!(RankingActor);
