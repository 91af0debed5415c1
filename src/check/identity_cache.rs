//! The identity cache: parsed certificates by the SHA-256 of what the proxy forwarded, bounded
//! in entries and in age. It only stores and finds; it never parses or decides.
//!
//! Not moka, because an entry has to be small: one cached identity is ~330 B and moka adds
//! ~370 B of its own per entry (measured with `examples/memory_at_scale.rs`), while this
//! costs ~80 B. The price is a simpler eviction policy: CLOCK (second chance) per shard
//! instead of TinyLFU, which is fine for a cache that is meant to hold every client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::cert::CachedIdentity;

/// Shards, each behind its own lock; far more than the cores that contend for them.
const SHARDS: usize = 16;

/// A SHA-256 of the forwarded certificate and its encoding.
pub type Key = [u8; 32];

/// Bounded, expiring map from [`Key`] to [`CachedIdentity`].
pub struct IdentityCache {
    shards: Box<[Mutex<Shard>]>,
    /// Entries in all shards. The bound is on the whole cache, not per shard: keys do not
    /// spread evenly enough for a per-shard share to hold `max_entries` of them.
    entries: AtomicUsize,
    max_entries: usize,
    ttl_secs: i64,
}

#[derive(Default)]
struct Shard {
    /// First 8 bytes of a key → its position in `slots`. The full key is compared on every
    /// hit, so two keys that share a prefix (2^32 SHA-256 evaluations find a pair) only
    /// evict each other; neither is ever taken for the other.
    index: HashMap<u64, u32>,
    slots: Vec<Slot>,
    /// Next slot the CLOCK hand looks at when the shard is full.
    hand: usize,
}

struct Slot {
    key: Key,
    value: CachedIdentity,
    /// Unix seconds from which the entry is no longer served.
    expires: i64,
    /// Read since the hand last passed: spared once.
    visited: bool,
}

fn prefix(key: &Key) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&key[..8]);
    u64::from_le_bytes(bytes)
}

