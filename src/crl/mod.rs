//! Certificate revocation lists (SPEC 3 rows 7/7b, SPEC 5): fetch, verify, index by
//! (issuer, serial), and judge freshness per issuer.
//!
//! The request path only reads an immutable [`RevocationSnapshot`] through an `ArcSwap` and
//! does one hash lookup; fetching, verifying and indexing happen in the background
//! (`refresh`). A CRL that fails any check never replaces one in force.

pub mod fetch;
mod index;
mod parse;
pub mod refresh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use index::{
    IndexError, RevocationIndex, RevocationIndexBuilder, RevocationReason, Revoked,
    canonical_serial,
};
pub use parse::{CrlError, ParsedCrl, decode_crl};

use crate::authz::{CrlStatus, rfc3339};
use crate::cert::TrustBundle;
use crate::config::Config;
use crate::metrics::Metrics;

// ---------------------------------------------------------------------------------------
// Configuration (built and validated by `config`).

/// Whether `/readyz` waits for CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CrlReadiness {
    /// Not ready while a configured issuer has no usable CRL (the reason is in `/readyz`).
    #[default]
    Wait,
    /// Ready at once; checks that need a missing CRL are denied 503 meanwhile.
    Serve,
}

/// How long a CRL stays usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Unusable once `now − thisUpdate` exceeds this (seconds).
    pub max_age_secs: i64,
    /// Still usable this long after nextUpdate (seconds).
    pub next_update_grace_secs: i64,
}

/// Where a CRL is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrlLocation {
    /// `http://` or `https://` URL.
    Url(String),
    /// A file, refreshed by something else (cron, a sidecar).
    File(PathBuf),
}

/// One source of an issuer's CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSource {
    /// URL or file.
    pub location: CrlLocation,
    /// Time between successful refreshes (jittered by ±10%).
    pub refresh_interval: Duration,
}

impl CrlSource {
    /// The URL or path, as shown in logs and the `source` metric label.
    pub fn label(&self) -> String {
        match &self.location {
            CrlLocation::Url(u) => u.clone(),
            CrlLocation::File(p) => p.display().to_string(),
        }
    }
}

/// The CRL configuration of one issuing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlIssuer {
    /// The CA's subject DN, as certgate prints it (and as `Identity::issuer` is).
    pub name: String,
    /// The CA's subject Name, DER: a CRL must carry exactly this issuer.
    pub subject_der: Vec<u8>,
    /// Freshness limits.
    pub freshness: Freshness,
    /// Sources, all refreshed; the newest verified CRL wins.
    pub sources: Vec<CrlSource>,
}

/// Settings of the `crl` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlConfig {
    /// `/readyz` behaviour.
    pub readiness: CrlReadiness,
    /// Per HTTP fetch, connect to last byte.
    pub timeout: Duration,
    /// First delay after a failed fetch; doubles on each further failure.
    pub retry_backoff: Duration,
    /// Cap of the failure delay.
    pub max_retry_backoff: Duration,
    /// Largest CRL accepted, bytes.
    pub max_size: u64,
    /// Where the last good CRL of each issuer is kept across restarts.
    pub cache_dir: Option<PathBuf>,
    /// Per issuing CA.
    pub issuers: Vec<CrlIssuer>,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            readiness: CrlReadiness::Wait,
            timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(300),
            max_size: 64 << 20,
            cache_dir: None,
            issuers: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// A verified CRL.

/// A CRL that passed every check, indexed.
#[derive(Debug)]
pub struct VerifiedCrl {
    /// Issuer DN.
    pub issuer: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// SHA-256 of the DER of the CA certificate whose key verified it.
    pub verified_by: [u8; 32],
    /// Where it was loaded from.
    pub source: String,
    /// Size of the DER.
    pub der_len: usize,
    /// The revoked serials.
    pub index: RevocationIndex,
}

