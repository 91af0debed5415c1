//! Cache keys: a 128-bit keyed hash of what is looked up instead of the thing itself.
//!
//! A principal id or serial kept as the store cache's key costs a heap block per entry on top
//! of the entry (with every client a distinct principal, ~40 B per client), and the identity
//! cache's 32-byte digest 16 B more per slot than this. Two entries
//! share an answer only when their keys are equal, so the bound matters: the hash is
//! SipHash-1-3 (std's `RandomState`, keyed randomly per cache) evaluated at two inputs that
//! differ in a domain byte, giving 128 bits. For a random function, two distinct lookups
//! collide with probability 2^-128; among n cached keys the chance of any collision is below
//! n²/2^129 (< 2^-80 for ten million entries), and the key is secret, so a client cannot
//! search for a collision offline. A collision would serve one principal another's answer,
//! so the bound, not a comparison of the full key, is what guards it.

use std::hash::{BuildHasher, RandomState};

/// Two 64-bit halves rather than a `u128`: 8-byte alignment keeps the cache's slot smaller.
pub(crate) type Key = [u64; 2];

/// The per-cache secret key of the hash.
pub(crate) struct Keys(RandomState);

impl Keys {
    pub(crate) fn new() -> Self {
        Keys(RandomState::new())
    }

    /// The key of `looked_up` (a principal id's bytes, a serial's canonical bytes, a digest).
    pub(crate) fn of(&self, looked_up: &[u8]) -> Key {
        // `&[u8]` hashes its length before its bytes, so (domain, bytes) is unambiguous.
        [
            self.0.hash_one((0u8, looked_up)),
            self.0.hash_one((1u8, looked_up)),
        ]
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
    fn two_caches_key_the_same_input_differently() {
        assert_ne!(Keys::new().of(b"alice"), Keys::new().of(b"alice"));
    }

    #[test]
    fn the_halves_are_independent_hashes() {
        let [a, b] = Keys::new().of(b"alice");
        assert_ne!(a, b);
    }
}
