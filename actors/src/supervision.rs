//! Supervision: every long-lived actor of a service runs under a supervisor and is observed.
//!
//! When a supervised actor stops, its supervisor calls `restarting()` on the same instance and
//! starts it again; the message being handled is lost and its sender gets
//! [`crate::observe::Refused::Stopped`], which the HTTP layer turns into a clean `503`. The
//! supervisor here is actix's own loop plus one thing: it counts each restart in
//! `actor_restarts_total`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::{channel, ContextFut};
use actix::{Actor, Addr, ArbiterHandle, Context, Supervised};

use crate::observe::{ObservedAddr, Probe};

/// Asks a supervised actor to stop as if it had failed, so that its supervisor restarts it and
/// it resumes from durable state. Tests only (the `test-support` feature); an actor accepts it
/// through [`restart_on_fail!`](crate::restart_on_fail).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Fail;

/// Lets an actor accept [`Fail`] (and its observed envelope): it stops, and its supervisor starts
/// it again. Expands to nothing unless the calling crate has its `test-support` feature on.
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
        $crate::observed_handlers!(impl [$($generics)*] $actor => $crate::supervision::Fail);
    };
    ($actor:ty) => {
        $crate::restart_on_fail!(impl [] $actor);
    };
}

/// Mailbox capacity of supervised actors (actix's default): senders beyond it wait.
const MAILBOX_CAPACITY: usize = 16;

/// Starts `actor` under a supervisor on the given arbiter and returns its observed address,
/// labelled `service` and the actor's type name, refusing sends beyond `limit` messages in
/// flight (see [`crate::observe`]).
pub fn start_supervised<A>(
    arbiter: &ArbiterHandle,
    service: &'static str,
    limit: usize,
    actor: A,
) -> ObservedAddr<A>
where
    A: Actor<Context = Context<A>> + Supervised + Send,
{
    let probe = Probe::new::<A>(service, limit);
    let (tx, rx) = channel::channel(MAILBOX_CAPACITY);
    let restarts = probe.clone();
    arbiter.spawn_fn(move || {
        let context = Context::with_receiver(rx);
        actix::spawn(CountingSupervisor {
            actor: context.into_future(actor),
            probe: restarts,
        });
    });
    ObservedAddr::new(Addr::new(tx), probe)
}

/// Runs an actor's context; when the actor stops while its mailbox is still open, restarts it
/// and counts the restart.
struct CountingSupervisor<A: Actor<Context = Context<A>> + Supervised> {
    actor: ContextFut<A, Context<A>>,
    probe: Probe,
}

impl<A: Actor<Context = Context<A>> + Supervised> Future for CountingSupervisor<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.actor).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    if !this.actor.restart() {
                        return Poll::Ready(());
                    }
                    this.probe.restarted();
                }
            }
        }
    }
}
