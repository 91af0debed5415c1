//! Which certificates the watch handled lately, so each is handled at most once per
//! `inventory.interval`. One entry per distinct accepted certificate, as many as the identity
//! cache holds, so an entry is a `quick_cache` slot with the 32-byte digest and the time
//! (moka cost ~370 B more per entry; see "Memory at scale" in BENCHMARKS.md).

use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

/// Digests of recently handled certificates, bounded in entries; age is judged on read.
pub(super) struct Recent {
    /// When each was handled, in milliseconds since `epoch`.
    handled_at: Cache<[u8; 32], u64>,
    epoch: Instant,
    interval_ms: u64,
}

impl Recent {
    /// At most about `max` certificates remembered (the oldest are forgotten first), each for
    /// `interval`.
    pub(super) fn new(max: usize, interval: Duration) -> Self {
        Recent {
            handled_at: Cache::new(max.max(1)),
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

    /// [`Self::first_in_interval`] at `now_ms` since `epoch`.
    fn first_at(&self, key: &[u8; 32], now_ms: u64) -> bool {
        let recent = self
            .handled_at
            .get(key)
            .is_some_and(|at| now_ms.saturating_sub(at) < self.interval_ms);
        if !recent {
            self.handled_at.insert(*key, now_ms);
        }
        !recent
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
    fn bounded() {
        let recent = Recent::new(50, Duration::from_secs(3_600));
        for i in 0..1_000 {
            assert!(recent.first_at(&key(i), 0));
        }
        assert!(recent.handled_at.len() <= 50, "{}", recent.handled_at.len());
    }
}
