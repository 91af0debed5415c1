//! The TTL cache in front of every store backend, on the hot path of each check.
//! It reuses answers (found or not found) for `ttl`, serves an older one only while the
//! backend fails and only within `stale_if_error`, and never caches an error.
//!
//! Built on `quick_cache` rather than moka for the size of an entry (~90 B of its own against
//! ~370 B; see the identity cache). With every client a distinct principal this cache is most
//! of certgate's memory, so an entry is small: the key is a 128-bit keyed hash of the
//! principal id or the serial's canonical bytes ([`super::cache_key`]), and the answer is
//! what the decision reads ([`super::facts`]), shared between entries where it is the same.
//! `in_flight` does what moka's per-key computation did: one backend call per key at a time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use quick_cache::sync::Cache;
use tokio::sync::Semaphore;

use super::cache_key::{Key, Keys};
use super::facts::{CertificateFacts, Facts, PrincipalFacts};
use super::{CacheSettings, Lookup, StoreError};
use crate::cert::Serial;
use crate::metrics::Metrics;

/// The clock edge: the only place this module reads the time.
fn now() -> Instant {
    Instant::now()
}

/// A cached answer: when the backend was asked (milliseconds since the cache's `epoch`: 8
/// bytes where an `Instant` takes 16, in every entry), and what it said (`None`: not found).
type Answer<T> = (u64, Option<Arc<T>>);

/// A backend call under way for one key: it has no permits, and the lookups waiting for the
/// call's answer wake when it is closed.
type Flight = Arc<Semaphore>;

