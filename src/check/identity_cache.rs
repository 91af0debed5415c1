//! The identity cache: parsed certificates by what identified them (the digest the TLS layer
//! reports, or the certificate a proxy forwarded), bounded in entries and in age. It only
//! stores and finds; it never parses or decides.
//!
//! Built on `quick_cache` rather than moka because an entry has to be small: one cached
//! identity is ~330 B, moka adds ~370 B of its own per entry, quick_cache ~90 B (measured
//! with `examples/memory_at_scale.rs`). Age is checked on read against the `now` each check
//! is given, like the rest of the decision code.
//!
//! An entry is keyed by a 128-bit keyed hash of its [`Lookup`] ([`crate::store::cache_key`],
//! where the collision bound is argued): one pass over the forwarded bytes, 16 B per slot.

use quick_cache::sync::Cache;

use crate::cert::{CachedIdentity, CertEncoding};
use crate::store::cache_key::{Key, Keys};

/// What an identity is found by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lookup<'a> {
    /// The SHA-256 of the certificate's DER, from the TLS layer.
    Digest(&'a [u8; 32]),
    /// A forwarded certificate as received, and how its header encodes it: the same bytes
    /// mean different things in different headers.
    Forwarded(CertEncoding, &'a [u8]),
}

/// Bounded, expiring map from a [`Lookup`]'s key to [`CachedIdentity`].
pub(crate) struct IdentityCache {
    /// `None` when caching is off (`identity.cache_max_entries: 0`).
    entries: Option<Cache<Key, (i64, CachedIdentity)>>,
    keys: Keys,
    ttl_secs: i64,
}

impl IdentityCache {
    /// At most `max_entries` entries (0: cache nothing), each served for `ttl_secs` seconds.
    pub(crate) fn new(max_entries: u64, ttl_secs: i64) -> Self {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX);
        IdentityCache {
            entries: (max > 0).then(|| Cache::new(max)),
            keys: Keys::new(),
            ttl_secs: ttl_secs.max(1),
        }
    }

    /// The key of `lookup` in this cache. A one-byte tag says which kind of lookup it is (0
    /// a digest, 1 + the encoding a forwarded certificate), so a digest and a forwarded
    /// certificate, or one certificate in two encodings, never share an entry.
    pub(crate) fn key(&self, lookup: Lookup<'_>) -> Key {
        match lookup {
            Lookup::Digest(digest) => self.keys.tagged(&[0], digest),
            Lookup::Forwarded(encoding, raw) => self.keys.tagged(&[1 + encoding as u8], raw),
        }
    }

    /// The entry for `key`, unless missing or expired at `now` (Unix seconds).
    pub(crate) fn get(&self, key: &Key, now: i64) -> Option<CachedIdentity> {
        let (expires, value) = self.entries.as_ref()?.get(key)?;
        (now < expires).then_some(value)
    }

    /// Store `value` for `key` at `now` (Unix seconds); an entry already there is replaced,
    /// and when the cache is full the eviction policy (CLOCK-Pro) picks what goes.
    pub(crate) fn insert(&self, key: Key, value: CachedIdentity, now: i64) {
        if let Some(entries) = &self.entries {
            entries.insert(key, (now.saturating_add(self.ttl_secs), value));
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

    fn key(n: u32) -> [u8; 32] {
        let mut key = [0; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key[31] = n as u8;
        key
    }

    fn value(n: usize) -> CachedIdentity {
        Arc::new(Err(MalformedCertificate::TooMany(n)))
    }

    fn put(cache: &IdentityCache, digest: [u8; 32], value: CachedIdentity, now: i64) {
        cache.insert(cache.key(Lookup::Digest(&digest)), value, now);
    }

    fn held(cache: &IdentityCache, digest: &[u8; 32], now: i64) -> Option<usize> {
        cache
            .get(&cache.key(Lookup::Digest(digest)), now)
            .map(|v| match v.as_ref() {
                Err(MalformedCertificate::TooMany(n)) => *n,
                other => panic!("unexpected {other:?}"),
            })
    }

    #[test]
    fn get_insert_replace_and_expiry() {
        let cache = IdentityCache::new(100, 60);
        assert_eq!(held(&cache, &key(1), 0), None);
        put(&cache, key(1), value(1), 0);
        assert_eq!(held(&cache, &key(1), 59), Some(1));
        assert_eq!(held(&cache, &key(1), 60), None, "expired");
        put(&cache, key(1), value(2), 60);
        assert_eq!(held(&cache, &key(1), 61), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keys_that_share_a_prefix_are_distinct_entries() {
        let cache = IdentityCache::new(100, 60);
        let a = key(7);
        let mut b = a;
        b[20] = 1;
        put(&cache, a, value(1), 0);
        assert_eq!(held(&cache, &b, 0), None);
        put(&cache, b, value(2), 0);
        assert_eq!(held(&cache, &b, 0), Some(2));
        assert_eq!(held(&cache, &a, 0), Some(1));
    }

    #[test]
    fn bounded_and_the_newest_is_kept() {
        let cache = IdentityCache::new(50, 600);
        for i in 0..1_000 {
            put(&cache, key(i), value(i as usize), 0);
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
                        put(cache, k, value((i * 4 + t) as usize), 0);
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
        put(&cache, key(1), value(1), 0);
        assert_eq!(held(&cache, &key(1), 0), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_digest_and_each_encoding_of_the_same_bytes_are_distinct_entries() {
        let cache = IdentityCache::new(100, 60);
        let bytes = key(9);
        let lookups = [
            Lookup::Digest(&bytes),
            Lookup::Forwarded(CertEncoding::Auto, &bytes),
            Lookup::Forwarded(CertEncoding::Xfcc, &bytes),
        ];
        for (n, lookup) in lookups.into_iter().enumerate() {
            cache.insert(cache.key(lookup), value(n), 0);
        }
        for (n, lookup) in lookups.into_iter().enumerate() {
            assert!(
                matches!(
                    cache.get(&cache.key(lookup), 0).as_deref(),
                    Some(Err(MalformedCertificate::TooMany(m))) if *m == n
                ),
                "{lookup:?}"
            );
        }
    }
}
