//! A micro-cache of recommendation answers in each HTTP worker: an answer is reused for
//! `RECOMMENDATION_LOCAL_TTL_MS` (default 25 ms) without a message to the query actor or a
//! Redis round trip, unless this runtime's query actor finished refreshing the answers to a
//! newer ranking since it was kept ([`Refreshes`]). Under load most reads are then served from
//! the worker's memory, at the price of answers up to the TTL older when another runtime
//! applied the events; 0 turns it off.
//!
//! One per worker thread (actix-web builds the app once per worker), so no lock is taken.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;

/// Answers one worker keeps at most; when full, it starts over.
const MAX_ENTRIES: usize = 4096;

/// How many refreshes of the answers to a new ranking the query actor of this runtime has
/// finished, shared with every worker's micro-cache: an answer asked for before the latest one
/// finished may predate it, so it is not reused.
#[derive(Clone, Default)]
pub struct Refreshes(Arc<AtomicU64>);

impl Refreshes {
    /// The count now.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more finished refresh.
    pub fn finished(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Recent answers by query key: when each was kept, the [`Refreshes`] count before it was
/// asked for, and its JSON body, shared with the responses that send it (a hit copies nothing).
pub struct MicroCache {
    ttl: Duration,
    refreshes: Refreshes,
    /// Keyed by [`super::query::Query::key`], hashed with foldhash: randomly seeded, faster than
    /// the standard hasher, weaker against crafted collisions; the map never holds more than
    /// `MAX_ENTRIES`, which bounds what such keys could cost.
    entries: RefCell<HashMap<String, (Instant, u64, Bytes), foldhash::fast::RandomState>>,
}

impl MicroCache {
    /// A cache keeping answers for `ttl` (zero: keeps nothing) or until `refreshes` counts
    /// another refresh.
    pub fn new(ttl: Duration, refreshes: Refreshes) -> Self {
        Self {
            ttl,
            refreshes,
            entries: RefCell::new(HashMap::default()),
        }
    }

    /// The JSON answer to `key` if one younger than the TTL and than the latest refresh is
    /// kept.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.borrow();
        let (at, asked, body) = entries.get(key)?;
        (*asked == self.refreshes.current() && at.elapsed() < self.ttl).then(|| body.clone())
    }

    /// The refresh count to keep an answer under: read before asking for the answer.
    pub fn asking(&self) -> u64 {
        self.refreshes.current()
    }

    /// Keeps the JSON answer `body` for `key`, asked for at refresh count `asked` (from
    /// [`MicroCache::asking`]).
    pub fn put(&self, key: String, asked: u64, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), asked, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A kept answer comes back as a hit until the TTL passes; a zero TTL keeps nothing.
    fn answers_expire_and_zero_keeps_nothing() {
        let cache = MicroCache::new(Duration::from_millis(30), Refreshes::default());
        cache.put("k".into(), cache.asking(), Bytes::from_static(b"[1]"));
        assert_eq!(cache.get("k").as_deref(), Some(&b"[1]"[..]));
        assert!(cache.get("other").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("k").is_none(), "expired");
        let off = MicroCache::new(Duration::ZERO, Refreshes::default());
        off.put("k".into(), off.asking(), Bytes::from_static(b"[1]"));
        assert!(off.get("k").is_none());
    }

    #[test]
    /// A finished refresh retires every answer asked for before it, even one kept after it.
    fn a_refresh_retires_older_answers() {
        let refreshes = Refreshes::default();
        let cache = MicroCache::new(Duration::from_secs(60), refreshes.clone());
        cache.put("kept".into(), cache.asking(), Bytes::from_static(b"[1]"));
        let asked = cache.asking();
        refreshes.finished();
        cache.put("late".into(), asked, Bytes::from_static(b"[2]"));
        assert!(cache.get("kept").is_none());
        assert!(cache.get("late").is_none(), "asked for before the refresh");
        cache.put("new".into(), cache.asking(), Bytes::from_static(b"[3]"));
        assert_eq!(cache.get("new").as_deref(), Some(&b"[3]"[..]));
    }
}
