//! The background refresher: one task per configured source, restarted when the
//! configuration changes. Each round fetches (conditionally), verifies and indexes off the
//! async workers (`spawn_blocking`), and offers the result to the shared state; failures back
//! off exponentially up to a cap, successes wait the refresh interval, both with ±10% jitter
//! so replicas do not fetch in step. This is the clock edge of the CRL code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fetch::{self, FetchError, Fetched, Validators};
use super::{
    CrlError, CrlInputs, CrlIssuer, CrlLocation, CrlSource, FailureClass, Offered, RefreshFailure,
    Revocation, VerifiedCrl, high_water,
};
use crate::cert::CaKey;
use crate::clock;

/// The outcome of one refresh round of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum RoundOutcome {
    /// Fetched and verified; what the state did with it.
    Verified(Offered),
    /// 304, or the file is unchanged.
    NotModified,
    /// Fetched, but unusable.
    Invalid(String),
    /// Not fetched.
    Failed(String),
}

impl RoundOutcome {
    /// Metric label of `certgate_crl_fetches_total{outcome}`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            RoundOutcome::Verified(o) => o.as_str(),
            RoundOutcome::NotModified => "not_modified",
            RoundOutcome::Invalid(_) => "invalid",
            RoundOutcome::Failed(_) => "error",
        }
    }

    /// Whether the next round should come after the failure back-off.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            RoundOutcome::Invalid(_)
                | RoundOutcome::Failed(_)
                | RoundOutcome::Verified(Offered::Stale | Offered::OlderThanSeen)
        )
    }
}

/// Start the refresher for `revocation`; it runs until the runtime stops.
pub fn spawn(revocation: Arc<Revocation>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(revocation))
}

