//! Certificate revocation lists (decision table rows 7/7b): fetch, verify, index by
//! (CA key, serial), and judge freshness per CA key. Never keyed by a CA's name: a CRL
//! decides only for certificates whose chain the same key verified.
//!
//! The request path only reads an immutable [`RevocationSnapshot`] through an `ArcSwap` and
//! does one hash lookup; fetching, verifying and indexing happen in the background
//! (`refresh`). A CRL that fails any check never replaces one in force.

pub(crate) mod fetch;
pub(crate) mod high_water;
mod index;
mod parse;
pub mod refresh;
mod settings;
mod status;
mod verified;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub(crate) use high_water::HighWater;
pub use index::{IndexError, RevocationIndex};
pub use index::{RevocationIndexBuilder, Revoked};
pub use parse::CrlError;
pub(crate) use parse::{ParsedCrl, decode_crl};
pub(crate) use settings::CrlInputs;
pub use settings::{CrlIssuer, CrlSettings};
pub(crate) use settings::{CrlLocation, CrlReadiness, CrlSource, Freshness};
pub use status::CrlStatus;
pub(crate) use status::FailureClass;
pub use status::{NotReady, RefreshFailure, Staleness, UnknownCause};
pub use verified::VerifiedCrl;

use crate::cert::{Anchor, CaKey, Identity, Serial};
use crate::clock::rfc3339;
use crate::metrics::Metrics;

/// One CRL state per CA key configured under `crl.issuers`: every CA of the bundle whose
/// subject is a configured issuer's gets its own, and copies of one key share one. A CA's
/// name only says which configuration (sources, freshness) applies; the key says whose CRL
/// decides (a name is not a key).
fn configured_states(inputs: &CrlInputs) -> Vec<(CaKey, Arc<CrlIssuer>)> {
    let mut states: Vec<(CaKey, Arc<CrlIssuer>)> = Vec::new();
    for issuer in &inputs.settings.issuers {
        let issuer = Arc::new(issuer.clone());
        for ca in inputs.trust.cas() {
            if ca.subject_der == issuer.subject_der && !states.iter().any(|(k, _)| *k == ca.key) {
                states.push((ca.key, issuer.clone()));
            }
        }
    }
    states
}

// ---------------------------------------------------------------------------------------
// The state the request path reads.

/// What is known about the CRL of one CA key.
#[derive(Debug, Clone)]
pub(crate) struct IssuerState {
    /// The configuration of its issuer name.
    pub(crate) config: Arc<CrlIssuer>,
    /// The CA key whose CRLs this state holds.
    pub(crate) key: CaKey,
    /// The CRL in force, if one was ever loaded.
    pub(crate) crl: Option<Arc<VerifiedCrl>>,
    /// The last failure (fetch or verification), for messages and `/readyz`.
    pub(crate) last_error: Option<RefreshFailure>,
}

impl IssuerState {
    /// The CRL in force if it is usable at `now`; otherwise why none is.
    fn usable(&self, now: i64) -> Result<&VerifiedCrl, Box<UnknownCause>> {
        let staleness = match &self.crl {
            Some(crl) => match crl.unusable(&self.config.freshness, now) {
                None => return Ok(crl),
                Some(staleness) => Some(staleness),
            },
            None => None,
        };
        let (issuer, key, last_error) =
            (self.config.name.clone(), self.key, self.last_error.clone());
        Err(Box::new(match staleness {
            None => UnknownCause::NeverLoaded {
                issuer,
                key,
                last_error,
            },
            Some(staleness) => UnknownCause::Stale {
                issuer,
                key,
                staleness,
                last_error,
            },
        }))
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
        let crl = match state.usable(now) {
            Ok(crl) => crl,
            Err(cause) => return CrlStatus::Unknown(cause),
        };
        match crl.index.get(serial) {
            Some(r) => CrlStatus::Revoked {
                reason: r.reason.as_str(),
                revoked_at: r.revoked_at,
            },
            None => CrlStatus::NotListed,
        }
    }

