//! The TTL cache in front of every store backend, on the hot path of each check.
//! It reuses answers (found or not found) for `ttl`, serves an older one only while the
//! backend fails and only within `stale_if_error`, and never caches an error.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::Op;
use prometheus::{Histogram, IntCounter};

use super::{CacheSettings, CertificateRecord, Lookup, Principal, StoreError};
use crate::cert::Serial;
use crate::metrics::Metrics;

/// The clock edge: the only place this module reads the time.
fn now() -> Instant {
    Instant::now()
}

/// A cached answer: when the backend was asked, and what it said (`None`: not found).
type Answer<T> = (Instant, Option<Arc<T>>);

/// The cache of one record kind, with its counters resolved once so a hit does no
/// label lookup.
struct CachedLookup<T> {
    answers: Cache<String, Answer<T>>,
    ttl: Duration,
    /// `ttl + stale_if_error`: how long an answer may be served when the backend fails.
    stale_limit: Duration,
    hit: IntCounter,
    miss: IntCounter,
    ok: IntCounter,
    error: IntCounter,
    stale_served: IntCounter,
    /// Backend call latency; labelled with the backend by [`CachedStore::labelled`].
    latency: Histogram,
    operation: &'static str,
}

impl<T: Send + Sync + 'static> CachedLookup<T> {
    fn new(
        settings: &CacheSettings,
        metrics: &Metrics,
        cache: &str,
        operation: &'static str,
    ) -> Self {
        // Validation bounds both (1 day, 7 days); saturating and capped anyway, because moka
        // panics on a time-to-live over 1000 years and a `Duration` add can overflow.
        let stale_limit = settings
            .ttl
            .saturating_add(settings.stale_if_error)
            .min(Duration::from_secs(100 * 365 * 24 * 3600));
        CachedLookup {
            answers: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(stale_limit)
                .build(),
            ttl: settings.ttl,
            stale_limit,
            hit: metrics.cache_lookups.with_label_values(&[cache, "hit"]),
            miss: metrics.cache_lookups.with_label_values(&[cache, "miss"]),
            ok: metrics.store_calls.with_label_values(&[operation, "ok"]),
            error: metrics.store_calls.with_label_values(&[operation, "error"]),
            stale_served: metrics.store_stale_served.clone(),
            latency: metrics
                .store_lookup_seconds
                .with_label_values(&["unknown", operation]),
            operation,
        }
    }

    fn label_backend(&mut self, metrics: &Metrics, backend: &str) {
        self.latency = metrics
            .store_lookup_seconds
            .with_label_values(&[backend, self.operation]);
    }

    async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Option<Arc<T>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        if let Some((asked_at, answer)) = self.answers.get(key).await
            && now().saturating_duration_since(asked_at) < self.ttl
        {
            self.hit.inc();
            return Ok(answer);
        }
        self.miss.inc();
        // Set when the backend reads a corrupt record: the computation then removes the
        // entry and the error is returned after it.
        let corrupt = OnceLock::new();
        // Computations for one key run one at a time, so concurrent misses wait for the
        // first and then find its fresh answer instead of asking the backend again.
        let computed = self
            .answers
            .entry_by_ref(key)
            .and_try_compute_with(|entry| async {
                let asked_at = now();
                let previous = entry.map(|e| e.into_value());
                let age = |(at, _): &Answer<T>| asked_at.saturating_duration_since(*at);
                if previous.as_ref().is_some_and(|p| age(p) < self.ttl) {
                    return Ok(Op::Nop);
                }
                let timer = self.latency.start_timer();
                let fetched = fetch().await;
                timer.observe_duration();
                match fetched {
                    Ok(answer) => {
                        self.ok.inc();
                        Ok(Op::Put((asked_at, answer.map(Arc::new))))
                    }
                    // A corrupt record is an answer, not an outage: the table says
                    // something certgate cannot read, so the old answer must go, or a
                    // later outage would serve it again from the stale window.
                    Err(e @ StoreError::Corrupt { .. }) => {
                        self.error.inc();
                        let _ = corrupt.set(e);
                        Ok(Op::Remove)
                    }
                    Err(e) => {
                        self.error.inc();
                        match previous {
                            Some(p) if age(&p) < self.stale_limit => {
                                self.stale_served.inc();
                                Ok(Op::Nop)
                            }
                            _ => Err(e),
                        }
                    }
                }
            })
            .await?;
        if let Some(e) = corrupt.into_inner() {
            return Err(e);
        }
        // Every other branch above leaves an entry (`Nop` only over an existing one); should
        // moka ever say otherwise, fail closed rather than answer "not found".
        computed
            .into_entry()
            .map(|e| e.into_value().1)
            .ok_or_else(|| {
                StoreError::Unavailable(format!("cache lost the entry for '{key}'").into())
            })
    }
}

