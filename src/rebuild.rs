//! `recsys rebuild recommendations|analytics`: recomputes a read model from the event log.
//!
//! Rankings, per-user interactions and the analytics counters are projections of the events on
//! `user-updates` and `product-updates`. The topics keep every record (`KAFKA_RETENTION_MS`
//! -1), so a projection can be recomputed by the service's own consuming code, for the day a
//! bug corrupted it or a new scoring formula ships:
//!
//! 1. Refuses while the service's consumers run (its consumer group has members): stop the
//!    runtimes that host it first. Refuses too when a topic no longer starts at offset 0
//!    (records were deleted: the projection could not be rebuilt whole).
//! 2. In one transaction, under the group's lock: empties the projection's tables, forgets the
//!    group's positions and seen streams, and records the rebuild (`projection_rebuilds`).
//!    The recommendations generation moves on, so no cached answer of the old state is served.
//! 3. Runs the service in this process until its consumer has replayed the topics up to where
//!    they ended at the start, with a progress bar; then analyzes the tables (fresh planner
//!    statistics), marks the rebuild finished and stops.
//!
//! Interrupted after step 2, the next `recsys rebuild` resumes the replay where the stored
//! positions are (so does a runtime hosting the service: the replay is ordinary consumption).
//! `--restart` wipes again instead. The replay is exact for the same reason consumption is:
//! positions and seen streams commit with the state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
use rdkafka::consumer::{BaseConsumer, Consumer};
use recsys_actors::kafka;
use recsys_schema::topics;
use slog::{info, Logger};

use crate::config::{Service, Settings};
use crate::db;
use crate::progress::Progress;
use crate::startup::Application;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Records replayed (the topics' end offsets at the start, summed).
    pub records: i64,
    /// Whether an unfinished rebuild was resumed rather than started.
    pub resumed: bool,
    pub took: Duration,
}

/// The tables of `service`'s projection (`recommendations` keeps `rec_state`: its base times
/// and its ever-growing generation).
fn tables(service: Service) -> anyhow::Result<&'static str> {
    match service {
        Service::Recommendations => Ok("rec_catalog, rec_scores, rec_user_products"),
        Service::Analytics => Ok("an_products, an_users, an_event_counts, an_product_hours"),
        other => anyhow::bail!(
            "{} has no read model to rebuild (recommendations or analytics)",
            other.name()
        ),
    }
}

