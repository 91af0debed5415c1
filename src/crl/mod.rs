//! Certificate revocation lists (decision table rows 7/7b): fetch, verify, index by
//! (CA key, serial), and judge freshness per CA key. Never keyed by a CA's name: a CRL
//! decides only for certificates whose chain the same key verified.
//!
//! The request path only reads an immutable [`RevocationSnapshot`] through an `ArcSwap` and
//! does one hash lookup; fetching, verifying and indexing happen in the background
//! (`refresh`). A CRL that fails any check never replaces one in force.

pub mod fetch;
pub mod high_water;
mod index;
mod parse;
pub mod refresh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use high_water::HighWater;
pub use index::{IndexError, RevocationIndex, RevocationIndexBuilder, Revoked};
pub use parse::{CrlError, ParsedCrl, decode_crl};

use crate::authz::{CrlStatus, rfc3339};
use crate::cert::{Anchor, CaKey, Identity, Serial, TrustBundle};
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
    /// Where the last good CRL of each CA key is kept across restarts.
    pub cache_dir: Option<PathBuf>,
    /// Where the newest thisUpdate installed per CA key is recorded, outside `cache_dir`
    /// (set whenever `cache_dir` is; see [`HighWater`]).
    pub high_water_file: Option<PathBuf>,
    /// Follow HTTP redirects of CRL URLs (to the same host only, never https → http).
    pub follow_redirects: bool,
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
            high_water_file: None,
            follow_redirects: false,
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
    /// The key of the CA that verified it: the state it goes to.
    pub verified_by: CaKey,
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
        let by = parsed.verify_signature(trust.ca_certificates())?;
        let verified_by =
            trust
                .cas()
                .get(by)
                .map(|ca| ca.key)
                .ok_or_else(|| CrlError::UnknownIssuer {
                    issuer: parsed.issuer.clone(),
                })?;
        parsed.check_times(now, skew)?;
        let index = parsed.index()?;
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

/// One CRL state per CA key configured under `crl.issuers`: every CA of the bundle whose
/// subject is a configured issuer's gets its own, and copies of one key share one. A CA's
/// name only says which configuration (sources, freshness) applies; the key says whose CRL
/// decides (a name is not a key).
fn configured_states(config: &Config) -> Vec<(CaKey, Arc<CrlIssuer>)> {
    let mut states: Vec<(CaKey, Arc<CrlIssuer>)> = Vec::new();
    for issuer in &config.crl.issuers {
        let issuer = Arc::new(issuer.clone());
        for ca in config.trust.cas() {
            if ca.subject_der == issuer.subject_der && !states.iter().any(|(k, _)| *k == ca.key) {
                states.push((ca.key, issuer.clone()));
            }
        }
    }
    states
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

/// What kind of failure left a CA without a new CRL: the part of a failure `/readyz` shows
/// (URLs and transport errors stay in the logs and in [`RefreshFailure::detail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureClass {
    /// The source could not be read (HTTP status, timeout, transport, size limit, file I/O).
    FetchFailed,
    /// Bytes were read but are not a usable CRL of this CA (encoding, profile, signature…).
    Invalid,
    /// The CRL read is too old to use (max_age or nextUpdate).
    Stale,
    /// The CRL read is older than one already installed for this CA key, before a restart
    /// included (the high-water mark).
    OlderThanSeen,
}

impl FailureClass {
    /// Words for `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::FetchFailed => "fetch failed",
            FailureClass::Invalid => "invalid CRL",
            FailureClass::Stale => "stale CRL",
            FailureClass::OlderThanSeen => "CRL older than one already seen",
        }
    }
}

/// The last failed refresh of a CA's CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// What kind of failure.
    pub class: FailureClass,
    /// The whole story (source, error): for logs and deny messages.
    pub detail: String,
}

impl std::fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// What is known about the CRL of one CA key.
#[derive(Debug, Clone)]
pub struct IssuerState {
    /// The configuration of its issuer name.
    pub config: Arc<CrlIssuer>,
    /// The CA key whose CRLs this state holds.
    pub key: CaKey,
    /// The CRL in force, if one was ever loaded.
    pub crl: Option<Arc<VerifiedCrl>>,
    /// The last failure (fetch or verification), for messages and `/readyz`.
    pub last_error: Option<RefreshFailure>,
}

