//! Observed actors: mailbox depth, messages, handling time and restarts of every actor.
//!
//! Every message travels in an [`Observed`] envelope that carries a [`Ticket`]. The ticket is
//! counted in `actor_mailbox_depth{service,actor}` from the moment the message is sent until it
//! is answered or dropped, so the gauge is "messages sent and not yet handled" whatever held them
//! up (a full mailbox, a busy actor, a slow asynchronous answer). When the actor answers, the
//! ticket records `actor_messages_total{service,actor,message,outcome}` (`ok`, `error` for an
//! `Err` answer, `dropped` when the message was never answered: the actor stopped or restarted
//! first) and `actor_message_duration_seconds{service,actor,message}` (from the start of handling
//! to the answer, asynchronous work included).
//!
//! Callers hold an [`ObservedAddr`] (or an [`ObservedRecipient`]) instead of a bare `Addr`;
//! [`crate::supervision::start_supervised`] hands one out, and its supervisor counts
//! `actor_restarts_total{service,actor}`. An actor accepts the envelope for each of its messages
//! through one line of [`observed_handlers!`](crate::observed_handlers), which forwards to its
//! ordinary `Handler<M>`; a message it forgets to list cannot be sent through an observed
//! address (the code does not compile), so nothing bypasses the counts.
//!
//! The `actor` and `message` labels are Rust type names without their path and generic
//! arguments (`KafkaConsumer`, `ApplyBatch`): bounded by the code, never by data.
//!
//! A panic is contained: one raised while the actor handles a message (or polls one of its own
//! futures) unwinds into its supervisor, one raised by a handler's detached answer future is
//! caught around that future ([`ContainPanics`]). Either way the probe logs it with the actor
//! and the message (`outcome` `panicked`, or `dropped` for the answer future's message) and
//! the supervisor restarts the actor (see [`crate::supervision`]).
//!
//! The envelope also carries the request its sender was handling ([`crate::request`]): the
//! handler and its answer future run as part of that request, so their log lines name it.
//!
//! Mailboxes are bounded: once `limit` messages of an actor are in flight, a further send is
//! refused at once with [`Refused::Overloaded`] (counted with outcome `shed`) instead of
//! queueing without end, and the HTTP layer answers `503`. An address may also carry a
//! deadline ([`ObservedAddr::with_timeout`]): an answer that takes longer is
//! [`Refused::TimedOut`].

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender, ToEnvelope};
use actix::{
    Actor, Addr, AtomicResponse, Handler, MailboxError, Message, Recipient, ResponseActFuture,
};
use futures_util::task::AtomicWaker;
use futures_util::FutureExt;
use prometheus::{IntCounter, IntGauge};
use slog::{error, Logger};
use tokio::sync::oneshot;

use crate::metrics::{ACTOR_MAILBOX_DEPTH, ACTOR_MESSAGES, ACTOR_MESSAGE_DURATION, ACTOR_RESTARTS};
use crate::request::{InRequest, RequestId};

/// `Foo` for `my_crate::module::Foo<Bar>`: a bounded label value for a type.
pub fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// How an answer counts in `actor_messages_total`: `ok` or `error`.
pub trait Outcome {
    /// The `outcome` label value of this answer.
    fn outcome(&self) -> &'static str;
}

impl<T, E> Outcome for Result<T, E> {
    fn outcome(&self) -> &'static str {
        match self {
            Ok(_) => "ok",
            Err(_) => "error",
        }
    }
}

/// Answers that carry no failure.
macro_rules! always_ok {
    ($($ty:ty),+) => {
        $(impl Outcome for $ty {
            fn outcome(&self) -> &'static str {
                "ok"
            }
        })+
    };
}
always_ok!((), bool);

impl<T> Outcome for Option<T> {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl<T> Outcome for Vec<T> {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

/// The metric handles of one actor instance (`service` and `actor` labels).
#[derive(Clone)]
pub struct Probe(Arc<ProbeInner>);

struct ProbeInner {
    service: &'static str,
    actor: &'static str,
    depth: IntGauge,
    restarts: IntCounter,
    /// Messages in flight beyond which sends are refused.
    limit: i64,
    logger: Logger,
    /// The message whose handling unwound last (named by its ticket as it is dropped), for the
    /// supervisor's log line.
    unwound: Mutex<Option<&'static str>>,
    /// Set by a panicking answer future: the supervisor restarts the actor on its next poll.
    restart: AtomicBool,
    /// Wakes the supervisor when `restart` is set.
    supervisor: AtomicWaker,
}

/// Why a message got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The actor already has its limit of messages in flight; the message was not sent.
    #[error("overloaded")]
    Overloaded,
    /// No answer within the address's deadline.
    #[error("timed out")]
    TimedOut,
    /// The actor stopped (or restarted) before answering.
    #[error("stopped before answering")]
    Stopped,
}

impl From<MailboxError> for Refused {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::Timeout => Refused::TimedOut,
            MailboxError::Closed => Refused::Stopped,
        }
    }
}

