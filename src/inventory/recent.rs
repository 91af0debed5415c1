//! Which certificates the watch handled lately, so each is handled at most once per
//! `inventory.interval`. One entry per distinct accepted certificate, as many as the identity
//! cache holds, so an entry is a `quick_cache` slot with the 32-byte digest and the time
//! (moka cost ~370 B more per entry; see "Memory at scale" in BENCHMARKS.md).

use std::time::Duration;

use quick_cache::sync::Cache;

/// Digests of recently handled certificates, bounded in entries; age is judged on read against
/// the `now` each check is given.
pub(super) struct Recent {
    handled_at: Cache<[u8; 32], i64>,
    /// The interval in whole seconds, rounded up.
    interval_secs: i64,
}

impl Recent {
    /// At most about `max` certificates remembered (the oldest are forgotten first), each for
    /// `interval`.
    pub(super) fn new(max: usize, interval: Duration) -> Self {
        let whole = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
        Recent {
            handled_at: Cache::new(max.max(1)),
            interval_secs: i64::try_from(whole).unwrap_or(i64::MAX),
        }
    }

    /// Whether `key` should be handled at `now` (Unix seconds): it was not handled in the
    /// interval before. If so, it counts as handled at `now`.
    ///
    /// `now` has whole seconds, so "within the interval" includes one second more: two
    /// handlings are never closer than the interval, only up to a second further apart. A
    /// clock that stepped back makes the old time look recent by no more than that.
    pub(super) fn first_in_interval(&self, key: &[u8; 32], now: i64) -> bool {
        let recent = self
            .handled_at
            .get(key)
            .is_some_and(|at| (0..=self.interval_secs).contains(&now.saturating_sub(at)));
        if !recent {
            self.handled_at.insert(*key, now);
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
        let recent = Recent::new(100, Duration::from_secs(60));
        assert!(recent.first_in_interval(&key(1), 1_000));
        assert!(!recent.first_in_interval(&key(1), 1_000));
        assert!(
            !recent.first_in_interval(&key(1), 1_060),
            "60 s may be 59.x s apart"
        );
        assert!(
            recent.first_in_interval(&key(2), 1_030),
            "another certificate"
        );
        assert!(recent.first_in_interval(&key(1), 1_061));
        assert!(
            !recent.first_in_interval(&key(1), 1_062),
            "handled again at 1061"
        );
    }

    #[test]
    fn a_fraction_of_a_second_rounds_up_and_a_clock_stepped_back_handles_again() {
        let recent = Recent::new(100, Duration::from_millis(1_500));
        assert!(recent.first_in_interval(&key(1), 10));
        assert!(!recent.first_in_interval(&key(1), 12));
        assert!(recent.first_in_interval(&key(1), 13));
        assert!(recent.first_in_interval(&key(1), 5), "clock stepped back");
        let zero = Recent::new(100, Duration::ZERO);
        assert!(zero.first_in_interval(&key(1), 10));
        assert!(!zero.first_in_interval(&key(1), 10));
        assert!(zero.first_in_interval(&key(1), 11));
    }

    #[test]
    fn bounded() {
        let recent = Recent::new(50, Duration::from_secs(3_600));
        for i in 0..1_000 {
            assert!(recent.first_in_interval(&key(i), 0));
        }
        assert!(recent.handled_at.len() <= 50, "{}", recent.handled_at.len());
    }
}
