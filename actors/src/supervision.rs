//! Supervision helpers: every long-lived actor of a service runs under an actix [`Supervisor`].
//!
//! When a supervised actor stops, its supervisor calls `restarting()` on the same instance and
//! starts it again; the message being handled is lost and its sender gets a
//! [`actix::MailboxError`], which the HTTP layer turns into a clean `503`.

use actix::{Actor, Addr, ArbiterHandle, Context, Message, Supervised, Supervisor};

/// Asks a supervised actor to stop as if it had failed, so that its supervisor restarts it.
///
/// Used by operators (and tests) to recycle an actor whose state went bad; the actor resumes
/// from durable state.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Fail;

/// Starts `actor` under a [`Supervisor`] on the given arbiter and returns its address.
pub fn start_supervised<A>(arbiter: &ArbiterHandle, actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised + Send,
{
    Supervisor::start_in_arbiter(arbiter, move |_| actor)
}