/// The cache every authorization check reads the store through.
pub struct CachedStore {
    inner: Arc<dyn Lookup>,
    principals: CachedLookup<Principal>,
    certificates: CachedLookup<CertificateRecord>,
}

impl CachedStore {
    /// Cache `inner` with `settings`, recording lookups and store calls in `metrics`.
    pub fn new(inner: Arc<dyn Lookup>, settings: CacheSettings, metrics: Metrics) -> Self {
        CachedStore {
            inner,
            principals: CachedLookup::new(&settings, &metrics, "principal", "get_principal"),
            certificates: CachedLookup::new(&settings, &metrics, "certificate", "get_certificate"),
        }
    }

    /// Label the backend-latency histogram with `backend` (`embedded`, `dynamodb`).
    pub(crate) fn labelled(mut self, metrics: &Metrics, backend: &str) -> Self {
        self.principals.label_backend(metrics, backend);
        self.certificates.label_backend(metrics, backend);
        self
    }

    /// The principal `id`, or `None` when it is not enrolled.
    pub async fn principal(&self, id: &str) -> Result<Option<Arc<Principal>>, StoreError> {
        self.principals
            .get(id, || self.inner.get_principal(id))
            .await
    }

    /// The certificate `serial`, or `None` when it is not registered.
    pub async fn certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<Arc<CertificateRecord>>, StoreError> {
        self.certificates
            .get(&serial.to_string(), || self.inner.get_certificate(serial))
            .await
    }

