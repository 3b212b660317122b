//! A micro-cache of recommendation answers in each HTTP worker: an answer is reused for
//! `RECOMMENDATION_LOCAL_TTL_MS` (default 25 ms) without a message to the query actor or a
//! Redis round trip. Under load most reads are then served from the worker's memory, at the
//! price of answers up to that much older; 0 turns it off.
//!
//! One per worker thread (actix-web builds the app once per worker), so no lock is taken.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::query::{Answer, CacheResult};

/// Answers one worker keeps at most; when full, it starts over.
const MAX_ENTRIES: usize = 4096;

/// Recent answers by query key.
pub struct MicroCache {
    ttl: Duration,
    entries: RefCell<HashMap<String, (Instant, Answer)>>,
}

impl MicroCache {
    /// A cache keeping answers for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The answer to `key` if one younger than the TTL is kept (reported as a cache hit).
    pub fn get(&self, key: &str) -> Option<Answer> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.borrow();
        let (at, answer) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| Answer {
            json: answer.json.clone(),
            cache: CacheResult::Hit,
        })
    }

    /// Keeps `answer` for `key`.
    pub fn put(&self, key: String, answer: &Answer) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), answer.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        Answer {
            json: json.into(),
            cache: CacheResult::Miss,
        }
    }

    #[test]
    /// A kept answer comes back as a hit until the TTL passes; a zero TTL keeps nothing.
    fn answers_expire_and_zero_keeps_nothing() {
        let cache = MicroCache::new(Duration::from_millis(30));
        cache.put("k".into(), &answer("[1]"));
        let hit = cache.get("k").unwrap();
        assert_eq!((hit.json.as_str(), hit.cache), ("[1]", CacheResult::Hit));
        assert!(cache.get("other").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("k").is_none(), "expired");
        let off = MicroCache::new(Duration::ZERO);
        off.put("k".into(), &answer("[1]"));
        assert!(off.get("k").is_none());
    }
}
