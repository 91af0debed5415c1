//! The identity cache: parsed certificates by the SHA-256 of what the proxy forwarded, bounded
//! in entries and in age. It only stores and finds; it never parses or decides.
//!
//! Built on `quick_cache` rather than moka because an entry has to be small: one cached
//! identity is ~330 B, moka adds ~370 B of its own per entry, quick_cache ~90 B (measured
//! with `examples/memory_at_scale.rs`). Age is checked on read against the `now` each check
//! is given, like the rest of the decision code.
//!
//! An entry is keyed by a 128-bit keyed hash of the digest ([`crate::store::cache_key`], where
//! the collision bound is argued) rather than the 32-byte digest: 16 B less in every slot.

use quick_cache::sync::Cache;

use crate::cert::CachedIdentity;
use crate::store::cache_key::{Key as Slot, Keys};

/// A SHA-256 of the forwarded certificate and its encoding.
pub(crate) type Key = [u8; 32];

/// Bounded, expiring map from [`Key`] to [`CachedIdentity`].
pub(crate) struct IdentityCache {
    /// `None` when caching is off (`identity.cache_max_entries: 0`).
    entries: Option<Cache<Slot, (i64, CachedIdentity)>>,
    slots: Keys,
    ttl_secs: i64,
}

impl IdentityCache {
    /// At most `max_entries` entries (0: cache nothing), each served for `ttl_secs` seconds.
    pub(crate) fn new(max_entries: u64, ttl_secs: i64) -> Self {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX);
        IdentityCache {
            entries: (max > 0).then(|| Cache::new(max)),
            slots: Keys::new(),
            ttl_secs: ttl_secs.max(1),
        }
    }

    /// The entry for `key`, unless missing or expired at `now` (Unix seconds).
    pub(crate) fn get(&self, key: &Key, now: i64) -> Option<CachedIdentity> {
        let (expires, value) = self.entries.as_ref()?.get(&self.slots.of(key))?;
        (now < expires).then_some(value)
    }

    /// Store `value` for `key` at `now` (Unix seconds); an entry already there is replaced,
    /// and when the cache is full the eviction policy (CLOCK-Pro) picks what goes.
    pub(crate) fn insert(&self, key: Key, value: CachedIdentity, now: i64) {
        if let Some(entries) = &self.entries {
            entries.insert(
                self.slots.of(&key),
                (now.saturating_add(self.ttl_secs), value),
            );
        }
    }

    /// Entries held (expired ones included until they are evicted or replaced).
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
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
    fn keys_that_share_a_prefix_are_distinct_entries() {
        let cache = IdentityCache::new(100, 60);
        let a = key(7);
        let mut b = a;
        b[20] = 1;
        cache.insert(a, value(1), 0);
        assert_eq!(held(&cache, &b, 0), None);
        cache.insert(b, value(2), 0);
        assert_eq!(held(&cache, &b, 0), Some(2));
        assert_eq!(held(&cache, &a, 0), Some(1));
    }

    #[test]
    fn bounded_and_the_newest_is_kept() {
        let cache = IdentityCache::new(50, 600);
        for i in 0..1_000 {
            cache.insert(key(i), value(i as usize), 0);
            assert_eq!(held(&cache, &key(i), 0), Some(i as usize));
        }
        assert!(cache.len() <= 50, "{}", cache.len());
    }

    #[test]
    fn concurrent_use_stays_bounded_and_never_mixes_values() {
        let cache = IdentityCache::new(100, 60);
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let cache = &cache;
                scope.spawn(move || {
                    for i in 0..2_000u32 {
                        let k = key(i * 4 + t);
                        cache.insert(k, value((i * 4 + t) as usize), 0);
                        // Another thread may have evicted it already; never a wrong value.
                        let got = held(cache, &k, 0);
                        assert!(got.is_none_or(|v| v == (i * 4 + t) as usize), "{got:?}");
                    }
                });
            }
        });
        assert!(cache.len() <= 100, "{}", cache.len());
    }

    #[test]
    fn zero_caches_nothing() {
        let cache = IdentityCache::new(0, 10);
        cache.insert(key(1), value(1), 0);
        assert_eq!(held(&cache, &key(1), 0), None);
        assert_eq!(cache.len(), 0);
    }
}