impl IssuerState {
    /// Why no CRL is usable at `now`, for `/readyz`: the CA and the kind of failure, never a
    /// URL or a transport error.
    fn unavailable(&self, now: i64) -> Option<String> {
        let class = self.last_error.as_ref().map(|e| e.class.as_str());
        let why = match &self.crl {
            None => class.unwrap_or("not fetched yet").to_owned(),
            Some(crl) => {
                crl.unusable(&self.config.freshness, now)?;
                match class {
                    Some(class) => format!("the CRL in force is stale, last refresh: {class}"),
                    None => "the CRL in force is stale".to_owned(),
                }
            }
        };
        Some(format!(
            "CRL of '{}' (key {}) unavailable: {why}",
            self.config.name, self.key
        ))
    }
}

/// Every configured CA key's CRL at one moment; replaced as a whole, never mutated.
#[derive(Debug, Clone, Default)]
pub struct RevocationSnapshot {
    states: HashMap<CaKey, IssuerState>,
}

impl RevocationSnapshot {
    /// The CRL status of the certificate `serial` whose chain `anchor` verified, at `now`.
    /// Only the CRL signed by that CA's key decides; no I/O, no allocation unless the answer
    /// is a deny.
    pub fn status(&self, anchor: &Anchor, serial: &Serial, now: i64) -> CrlStatus {
        let Some(state) = self
            .states
            .get(&anchor.key)
            .filter(|s| s.config.subject_der == anchor.subject_der)
        else {
            return CrlStatus::NotConfigured;
        };
        let (issuer, key) = (&state.config.name, state.key);
        let Some(crl) = &state.crl else {
            let why = state
                .last_error
                .as_ref()
                .map_or("not fetched yet", |e| e.detail.as_str());
            return CrlStatus::Unknown(format!(
                "no CRL of issuer '{issuer}' has been loaded (CA key {key}; {why})"
            ));
        };
        if let Some(why) = crl.unusable(&state.config.freshness, now) {
            return CrlStatus::Unknown(match &state.last_error {
                Some(err) => {
                    format!("the CRL of '{issuer}' (CA key {key}) is {why}; last refresh: {err}")
                }
                None => format!("the CRL of '{issuer}' (CA key {key}) is {why}"),
            });
        }
        match crl.index.get(serial) {
            Some(r) => CrlStatus::Revoked {
                reason: r.reason.as_str(),
                revoked_at: r.revoked_at,
            },
            None => CrlStatus::NotListed,
        }
    }

    /// Every CA key's state, sorted by issuer name, then key.
    pub fn issuers(&self) -> Vec<&IssuerState> {
        let mut all: Vec<_> = self.states.values().collect();
        all.sort_by(|a, b| (&a.config.name, a.key).cmp(&(&b.config.name, b.key)));
        all
    }

    /// The state of one CA key.
    pub fn state(&self, key: &CaKey) -> Option<&IssuerState> {
        self.states.get(key)
    }

    /// The `issuer` label of a state's metrics: the name, and the key when several CAs of
    /// the bundle share that name (so a rollover gives two series, not one that flips).
    fn metric_label(&self, state: &IssuerState) -> String {
        let shared = self
            .states
            .values()
            .filter(|s| s.config.name == state.config.name)
            .count()
            > 1;
        if shared {
            format!("{} [key {}]", state.config.name, state.key)
        } else {
            state.config.name.clone()
        }
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
    /// Nothing is in force, but a newer CRL of this CA key was installed before (perhaps
    /// before a restart): an old CRL replayed or planted in `cache_dir` is refused.
    OlderThanSeen,
    /// It is too old to be used at all.
    Stale,
    /// Its issuer, or the CA key that verified it, is no longer configured.
    Unconfigured,
}

impl Offered {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Offered::Installed => "updated",
            Offered::Unchanged => "unchanged",
            Offered::Older => "older",
            Offered::OlderThanSeen => "older_than_seen",
            Offered::Stale => "stale",
            Offered::Unconfigured => "unconfigured",
        }
    }
}

