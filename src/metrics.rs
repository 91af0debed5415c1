//! Prometheus metrics (README "Operating it"), all prefixed `certgate_`. One registry per process;
//! recording is lock-free on the hot path apart from the label lookup.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric certgate exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by `result` (allow|deny), `reason`, `policy`, `principal_type`, `mode`
    /// (enforce|shadow).
    pub(crate) decisions: IntCounterVec,
    /// Check latency in seconds, by `result`.
    pub(crate) check_seconds: HistogramVec,
    /// Cache lookups by `cache` (identity|principal|certificate) and `result` (hit|miss).
    pub cache_lookups: IntCounterVec,
    /// Store calls by `operation` and `outcome` (ok|error).
    pub(crate) store_calls: IntCounterVec,
    /// Stale cache entries served because the store failed.
    pub(crate) store_stale_served: IntCounter,
    /// Config reloads by `outcome` (success|failure).
    pub(crate) config_reloads: IntCounterVec,
    /// 1 when the last reload attempt failed (the previous config is still in force).
    pub(crate) config_last_reload_failed: IntGauge,
    /// Certificate inventory, expiry tiers, CA expiry and client certificate expiry.
    pub(crate) inventory: crate::inventory::InventoryMetrics,
    /// Failed CRL refresh rounds in a row, by `source` (0 after a good round).
    pub(crate) crl_consecutive_failures: IntGaugeVec,
    /// 1 when the last `/readyz` answered ready.
    pub(crate) ready: IntGauge,
    /// CRL refresh rounds by `source` (URL or file) and `outcome` (updated, unchanged,
    /// not_modified, older, stale, invalid, error).
    pub crl_fetches: IntCounterVec,
    /// CRLs refused by `issuer` and `reason` (bad_signature, wrong_issuer, unknown_issuer,
    /// malformed, bad_times, too_large, not_crl_signer).
    pub(crate) crl_verification_failures: IntCounterVec,
    /// Seconds since thisUpdate of the CRL in force, by `issuer`.
    pub(crate) crl_age_seconds: GaugeVec,
    /// Seconds until nextUpdate of the CRL in force (negative when past), by `issuer`.
    pub(crate) crl_next_update_seconds: GaugeVec,
    /// Entries of the CRL in force, by `issuer`.
    pub(crate) crl_entries: IntGaugeVec,
    /// 1 when the issuer has a usable (verified, fresh) CRL, by `issuer`.
    pub(crate) crl_usable: IntGaugeVec,
    /// Seconds a store backend call took (cache misses only), by `backend` (embedded,
    /// dynamodb) and `operation`.
    pub(crate) store_lookup_seconds: HistogramVec,
    /// Admin API calls by `method` (gRPC method path) and `outcome` (ok, a refusal's reason
    /// code, or the gRPC status code of a failed call, e.g. not_found).
    pub(crate) admin_api_requests: IntCounterVec,
}

impl Metrics {
    /// Build and register every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            decisions: register(
                r,
                IntCounterVec::new(
                    Opts::new("certgate_decisions_total", "Authorization decisions"),
                    &["result", "reason", "policy", "principal_type", "mode"],
                ),
            ),
            check_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "certgate_check_duration_seconds",
                        "Time to decide one check",
                    )
                    .buckets(vec![
                        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
                        0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    ]),
                    &["result"],
                ),
            ),
            cache_lookups: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_cache_lookups_total",
                        "Cache lookups by cache and result",
                    ),
                    &["cache", "result"],
                ),
            ),
            store_calls: register(
                r,
                IntCounterVec::new(
                    Opts::new("certgate_store_calls_total", "Calls to the store backend"),
                    &["operation", "outcome"],
                ),
            ),
            store_stale_served: register(
                r,
                IntCounter::new(
                    "certgate_store_stale_served_total",
                    "Cached store entries served past their TTL because the store failed",
                ),
            ),
            config_reloads: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_config_reloads_total",
                        "Configuration reloads by outcome",
                    ),
                    &["outcome"],
                ),
            ),
            config_last_reload_failed: register(
                r,
                IntGauge::new(
                    "certgate_config_last_reload_failed",
                    "1 when the most recent reload was refused and the previous config is in force",
                ),
            ),
            inventory: crate::inventory::InventoryMetrics::register(r),
            crl_consecutive_failures: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "certgate_crl_consecutive_failures",
                        "Failed CRL refresh rounds in a row, by source",
                    ),
                    &["source"],
                ),
            ),
            ready: register(
                r,
                IntGauge::new(
                    "certgate_ready",
                    "1 when the last /readyz probe answered ready, 0 when it did not",
                ),
            ),
            crl_fetches: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_crl_fetches_total",
                        "CRL refresh rounds by source and outcome",
                    ),
                    &["source", "outcome"],
                ),
            ),
            crl_verification_failures: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_crl_verification_failures_total",
                        "Fetched CRLs refused, by issuer and reason",
                    ),
                    &["issuer", "reason"],
                ),
            ),
            crl_age_seconds: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "certgate_crl_age_seconds",
                        "Seconds since thisUpdate of the CRL in force",
                    ),
                    &["issuer"],
                ),
            ),
            crl_next_update_seconds: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "certgate_crl_next_update_seconds",
                        "Seconds until nextUpdate of the CRL in force (negative when past)",
                    ),
                    &["issuer"],
                ),
            ),
            crl_entries: register(
                r,
                IntGaugeVec::new(
                    Opts::new("certgate_crl_entries", "Entries of the CRL in force"),
                    &["issuer"],
                ),
            ),
            crl_usable: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "certgate_crl_usable",
                        "1 when the issuer has a verified, fresh CRL",
                    ),
                    &["issuer"],
                ),
            ),
            store_lookup_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "certgate_store_lookup_duration_seconds",
                        "Time of a store backend call made on a cache miss",
                    )
                    .buckets(vec![
                        0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                    &["backend", "operation"],
                ),
            ),
            admin_api_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "certgate_admin_api_requests_total",
                        "Admin API calls by method and outcome",
                    ),
                    &["method", "outcome"],
                ),
            ),
            registry,
        };
        metrics.register_process_and_build();
        metrics
    }

    /// `process_*` (CPU, memory, descriptors, start time; Linux) and
    /// `certgate_build_info{version,commit}`.
    fn register_process_and_build(&self) {
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        let build = register(
            &self.registry,
            IntGaugeVec::new(
                Opts::new(
                    "certgate_build_info",
                    "Always 1; the labels name the running build",
                ),
                &["version", "commit"],
            ),
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CERTGATE_GIT_COMMIT")])
            .set(1);
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Register `metric` in `registry`. Definitions and names are fixed in the code, so an error
/// is a bug.
pub(crate) fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