/// How long a Kafka request of the checks may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Rebuilds `service`'s projection (see the module's documentation).
pub async fn rebuild(
    mut settings: Settings,
    service: Service,
    restart: bool,
    logger: Logger,
) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    let tables = tables(service)?;
    let url = settings.postgres.url();
    if settings.no_migrate {
        db::check_migrated(&url).await?;
    } else {
        db::migrate(&url).await?;
    }
    let brokers = settings.brokers(std::env::vars())?;
    let group = format!("{}{}", settings.kafka_topic_prefix, service.name());
    let physical: Vec<String> = [topics::USER_UPDATES, topics::PRODUCT_UPDATES]
        .iter()
        .map(|t| topics::prefixed(&settings.kafka_topic_prefix, t))
        .collect();
    let ends = check_kafka(brokers, group.clone(), physical).await?;
    let records: i64 = ends.values().sum();

    let mut conn = db::connect(&url).await?;
    let unfinished = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM projection_rebuilds \
           WHERE service = $1 AND finished_at IS NULL) AS unfinished",
    )
    .bind::<Text, _>(service.name())
    .get_result::<Unfinished>(&mut conn)
    .await?
    .unfinished;
    let resumed = unfinished && !restart;
    if resumed {
        info!(logger, "resuming the unfinished rebuild"; "service" => service.name());
    } else {
        let (group, name) = (group.clone(), service.name());
        conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
            // The lock every batch of the group takes: no batch is half applied meanwhile.
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
                .bind::<Text, _>(&group)
                .execute(conn)
                .await?;
            diesel::sql_query(format!("TRUNCATE {tables}"))
                .execute(conn)
                .await?;
            for table in ["consumer_offsets", "consumer_sequences"] {
                diesel::sql_query(format!("DELETE FROM {table} WHERE consumer_group = $1"))
                    .bind::<Text, _>(&group)
                    .execute(conn)
                    .await?;
            }
            if service == Service::Recommendations {
                diesel::sql_query("UPDATE rec_state SET generation = generation + 1")
                    .execute(conn)
                    .await?;
            }
            diesel::sql_query(
                "INSERT INTO projection_rebuilds (service, records) VALUES ($1, $2) \
                 ON CONFLICT (service) DO UPDATE \
                 SET started_at = now(), finished_at = NULL, records = EXCLUDED.records",
            )
            .bind::<Text, _>(name)
            .bind::<BigInt, _>(records)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
        .context("emptying the projection")?;
        info!(logger, "projection emptied; replaying the topics";
            "service" => service.name(), "tables" => tables, "records" => records);
    }

    // The service itself replays: its consumer starts where the stored positions are.
    settings.bind_address = "127.0.0.1".into();
    match service {
        Service::Recommendations => settings.recommendations_port = 0,
        _ => settings.analytics_port = 0,
    }
    let app = Application::build(settings, &[service], logger.clone())
        .await?
        .spawn();
    let mut bar = Progress::new("rebuild progress", "records", records);
    loop {
        let positions = diesel::sql_query(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
        )
        .bind::<Text, _>(&group)
        .load::<Position>(&mut conn)
        .await?;
        let done: i64 = positions
            .iter()
            .filter_map(|p| {
                let end = ends.get(&(p.topic.clone(), p.partition))?;
                Some(p.next_offset.min(*end))
            })
            .sum();
        bar.show(done, &logger);
        if done >= records {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish();
    // The planner's statistics describe the emptied tables until autovacuum comes by; a
    // personal recommendation planned on them can take seconds (docs/design.md, Known limits).
    diesel::sql_query(format!("ANALYZE {tables}"))
        .execute(&mut conn)
        .await?;
    diesel::sql_query("UPDATE projection_rebuilds SET finished_at = now() WHERE service = $1")
        .bind::<Text, _>(service.name())
        .execute(&mut conn)
        .await?;
    app.shutdown().await?;
    let rebuilt = Rebuilt {
        records,
        resumed,
        took: started.elapsed(),
    };
    info!(logger, "rebuild finished"; "service" => service.name(), "records" => records,
        "resumed" => resumed, "seconds" => rebuilt.took.as_secs_f64());
    Ok(rebuilt)
}

#[derive(QueryableByName)]
struct Unfinished {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    unfinished: bool,
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    next_offset: i64,
}

/// Refuses while `group` has members or a topic lost records; answers each partition's end
/// offset (a topic that does not exist yet has none).
async fn check_kafka(
    brokers: kafka::Brokers,
    group: String,
    topics: Vec<String>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = kafka::client_config(&brokers, "recsys-rebuild")
            .create()
            .context("a Kafka client for the rebuild")?;
        let groups = client
            .fetch_group_list(Some(&group), KAFKA_TIMEOUT)
            .context("describing the consumer group")?;
        if let Some(members) = groups
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .map(|g| g.members().len())
            .filter(|&n| n > 0)
        {
            anyhow::bail!(
                "consumer group {group} has {members} member(s): stop the runtimes hosting this \
                 service first (the rebuild replays in this process)"
            );
        }
        let mut ends = BTreeMap::new();
        for topic in &topics {
            let metadata = client
                .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
                .context("reading the topics' metadata")?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            if found.error().is_some() {
                continue;
            }
            for partition in found.partitions() {
                let (low, high) = client
                    .fetch_watermarks(topic, partition.id(), KAFKA_TIMEOUT)
                    .context("reading the topics' offsets")?;
                anyhow::ensure!(
                    low == 0,
                    "{topic} partition {} starts at offset {low}: its earlier records were \
                     deleted (retention), so the projection cannot be rebuilt whole",
                    partition.id()
                );
                ends.insert((topic.clone(), partition.id()), high);
            }
        }
        Ok(ends)
    })
    .await?
}