impl VerifiedCrl {
    /// Decode, parse, check the issuer is `expected_issuer` (DER Name), verify the signature
    /// against the trust bundle, check the times at `now` (± `skew` seconds) and index.
    pub fn load(
        input: &[u8],
        trust: &TrustBundle,
        expected: &CrlIssuer,
        now: i64,
        skew: i64,
        source: &str,
    ) -> Result<VerifiedCrl, CrlError> {
        let der = decode_crl(input)?;
        let parsed = ParsedCrl::parse(&der)?;
        if parsed.issuer_der() != expected.subject_der.as_slice() {
            return Err(CrlError::WrongIssuer {
                expected: expected.name.clone(),
                found: parsed.issuer.clone(),
            });
        }
        let cas = trust.ca_certificates();
        let by = parsed.verify_signature(cas)?;
        parsed.check_times(now, skew)?;
        let index = parsed.index()?;
        let verified_by = cas
            .get(by)
            .map(|c| Sha256::digest(c.as_ref()).into())
            .unwrap_or_default();
        let crl = VerifiedCrl {
            issuer: expected.name.clone(),
            this_update: parsed.this_update,
            next_update: parsed.next_update,
            sha256: parsed.sha256(),
            verified_by,
            source: source.to_owned(),
            der_len: der.len(),
            index,
        };
        Ok(crl)
    }

    /// Why this CRL cannot be used at `now`, if it cannot ("stale: …", to follow "is").
    pub fn unusable(&self, freshness: &Freshness, now: i64) -> Option<String> {
        let age = now.saturating_sub(self.this_update);
        if age > freshness.max_age_secs {
            return Some(format!(
                "stale: issued {} ago (thisUpdate {}), max_age is {}",
                human(age),
                rfc3339(self.this_update),
                human(freshness.max_age_secs)
            ));
        }
        if now
            > self
                .next_update
                .saturating_add(freshness.next_update_grace_secs)
        {
            return Some(format!(
                "stale: past its nextUpdate {} by {} (grace {}), age {}",
                rfc3339(self.next_update),
                human(now - self.next_update),
                human(freshness.next_update_grace_secs),
                human(age)
            ));
        }
        None
    }
}

/// SHA-256 of each CA certificate of the bundle.
fn anchors(config: &Config) -> Vec<[u8; 32]> {
    config
        .trust
        .ca_certificates()
        .iter()
        .map(|c| Sha256::digest(c.as_ref()).into())
        .collect()
}

/// Whether two configurations load and verify CRLs identically (same sources, limits,
/// trust bundle and clock skew), so the refresher and the loaded CRLs can stay as they are.
pub fn same_crl_inputs(a: &Config, b: &Config) -> bool {
    a.crl == b.crl
        && a.trust.ca_certificates() == b.trust.ca_certificates()
        && a.certificate_rules.clock_skew_secs == b.certificate_rules.clock_skew_secs
}

/// `3h05m`, `2d4h`, `45s`: short durations for messages.
pub fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let sign = if secs < 0 { "-" } else { "" };
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sign}{sec}s"),
        (0, 0, _) => format!("{sign}{m}m{sec:02}s"),
        (0, _, _) => format!("{sign}{h}h{m:02}m"),
        _ => format!("{sign}{d}d{h}h"),
    }
}

// ---------------------------------------------------------------------------------------
// The state the request path reads.

/// What is known about one issuer's CRL.
#[derive(Debug, Clone)]
pub struct IssuerState {
    /// Its configuration.
    pub config: Arc<CrlIssuer>,
    /// The CRL in force, if one was ever loaded.
    pub crl: Option<Arc<VerifiedCrl>>,
    /// The last failure (fetch or verification), for messages and `/readyz`.
    pub last_error: Option<String>,
}

/// Every configured issuer's CRL at one moment; replaced as a whole, never mutated.
#[derive(Debug, Clone, Default)]
pub struct RevocationSnapshot {
    issuers: HashMap<String, IssuerState>,
}

impl RevocationSnapshot {
    /// The CRL status of the certificate `serial_hex` issued by `issuer` at `now`.
    /// No I/O, no allocation unless the answer is a deny.
    pub fn status(&self, issuer: &str, serial_hex: &str, now: i64) -> CrlStatus {
        let Some(state) = self.issuers.get(issuer) else {
            return CrlStatus::NotConfigured;
        };
        let Some(crl) = &state.crl else {
            let why = state.last_error.as_deref().unwrap_or("not fetched yet");
            return CrlStatus::Unknown(format!(
                "no CRL of issuer '{issuer}' has been loaded ({why})"
            ));
        };
        if let Some(why) = crl.unusable(&state.config.freshness, now) {
            return CrlStatus::Unknown(match &state.last_error {
                Some(err) => format!("the CRL of '{issuer}' is {why}; last refresh: {err}"),
                None => format!("the CRL of '{issuer}' is {why}"),
            });
        }
        match crl.index.get_hex(serial_hex) {
            Some(r) => CrlStatus::Revoked {
                reason: r.reason.as_str(),
                revoked_at: r.revoked_at,
            },
            None => CrlStatus::NotListed,
        }
    }