/// Messages an actor may have in flight unless told otherwise.
pub const DEFAULT_MAILBOX_LIMIT: usize = 1024;

impl Probe {
    /// The probe of an actor of type `A` serving `service`, refusing messages beyond `limit` in
    /// flight and logging panics to `logger`. Creates its depth and restart series at zero, so
    /// they are on `/metrics` before anything happens.
    pub fn new<A: ?Sized>(service: &'static str, limit: usize, logger: &Logger) -> Self {
        let actor = short_type_name::<A>();
        let depth = ACTOR_MAILBOX_DEPTH.with_label_values(&[service, actor]);
        let restarts = ACTOR_RESTARTS.with_label_values(&[service, actor]);
        Self(Arc::new(ProbeInner {
            service,
            actor,
            depth,
            restarts,
            limit: i64::try_from(limit.max(1)).unwrap_or(i64::MAX),
            logger: logger.new(slog::o!("service" => service, "actor" => actor)),
            unwound: Mutex::new(None),
            restart: AtomicBool::new(false),
            supervisor: AtomicWaker::new(),
        }))
    }

    /// Counts one restart.
    pub fn restarted(&self) {
        self.0.restarts.inc();
    }

    /// Logs a caught panic: the actor, the message being handled (when known) and what the
    /// panic said. `message` defaults to the one whose ticket was dropped by the unwinding.
    pub fn panicked(&self, message: Option<&'static str>, payload: &(dyn Any + Send)) {
        let unwound = self.0.unwound.lock().map_or(None, |mut m| m.take());
        let message = message.or(unwound).unwrap_or("none");
        let said = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        error!(self.0.logger, "actor panicked, restarting it"; "message" => message, "panic" => said);
    }

    /// Asks the supervisor to restart the actor (a panic outside the actor's own context).
    fn request_restart(&self) {
        self.0.restart.store(true, Ordering::SeqCst);
        self.0.supervisor.wake();
    }

    /// Whether a restart was asked for since the last call; registers `waker` to be woken by the
    /// next request.
    pub(crate) fn take_restart_request(&self, waker: &Waker) -> bool {
        self.0.supervisor.register(waker);
        self.0.restart.swap(false, Ordering::SeqCst)
    }

    /// `message` with a ticket, counted in the mailbox depth until answered or dropped; or
    /// [`Refused::Overloaded`] (counted `shed`) when the actor has its limit in flight.
    fn envelope<M>(&self, message: M) -> Result<Observed<M>, Refused> {
        if self.0.depth.get() >= self.0.limit {
            ACTOR_MESSAGES
                .with_label_values(&[self.0.service, self.0.actor, short_type_name::<M>(), "shed"])
                .inc();
            return Err(Refused::Overloaded);
        }
        self.0.depth.inc();
        let ticket = Ticket {
            probe: self.clone(),
            message: short_type_name::<M>(),
            started: None,
            outcome: None,
            request: crate::request::current(),
        };
        Ok(Observed { message, ticket })
    }
}

/// One message in flight. Counted in `actor_mailbox_depth` while it lives; records its outcome
/// (or `dropped`) and handling time when it goes.
pub struct Ticket {
    probe: Probe,
    message: &'static str,
    /// When handling began.
    started: Option<Instant>,
    /// Set once answered.
    outcome: Option<&'static str>,
    /// The request the sender was handling, which the handling is part of.
    request: Option<RequestId>,
}