impl IdentityCache {
    /// At most `max_entries` entries (0: cache nothing), each served for `ttl_secs` seconds.
    pub fn new(max_entries: u64, ttl_secs: i64) -> Self {
        IdentityCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            entries: AtomicUsize::new(0),
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX),
            ttl_secs: ttl_secs.max(1),
        }
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Shard> {
        // Byte 31 is not part of the index prefix, so the shards do not skew the index.
        // A panic cannot leave a shard inconsistent (every update is one assignment), so a
        // poisoned lock is still usable.
        self.shards[usize::from(key[31]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key`, unless missing or expired at `now` (Unix seconds).
    pub fn get(&self, key: &Key, now: i64) -> Option<CachedIdentity> {
        let mut shard = self.shard(key);
        let at = *shard.index.get(&prefix(key))? as usize;
        let slot = &mut shard.slots[at];
        if slot.key != *key || now >= slot.expires {
            return None;
        }
        slot.visited = true;
        Some(slot.value.clone())
    }

    /// Store `value` for `key` at `now` (Unix seconds), evicting an entry of the same shard
    /// if the cache is full. An entry already there for the key (or its prefix) is replaced.
    pub fn insert(&self, key: Key, value: CachedIdentity, now: i64) {
        if self.max_entries == 0 {
            return;
        }
        let slot = Slot {
            key,
            value,
            expires: now.saturating_add(self.ttl_secs),
            visited: false,
        };
        let mut shard = self.shard(&key);
        let shard = &mut *shard;
        if let Some(&at) = shard.index.get(&prefix(&key)) {
            shard.slots[at as usize] = slot;
            return;
        }
        // Shards are locked one at a time, so two inserts may both see room: the bound can
        // be passed by as many entries as there are concurrent inserts, until the next ones
        // evict.
        let at = if self.entries.load(Ordering::Relaxed) < self.max_entries {
            shard.slots.push(slot);
            self.entries.fetch_add(1, Ordering::Relaxed);
            shard.slots.len() - 1
        } else if shard.slots.is_empty() {
            // Full, with every entry in other shards (only a tiny cache gets here): this key
            // goes uncached rather than past the bound.
            return;
        } else {
            let at = shard.victim(now);
            shard.index.remove(&prefix(&shard.slots[at].key));
            shard.slots[at] = slot;
            at
        };
        // A shard holds at most max_entries (+ a few): far below 2^32 for any memory a
        // process can have.
        let at = u32::try_from(at).expect("identity cache shard beyond 2^32 entries");
        shard.index.insert(prefix(&key), at);
    }

    /// Entries held (expired ones included until they are evicted or replaced).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }
}

impl Shard {
    /// CLOCK: the first slot from the hand on that is expired or was not read since the
    /// hand last passed it; read ones lose their mark. Ends within two turns.
    fn victim(&mut self, now: i64) -> usize {
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[at];
            if !slot.visited || now >= slot.expires {
                return at;
            }
            slot.visited = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cert::MalformedCertificate;

    fn key(n: u32) -> Key {
        let mut key = [0; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key[31] = n as u8;
        key
    }

    fn value(n: usize) -> CachedIdentity {
        Arc::new(Err(MalformedCertificate::TooMany(n)))
    }

    fn held(cache: &IdentityCache, k: &Key, now: i64) -> Option<usize> {
        cache.get(k, now).map(|v| match v.as_ref() {
            Err(MalformedCertificate::TooMany(n)) => *n,
            other => panic!("unexpected {other:?}"),
        })
    }

    #[test]
    fn get_insert_replace_and_expiry() {
        let cache = IdentityCache::new(100, 60);
        assert_eq!(held(&cache, &key(1), 0), None);
        cache.insert(key(1), value(1), 0);
        assert_eq!(held(&cache, &key(1), 59), Some(1));
        assert_eq!(held(&cache, &key(1), 60), None, "expired");
        cache.insert(key(1), value(2), 60);
        assert_eq!(held(&cache, &key(1), 61), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_shared_prefix_is_never_taken_for_the_key() {
        let cache = IdentityCache::new(100, 60);
        let a = key(7);
        let mut b = a;
        b[20] = 1;
        cache.insert(a, value(1), 0);
        assert_eq!(held(&cache, &b, 0), None);
        cache.insert(b, value(2), 0);
        assert_eq!(held(&cache, &b, 0), Some(2));
        assert_eq!(
            held(&cache, &a, 0),
            None,
            "evicted by the other, never confused"
        );
    }

    #[test]
    fn bounded_and_read_entries_survive_eviction() {
        // Keys 0, 16, 32… all land in shard 0.
        let cache = IdentityCache::new(2, 600);
        let k = |i: u32| key(i * SHARDS as u32);
        cache.insert(k(0), value(0), 0);
        cache.insert(k(1), value(1), 0);
        assert_eq!(held(&cache, &k(0), 1), Some(0), "read: spared once");
        cache.insert(k(2), value(2), 1);
        assert_eq!(held(&cache, &k(1), 1), None, "unread: evicted");
        assert_eq!(held(&cache, &k(0), 1), Some(0));
        assert_eq!(held(&cache, &k(2), 1), Some(2));
        assert_eq!(cache.len(), 2);
        for i in 3..100 {
            cache.insert(k(i), value(i as usize), 2);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(held(&cache, &k(99), 2), Some(99), "the newest is there");
    }

    #[test]
    fn concurrent_use_stays_bounded() {
        let cache = IdentityCache::new(100, 60);
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let cache = &cache;
                scope.spawn(move || {
                    for i in 0..2_000u32 {
                        let k = key(i * 4 + t);
                        cache.insert(k, value(i as usize), 0);
                        // Another thread may have evicted it already; never a wrong value.
                        assert!(held(cache, &k, 0).is_none_or(|v| v == i as usize));
                    }
                });
            }
        });
        // Each of the 4 threads may have passed the bound once while another inserted.
        assert!((100..=104).contains(&cache.len()), "{}", cache.len());
    }

    #[test]
    fn expired_entries_go_first_and_zero_caches_nothing() {
        let cache = IdentityCache::new(2, 10);
        let k = |i: u32| key(i * SHARDS as u32);
        cache.insert(k(0), value(0), 0);
        cache.insert(k(1), value(1), 5);
        let _ = cache.get(&k(0), 9);
        cache.insert(k(2), value(2), 12);
        assert_eq!(
            held(&cache, &k(1), 12),
            Some(1),
            "k(0) expired: evicted though read"
        );
        let other_shard = key(1);
        cache.insert(other_shard, value(9), 12);
        assert_eq!(
            held(&cache, &other_shard, 12),
            None,
            "full, and nothing to evict there"
        );
        assert_eq!(cache.len(), 2);
        let none = IdentityCache::new(0, 10);
        none.insert(k(0), value(0), 0);
        assert_eq!(none.len(), 0);
    }
}
