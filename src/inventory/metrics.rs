//! The inventory's and expiry tiers' metrics, registered with the others by
//! [`crate::metrics::Metrics`].

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::metrics::register;

/// Expiry windows of `certgate_certificates_expiring`: label value and seconds. The
/// runbooks' three alert tiers (warning, critical, emergency).
pub(crate) const TIERS: [(&str, i64); 3] =
    [("30d", 30 * 86_400), ("7d", 7 * 86_400), ("24h", 86_400)];

/// Metrics of the certificate inventory and expiry watch.
#[derive(Clone)]
pub(crate) struct InventoryMetrics {
    /// Sightings dropped because the write-behind queue was full.
    pub(crate) dropped: IntCounter,
    /// Batches written by `outcome` (ok|error).
    pub(crate) writes: IntCounterVec,
    /// Certificates in use (seen within `inventory.in_use_within`) expiring within a tier,
    /// by `within` (30d|7d|24h).
    pub(crate) expiring: GaugeVec,
    /// Seconds until notAfter of each trust-bundle CA, by `ca` (subject DN).
    pub(crate) ca_expiry: GaugeVec,
    /// Seconds to notAfter of accepted client certificates, by `policy`, observed once per
    /// certificate per `inventory.interval`.
    pub(crate) client_cert_expiry: HistogramVec,
}

impl InventoryMetrics {
    pub(crate) fn register(r: &prometheus::Registry) -> Self {
        const DAY: f64 = 86_400.0;
        InventoryMetrics {
            dropped: register(
                r,
                IntCounter::new(
                    "certgate_inventory_dropped_total",
                    "Certificate sightings dropped because the inventory queue was full",
                ),
            ),
            writes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_inventory_writes_total",
                        "Inventory batches written to the store, by outcome",
                    ),
                    &["outcome"],
                ),
            ),
            expiring: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "certgate_certificates_expiring",
                        "Certificates in use expiring within the tier, from the inventory",
                    ),
                    &["within"],
                ),
            ),
            ca_expiry: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "certgate_ca_expiry_seconds",
                        "Seconds until notAfter of each trust-bundle CA (negative when past)",
                    ),
                    &["ca"],
                ),
            ),
            client_cert_expiry: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "certgate_client_cert_expiry_seconds",
                        "Seconds to notAfter of accepted client certificates",
                    )
                    .buckets(vec![
                        3600.0,
                        DAY,
                        3.0 * DAY,
                        7.0 * DAY,
                        14.0 * DAY,
                        30.0 * DAY,
                        60.0 * DAY,
                        90.0 * DAY,
                        180.0 * DAY,
                        365.0 * DAY,
                    ]),
                    &["policy"],
                ),
            ),
        }
    }
}