impl Ticket {
    /// The request the message was sent for, if any.
    pub fn request(&self) -> Option<&RequestId> {
        self.request.as_ref()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let probe = &self.probe.0;
        probe.depth.dec();
        if self.outcome.is_none() && std::thread::panicking() {
            // Dropped by the unwinding of a panic while this message was being handled.
            self.outcome = Some("panicked");
            if let Ok(mut unwound) = probe.unwound.lock() {
                *unwound = Some(self.message);
            }
        }
        let outcome = self.outcome.unwrap_or("dropped");
        ACTOR_MESSAGES
            .with_label_values(&[probe.service, probe.actor, self.message, outcome])
            .inc();
        if let (Some(started), Some("ok" | "error")) = (self.started, self.outcome) {
            ACTOR_MESSAGE_DURATION
                .with_label_values(&[probe.service, probe.actor, self.message])
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// A message `M` with its ticket; answers what `M` answers.
pub struct Observed<M> {
    message: M,
    ticket: Ticket,
}

impl<M: Message> Message for Observed<M> {
    type Result = M::Result;
}

impl<M> Observed<M> {
    /// Starts the handling clock and splits the envelope (used by
    /// [`observed_handlers!`](crate::observed_handlers)).
    pub fn open(self) -> (M, Ticket) {
        let Observed {
            message,
            mut ticket,
        } = self;
        ticket.started = Some(Instant::now());
        (message, ticket)
    }
}

/// A handler's answer with its panics contained: an answer future that panics is logged with
/// its actor and message and makes the supervisor restart the actor (the sender gets no answer:
/// [`Refused::Stopped`]). Answers computed inside the actor's context need nothing: a panic
/// there unwinds into the supervisor.
pub trait ContainPanics {
    /// `self`, reporting a panic to the probe of `ticket`.
    fn contain(self, ticket: &Ticket) -> Self;
}

impl<T: 'static> ContainPanics for actix::ResponseFuture<T> {
    fn contain(self, ticket: &Ticket) -> Self {
        let (probe, message) = (ticket.probe.clone(), ticket.message);
        let answer = crate::request::future(ticket.request.clone(), self);
        Box::pin(async move {
            match AssertUnwindSafe(answer).catch_unwind().await {
                Ok(answer) => answer,
                Err(payload) => {
                    probe.panicked(Some(message), &*payload);
                    probe.request_restart();
                    // Ends this task as the panic would have (no answer is sent), without
                    // running the panic hook a second time.
                    std::panic::resume_unwind(payload)
                }
            }
        })
    }
}

/// Answers that run inside the actor's context (its own futures, plain values).
macro_rules! contained_by_the_supervisor {
    ($([$($generics:tt)*] $ty:ty),+ $(,)?) => {
        $(impl<$($generics)*> ContainPanics for $ty {
            fn contain(self, _: &Ticket) -> Self {
                self
            }
        })+
    };
}
/// Computed in the actor's context, polled as part of the sender's request.
impl<A: Actor, T: 'static> ContainPanics for ResponseActFuture<A, T> {
    fn contain(self, ticket: &Ticket) -> Self {
        match &ticket.request {
            Some(id) => Box::pin(InRequest::new(id.clone(), self)),
            None => self,
        }
    }
}

contained_by_the_supervisor!(
    [A: Actor, T] AtomicResponse<A, T>,
    [] (),
    [] bool,
    [T, E] Result<T, E>,
    [T] Option<T>,
    [T] Vec<T>,
);

/// The answer of an observed handler: the actor's own answer, and the ticket that is closed
/// when that answer is delivered.
pub struct ObservedResponse<A: Handler<M>, M: Message> {
    response: <A as Handler<M>>::Result,
    ticket: Ticket,
}

impl<A: Handler<M>, M: Message> ObservedResponse<A, M> {
    /// Wraps the actor's answer to a message.
    pub fn new(response: <A as Handler<M>>::Result, ticket: Ticket) -> Self {
        Self { response, ticket }
    }
}

impl<A, M> MessageResponse<A, Observed<M>> for ObservedResponse<A, M>
where
    A: Actor + Handler<M>,
    M: Message + 'static,
    M::Result: Outcome + 'static,
{
    fn handle(self, ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        let (inner_tx, mut inner_rx) = oneshot::channel();
        self.response.handle(ctx, Some(inner_tx));
        let mut ticket = self.ticket;
        let deliver = move |answer: M::Result| {
            ticket.outcome = Some(answer.outcome());
            drop(ticket);
            if let Some(tx) = tx {
                // The sender may have given up waiting; the message still counts as handled.
                let _ = tx.send(answer);
            }
        };
        match inner_rx.try_recv() {
            Ok(answer) => deliver(answer),
            // Answered later (an asynchronous handler), or never if the actor stops first: the
            // ticket then goes with the channel and counts as `dropped`.
            Err(oneshot::error::TryRecvError::Empty) => {
                actix::spawn(async move {
                    if let Ok(answer) = inner_rx.await {
                        deliver(answer);
                    }
                });
            }
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
}

/// Lets an actor accept [`Observed`] envelopes for the listed messages, forwarding each to its
/// own `Handler<M>`.
///
/// ```ignore
/// recsys_actors::observed_handlers!(UsersActor => RegisterUser, Login);
/// recsys_actors::observed_handlers!(impl[T: Send + 'static] KafkaConsumer<T> => Leave);
/// ```
#[macro_export]
macro_rules! observed_handlers {
    (@one [$($generics:tt)*] $actor:ty => $message:ty) => {
        impl<$($generics)*> $crate::actix::Handler<$crate::observe::Observed<$message>> for $actor {
            type Result = $crate::observe::ObservedResponse<$actor, $message>;

            fn handle(
                &mut self,
                envelope: $crate::observe::Observed<$message>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                let (message, ticket) = envelope.open();
                let response = $crate::request::within(ticket.request(), || {
                    <Self as $crate::actix::Handler<$message>>::handle(self, message, ctx)
                });
                let response = $crate::observe::ContainPanics::contain(response, &ticket);
                $crate::observe::ObservedResponse::new(response, ticket)
            }
        }
    };
    (impl $generics:tt $actor:ty => $($message:ty),+ $(,)?) => {
        $($crate::observed_handlers!(@one $generics $actor => $message);)+
    };
    ($actor:ty => $($message:ty),+ $(,)?) => {
        $($crate::observed_handlers!(@one [] $actor => $message);)+
    };
}

/// The address of an observed actor: sends every message in an [`Observed`] envelope.
pub struct ObservedAddr<A: Actor> {
    addr: Addr<A>,
    probe: Probe,
    /// How long a sender waits for an answer (`None`: as long as it takes).
    timeout: Option<Duration>,
}

impl<A: Actor> Clone for ObservedAddr<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            probe: self.probe.clone(),
            timeout: self.timeout,
        }
    }
}

