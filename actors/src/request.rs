//! The request a piece of work is done for, so that every log line written while handling it
//! can name it.
//!
//! The HTTP layer runs each request inside [`scope`]; an [`ObservedAddr`](crate::observe)
//! send made there carries the id in its envelope, and the receiving actor handles the message
//! (and runs its answer future) inside the same scope, on whatever thread or task that is. A
//! log drain reads [`current`] and adds the id to the line; code in between passes nothing.
//! Work that no request started (a consumer's batch, a timer) has no id.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::{Actor, ActorFuture};

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// A request's id, as its client sent it in `X-Request-Id` or as the server made it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id `id`.
    pub fn new(id: &str) -> Self {
        Self(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of the request being handled here, if any.
pub fn current() -> Option<RequestId> {
    REQUEST_ID.try_with(RequestId::clone).ok()
}

/// Runs `work` as part of the request `id`.
pub async fn scope<F: Future>(id: RequestId, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// Runs `work` as part of the request `id`, when there is one.
pub fn within<R>(id: Option<&RequestId>, work: impl FnOnce() -> R) -> R {
    match id {
        Some(id) => REQUEST_ID.sync_scope(id.clone(), work),
        None => work(),
    }
}

/// `future` polled as part of the request `id` (a handler's detached answer future).
pub fn future<T: 'static>(
    id: Option<RequestId>,
    future: Pin<Box<dyn Future<Output = T>>>,
) -> Pin<Box<dyn Future<Output = T>>> {
    match id {
        Some(id) => Box::pin(REQUEST_ID.scope(id, future)),
        None => future,
    }
}

/// An actor future polled as part of a request (an answer computed in the actor's context).
pub struct InRequest<A: Actor, T> {
    id: RequestId,
    inner: Pin<Box<dyn ActorFuture<A, Output = T>>>,
}

impl<A: Actor, T> InRequest<A, T> {
    /// `inner`, polled as part of the request `id`.
    pub fn new(id: RequestId, inner: Pin<Box<dyn ActorFuture<A, Output = T>>>) -> Self {
        Self { id, inner }
    }
}

impl<A: Actor, T> ActorFuture<A> for InRequest<A, T> {
    type Output = T;

    fn poll(
        self: Pin<&mut Self>,
        actor: &mut A,
        ctx: &mut A::Context,
        task: &mut Context<'_>,
    ) -> Poll<T> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        REQUEST_ID.sync_scope(this.id.clone(), || inner.as_mut().poll(actor, ctx, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_there_inside_the_scope_only() {
        assert_eq!(current(), None);
        let id = RequestId::new("abc");
        let seen = scope(id.clone(), async { current() }).await;
        assert_eq!(seen, Some(id.clone()));
        assert_eq!(within(Some(&id), current), Some(id.clone()));
        assert_eq!(within(None, current), None);
        let detached = future(Some(id.clone()), Box::pin(async { current() }));
        assert_eq!(detached.await, Some(id));
    }
}
