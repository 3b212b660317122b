//! A micro-cache of recommendation answers in each HTTP worker: an answer is reused for
//! `RECOMMENDATION_LOCAL_TTL_MS` (default 25 ms) without a message to the query actor or a
//! Redis round trip. Under load most reads are then served from the worker's memory, at the
//! price of answers up to that much older; 0 turns it off.
//!
//! One per worker thread (actix-web builds the app once per worker), so no lock is taken.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;

/// Answers one worker keeps at most; when full, it starts over.
const MAX_ENTRIES: usize = 4096;

/// Recent answers by query key: when each was kept and its JSON body, shared with the
/// responses that send it (a hit copies nothing).
pub struct MicroCache {
    ttl: Duration,
    entries: RefCell<HashMap<String, (Instant, Bytes)>>,
}

impl MicroCache {
    /// A cache keeping answers for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The JSON answer to `key` if one younger than the TTL is kept.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.borrow();
        let (at, body) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| body.clone())
    }

    /// Keeps the JSON answer `body` for `key`.
    pub fn put(&self, key: String, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A kept answer comes back as a hit until the TTL passes; a zero TTL keeps nothing.
    fn answers_expire_and_zero_keeps_nothing() {
        let cache = MicroCache::new(Duration::from_millis(30));
        cache.put("k".into(), Bytes::from_static(b"[1]"));
        assert_eq!(cache.get("k").as_deref(), Some(&b"[1]"[..]));
        assert!(cache.get("other").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("k").is_none(), "expired");
        let off = MicroCache::new(Duration::ZERO);
        off.put("k".into(), Bytes::from_static(b"[1]"));
        assert!(off.get("k").is_none());
    }
}