impl<A: Actor> ObservedAddr<A> {
    /// Observes the actor at `addr` with `probe`.
    pub fn new(addr: Addr<A>, probe: Probe) -> Self {
        Self {
            addr,
            probe,
            timeout: None,
        }
    }

    /// The same address, with answers awaited for at most `timeout` (for request handlers).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// Sends `message` and waits for the answer (see [`Addr::send`]); refused at once when the
    /// actor is overloaded.
    pub fn send<M>(&self, message: M) -> impl Future<Output = Result<M::Result, Refused>> + 'static
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Observed<M>>,
        A::Context: ToEnvelope<A, Observed<M>>,
    {
        let request = self
            .probe
            .envelope(message)
            .map(|envelope| self.addr.send(envelope));
        let timeout = self.timeout;
        async move {
            let request = request?;
            let answer = match timeout {
                Some(timeout) => request.timeout(timeout).await,
                None => request.await,
            };
            answer.map_err(Refused::from)
        }
    }

    /// Sends `message` without waiting for the answer (see [`Addr::do_send`]); dropped (and
    /// counted `shed`) when the actor is overloaded.
    pub fn do_send<M>(&self, message: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Observed<M>>,
        A::Context: ToEnvelope<A, Observed<M>>,
    {
        if let Ok(envelope) = self.probe.envelope(message) {
            self.addr.do_send(envelope)
        }
    }

    /// A type-erased sender of `M` to this actor, observed the same way.
    pub fn recipient<M>(&self) -> ObservedRecipient<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Observed<M>>,
        A::Context: ToEnvelope<A, Observed<M>>,
    {
        ObservedRecipient {
            recipient: self.addr.clone().recipient(),
            probe: self.probe.clone(),
        }
    }
}

/// A type-erased, observed sender of `M` (see [`ObservedAddr::recipient`]).
pub struct ObservedRecipient<M: Message + Send>
where
    M::Result: Send,
{
    recipient: Recipient<Observed<M>>,
    probe: Probe,
}

impl<M: Message + Send> Clone for ObservedRecipient<M>
where
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            recipient: self.recipient.clone(),
            probe: self.probe.clone(),
        }
    }
}

impl<M: Message + Send + 'static> ObservedRecipient<M>
where
    M::Result: Send,
{
    /// Sends `message` and waits for the answer (see [`Recipient::send`]); refused at once
    /// when the actor is overloaded.
    pub fn send(&self, message: M) -> impl Future<Output = Result<M::Result, Refused>> + 'static {
        let request = self
            .probe
            .envelope(message)
            .map(|envelope| self.recipient.send(envelope));
        async move { request?.await.map_err(Refused::from) }
    }

    /// Sends `message` without waiting for the answer (see [`Recipient::do_send`]); dropped
    /// (and counted `shed`) when the actor is overloaded.
    pub fn do_send(&self, message: M) {
        if let Ok(envelope) = self.probe.envelope(message) {
            self.recipient.do_send(envelope)
        }
    }
}
