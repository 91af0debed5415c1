//! Which certificates the watch handled lately, so each is handled at most once per
//! `inventory.interval`. There is one entry per distinct accepted certificate, as many as the
//! identity cache holds, so an entry is kept small: a 64-bit keyed hash of the certificate's
//! digest and the millisecond it was handled, 16 B in a hash table (a `quick_cache` slot with
//! the 32-byte digest cost ~70 B; see "Memory at scale" in BENCHMARKS.md).
//!
//! The bound is two generations per shard: when a shard's current generation is full it
//! becomes the previous one, and the one before is forgotten (its table kept for reuse, so
//! forgetting costs no allocation and no walk over the entries).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Independent locks, so that checks on several threads rarely wait for each other.
const SHARDS: usize = 8;

/// Digests of recently handled certificates, bounded in entries; age is judged on read.
pub(super) struct Recent {
    shards: Box<[Mutex<Generations>]>,
    /// Keyed with a random key per process, so which digests share a hash cannot be worked
    /// out in advance. Two certificates that do share one only cost one of them its inventory
    /// write and expiry log line for an interval.
    keys: RandomState,
    /// Entries per shard and generation.
    per_generation: usize,
    epoch: Instant,
    interval_ms: u64,
}

#[derive(Default)]
struct Generations {
    current: Handled,
    previous: Handled,
}

/// Hashed digest → when it was handled, in milliseconds since `epoch`.
type Handled = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

/// The keys are already uniform keyed hashes: the table uses them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn lock(shard: &Mutex<Generations>) -> MutexGuard<'_, Generations> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recent {
    /// At least the last `max` certificates remembered (at most twice that), each for
    /// `interval`.
    pub(super) fn new(max: usize, interval: Duration) -> Self {
        Recent {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys: RandomState::new(),
            per_generation: max.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Whether `key` should be handled now: it was not handled in the interval before. If so,
    /// it counts as handled now.
    pub(super) fn first_in_interval(&self, key: &[u8; 32]) -> bool {
        let since = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis();
        self.first_at(key, u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// [`Self::first_in_interval`] at `now_ms` since `epoch`. Decided under the shard's lock,
    /// so of concurrent checks of one certificate exactly one handles it.
    fn first_at(&self, key: &[u8; 32], now_ms: u64) -> bool {
        let hash = self.keys.hash_one(key);
        // The table indexes by the lowest bits and tags by the highest: pick the shard by
        // others, so that every key of a shard does not land in the same buckets.
        let shard = (hash >> 32) as usize % self.shards.len();
        let mut shard = lock(&self.shards[shard]);
        let Generations { current, previous } = &mut *shard;
        let handled_at = current.get(&hash).or_else(|| previous.get(&hash));
        if handled_at.is_some_and(|at| now_ms.saturating_sub(*at) < self.interval_ms) {
            return false;
        }
        if current.len() >= self.per_generation && !current.contains_key(&hash) {
            std::mem::swap(current, previous);
            current.clear();
        }
        current.insert(hash, now_ms);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> [u8; 32] {
        let mut key = [0; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key
    }

    #[test]
    fn once_per_interval_and_again_after_it() {
        let recent = Recent::new(100, Duration::from_millis(100));
        assert!(recent.first_at(&key(1), 1_000));
        assert!(!recent.first_at(&key(1), 1_000));
        assert!(!recent.first_at(&key(1), 1_099));
        assert!(recent.first_at(&key(2), 1_050), "another certificate");
        assert!(recent.first_at(&key(1), 1_100));
        assert!(!recent.first_at(&key(1), 1_150), "handled again at 1100");
        let zero = Recent::new(100, Duration::ZERO);
        assert!(zero.first_at(&key(1), 10));
        assert!(zero.first_at(&key(1), 10), "no interval: every time");
    }

    #[test]
    fn the_clock_is_the_process_own() {
        let recent = Recent::new(100, Duration::from_secs(3_600));
        assert!(recent.first_in_interval(&key(1)));
        assert!(!recent.first_in_interval(&key(1)));
    }

    #[test]
    fn bounded_and_the_newest_are_remembered() {
        let recent = Recent::new(80, Duration::from_secs(3_600));
        for i in 0..10_000 {
            assert!(recent.first_at(&key(i), 0), "{i} is new");
            // Each shard keeps at least its last 10 (80 / 8): so do the last 10 overall.
            for newer in i.saturating_sub(9)..=i {
                assert!(
                    !recent.first_at(&key(newer), 1),
                    "{newer} remembered at {i}"
                );
            }
        }
        assert!(recent.len() <= 160, "{}", recent.len());
        assert!(recent.len() >= 80, "{}", recent.len());
    }

    #[test]
    fn concurrent_checks_of_one_certificate_handle_it_once() {
        // Room for every key: none is forgotten and handled again by a thread that lags.
        let recent = Recent::new(10_000, Duration::from_secs(3_600));
        let handled = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for i in 0..500 {
                        if recent.first_at(&key(i), 0) {
                            handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(handled.into_inner(), 500);
    }
}
