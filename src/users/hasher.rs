//! The password hasher: argon2 on a fixed set of threads.
//!
//! Each argon2 call works in 19 MiB of memory. On a general-purpose blocking pool, a burst of
//! logins spreads that over many threads, and the allocator keeps a freed 19 MiB block per
//! thread: memory grows with the burst. [`HashWorker`] runs on an actix `SyncArbiter` of one
//! thread per core, so at most that many hashes run at once, on the same threads every time;
//! the rest wait in its (bounded, observed) mailbox. Each worker keeps its argon2 memory
//! ([`HashMemory`]) for its life instead of taking a fresh block per call.

use actix::prelude::*;
use recsys_actors::observe::{ObservedAddr, Probe};

use crate::auth::HashMemory;
use crate::config::Secret;

/// Hashes and verifies passwords; runs in a `SyncContext` (one instance per thread).
#[derive(Default)]
pub struct HashWorker {
    memory: HashMemory,
}

impl Actor for HashWorker {
    type Context = SyncContext<Self>;
}

/// The argon2id PHC string of a password.
#[derive(Debug, Message)]
#[rtype(result = "anyhow::Result<String>")]
pub struct HashPassword(pub Secret);

impl Handler<HashPassword> for HashWorker {
    type Result = anyhow::Result<String>;

    fn handle(&mut self, msg: HashPassword, _: &mut Self::Context) -> Self::Result {
        self.memory.hash(&msg.0)
    }
}

/// Whether a password matches a stored hash (`None`: no password; verified against a dummy
/// hash so the time taken does not tell).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct VerifyPassword {
    pub password: Secret,
    pub hash: Option<String>,
}

impl Handler<VerifyPassword> for HashWorker {
    type Result = bool;

    fn handle(&mut self, msg: VerifyPassword, _: &mut Self::Context) -> Self::Result {
        self.memory.verify(&msg.password, msg.hash.as_deref())
    }
}

recsys_actors::observed_handlers!(HashWorker => HashPassword, VerifyPassword);

/// Starts one worker per core (at least one), observed under `service` with `limit` messages
/// in flight.
pub fn start(service: &'static str, limit: usize) -> ObservedAddr<HashWorker> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let addr = SyncArbiter::start(threads, HashWorker::default);
    ObservedAddr::new(addr, Probe::new::<HashWorker>(service, limit))
}
