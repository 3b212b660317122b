//! [`AggregationActor`]: the analytics consumer sink. Folds a batch of events into per-product,
//! per-user and per-minute deltas in memory, then writes them with one upsert per table, in the
//! same transaction as the consumer positions and the seen publication sequences (exactly-once
//! effect).

use std::sync::LazyLock;
use std::time::Instant;

use actix::prelude::*;
use diesel_async::AsyncConnection;
use prometheus::{register_histogram, Histogram};
use recsys_actors::kafka_consumer::{ApplyBatch, LoadPositions};
use slog::{debug, info, warn, Logger};

use super::fold::Fold;
use super::store;
use crate::consumption::{self, Fact};
use crate::db::Pool;

/// `analytics_batch_size`: records per applied batch.
pub static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "analytics_batch_size",
        "Records per analytics batch",
        consumption::BATCH_SIZE_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// `analytics_flush_duration_seconds`: one batch written.
pub static FLUSH_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "analytics_flush_duration_seconds",
        "Time to write one batch of statistics",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect("metric registers once")
});

/// Registers the analytics metric families.
pub fn init_metrics() {
    LazyLock::force(&BATCH_SIZE);
    LazyLock::force(&FLUSH_DURATION);
}

/// The aggregation actor.
pub struct AggregationActor {
    pool: Pool,
    /// Consumer group whose positions and seen sequences this actor keeps.
    group: String,
    logger: Logger,
}

impl AggregationActor {
    /// An aggregation actor writing through `pool`.
    pub fn new(pool: Pool, group: String, logger: Logger) -> Self {
        Self {
            pool,
            group,
            logger,
        }
    }
}

impl Actor for AggregationActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        info!(self.logger, "aggregation actor started");
    }
}

impl Supervised for AggregationActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "aggregation actor restarting");
    }
}

/// Folds and writes one batch in one transaction; answers which records were new.
impl Handler<ApplyBatch<Fact>> for AggregationActor {
    type Result = ResponseFuture<anyhow::Result<Vec<bool>>>;

    fn handle(&mut self, msg: ApplyBatch<Fact>, _: &mut Self::Context) -> Self::Result {
        let (pool, group, logger) = (self.pool.clone(), self.group.clone(), self.logger.clone());
        Box::pin(async move {
            let started = Instant::now();
            let batch = msg.0;
            let mut conn = pool.get().await?;
            let applied = conn
                .transaction(async move |conn| -> anyhow::Result<Vec<bool>> {
                    let applied = consumption::claim(conn, &group, &batch).await?;
                    let mut fold = Fold::default();
                    for (record, applied) in batch.records.iter().zip(&applied) {
                        if *applied {
                            fold.add(&record.item);
                        }
                    }
                    store::apply(conn, &fold).await?;
                    Ok(applied)
                })
                .await?;
            FLUSH_DURATION.observe(started.elapsed().as_secs_f64());
            BATCH_SIZE.observe(applied.len() as f64);
            debug!(logger, "analytics batch flushed"; "records" => applied.len());
            Ok(applied)
        })
    }
}

/// Answers stored consumer positions.
impl Handler<LoadPositions> for AggregationActor {
    type Result = ResponseFuture<anyhow::Result<Vec<(String, i32, i64)>>>;

    fn handle(&mut self, msg: LoadPositions, _: &mut Self::Context) -> Self::Result {
        let (pool, group) = (self.pool.clone(), self.group.clone());
        Box::pin(async move { consumption::load_positions(&pool, &group, &msg.0).await })
    }
}

recsys_actors::observed_handlers!(AggregationActor => ApplyBatch<Fact>, LoadPositions);
recsys_actors::restart_on_fail!(AggregationActor);