/// Follow the configuration: (re)start one loop per source whenever it changes.
pub async fn run(revocation: Arc<Revocation>) {
    let mut inputs_rx = revocation.subscribe();
    loop {
        let inputs = inputs_rx.borrow_and_update().clone();
        let mut tasks = tokio::task::JoinSet::new();
        if !inputs.settings.issuers.is_empty() {
            load_persisted(&revocation, &inputs).await;
            match SourceTask::all(&revocation, &inputs) {
                Ok(sources) => {
                    for source in sources {
                        tasks.spawn(source_loop(source));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot build the CRL HTTP client"),
            }
        }
        // Reloads that change only policies keep the loops (and their conditional-GET state).
        loop {
            if inputs_rx.changed().await.is_err() {
                return;
            }
            if !inputs.loads_like(&inputs_rx.borrow()) {
                break;
            }
        }
        tasks.abort_all();
    }
}

/// Fetch every source once, concurrently (for `certgate check` and tests), after loading
/// persisted CRLs.
pub(crate) async fn load_once(revocation: &Arc<Revocation>) {
    let inputs = revocation.inputs();
    load_persisted(revocation, &inputs).await;
    let Ok(sources) = SourceTask::all(revocation, &inputs) else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        tasks.spawn(async move { source.round(&mut Validators::default()).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// What the rounds of one source need, owned so that a task can hold it.
struct SourceTask {
    revocation: Arc<Revocation>,
    inputs: Arc<CrlInputs>,
    issuer: Arc<CrlIssuer>,
    source: CrlSource,
    client: reqwest::Client,
}

impl SourceTask {
    /// One per configured source, sharing one HTTP client.
    fn all(
        revocation: &Arc<Revocation>,
        inputs: &Arc<CrlInputs>,
    ) -> Result<Vec<SourceTask>, FetchError> {
        let settings = &inputs.settings;
        let client = fetch::client(settings)?;
        let mut all = Vec::new();
        for issuer in &settings.issuers {
            let issuer = Arc::new(issuer.clone());
            all.extend(issuer.sources.iter().map(|source| SourceTask {
                revocation: revocation.clone(),
                inputs: inputs.clone(),
                issuer: issuer.clone(),
                source: source.clone(),
                client: client.clone(),
            }));
        }
        Ok(all)
    }

    async fn round(&self, validators: &mut Validators) -> RoundOutcome {
        refresh_once(
            &self.revocation,
            &self.inputs,
            &self.issuer,
            &self.source,
            &self.client,
            validators,
        )
        .await
    }
}

async fn source_loop(task: SourceTask) {
    let mut validators = Validators::default();
    let settings = &task.inputs.settings;
    let mut backoff = settings.retry_backoff;
    loop {
        let outcome = task.round(&mut validators).await;
        let delay = if outcome.is_failure() {
            let d = backoff.min(task.source.refresh_interval);
            backoff = (backoff * 2).min(settings.max_retry_backoff);
            d
        } else {
            backoff = settings.retry_backoff;
            task.source.refresh_interval
        };
        tokio::time::sleep(jitter(delay)).await;
    }
}

/// One round for one source: fetch, verify, offer, count, log.
pub(crate) async fn refresh_once(
    revocation: &Revocation,
    inputs: &Arc<CrlInputs>,
    issuer: &Arc<CrlIssuer>,
    source: &CrlSource,
    client: &reqwest::Client,
    validators: &mut Validators,
) -> RoundOutcome {
    let label = source.label();
    let settings = &inputs.settings;
    let metrics = revocation.metrics();
    let outcome = match fetch::fetch(
        client,
        source,
        validators,
        settings.max_size,
        settings.timeout,
    )
    .await
    {
        Err(e) => {
            if matches!(e, FetchError::TooLarge { .. }) {
                metrics
                    .crl_verification_failures
                    .with_label_values(&[issuer.name.as_str(), "too_large"])
                    .inc();
            }
            RoundOutcome::Failed(e.to_string())
        }
        Ok(Fetched::NotModified) => RoundOutcome::NotModified,
        Ok(Fetched::Body(bytes, new_validators)) => {
            *validators = new_validators;
            match verify(inputs, issuer, bytes, label.clone()).await {
                Ok(Ok((crl, bytes))) => {
                    let key = crl.verified_by;
                    let offered = revocation.offer(crl, clock::unix_now());
                    if offered == Offered::Installed {
                        // The mark first: a crash between the two leaves a persisted CRL
                        // older than the mark (refused at start, fail-secure), never the
                        // other way round.
                        let recorded = save_high_water(revocation, inputs).await;
                        if let (true, Some(dir), CrlLocation::Url(_)) =
                            (recorded, &settings.cache_dir, &source.location)
                        {
                            persist(dir, &key, &bytes).await;
                        }
                    }
                    RoundOutcome::Verified(offered)
                }
                Ok(Err(e)) => {
                    metrics
                        .crl_verification_failures
                        .with_label_values(&[issuer.name.as_str(), e.kind()])
                        .inc();
                    RoundOutcome::Invalid(e.to_string())
                }
                Err(e) => RoundOutcome::Failed(format!("verification task failed: {e}")),
            }
        }
    };
    metrics
        .crl_fetches
        .with_label_values(&[label.as_str(), outcome.label()])
        .inc();
    let streak = metrics
        .crl_consecutive_failures
        .with_label_values(&[label.as_str()]);
    if outcome.is_failure() {
        streak.inc();
    } else {
        streak.set(0);
    }
    match &outcome {
        RoundOutcome::Failed(e) | RoundOutcome::Invalid(e) => {
            tracing::warn!(issuer = %issuer.name, source = %label, error = %e, "CRL refresh failed; the CRL in force (if any) stays");
            let class = match outcome {
                RoundOutcome::Failed(_) => FailureClass::FetchFailed,
                _ => FailureClass::Invalid,
            };
            let detail = format!("{label}: {e}");
            revocation.record_failure(&issuer.name, RefreshFailure { class, detail });
        }
        RoundOutcome::Verified(Offered::Stale) => {
            tracing::warn!(issuer = %issuer.name, source = %label, "CRL source serves a stale CRL");
        }
        RoundOutcome::Verified(Offered::Older) => {
            tracing::info!(issuer = %issuer.name, source = %label, "CRL source serves an older CRL than the one in force");
        }
        _ => {
            tracing::debug!(issuer = %issuer.name, source = %label, outcome = outcome.label(), "CRL refreshed")
        }
    }
    outcome
}

/// Where the last good CRL of the CA key `key` is kept.
pub(crate) fn persisted_path(dir: &Path, key: &CaKey) -> PathBuf {
    dir.join(format!("{}.crl", &key.hex()[..24]))
}

/// Write atomically (temp file + rename) so a crash never leaves half a CRL. The bytes as
/// served (DER or PEM); they are verified again, and held to the high-water mark, when loaded.
async fn persist(dir: &Path, key: &CaKey, bytes: &[u8]) {
    let path = persisted_path(dir, key);
    if let Err(e) = high_water::write_atomically(&path, bytes).await {
        tracing::warn!(path = %path.display(), error = %e, "cannot persist the CRL");
    }
}

/// Record the high-water marks in `crl.high_water_file`, if configured; false when that
/// failed: then the CRL is not persisted either, so the recorded mark always covers what
/// `cache_dir` holds.
async fn save_high_water(revocation: &Revocation, inputs: &CrlInputs) -> bool {
    let Some(path) = &inputs.settings.high_water_file else {
        return true;
    };
    match revocation.save_high_water(path).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot record the CRL high-water mark; the CRL is used but not persisted");
            false
        }
    }
}

/// Read `crl.high_water_file` into the state. `false` when the file exists but cannot be
/// used: then nothing is loaded from `cache_dir` (a mark that cannot be read cannot protect
/// it), and fetched CRLs alone count.
async fn load_high_water(revocation: &Revocation, inputs: &CrlInputs) -> bool {
    let Some(path) = &inputs.settings.high_water_file else {
        return true;
    };
    match high_water::read(path).await {
        Ok(marks) => {
            revocation.merge_high_water(&marks);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "CRL high-water file unusable: persisted CRLs are not loaded; fix or delete it");
            false
        }
    }
}

/// Load the persisted CRLs of CA keys that have none in force yet, after the high-water
/// marks. They are verified like any other, an older one than the mark is refused, and a
/// fresher fetched CRL replaces them.
async fn load_persisted(revocation: &Revocation, inputs: &Arc<CrlInputs>) {
    // The marks first, with or without a cache: they hold fetched CRLs to them too.
    let marks_usable = load_high_water(revocation, inputs).await;
    let (Some(dir), true) = (&inputs.settings.cache_dir, marks_usable) else {
        return;
    };
    let empty: Vec<_> = revocation
        .snapshot()
        .issuers()
        .into_iter()
        .filter(|s| s.crl.is_none())
        .map(|s| (s.key, s.config.clone()))
        .collect();
    for (key, issuer) in empty {
        let path = persisted_path(dir, &key);
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        let label = format!("{} (persisted)", path.display());
        match verify(inputs, &issuer, bytes, label).await {
            Ok(Ok((crl, _))) => {
                let outcome = revocation.offer(crl, clock::unix_now());
                tracing::info!(path = %path.display(), outcome = outcome.as_str(), "persisted CRL");
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "persisted CRL not usable")
            }
            Err(_) => {}
        }
    }
}

/// Verify `bytes` as a CRL of `issuer` off the async workers, handing the bytes back for
/// persisting; `Err` when the blocking task died.
async fn verify(
    inputs: &Arc<CrlInputs>,
    issuer: &Arc<CrlIssuer>,
    bytes: Vec<u8>,
    label: String,
) -> Result<Result<(VerifiedCrl, Vec<u8>), CrlError>, tokio::task::JoinError> {
    let (inputs, issuer) = (inputs.clone(), issuer.clone());
    tokio::task::spawn_blocking(move || {
        let loaded = VerifiedCrl::load(
            &bytes,
            &inputs.trust,
            &issuer,
            clock::unix_now(),
            inputs.clock_skew_secs,
            &label,
        );
        loaded.map(|crl| (crl, bytes))
    })
    .await
}

/// `delay` ± 10%, from a per-call random seed (std's `RandomState` is randomly keyed).
fn jitter(delay: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let factor = 0.9 + (r % 2001) as f64 / 10_000.0;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..200 {
            let d = jitter(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
