//! The gauges refreshed in the background: certificates in use per expiry tier (from the
//! inventory in the store) and each trust-bundle CA's time to expiry (from the configuration
//! in force).

use std::sync::Arc;

use super::InventorySettings;
use super::metrics::TIERS;
use crate::check::Checker;
use crate::clock;
use crate::store::{Admin, EpochMillis, Sighting};

/// Recompute the gauges every `settings.refresh_interval`, for as long as the process runs.
pub(crate) fn spawn(store: Arc<dyn Admin>, checker: Arc<Checker>, settings: &InventorySettings) {
    let every = settings.refresh_interval;
    let in_use_within = i64::try_from(settings.in_use_within.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let metrics = checker.metrics().inventory.clone();
        loop {
            let now = clock::unix_now();
            metrics.ca_expiry.reset();
            for ca in checker.config().trust.cas() {
                metrics
                    .ca_expiry
                    .with_label_values(&[ca.subject.as_str()])
                    .set((ca.not_after - now) as f64);
            }
            let now_ms = now.saturating_mul(1000);
            let widest = TIERS.iter().map(|t| t.1).max().unwrap_or(0) * 1000;
            match store
                .list_sightings(Some(now_ms.saturating_add(widest)))
                .await
            {
                Ok(seen) => {
                    for (tier, count) in tier_counts(&seen, now_ms, in_use_within) {
                        metrics
                            .expiring
                            .with_label_values(&[tier])
                            .set(count as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "expiry tiers not refreshed"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Per tier, the certificates seen within `in_use_within` that are still valid and expire
/// within it.
fn tier_counts(
    seen: &[Sighting],
    now: EpochMillis,
    in_use_within: i64,
) -> [(&'static str, usize); 3] {
    let in_use: Vec<&Sighting> = seen
        .iter()
        .filter(|s| s.expires_at >= now && s.last_seen >= now.saturating_sub(in_use_within))
        .collect();
    TIERS.map(|(name, secs)| {
        let before = now.saturating_add(secs * 1000);
        (
            name,
            in_use.iter().filter(|s| s.expires_at <= before).count(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(expires_in_h: i64, last_seen_h_ago: i64) -> Sighting {
        let now = 1_000_000_000_000;
        Sighting {
            sha256: format!("{expires_in_h}-{last_seen_h_ago}"),
            serial_number: "01".into(),
            issuer: "CN=CA".into(),
            principal_id: "p".into(),
            not_before: 0,
            expires_at: now + expires_in_h * 3_600_000,
            first_seen: 0,
            last_seen: now - last_seen_h_ago * 3_600_000,
        }
    }

    #[test]
    fn tiers_count_valid_certificates_in_use_cumulatively() {
        let now = 1_000_000_000_000;
        let all = [
            seen(12, 0),       // 24h, 7d, 30d
            seen(5 * 24, 1),   // 7d, 30d
            seen(20 * 24, 2),  // 30d
            seen(40 * 24, 0),  // none
            seen(-1, 0),       // expired: none
            seen(10, 10 * 24), // not used for 10 days: none
        ];
        let counts = tier_counts(&all, now, 7 * 86_400_000);
        assert_eq!(counts, [("30d", 3), ("7d", 2), ("24h", 1)]);
    }
}