    /// Every issuer's state, sorted by issuer name.
    pub fn issuers(&self) -> Vec<&IssuerState> {
        let mut all: Vec<_> = self.issuers.values().collect();
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        all
    }

    /// The state of one issuer.
    pub fn issuer(&self, name: &str) -> Option<&IssuerState> {
        self.issuers.get(name)
    }
}

/// What happened to a CRL offered to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Offered {
    /// It is now in force.
    Installed,
    /// The same CRL is already in force.
    Unchanged,
    /// The CRL in force is newer (a mirror lagging behind, or a replayed old CRL).
    Older,
    /// It is too old to be used at all.
    Stale,
    /// The issuer is no longer configured.
    Unconfigured,
}

impl Offered {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Offered::Installed => "updated",
            Offered::Unchanged => "unchanged",
            Offered::Older => "older",
            Offered::Stale => "stale",
            Offered::Unconfigured => "unconfigured",
        }
    }
}

/// The shared revocation state: the snapshot checks read, and the configuration the
/// background refresher follows.
pub struct Revocation {
    snapshot: ArcSwap<RevocationSnapshot>,
    /// Serializes writers (readers never wait).
    write: Mutex<()>,
    config: watch::Sender<Arc<Config>>,
    metrics: Metrics,
}

impl Revocation {
    /// State for `config`, with no CRL loaded yet.
    pub fn new(config: Arc<Config>, metrics: Metrics) -> Self {
        let snapshot = RevocationSnapshot {
            issuers: config
                .crl
                .issuers
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        IssuerState {
                            config: Arc::new(i.clone()),
                            crl: None,
                            last_error: None,
                        },
                    )
                })
                .collect(),
        };
        let (tx, _) = watch::channel(config);
        Revocation {
            snapshot: ArcSwap::from_pointee(snapshot),
            write: Mutex::new(()),
            config: tx,
            metrics,
        }
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<RevocationSnapshot>> {
        self.snapshot.load()
    }

    /// The CRL status of one certificate at `now`.
    pub fn status(&self, issuer: &str, serial_hex: &str, now: i64) -> CrlStatus {
        self.snapshot.load().status(issuer, serial_hex, now)
    }

    /// The configuration the refresher follows.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Follow a new configuration: issuers no longer configured are dropped, new ones start
    /// empty, and a loaded CRL is kept only if its issuer is still configured and the CA
    /// whose key verified it is still in the trust bundle.
    pub fn reconfigure(&self, config: Arc<Config>) {
        if same_crl_inputs(&self.config(), &config) {
            // Policies may have changed (readiness depends on them); CRLs and the refresher
            // need nothing.
            self.config.send_replace(config);
            return;
        }
        let anchors = anchors(&config);
        {
            let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.snapshot.load_full();
            let issuers = config
                .crl
                .issuers
                .iter()
                .map(|i| {
                    let kept = current.issuers.get(&i.name).and_then(|s| {
                        s.crl
                            .clone()
                            .filter(|crl| {
                                anchors.contains(&crl.verified_by)
                                    && s.config.subject_der == i.subject_der
                            })
                            .map(|crl| (crl, s.last_error.clone()))
                    });
                    let (crl, last_error) = kept.map_or((None, None), |(c, e)| (Some(c), e));
                    let state = IssuerState {
                        config: Arc::new(i.clone()),
                        crl,
                        last_error,
                    };
                    (i.name.clone(), state)
                })
                .collect();
            self.snapshot
                .store(Arc::new(RevocationSnapshot { issuers }));
        }
        self.metrics.crl_entries.reset();
        self.metrics.crl_age_seconds.reset();
        self.metrics.crl_next_update_seconds.reset();
        self.metrics.crl_usable.reset();
        self.config.send_replace(config);
    }

    /// Offer a verified CRL for its issuer at `now`; it replaces the one in force only if it
    /// is usable and newer.
    pub fn offer(&self, crl: VerifiedCrl, now: i64) -> Offered {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        let Some(state) = current.issuers.get(&crl.issuer) else {
            return Offered::Unconfigured;
        };
        // A refresh that started under a previous configuration may finish after a reload
        // that removed the CA whose key verified it: such a CRL is not for this bundle.
        if !anchors(&self.config()).contains(&crl.verified_by) {
            return Offered::Unconfigured;
        }
        if let Some(why) = crl.unusable(&state.config.freshness, now) {
            let mut next = (*current).clone();
            if let Some(s) = next.issuers.get_mut(&crl.issuer) {
                s.last_error = Some(format!("{} served a CRL that is {why}", crl.source));
            }
            self.snapshot.store(Arc::new(next));
            return Offered::Stale;
        }
        let outcome = match &state.crl {
            None => Offered::Installed,
            Some(old) if crl.this_update > old.this_update => Offered::Installed,
            Some(old) if crl.sha256 == old.sha256 => Offered::Unchanged,
            // The same source republished within the same second: take the new content.
            Some(old) if crl.this_update == old.this_update && crl.source == old.source => {
                Offered::Installed
            }
            Some(old) if crl.this_update == old.this_update => Offered::Unchanged,
            Some(_) => Offered::Older,
        };
        let mut next = (*current).clone();
        if let Some(s) = next.issuers.get_mut(&crl.issuer) {
            if outcome != Offered::Older {
                s.last_error = None;
            }
            if outcome == Offered::Installed {
                tracing::info!(
                    issuer = %crl.issuer,
                    source = %crl.source,
                    entries = crl.index.len(),
                    this_update = %rfc3339(crl.this_update),
                    next_update = %rfc3339(crl.next_update),
                    "CRL loaded"
                );
                s.crl = Some(Arc::new(crl));
            }
        }
        self.snapshot.store(Arc::new(next));
        outcome
    }

    /// Record a failed refresh of `issuer` (the CRL in force, if any, stays).
    pub fn record_failure(&self, issuer: &str, error: String) {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        if !current.issuers.contains_key(issuer) {
            return;
        }
        let mut next = (*current).clone();
        if let Some(s) = next.issuers.get_mut(issuer) {
            s.last_error = Some(error);
        }
        self.snapshot.store(Arc::new(next));
    }

    /// `Err(reason)` while `/readyz` should fail: with `readiness: wait`, some configured
    /// issuer has no usable CRL.
    pub fn readiness(&self, now: i64) -> Result<(), String> {
        let config = self.config();
        if config.crl.readiness == CrlReadiness::Serve || !config.crl_required() {
            return Ok(());
        }
        let snapshot = self.snapshot.load();
        let problems: Vec<String> = snapshot
            .issuers()
            .into_iter()
            .filter_map(|s| {
                let why = match &s.crl {
                    None => format!(
                        "no CRL of issuer '{}' loaded yet ({})",
                        s.config.name,
                        s.last_error.as_deref().unwrap_or("not fetched yet")
                    ),
                    Some(crl) => format!(
                        "the CRL of '{}' is {}",
                        s.config.name,
                        crl.unusable(&s.config.freshness, now)?
                    ),
                };
                Some(why)
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Set the per-issuer gauges (age, time to nextUpdate, entries, usable) for `now`;
    /// called before each `/metrics` scrape.
    pub fn export_gauges(&self, now: i64) {
        let snapshot = self.snapshot.load();
        for s in snapshot.issuers.values() {
            let name = s.config.name.as_str();
            let usable = s
                .crl
                .as_ref()
                .is_some_and(|c| c.unusable(&s.config.freshness, now).is_none());
            self.metrics
                .crl_usable
                .with_label_values(&[name])
                .set(i64::from(usable));
            if let Some(crl) = &s.crl {
                let m = &self.metrics;
                m.crl_age_seconds
                    .with_label_values(&[name])
                    .set((now - crl.this_update) as f64);
                m.crl_next_update_seconds
                    .with_label_values(&[name])
                    .set((crl.next_update - now) as f64);
                m.crl_entries
                    .with_label_values(&[name])
                    .set(crl.index.len() as i64);
            }
        }
    }

    /// The metrics this state records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests;
