//! The password hasher: argon2 on a fixed set of threads.
//!
//! Each argon2 call works in 19 MiB of memory. On a general-purpose blocking pool, a burst of
//! logins spreads that over many threads, and the allocator keeps a freed 19 MiB block per
//! thread: memory grows with the burst. [`HashWorker`] runs on an actix `SyncArbiter` of one
//! thread per core, so at most that many hashes run at once, on the same threads every time;
//! the rest wait in its (bounded, observed) mailbox. Each worker keeps its argon2 memory
//! ([`HashMemory`]) for its life instead of taking a fresh block per call.
//!
//! A `SyncArbiter` has no supervisor task: each handler runs its work through
//! [`contain`](recsys_actors::supervision::contain), so a panic is logged and counted as a
//! restart, the thread builds a new worker (fresh memory), and the sender gets a `503`.

use actix::prelude::*;
use recsys_actors::observe::{ObservedAddr, Probe};
use recsys_actors::supervision::contain;
use slog::Logger;

use super::error::UsersError;
use crate::auth::HashMemory;
use crate::config::Secret;

/// Hashes and verifies passwords; runs in a `SyncContext` (one instance per thread).
pub struct HashWorker {
    memory: HashMemory,
    probe: Probe,
}

impl Actor for HashWorker {
    type Context = SyncContext<Self>;
}

/// The argon2id PHC string of a password.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, UsersError>")]
pub struct HashPassword(pub Secret);

impl Handler<HashPassword> for HashWorker {
    type Result = Result<String, UsersError>;

    fn handle(&mut self, msg: HashPassword, ctx: &mut Self::Context) -> Self::Result {
        let memory = &mut self.memory;
        contain(&self.probe, "HashPassword", ctx, || memory.hash(&msg.0))?
            .map_err(|e| UsersError::Hashing(e.into()))
    }
}

/// Whether a password matches a stored hash (`None`: no password; verified against a dummy
/// hash so the time taken does not tell).
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, UsersError>")]
pub struct VerifyPassword {
    pub password: Secret,
    pub hash: Option<String>,
}

impl Handler<VerifyPassword> for HashWorker {
    type Result = Result<bool, UsersError>;

    fn handle(&mut self, msg: VerifyPassword, ctx: &mut Self::Context) -> Self::Result {
        let memory = &mut self.memory;
        Ok(contain(&self.probe, "VerifyPassword", ctx, || {
            memory.verify(&msg.password, msg.hash.as_deref())
        })?)
    }
}

/// Panics inside the contained work, as a bug in argon2 or its memory would.
#[cfg(feature = "test-support")]
impl Handler<recsys_actors::supervision::Panic> for HashWorker {
    type Result = ();

    fn handle(&mut self, _: recsys_actors::supervision::Panic, ctx: &mut Self::Context) {
        // The refusal is what a real message would answer; this one has nothing to answer.
        let _ = contain(&self.probe, "Panic", ctx, || -> () {
            panic!("test panic in the hasher")
        });
    }
}

recsys_actors::observed_handlers!(HashWorker => HashPassword, VerifyPassword);
#[cfg(feature = "test-support")]
recsys_actors::observed_handlers!(HashWorker => recsys_actors::supervision::Panic);

/// Starts one worker per core (at least one), observed under `service` with `limit` messages
/// in flight; panics are logged to `logger`.
pub fn start(service: &'static str, limit: usize, logger: &Logger) -> ObservedAddr<HashWorker> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let probe = Probe::new::<HashWorker>(service, limit, logger);
    let factory = probe.clone();
    let addr = SyncArbiter::start(threads, move || HashWorker {
        memory: HashMemory::default(),
        probe: factory.clone(),
    });
    ObservedAddr::new(addr, probe)
}