    /// The backend behind the cache, for the operations that are never cached.
    pub(crate) fn inner(&self) -> &Arc<dyn Lookup> {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::{FakeStore, serial};

    fn cached(backend: &Arc<FakeStore>, ttl_ms: u64, stale_ms: u64) -> (CachedStore, Metrics) {
        let settings = CacheSettings {
            ttl: Duration::from_millis(ttl_ms),
            max_entries: 100,
            stale_if_error: Duration::from_millis(stale_ms),
        };
        let metrics = Metrics::new();
        let inner: Arc<dyn Lookup> = backend.clone();
        (CachedStore::new(inner, settings, metrics.clone()), metrics)
    }

    fn principal_type(p: Option<Arc<Principal>>) -> Option<String> {
        p.and_then(|p| p.principal_type.clone())
    }

    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test]
    async fn hit_within_ttl_does_not_call_the_backend() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, metrics) = cached(&backend, 60_000, 0);
        for _ in 0..3 {
            let p = cache.principal("alice").await.unwrap();
            assert_eq!(principal_type(p).as_deref(), Some("user"));
        }
        assert_eq!(backend.calls(), 1);
        let lookups = |result| {
            metrics
                .cache_lookups
                .with_label_values(&["principal", result])
        };
        assert_eq!((lookups("hit").get(), lookups("miss").get()), (2, 1));
        let ok = metrics
            .store_calls
            .with_label_values(&["get_principal", "ok"]);
        assert_eq!(ok.get(), 1);
    }

    #[tokio::test]
    async fn not_found_is_cached_too() {
        let backend = Arc::new(FakeStore::default());
        let (cache, metrics) = cached(&backend, 60_000, 0);
        assert!(cache.principal("ghost").await.unwrap().is_none());
        assert!(cache.principal("ghost").await.unwrap().is_none());
        assert!(cache.certificate(&serial("0a")).await.unwrap().is_none());
        assert!(cache.certificate(&serial("0a")).await.unwrap().is_none());
        assert_eq!(backend.calls(), 2);
        let hits = metrics
            .cache_lookups
            .with_label_values(&["certificate", "hit"]);
        assert_eq!(hits.get(), 1);
    }

    #[tokio::test]
    async fn a_change_is_seen_after_the_ttl() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, _) = cached(&backend, 20, 0);
        assert_eq!(
            principal_type(cache.principal("alice").await.unwrap()).unwrap(),
            "user"
        );
        backend.put("alice", "admin");
        sleep_ms(50).await;
        assert_eq!(
            principal_type(cache.principal("alice").await.unwrap()).unwrap(),
            "admin"
        );
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test]
    async fn stale_answer_is_served_while_the_backend_fails_within_the_window() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, metrics) = cached(&backend, 20, 60_000);
        cache.principal("alice").await.unwrap();
        backend.fail(true);
        sleep_ms(50).await;
        for _ in 0..2 {
            let p = cache.principal("alice").await.unwrap();
            assert_eq!(principal_type(p).as_deref(), Some("user"));
        }
        assert_eq!(metrics.store_stale_served.get(), 2);
        let errors = metrics
            .store_calls
            .with_label_values(&["get_principal", "error"]);
        assert_eq!(errors.get(), 2);
        backend.fail(false);
        backend.put("alice", "admin");
        let p = cache.principal("alice").await.unwrap();
        assert_eq!(
            principal_type(p).as_deref(),
            Some("admin"),
            "recovers when the backend does"
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_is_never_answered_from_the_stale_window() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, metrics) = cached(&backend, 20, 60_000);
        cache.principal("alice").await.unwrap();
        backend.corrupt(true);
        sleep_ms(50).await;
        let err = cache.principal("alice").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        // The corrupt record replaced the good one: an outage now must not bring it back.
        backend.corrupt(false);
        backend.fail(true);
        let err = cache.principal("alice").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(metrics.store_stale_served.get(), 0);
    }

    #[tokio::test]
    async fn backend_failure_is_an_error_after_the_stale_window() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, metrics) = cached(&backend, 20, 20);
        cache.principal("alice").await.unwrap();
        backend.fail(true);
        sleep_ms(100).await;
        let err = cache.principal("alice").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(metrics.store_stale_served.get(), 0);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, _) = cached(&backend, 60_000, 60_000);
        backend.fail(true);
        assert!(cache.principal("alice").await.is_err());
        backend.fail(false);
        assert!(cache.principal("alice").await.unwrap().is_some());
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_ask_the_backend_once() {
        let backend = Arc::new(FakeStore::slow(Duration::from_millis(50)));
        backend.put("alice", "user");
        let (cache, _) = cached(&backend, 60_000, 0);
        let cache = Arc::new(cache);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move { cache.principal("alice").await.map(principal_type) });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap().unwrap().as_deref(), Some("user"));
        }
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test]
    async fn backend_calls_are_timed_by_backend_and_operation_and_hits_are_not() {
        let backend = Arc::new(FakeStore::default());
        backend.put("alice", "user");
        let (cache, metrics) = cached(&backend, 60_000, 0);
        let cache = cache.labelled(&metrics, "embedded");
        for _ in 0..3 {
            cache.principal("alice").await.unwrap();
        }
        let timed = |operation| {
            metrics
                .store_lookup_seconds
                .with_label_values(&["embedded", operation])
                .get_sample_count()
        };
        assert_eq!((timed("get_principal"), timed("get_certificate")), (1, 0));
    }
}