/// The shared revocation state: the snapshot checks read, the configuration the background
/// refresher follows, and the high-water marks of the CRLs installed.
pub struct Revocation {
    snapshot: ArcSwap<RevocationSnapshot>,
    /// Serializes writers (readers never wait).
    write: Mutex<()>,
    config: watch::Sender<Arc<Config>>,
    metrics: Metrics,
    high_water: Mutex<HighWater>,
    /// Serializes writes of `crl.high_water_file`.
    high_water_file: tokio::sync::Mutex<()>,
}

impl Revocation {
    /// State for `config`, with no CRL loaded yet.
    pub fn new(config: Arc<Config>, metrics: Metrics) -> Self {
        let snapshot = RevocationSnapshot {
            states: configured_states(&config)
                .into_iter()
                .map(|(key, issuer)| {
                    let state = IssuerState {
                        config: issuer,
                        key,
                        crl: None,
                        last_error: None,
                    };
                    (key, state)
                })
                .collect(),
        };
        let (tx, _) = watch::channel(config);
        Revocation {
            snapshot: ArcSwap::from_pointee(snapshot),
            write: Mutex::new(()),
            config: tx,
            metrics,
            high_water: Mutex::new(HighWater::default()),
            high_water_file: tokio::sync::Mutex::new(()),
        }
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<RevocationSnapshot>> {
        self.snapshot.load()
    }

    /// The CRL status of `id` at `now`: judged by the CRL of the CA whose key verified its
    /// chain (call after the chain check passed).
    pub fn status(&self, id: &Identity, now: i64) -> CrlStatus {
        match id.chain() {
            Ok(anchor) => self.snapshot.load().status(anchor, id.serial(), now),
            Err(failure) => CrlStatus::Unknown(format!("the chain is not verified: {failure}")),
        }
    }

    /// The configuration the refresher follows.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Follow a new configuration: CA keys no longer configured are dropped, new ones start
    /// empty, and a loaded CRL is kept only if its CA key is still in the bundle under the
    /// same configured issuer name.
    pub fn reconfigure(&self, config: Arc<Config>) {
        if same_crl_inputs(&self.config(), &config) {
            // Policies may have changed (readiness depends on them); CRLs and the refresher
            // need nothing.
            self.config.send_replace(config);
            return;
        }
        {
            let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.snapshot.load_full();
            let states = configured_states(&config)
                .into_iter()
                .map(|(key, issuer)| {
                    let kept = current
                        .states
                        .get(&key)
                        .filter(|s| s.config.subject_der == issuer.subject_der);
                    let state = IssuerState {
                        config: issuer,
                        key,
                        crl: kept.and_then(|s| s.crl.clone()),
                        last_error: kept.and_then(|s| s.crl.as_ref().and(s.last_error.clone())),
                    };
                    (key, state)
                })
                .collect();
            self.snapshot.store(Arc::new(RevocationSnapshot { states }));
        }
        self.metrics.crl_entries.reset();
        self.metrics.crl_age_seconds.reset();
        self.metrics.crl_next_update_seconds.reset();
        self.metrics.crl_usable.reset();
        self.config.send_replace(config);
    }

    /// Offer a verified CRL at `now`; it goes to the state of the CA key that verified it and
    /// replaces the one in force only if it is usable, newer, and not older than the newest
    /// CRL of that key ever installed (the high-water mark, which survives restarts).
    pub fn offer(&self, crl: VerifiedCrl, now: i64) -> Offered {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        // A refresh that started under a previous configuration may finish after a reload
        // that removed the CA whose key verified it: such a CRL is not for this bundle.
        let Some(state) = current
            .states
            .get(&crl.verified_by)
            .filter(|s| s.config.name == crl.issuer)
        else {
            return Offered::Unconfigured;
        };
        let key = state.key;
        let failed = |class, detail: String| {
            let mut next = (*current).clone();
            if let Some(s) = next.states.get_mut(&key) {
                s.last_error = Some(RefreshFailure { class, detail });
            }
            Arc::new(next)
        };
        if let Some(why) = crl.unusable(&state.config.freshness, now) {
            let detail = format!("{} served a CRL that is {why}", crl.source);
            self.snapshot.store(failed(FailureClass::Stale, detail));
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
        let seen = self.high_water().newest(&key);
        if outcome == Offered::Installed
            && let Some(seen) = seen.filter(|seen| crl.this_update < *seen)
        {
            tracing::warn!(
                issuer = %crl.issuer,
                key = %key.hex(),
                source = %crl.source,
                this_update = %rfc3339(crl.this_update),
                newest_seen = %rfc3339(seen),
                "CRL refused: older than the newest CRL already installed for this CA key"
            );
            let detail = format!(
                "{} holds a CRL older than the newest one already installed for this CA key \
                 (thisUpdate {} < {})",
                crl.source,
                rfc3339(crl.this_update),
                rfc3339(seen)
            );
            self.snapshot
                .store(failed(FailureClass::OlderThanSeen, detail));
            return Offered::OlderThanSeen;
        }
        let mut next = (*current).clone();
        if let Some(s) = next.states.get_mut(&key) {
            if outcome != Offered::Older {
                s.last_error = None;
            }
            if outcome == Offered::Installed {
                tracing::info!(
                    issuer = %crl.issuer,
                    key = %key.hex(),
                    source = %crl.source,
                    entries = crl.index.len(),
                    this_update = %rfc3339(crl.this_update),
                    next_update = %rfc3339(crl.next_update),
                    "CRL loaded"
                );
                self.high_water().raise(key, crl.this_update, &crl.issuer);
                s.crl = Some(Arc::new(crl));
            }
        }
        self.snapshot.store(Arc::new(next));
        outcome
    }

    fn high_water(&self) -> std::sync::MutexGuard<'_, HighWater> {
        self.high_water.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a failed refresh of a source of `issuer` (the CRL in force, if any, stays). A
    /// source is configured per issuer name, so every CA key of that name notes it.
    pub fn record_failure(&self, issuer: &str, failure: RefreshFailure) {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        if !current.states.values().any(|s| s.config.name == issuer) {
            return;
        }
        let mut next = (*current).clone();
        for s in next.states.values_mut() {
            if s.config.name == issuer {
                s.last_error = Some(failure.clone());
            }
        }
        self.snapshot.store(Arc::new(next));
    }

    /// `Err(reason)` while `/readyz` should fail: with `readiness: wait`, some configured
    /// CA key has no usable CRL. The reason names each such CA (name and key) and the kind of
    /// failure; URLs and error texts are in the logs.
    pub fn readiness(&self, now: i64) -> Result<(), String> {
        let config = self.config();
        if config.crl.readiness == CrlReadiness::Serve || !config.crl_required() {
            return Ok(());
        }
        let snapshot = self.snapshot.load();
        let problems: Vec<String> = snapshot
            .issuers()
            .into_iter()
            .filter_map(|s| s.unavailable(now))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Set the per-CA gauges (age, time to nextUpdate, entries, usable) for `now`; called
    /// before each `/metrics` scrape.
    pub fn export_gauges(&self, now: i64) {
        let snapshot = self.snapshot.load();
        for s in snapshot.states.values() {
            let label = snapshot.metric_label(s);
            let name = label.as_str();
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

    /// Raise the high-water marks to those read from `crl.high_water_file` (at start).
    pub fn merge_high_water(&self, marks: &HighWater) {
        self.high_water().merge(marks);
    }

    /// Write the high-water marks to `path` (temp file + rename, so a crash never leaves
    /// half a file), raised first to what the file holds, so another process writing it
    /// (`certgate check`) never has its marks lowered; one writer at a time per process.
    pub async fn save_high_water(&self, path: &std::path::Path) -> std::io::Result<()> {
        let _one_writer = self.high_water_file.lock().await;
        match high_water::read(path).await {
            Ok(on_disk) => self.merge_high_water(&on_disk),
            // Unreadable: rewritten whole from what this process knows.
            Err(e) => tracing::warn!(error = %e, "CRL high-water file replaced"),
        }
        let text = self.high_water().to_json();
        high_water::write_atomically(path, text.as_bytes()).await
    }
}

#[cfg(test)]
mod tests;
