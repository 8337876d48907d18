//! A least-recently-used map bounded in entries *and* in bytes, for caches whose keys and
//! values come from requests (normalized targets, negative answers): an entry bound alone is
//! no memory bound when one key may be 8 KiB long.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::time::Clock;

/// Bytes counted per entry on top of its key and value: the map's own bookkeeping (hash
/// slot, list links, `String` and value headers).
pub const ENTRY_OVERHEAD: usize = 96;

/// A string-keyed LRU holding at most `max_entries` entries and `max_bytes` bytes (keys,
/// values as their owners count them, and [`ENTRY_OVERHEAD`] each).
pub struct BoundedLru<V> {
    map: LruCache<String, (V, usize)>,
    bytes: usize,
    max_entries: NonZeroUsize,
    max_bytes: usize,
}

impl<V> BoundedLru<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedLru {
            map: LruCache::unbounded(),
            bytes: 0,
            max_entries: NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN),
            max_bytes,
        }
    }

    /// The value of `key`, marking it recently used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Insert `key` with `value`, which its owner says holds `value_bytes` bytes (beyond its
    /// own size), evicting least recently used entries until both bounds hold. An entry
    /// larger than the whole byte bound is not kept (and replaces nothing).
    pub fn put(&mut self, key: String, value: V, value_bytes: usize) {
        let cost = key
            .len()
            .saturating_add(value_bytes)
            .saturating_add(ENTRY_OVERHEAD);
        if cost > self.max_bytes {
            return;
        }
        if let Some((_, old)) = self.map.put(key, (value, cost)) {
            self.bytes -= old;
        }
        self.bytes += cost;
        while self.bytes > self.max_bytes || self.map.len() > self.max_entries.get() {
            match self.map.pop_lru() {
                Some((_, (_, freed))) => self.bytes -= freed,
                None => break,
            }
        }
    }

    /// Remove `key`.
    pub fn pop(&mut self, key: &str) -> Option<V> {
        let (value, cost) = self.map.pop(key)?;
        self.bytes -= cost;
        Some(value)
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes accounted for the entries kept (at most the byte bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Change both bounds, evicting what no longer fits (tests exercise the bounds with it).
    pub fn set_bounds(&mut self, max_entries: usize, max_bytes: usize) {
        self.max_entries = NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN);
        self.max_bytes = max_bytes;
        while self.bytes > self.max_bytes || self.map.len() > self.max_entries.get() {
            match self.map.pop_lru() {
                Some((_, (_, freed))) => self.bytes -= freed,
                None => break,
            }
        }
    }
}

/// Keys remembered with when they were remembered, each trusted for a time-to-live the
/// caller gives when asking (negative answers: "upstream said 404", "not in the bucket").
pub struct Recent(Mutex<BoundedLru<Instant>>, Clock);

impl Recent {
    pub fn new(max_entries: usize, max_bytes: usize) -> Recent {
        Recent::with_clock(max_entries, max_bytes, Clock::system())
    }

    /// Entries age by `clock`.
    pub fn with_clock(max_entries: usize, max_bytes: usize, clock: Clock) -> Recent {
        Recent(Mutex::new(BoundedLru::new(max_entries, max_bytes)), clock)
    }

    /// Whether `key` was remembered less than `ttl` ago; an older entry is dropped.
    pub fn contains(&self, key: &str, ttl: Duration) -> bool {
        let mut map = self.0.lock();
        match map.get(key) {
            Some(at) if self.1.elapsed(*at) < ttl => true,
            Some(_) => {
                map.pop(key);
                false
            }
            None => false,
        }
    }

    /// Remember `key` as of now.
    pub fn remember(&self, key: &str) {
        self.0.lock().put(key.to_owned(), self.1.now(), 0);
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().pop(key);
    }

    /// Entries and bytes kept.
    pub fn size(&self) -> (usize, usize) {
        let map = self.0.lock();
        (map.len(), map.bytes())
    }

    /// Change the bounds (tests exercise them with it).
    pub fn set_bounds(&self, max_entries: usize, max_bytes: usize) {
        self.0.lock().set_bounds(max_entries, max_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_entries() {
        let mut c = BoundedLru::new(100, 10_000);
        for i in 0..1000 {
            c.put(format!("{i:04}{}", "x".repeat(900)), i, 0);
            assert!(c.bytes() <= 10_000, "{} bytes after {i}", c.bytes());
        }
        assert_eq!(c.len(), 10_000 / (904 + ENTRY_OVERHEAD));
        // The most recent entries are the ones kept.
        assert_eq!(c.get(&format!("0999{}", "x".repeat(900))), Some(&999));
        assert_eq!(c.get(&format!("0000{}", "x".repeat(900))), None);

        let mut c = BoundedLru::new(3, 1 << 20);
        for i in 0..10 {
            c.put(i.to_string(), i, 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get("9").is_some() && c.get("6").is_none());
    }

    #[test]
    fn recent_entries_expire_by_their_clock() {
        let clock = Clock::manual();
        let recent = Recent::with_clock(10, 1 << 20, clock.clone());
        let ttl = Duration::from_secs(60);
        recent.remember("a");
        clock.advance(Duration::from_secs(59));
        assert!(recent.contains("a", ttl));
        clock.advance(Duration::from_secs(1));
        assert!(!recent.contains("a", ttl), "expired after the TTL");
        assert_eq!(recent.size().0, 0, "and dropped");
    }

    #[test]
    fn replacing_and_removing_keep_the_count_exact() {
        let mut c = BoundedLru::new(10, 1 << 20);
        c.put("a".into(), 1, 100);
        c.put("a".into(), 2, 10);
        assert_eq!(c.bytes(), 1 + 10 + ENTRY_OVERHEAD);
        assert_eq!(c.pop("a"), Some(2));
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Larger than the whole bound: not kept.
        c.put("big".into(), 3, 2 << 20);
        assert!(c.is_empty());
    }
}