    /// Every CA key's state, sorted by issuer name, then key.
    pub(crate) fn issuers(&self) -> Vec<&IssuerState> {
        let mut all: Vec<_> = self.states.values().collect();
        all.sort_by(|a, b| (&a.config.name, a.key).cmp(&(&b.config.name, b.key)));
        all
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
    pub(crate) fn as_str(self) -> &'static str {
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

/// The shared revocation state: the snapshot checks read, the inputs the background
/// refresher follows, and the high-water marks of the CRLs installed.
pub struct Revocation {
    snapshot: ArcSwap<RevocationSnapshot>,
    /// Serializes writers (readers never wait).
    write: Mutex<()>,
    inputs: watch::Sender<Arc<CrlInputs>>,
    metrics: Metrics,
    high_water: Mutex<HighWater>,
    /// Serializes writes of `crl.high_water_file`.
    high_water_file: tokio::sync::Mutex<()>,
}

impl Revocation {
    /// State for `inputs`, with no CRL loaded yet.
    pub(crate) fn new(inputs: CrlInputs, metrics: Metrics) -> Self {
        let snapshot = RevocationSnapshot {
            states: configured_states(&inputs)
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
        let (tx, _) = watch::channel(Arc::new(inputs));
        Revocation {
            snapshot: ArcSwap::from_pointee(snapshot),
            write: Mutex::new(()),
            inputs: tx,
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
    pub(crate) fn status(&self, id: &Identity, now: i64) -> CrlStatus {
        match id.chain() {
            Ok(anchor) => self.snapshot.load().status(anchor, id.serial(), now),
            Err(failure) => {
                CrlStatus::Unknown(Box::new(UnknownCause::ChainUnverified(failure.clone())))
            }
        }
    }

    /// The inputs the refresher follows.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<CrlInputs>> {
        self.inputs.subscribe()
    }

    /// The inputs in force.
    pub(crate) fn inputs(&self) -> Arc<CrlInputs> {
        self.inputs.borrow().clone()
    }

    /// Follow new inputs: CA keys no longer configured are dropped, new ones start empty,
    /// and a loaded CRL is kept only if its CA key is still in the bundle under the same
    /// configured issuer name.
    pub(crate) fn reconfigure(&self, inputs: CrlInputs) {
        let inputs = Arc::new(inputs);
        if self.inputs().loads_like(&inputs) {
            // Policies may have changed (readiness depends on them); CRLs and the refresher
            // need nothing.
            self.inputs.send_replace(inputs);
            return;
        }
        {
            let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.snapshot.load_full();
            let states = configured_states(&inputs)
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
        self.inputs.send_replace(inputs);
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
    pub(crate) fn record_failure(&self, issuer: &str, failure: RefreshFailure) {
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

    /// `Err` while `/readyz` should fail: with `readiness: wait`, some configured CA key has
    /// no usable CRL.
    pub fn readiness(&self, now: i64) -> Result<(), NotReady> {
        let inputs = self.inputs();
        if inputs.settings.readiness == CrlReadiness::Serve || !inputs.required {
            return Ok(());
        }
        let snapshot = self.snapshot.load();
        let causes: Vec<UnknownCause> = snapshot
            .issuers()
            .into_iter()
            .filter_map(|s| s.usable(now).err())
            .map(|cause| *cause)
            .collect();
        if causes.is_empty() {
            Ok(())
        } else {
            Err(NotReady(causes))
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
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Raise the high-water marks to those read from `crl.high_water_file` (at start).
    pub(crate) fn merge_high_water(&self, marks: &HighWater) {
        self.high_water().merge(marks);
    }

    /// Write the high-water marks to `path` (temp file + rename, so a crash never leaves
    /// half a file), raised first to what the file holds, so another process writing it
    /// (`certgate check`) never has its marks lowered; one writer at a time per process.
    pub(crate) async fn save_high_water(&self, path: &std::path::Path) -> std::io::Result<()> {
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
