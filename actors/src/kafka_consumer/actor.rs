//! [`KafkaConsumer`]: the consumer actor. It runs the consume loop, measures its lag every
//! [`lag::INTERVAL`], and on [`Leave`] closes its client, which leaves the group.

use std::sync::Arc;

use actix::prelude::*;
use rdkafka::consumer::BaseConsumer;
use slog::{debug, info, warn, Logger};
use tokio::sync::oneshot;

use super::config::ConsumerConfig;
use super::messages::{ApplyBatch, Decoder, LoadPositions};
use super::{consume, lag};
use crate::kafka;
use crate::metrics::KAFKA_ASSIGNED_PARTITIONS;
use crate::observe::ObservedRecipient;

/// The consumer actor. Start it under a supervisor: a restart joins the group again and resumes
/// from the sink's stored positions.
pub struct KafkaConsumer<T: Send + Sync + 'static> {
    config: ConsumerConfig,
    decoder: Decoder<T>,
    sink: ObservedRecipient<ApplyBatch<T>>,
    positions: ObservedRecipient<LoadPositions>,
    logger: Logger,
    /// The consume loop, while it runs.
    running: Option<Running>,
    /// Numbers the loops started, so that a loop's end clears only its own [`Running`].
    started: u64,
    /// A lag measurement is in flight.
    measuring: bool,
    /// The group-less client that reads watermarks; made on first use.
    lag_client: Option<Arc<BaseConsumer>>,
}

/// A running consume loop.
struct Running {
    id: u64,
    /// Ends the loop; the sender it carries is answered once the client is closed.
    stop: oneshot::Sender<oneshot::Sender<()>>,
}

impl<T: Send + Sync + 'static> KafkaConsumer<T> {
    /// A consumer feeding `sink`; `positions` answers stored offsets.
    pub fn new(
        config: ConsumerConfig,
        decoder: Decoder<T>,
        sink: ObservedRecipient<ApplyBatch<T>>,
        positions: ObservedRecipient<LoadPositions>,
        logger: Logger,
    ) -> Self {
        Self {
            config,
            decoder,
            sink,
            positions,
            logger,
            running: None,
            started: 0,
            measuring: false,
            lag_client: None,
        }
    }

    /// Starts the consume loop unless it runs. When the loop ends on its own (a client error),
    /// the actor stops and its supervisor starts it again.
    fn start_loop(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        self.started += 1;
        let id = self.started;
        let (stop, stopped) = oneshot::channel::<oneshot::Sender<()>>();
        let consume = consume::run(
            self.config.clone(),
            self.decoder.clone(),
            self.sink.clone(),
            self.positions.clone(),
            self.logger.clone(),
        );
        let work = async move {
            let (result, leaving) = {
                let consume = consume;
                tokio::pin!(consume);
                tokio::select! {
                    result = &mut consume => (result, None),
                    leaving = stopped => (Ok(()), leaving.ok()),
                }
                // The loop's future, and with it the client, is dropped here: closing the client
                // leaves the group.
            };
            if let Some(closed) = leaving {
                let _ = closed.send(());
            }
            result
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            if act.running.as_ref().is_some_and(|r| r.id == id) {
                act.running = None;
            }
            act.holds_nothing();
            if let Err(e) = result {
                warn!(act.logger, "consumer failed; restarting"; "error" => format!("{e:#}"));
                ctx.stop();
            }
        }));
        self.running = Some(Running { id, stop });
    }

    /// Without its client the consumer holds no partition, whatever the last rebalance said.
    fn holds_nothing(&self) {
        KAFKA_ASSIGNED_PARTITIONS
            .with_label_values(&[self.config.service, &self.config.group])
            .set(0);
    }

    /// Starts a lag measurement unless one is in flight.
    fn measure_lag(&mut self, ctx: &mut Context<Self>) {
        if self.measuring {
            return;
        }
        let client = match &self.lag_client {
            Some(client) => client.clone(),
            None => match kafka::client_config(&self.config.brokers, "recsys-lag").create() {
                Ok(client) => self.lag_client.insert(Arc::new(client)).clone(),
                Err(e) => {
                    warn!(self.logger, "cannot create the lag client"; "error" => %e);
                    return;
                }
            },
        };
        self.measuring = true;
        let (config, positions) = (self.config.clone(), self.positions.clone());
        let work = async move { lag::measure(client, &config, &positions).await };
        ctx.spawn(work.into_actor(self).map(|result, act, _| {
            act.measuring = false;
            if let Err(e) = result {
                debug!(act.logger, "lag not measured"; "error" => format!("{e:#}"));
            }
        }));
    }
}

impl<T: Send + Sync + 'static> Actor for KafkaConsumer<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(lag::INTERVAL, |act, ctx| act.measure_lag(ctx));
        info!(self.logger, "consumer started"; "group" => &self.config.group, "topics" => self.config.topics.join(","));
        self.start_loop(ctx);
    }
}

impl<T: Send + Sync + 'static> Supervised for KafkaConsumer<T> {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "consumer restarting"; "group" => &self.config.group);
        self.running = None;
        self.measuring = false;
    }
}

/// Stop consuming and close the client, which leaves the group: its partitions go to the other
/// members at once instead of after the session timeout. Answers once the client is closed.
/// (With static membership the broker keeps the partitions for this member's return until the
/// session timeout, as static membership intends.)
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Leave;

/// Ends the consume loop and waits for the client to close. A batch already handed to the sink
/// is still applied by it; its records are read again by whoever gets the partitions and
/// skipped as already applied.
impl<T: Send + Sync + 'static> Handler<Leave> for KafkaConsumer<T> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, _: &mut Self::Context) -> Self::Result {
        let Some(running) = self.running.take() else {
            return Box::pin(async {});
        };
        let (closed, is_closed) = oneshot::channel();
        if running.stop.send(closed).is_err() {
            return Box::pin(async {});
        }
        info!(self.logger, "consumer leaving its group"; "group" => &self.config.group);
        Box::pin(async move {
            let _ = is_closed.await;
        })
    }
}

/// Start consuming again after [`Leave`] (tests: a consumer that left and comes back).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Resume;

/// Starts the loop unless it runs.
#[cfg(feature = "test-support")]
impl<T: Send + Sync + 'static> Handler<Resume> for KafkaConsumer<T> {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Self::Context) {
        self.start_loop(ctx);
    }
}

crate::observed_handlers!(impl[T: Send + Sync + 'static] KafkaConsumer<T> => Leave);
#[cfg(feature = "test-support")]
crate::observed_handlers!(impl[T: Send + Sync + 'static] KafkaConsumer<T> => Resume);
crate::restart_on_fail!(impl[T: Send + Sync + 'static] KafkaConsumer<T>);
