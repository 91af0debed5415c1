//! What certificates are actually in use, and when they expire (README "Inventory and
//! expiry"). On each accepted request the [`Watch`] decides, at most once per certificate per
//! `inventory.interval`, to observe its expiry, log it when it is inside the policy's
//! `expiry_warning` window, and queue a [`Sighting`]; a background task writes the queue to
//! the store in batches. The request path never waits for the store: a full queue drops the
//! sighting and counts it.

mod metrics;
mod recent;
pub(crate) mod tiers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::authz::Policy;
use crate::cert::Identity;
use crate::store::{Admin, Sighting};

pub(crate) use metrics::InventoryMetrics;

/// `inventory.*` (read at start-up; changes need a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventorySettings {
    /// Record accepted certificates in the store.
    pub(crate) record: bool,
    /// At most one write (and one expiry log line) per certificate per interval.
    pub(crate) interval: Duration,
    /// Sightings waiting for the store; beyond this they are dropped and counted.
    pub(crate) queue_size: usize,
    /// How often the expiry-tier and CA-expiry gauges are recomputed.
    pub(crate) refresh_interval: Duration,
    /// Only certificates seen this recently count in the expiry tiers (a renewed
    /// certificate's predecessor stops counting once it is no longer used).
    pub(crate) in_use_within: Duration,
}

/// Certificates remembered per interval (at least this many, at most twice); beyond that the
/// oldest are forgotten (and may be recorded again within the interval, which is harmless).
const RECENT_MAX: usize = 100_000;

/// Sightings written per batch.
const BATCH: usize = 256;

/// The hot-path side of the inventory and expiry watch.
pub(crate) struct Watch {
    recent: recent::Recent,
    queue: Option<mpsc::Sender<Sighting>>,
    metrics: InventoryMetrics,
}

impl Watch {
    /// A watch that logs and observes but records nothing (until [`Self::record_into`]).
    pub(crate) fn new(settings: &InventorySettings, metrics: InventoryMetrics) -> Self {
        Watch {
            recent: recent::Recent::new(RECENT_MAX, settings.interval),
            queue: None,
            metrics,
        }
    }

    /// Queue sightings into `queue` from now on.
    pub(crate) fn record_into(&mut self, queue: mpsc::Sender<Sighting>) {
        self.queue = Some(queue);
    }

    /// `id` was just accepted under `policy`.
    pub(crate) fn accepted(&self, id: &Identity, policy: &Policy, now: i64) {
        if !self.recent.first_in_interval(id.sha256()) {
            return;
        }
        let left = id.not_after() - now;
        self.metrics
            .client_cert_expiry
            .with_label_values(&[policy.name.as_str()])
            .observe(left as f64);
        if (0..=policy.expiry_warning_secs).contains(&left) {
            tracing::warn!(
                principal = id.principal_id().unwrap_or(""),
                serial = %id.serial(),
                policy = %policy.name,
                hours_left = format!("{:.1}", left as f64 / 3600.0),
                "client certificate expires soon"
            );
        }
        let Some(queue) = &self.queue else { return };
        let at = now.saturating_mul(1000);
        let sighting = Sighting {
            sha256: id.sha256_hex(),
            serial_number: id.serial().to_string(),
            issuer: id.issuer().to_owned(),
            principal_id: id.principal_id().unwrap_or_default().to_owned(),
            not_before: id.not_before().saturating_mul(1000),
            expires_at: id.not_after().saturating_mul(1000),
            first_seen: at,
            last_seen: at,
        };
        if queue.try_send(sighting).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

/// Start the writer when `settings.record`; the returned sender feeds it.
pub(crate) fn spawn_writer(
    store: Arc<dyn Admin>,
    settings: &InventorySettings,
    metrics: InventoryMetrics,
) -> Option<mpsc::Sender<Sighting>> {
    if !settings.record {
        return None;
    }
    let (tx, rx) = mpsc::channel(settings.queue_size);
    tokio::spawn(write_behind(store, rx, metrics));
    Some(tx)
}

async fn write_behind(
    store: Arc<dyn Admin>,
    mut queue: mpsc::Receiver<Sighting>,
    metrics: InventoryMetrics,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        match store.record_sightings(&batch).await {
            Ok(()) => metrics.writes.with_label_values(&["ok"]).inc(),
            Err(e) => {
                metrics.writes.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, certificates = batch.len(), "inventory write failed; these sightings are lost until seen again");
            }
        }
        batch.clear();
    }
}
