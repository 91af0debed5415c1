//! Cache keys: a 128-bit keyed hash of what is looked up instead of the thing itself.
//!
//! A principal id or serial kept as the store cache's key costs a heap block per entry on top
//! of the entry (with every client a distinct principal, ~40 B per client), and a 32-byte
//! digest 16 B more per slot than this; a forwarded certificate (~1.7 KB of URL-encoded PEM)
//! could not be kept at all. Two entries share an answer only when their keys are equal, so
//! the bound matters: the hash is SipHash-1-3 with 128-bit output (the `siphasher` crate),
//! one pass over the input, under a secret key drawn per cache. For a pseudo-random function,
//! two distinct lookups collide with probability 2^-128; among n cached keys the chance of
//! any collision is below n²/2^129 (< 2^-80 for ten million entries), and the key is
//! secret, so a client cannot search for a collision offline. A collision would serve one
//! principal another's answer, so the bound, not a comparison of the full key, is what
//! guards it.
//!
//! One pass of SipHash-1-3 over a forwarded certificate costs about a fifth of a SHA-256 of it
//! with the CPU's SHA instructions, which is what the identity cache used to key by.

use std::hash::{BuildHasher, Hasher, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

/// Two 64-bit halves rather than a `u128`: 8-byte alignment keeps the cache's slot smaller.
pub(crate) type Key = [u64; 2];

/// The per-cache secret key of the hash.
pub(crate) struct Keys {
    k0: u64,
    k1: u64,
}

impl Keys {
    /// A fresh secret key. std's `RandomState` is seeded from the operating system's random
    /// source; its hashes of two constants under that seed are as unpredictable as the seed.
    pub(crate) fn new() -> Self {
        let seed = RandomState::new();
        Keys {
            k0: seed.hash_one(0u8),
            k1: seed.hash_one(1u8),
        }
    }

    /// The key of `looked_up` (a principal id's bytes, a serial's canonical bytes).
    pub(crate) fn of(&self, looked_up: &[u8]) -> Key {
        self.tagged(&[], looked_up)
    }

    /// The key of `tag` followed by `looked_up`: lookups of different kinds in one cache
    /// (a digest, a certificate in one encoding or another) give each kind a tag of the same
    /// length, so no two (tag, bytes) pairs hash the same byte string.
    pub(crate) fn tagged(&self, tag: &[u8], looked_up: &[u8]) -> Key {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(tag);
        hasher.write(looked_up);
        let hash = hasher.finish128();
        [hash.h1, hash.h2]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn distinct_inputs_get_distinct_keys_and_equal_inputs_equal_ones() {
        let keys = Keys::new();
        let mut seen = HashSet::new();
        for i in 0..100_000 {
            let id = format!("worker-{i}@example.com");
            assert_eq!(keys.of(id.as_bytes()), keys.of(id.as_bytes()));
            assert!(seen.insert(keys.of(id.as_bytes())), "{id}");
        }
        // A prefix, the empty input and a longer input are all different lookups.
        assert_ne!(keys.of(b"ab"), keys.of(b"abc"));
        assert_ne!(keys.of(b""), keys.of(b"\0"));
    }

    #[test]
    fn a_tag_is_part_of_the_key() {
        let keys = Keys::new();
        assert_ne!(keys.tagged(b"\0", b"alice"), keys.tagged(b"\x01", b"alice"));
        assert_ne!(keys.tagged(b"\0", b"alice"), keys.of(b"alice"));
        // Tag and bytes are one string: the caller keeps tags of one length per cache.
        assert_eq!(keys.tagged(b"\0", b"alice"), keys.of(b"\0alice"));
    }

    #[test]
    fn two_caches_key_the_same_input_differently() {
        assert_ne!(Keys::new().of(b"alice"), Keys::new().of(b"alice"));
    }

    #[test]
    fn the_halves_are_independent_hashes() {
        let [a, b] = Keys::new().of(b"alice");
        assert_ne!(a, b);
    }

    #[test]
    fn a_long_input_is_hashed_whole() {
        let keys = Keys::new();
        let long = vec![b'a'; 1_700];
        let mut changed = long.clone();
        changed[1_699] = b'b';
        assert_ne!(keys.of(&long), keys.of(&changed));
        changed[1_699] = b'a';
        changed[0] = b'b';
        assert_ne!(keys.of(&long), keys.of(&changed));
    }
}
