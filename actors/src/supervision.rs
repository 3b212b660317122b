//! Supervision: every long-lived actor of a service runs under a supervisor and is observed.
//!
//! When a supervised actor stops, its supervisor calls `restarting()` on the same instance and
//! starts it again; the message being handled is lost and its sender gets
//! [`crate::observe::Refused::Stopped`], which the HTTP layer turns into a clean `503`. The
//! supervisor here is actix's own loop plus two things: it counts each restart in
//! `actor_restarts_total`, and it turns a panic into a restart.
//!
//! A panic while the actor handles a message or polls its own futures unwinds into the
//! supervisor's poll, which catches it, logs it with the actor and message, and stops the actor
//! the ordinary way (`stopping`, `stopped`) before restarting it; a panic in a handler's detached
//! answer future is caught around that future and asks the supervisor for the same (see
//! [`crate::observe::ContainPanics`]). Whatever the actor held in memory may be half-changed by
//! the panic, so every actor keeps nothing it cannot rebuild in `restarting`/`started` from
//! where its state lives (Postgres, the consumer group's positions). Actors on a `SyncArbiter`
//! have no supervisor task: they wrap their work in [`contain`], which replaces the worker.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::{channel, ContextFut};
use actix::{Actor, ActorContext, Addr, ArbiterHandle, Context, Supervised};
use slog::Logger;

use crate::observe::{ObservedAddr, Probe, Refused};

/// Asks a supervised actor to stop as if it had failed, so that its supervisor restarts it and
/// it resumes from durable state. Tests only (the `test-support` feature); an actor accepts it
/// through [`restart_on_fail!`](crate::restart_on_fail).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Fail;

/// Makes a supervised actor panic, in its handler or in the future that computes its answer:
/// the supervisor must log it, count it and restart the actor. Tests only (the `test-support`
/// feature); an actor accepts it through [`restart_on_fail!`](crate::restart_on_fail).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub enum Panic {
    /// In the handler itself, inside the actor's context.
    InHandler,
    /// In the answer future the handler returns, run apart from the actor.
    InAnswer,
}

/// Lets an actor accept [`Fail`] and [`Panic`] (and their observed envelopes): it stops or
/// panics, and its supervisor starts it again. Expands to nothing unless the calling crate has
/// its `test-support` feature on.
///
/// ```ignore
/// recsys_actors::restart_on_fail!(UsersActor);
/// recsys_actors::restart_on_fail!(impl[T: Send + 'static] KafkaConsumer<T>);
/// ```
#[macro_export]
macro_rules! restart_on_fail {
    (impl [$($generics:tt)*] $actor:ty) => {
        #[cfg(feature = "test-support")]
        impl<$($generics)*> $crate::actix::Handler<$crate::supervision::Fail> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::supervision::Fail, ctx: &mut Self::Context) {
                $crate::actix::ActorContext::stop(ctx);
            }
        }
        #[cfg(feature = "test-support")]
        impl<$($generics)*> $crate::actix::Handler<$crate::supervision::Panic> for $actor {
            type Result = $crate::actix::ResponseFuture<()>;

            fn handle(&mut self, msg: $crate::supervision::Panic, _: &mut Self::Context) -> Self::Result {
                match msg {
                    $crate::supervision::Panic::InHandler => panic!("test panic in a handler"),
                    $crate::supervision::Panic::InAnswer => {
                        Box::pin(async { panic!("test panic in an answer future") })
                    }
                }
            }
        }
        #[cfg(feature = "test-support")]
        $crate::observed_handlers!(
            impl [$($generics)*] $actor => $crate::supervision::Fail, $crate::supervision::Panic
        );
    };
    ($actor:ty) => {
        $crate::restart_on_fail!(impl [] $actor);
    };
}

/// Mailbox capacity of supervised actors (actix's default): senders beyond it wait.
const MAILBOX_CAPACITY: usize = 16;

/// Starts `actor` under a supervisor on the given arbiter and returns its observed address,
/// labelled `service` and the actor's type name, refusing sends beyond `limit` messages in
/// flight (see [`crate::observe`]); panics are logged to `logger`.
pub fn start_supervised<A>(
    arbiter: &ArbiterHandle,
    service: &'static str,
    limit: usize,
    logger: &Logger,
    actor: A,
) -> ObservedAddr<A>
where
    A: Actor<Context = Context<A>> + Supervised + Send,
{
    let probe = Probe::new::<A>(service, limit, logger);
    let (tx, rx) = channel::channel(MAILBOX_CAPACITY);
    let restarts = probe.clone();
    arbiter.spawn_fn(move || {
        let context = Context::with_receiver(rx);
        actix::spawn(CountingSupervisor {
            actor: context.into_future(actor),
            probe: restarts,
            unwinding: false,
        });
    });
    ObservedAddr::new(Addr::new(tx), probe)
}

/// Runs an actor's context; when the actor stops while its mailbox is still open, or panics,
/// restarts it and counts the restart.
struct CountingSupervisor<A: Actor<Context = Context<A>> + Supervised> {
    actor: ContextFut<A, Context<A>>,
    probe: Probe,
    /// A panic was caught and the actor is being stopped: a second panic restarts it directly.
    unwinding: bool,
}

impl<A: Actor<Context = Context<A>> + Supervised> Future for CountingSupervisor<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.probe.take_restart_request(cx.waker()) {
                this.actor.ctx().stop();
            }
            match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.actor).poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => {
                    this.unwinding = false;
                    if !this.actor.restart() {
                        return Poll::Ready(());
                    }
                    this.probe.restarted();
                }
                Err(payload) => {
                    this.probe.panicked(None, &*payload);
                    if this.unwinding {
                        // Stopping panicked too: start again without the ordinary stop.
                        this.unwinding = false;
                        if !this.actor.restart() {
                            return Poll::Ready(());
                        }
                        this.probe.restarted();
                    } else {
                        // The next poll runs `stopping` and `stopped`, then restarts above.
                        this.unwinding = true;
                        this.actor.ctx().stop();
                    }
                }
            }
        }
    }
}

/// Runs `work` for an actor on a `SyncArbiter` (which has no supervisor task): a panic is
/// logged with the actor and `message`, counted as a restart, and the worker replaced (stopping
/// a sync actor makes its thread build a new one); the sender gets [`Refused::Stopped`].
pub fn contain<T, C: ActorContext>(
    probe: &Probe,
    message: &'static str,
    ctx: &mut C,
    work: impl FnOnce() -> T,
) -> Result<T, Refused> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        probe.panicked(Some(message), &*payload);
        probe.restarted();
        ctx.stop();
        Refused::Stopped
    })
}