/// The cache of one record kind, with its counters resolved once so a hit does no
/// label lookup.
struct CachedLookup<T> {
    keys: Keys,
    answers: Cache<Key, Answer<T>>,
    /// Keys whose backend call is under way.
    in_flight: Mutex<HashMap<Key, Flight>>,
    /// What the answers' times count from.
    epoch: Instant,
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

/// The right to ask the backend for one key; dropping it (answered, failed or cancelled)
/// lets the waiting lookups re-read the cache.
struct Leader<'a> {
    in_flight: &'a Mutex<HashMap<Key, Flight>>,
    key: Key,
    flight: Flight,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Unlisted before the waiters wake, so none of them finds this flight again.
        lock(self.in_flight).remove(&self.key);
        self.flight.close();
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> CachedLookup<T>
where
    T: Send + Sync + 'static,
{
    fn new(
        settings: &CacheSettings,
        metrics: &Metrics,
        cache: &str,
        operation: &'static str,
    ) -> Self {
        // Validation bounds both (1 day, 7 days); saturating anyway: a `Duration` add can
        // overflow.
        let stale_limit = settings.ttl.saturating_add(settings.stale_if_error);
        CachedLookup {
            keys: Keys::new(),
            answers: Cache::new(usize::try_from(settings.max_entries).unwrap_or(usize::MAX)),
            in_flight: Mutex::default(),
            epoch: now(),
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

    /// Milliseconds since `epoch`, now. Whole milliseconds: an answer's age reads up to a
    /// millisecond off either way.
    fn now_ms(&self) -> u64 {
        let since = now().saturating_duration_since(self.epoch).as_millis();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// The answer for `looked_up` if it is younger than the TTL now.
    fn peek(&self, looked_up: &[u8]) -> Option<Option<Arc<T>>> {
        self.fresh(&self.keys.of(looked_up), self.now_ms())
    }

    /// The answer for `key` if it is younger than the TTL at `at_ms`.
    fn fresh(&self, key: &Key, at_ms: u64) -> Option<Option<Arc<T>>> {
        let (asked_at, answer) = self.answers.get(key)?;
        (age(asked_at, at_ms) < self.ttl).then_some(answer)
    }

    async fn get<F, Fut>(&self, looked_up: &[u8], fetch: F) -> Result<Option<Arc<T>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Arc<T>>, StoreError>>,
    {
        let key = &self.keys.of(looked_up);
        if let Some(answer) = self.fresh(key, self.now_ms()) {
            self.hit.inc();
            return Ok(answer);
        }
        self.miss.inc();
        // Concurrent misses of one key wait for the first and then find its fresh answer
        // instead of asking the backend again; if it got none, the next one asks.
        let leader = loop {
            let waiting = {
                let mut in_flight = lock(&self.in_flight);
                match in_flight.get(key) {
                    Some(flight) => flight.clone(),
                    None => {
                        let flight = Flight::new(Semaphore::new(0));
                        in_flight.insert(*key, flight.clone());
                        break Leader {
                            in_flight: &self.in_flight,
                            key: *key,
                            flight,
                        };
                    }
                }
            };
            // No permit is ever added: this returns (with an error) once the flight closes.
            let _closed = waiting.acquire().await;
            if let Some(answer) = self.fresh(key, self.now_ms()) {
                return Ok(answer);
            }
        };
        let asked_at = self.now_ms();
        let previous = self.answers.get(key);
        let age = |(at, _): &Answer<T>| age(*at, asked_at);
        if let Some((_, answer)) = previous.as_ref().filter(|p| age(p) < self.ttl) {
            return Ok(answer.clone());
        }
        let timer = self.latency.start_timer();
        let fetched = fetch().await;
        timer.observe_duration();
        let answer = match fetched {
            Ok(answer) => {
                self.ok.inc();
                self.answers.insert(*key, (asked_at, answer.clone()));
                Ok(answer)
            }
            // A corrupt record is an answer, not an outage: the table says something
            // certgate cannot read, so the old answer must go, or a later outage would serve
            // it again from the stale window.
            Err(e @ StoreError::Corrupt { .. }) => {
                self.error.inc();
                self.answers.remove(key);
                Err(e)
            }
            Err(e) => {
                self.error.inc();
                match previous {
                    Some(p) if age(&p) < self.stale_limit => {
                        self.stale_served.inc();
                        Ok(p.1)
                    }
                    _ => Err(e),
                }
            }
        };
        drop(leader);
        answer
    }
}

/// How old an answer given at `asked_ms` is at `at_ms`.
fn age(asked_ms: u64, at_ms: u64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(asked_ms))
}

/// The cache every authorization check reads the store through.
pub struct CachedStore {
    inner: Arc<dyn Lookup>,
    principals: CachedLookup<PrincipalFacts>,
    /// Keyed by the serial's canonical bytes.
    certificates: CachedLookup<CertificateFacts>,
    facts: Facts,
}

impl CachedStore {
    /// Cache `inner` with `settings`, recording lookups and store calls in `metrics`.
    pub fn new(inner: Arc<dyn Lookup>, settings: CacheSettings, metrics: Metrics) -> Self {
        CachedStore {
            inner,
            principals: CachedLookup::new(&settings, &metrics, "principal", "get_principal"),
            certificates: CachedLookup::new(&settings, &metrics, "certificate", "get_certificate"),
            facts: Facts::new(),
        }
    }

    /// Label the backend-latency histogram with `backend` (`embedded`, `dynamodb`).
    pub(crate) fn labelled(mut self, metrics: &Metrics, backend: &str) -> Self {
        self.principals.label_backend(metrics, backend);
        self.certificates.label_backend(metrics, backend);
        self
    }

    /// What the store says of principal `id`, or `None` when it is not enrolled.
    pub async fn principal(&self, id: &str) -> Result<Option<Arc<PrincipalFacts>>, StoreError> {
        self.principals
            .get(id.as_bytes(), || async {
                let record = self.inner.get_principal(id).await?;
                Ok(record.map(|p| self.facts.principal(&p)))
            })
            .await
    }

    /// What the store says of certificate `serial`, or `None` when it is not registered.
    pub async fn certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<Arc<CertificateFacts>>, StoreError> {
        self.certificates
            .get(serial.as_bytes(), || async {
                let record = self.inner.get_certificate(serial).await?;
                Ok(record.map(|c| self.facts.certificate(&c)))
            })
            .await
    }

    /// What [`Self::certificate`] and [`Self::principal`] would answer for a check, when both
    /// answers are fresh in the cache: no backend call, no await, and nothing counted until
    /// the check reads them ([`Self::count_peeked`]), so a check that ends before the store
    /// counts no hit, as it would have asked for none.
    pub(crate) fn peek(
        &self,
        serial: &Serial,
        principal: &str,
    ) -> Option<crate::authz::StoreFacts> {
        let certificate = self.certificates.peek(serial.as_bytes())?;
        let principal = self.principals.peek(principal.as_bytes())?;
        Some(crate::authz::StoreFacts {
            certificate,
            principal,
        })
    }

    /// Count `peeked` as the two cache hits a check reading them makes.
    pub(crate) fn count_peeked(
        &self,
        peeked: crate::authz::StoreFacts,
    ) -> crate::authz::StoreFacts {
        self.certificates.hit.inc();
        self.principals.hit.inc();
        peeked
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

    fn principal_type(p: Option<Arc<PrincipalFacts>>) -> Option<String> {
        p.and_then(|p| p.principal_type().map(str::to_owned))
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
    async fn distinct_principals_and_serials_never_share_an_answer() {
        let backend = Arc::new(FakeStore::default());
        let settings = CacheSettings {
            ttl: Duration::from_secs(60),
            max_entries: 10_000,
            stale_if_error: Duration::ZERO,
        };
        let inner: Arc<dyn Lookup> = backend.clone();
        let cache = CachedStore::new(inner, settings, Metrics::new());
        for i in 0..2_000 {
            backend.put(&format!("p{i}"), &format!("type{i}"));
        }
        for _ in 0..2 {
            for i in 0..2_000 {
                let p = cache.principal(&format!("p{i}")).await.unwrap();
                assert_eq!(principal_type(p), Some(format!("type{i}")));
            }
        }
        // A prefix of an enrolled id, and the serial spelling the same bytes, are other lookups.
        assert!(cache.principal("p1").await.unwrap().is_some());
        assert!(cache.principal("p").await.unwrap().is_none());
        assert!(cache.certificate(&serial("7031")).await.unwrap().is_none());
        assert_eq!(backend.calls(), 2_000 + 2);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_lookup_does_not_hold_up_the_next() {
        let backend = Arc::new(FakeStore::slow(Duration::from_millis(200)));
        backend.put("alice", "user");
        let (cache, _) = cached(&backend, 60_000, 0);
        let cache = Arc::new(cache);
        let first = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.principal("alice").await.map(principal_type) })
        };
        sleep_ms(50).await;
        let waiting = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.principal("alice").await.map(principal_type) })
        };
        sleep_ms(20).await;
        first.abort();
        let answer = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("the waiting lookup finished")
            .unwrap();
        assert_eq!(answer.unwrap().as_deref(), Some("user"));
        assert_eq!(
            backend.calls(),
            2,
            "the waiter asked once the first was gone"
        );
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
