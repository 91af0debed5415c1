//! One authorization check, end to end and wire-agnostic: identity cache → rows 1–6 → CRL
//! snapshot (rows 7/7b, in memory) → store (cached) → rows 8–12 → metrics and logs. Shared by the gRPC server, the HTTP forward-auth
//! endpoint and `certgate check`, so a dry run decides exactly as the server does.

mod decide;
mod identity_cache;
pub(crate) mod memo;
mod outcome;
mod span;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_answer;
#[cfg(test)]
mod tests_clock;
#[cfg(test)]
mod tests_now;
#[cfg(test)]
mod tests_render;

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::authz::{self, ReasonCode, StoreFacts};
use crate::cert::{self, CachedIdentity, CertEncoding, Identity};
use crate::config::Config;
use crate::crl::Revocation;
use crate::metrics::Metrics;
use crate::observe::{self, RequestMeta};
use crate::store::{CachedStore, StoreError};
use span::CheckSpan;

pub use outcome::Outcome;

/// A configuration generation with the caches that depend on it (parsed identities are only
/// valid for the trust bundle and identity rules they were built with).
pub(crate) struct Generation {
    /// The validated configuration.
    pub(crate) config: Arc<Config>,
    identities: identity_cache::IdentityCache,
}

impl Generation {
    /// A generation for `config`, with an empty identity cache.
    pub(crate) fn new(config: Config) -> Self {
        let ttl_secs = i64::try_from(config.identity_cache.ttl.as_secs()).unwrap_or(i64::MAX);
        let identities =
            identity_cache::IdentityCache::new(config.identity_cache.max_entries, ttl_secs);
        Generation {
            config: Arc::new(config),
            identities,
        }
    }
}

/// What the proxy told us about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckInput<'a> {
    /// The client certificate as forwarded (see `encoding`), if any.
    pub certificate: Option<&'a [u8]>,
    /// How `certificate` is carried: `Auto` for Envoy's `source.certificate` and files, or
    /// the format of a trusted forwarded-certificate header.
    pub encoding: CertEncoding,
    /// Policy named by the route (`context_extensions["policy"]`), if any.
    pub policy: Option<&'a str>,
    /// The request's host (`:authority`, or the forward-auth host header), port included or
    /// not: `policy_routes` match on it when `policy` is none.
    pub host: Option<&'a str>,
    /// HTTP method (`POST` for gRPC).
    pub method: &'a str,
    /// Request path as the proxy saw it (query string included or not); normalised here,
    /// with the policy's path mode, before anything is matched against it.
    pub path: &'a str,
    /// Why the adapter could not read the original request, if it could not (a forward-auth
    /// header missing, repeated or not UTF-8): the check denies `malformed_request` first.
    pub malformed: Option<RequestProblem<'a>>,
}

/// Why [`Checker::peer_identity`] has no identity for the connection's certificate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PeerMiss<E> {
    /// The certificate could not be had (the error of the caller's `der()`).
    Unavailable(E),
    /// What `der()` gave is another certificate than the connection's.
    NotTheConnections,
}

/// A request header the adapter needed but could not read unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProblem<'a> {
    /// The header is absent.
    Missing(&'a str),
    /// The header appears more than once.
    Repeated(&'a str),
    /// The header's value is not UTF-8 (or not visible ASCII where that is required).
    NotText(&'a str),
}

impl std::fmt::Display for RequestProblem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestProblem::Missing(h) => write!(f, "header {h} is missing"),
            RequestProblem::Repeated(h) => write!(f, "header {h} appears more than once"),
            RequestProblem::NotText(h) => write!(f, "header {h} is not valid text"),
        }
    }
}

/// The policy the request names, else the first `policy_routes` entry that admits it (by
/// host, method and the path as the upstream reads it), else `default_policy`; with the
/// index of the route that chose, if one did. A path that cannot be normalised is routed by
/// no entry; the chosen policy then refuses it.
fn choose_policy<'c>(config: &'c Config, input: &CheckInput<'c>) -> (&'c str, Option<usize>) {
    if let Some(named) = input.policy.filter(|p| !p.is_empty()) {
        return (named, None);
    }
    let routed = (!config.policy_routes.is_empty())
        .then(|| authz::path::normalize(input.path, authz::path::PathMode::Lenient).ok())
        .flatten()
        .and_then(|path| {
            config
                .policy_routes
                .choose(input.host, input.method, &path)
                .map(|(i, policy)| (policy, Some(i)))
        });
    routed.unwrap_or((&config.default_policy, None))
}

/// An HTTP method token as proxies send it: letters only (`GET`, `PROPFIND`), at most 32.
fn is_method(method: &str) -> bool {
    (1..=32).contains(&method.len()) && method.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Runs checks against the current configuration generation and the cached store.
pub struct Checker {
    generation: ArcSwap<Generation>,
    revocation: Arc<Revocation>,
    store: CachedStore,
    metrics: Metrics,
    /// Handles resolved once, so a check does no label lookup for them.
    hot: HotMetrics,
    /// Expiry log and certificate inventory of accepted certificates.
    watch: crate::inventory::Watch,
}

struct HotMetrics {
    identity_hit: IntCounter,
    identity_miss: IntCounter,
    check_seconds_allow: Histogram,
    check_seconds_deny: Histogram,
}

impl HotMetrics {
    fn new(metrics: &Metrics) -> Self {
        HotMetrics {
            identity_hit: metrics
                .cache_lookups
                .with_label_values(&["identity", "hit"]),
            identity_miss: metrics
                .cache_lookups
                .with_label_values(&["identity", "miss"]),
            check_seconds_allow: metrics.check_seconds.with_label_values(&["allow"]),
            check_seconds_deny: metrics.check_seconds.with_label_values(&["deny"]),
        }
    }
}

impl Checker {
    /// A checker for `config`, reading state through `store`.
    /// CRLs start unloaded: run [`crate::crl::refresh::spawn`] (or `load_once`) on
    /// [`Self::revocation`] to load them.
    pub fn new(config: Config, store: CachedStore, metrics: Metrics) -> Self {
        let generation = Generation::new(config);
        let revocation = Arc::new(Revocation::new(
            generation.config.crl_inputs(),
            metrics.clone(),
        ));
        let watch =
            crate::inventory::Watch::new(&generation.config.inventory, metrics.inventory.clone());
        Checker {
            generation: ArcSwap::from_pointee(generation),
            revocation,
            store,
            hot: HotMetrics::new(&metrics),
            metrics,
            watch,
        }
    }

    /// Queue the certificates this checker accepts into `queue` (the inventory writer).
    pub(crate) fn record_inventory_into(
        &mut self,
        queue: tokio::sync::mpsc::Sender<crate::store::Sighting>,
    ) {
        self.watch.record_into(queue);
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.generation.load().config.clone()
    }

    /// The generation in force. An adapter reads what it needs to build the input from it
    /// (trusted proxies, request header names) and decides with [`Self::check_in`], so that
    /// one request sees one configuration from reading to answering.
    pub(crate) fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Put a new configuration in force (parsed identities are dropped with the old one).
    pub fn replace_config(&self, config: Config) {
        let generation = Generation::new(config);
        self.revocation.reconfigure(generation.config.crl_inputs());
        self.generation.store(Arc::new(generation));
    }

    /// The CRL state (for the refresher, `/readyz` and `/metrics`).
    pub fn revocation(&self) -> &Arc<Revocation> {
        &self.revocation
    }

    /// The store cache (for the admin and CLI paths).
    pub fn store(&self) -> &CachedStore {
        &self.store
    }

    /// Parsed certificates held by the identity cache (expired ones included until they
    /// are evicted).
    pub fn cached_identities(&self) -> usize {
        self.generation.load().identities.len()
    }

    /// The metrics this checker records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decide one request with the generation in force. `now` is Unix seconds, read by the
    /// caller at the edge.
    pub async fn check(&self, input: CheckInput<'_>, now: i64) -> Outcome {
        let request_id = observe::request_id::request_id(None);
        let meta = RequestMeta::module(&request_id);
        self.check_in(&self.generation(), input, &meta, now).await
    }

    /// Decide one request with `generation`; the outcome carries it for rendering. Every log
    /// line of the check is inside its `check` span (with the request id); the decision log
    /// event, metrics and span attributes are recorded here.
    pub(crate) async fn check_in(
        &self,
        generation: &Generation,
        input: CheckInput<'_>,
        meta: &RequestMeta<'_>,
        now: i64,
    ) -> Outcome {
        self.check_with(generation, input, None, meta, now).await
    }

    /// [`Self::check_in`] with the identity already resolved by [`Self::peer_identity`]
    /// (`input.certificate` is not read).
    pub(crate) async fn check_peer_in(
        &self,
        generation: &Generation,
        input: CheckInput<'_>,
        identity: (CachedIdentity, bool),
        meta: &RequestMeta<'_>,
        now: i64,
    ) -> Outcome {
        self.check_with(generation, input, Some(identity), meta, now)
            .await
    }

    async fn check_with(
        &self,
        generation: &Generation,
        input: CheckInput<'_>,
        known: Option<(CachedIdentity, bool)>,
        meta: &RequestMeta<'_>,
        now: i64,
    ) -> Outcome {
        let span = CheckSpan::start(meta);
        let outcome = async {
            let resolved = match self.resolve(generation, &input, known, now) {
                Ok(resolved) => resolved,
                Err(outcome) => return outcome,
            };
            let decision = match self.certificate_rows(&resolved, &span, now) {
                Ok(id) => {
                    let facts = self
                        .store_facts(id)
                        .instrument(observe::otel::child_span("store_lookup"))
                        .await;
                    resolved.principal_rows(id, facts, &span)
                }
                Err(deny) => Err(deny),
            };
            resolved.outcome(decision)
        }
        .instrument(span.current())
        .await;
        self.finish(generation, outcome, &input, meta, &span, now)
    }

    /// [`Self::check_peer_in`] (or [`Self::check_in`] without a certificate) decided on the
    /// caller's thread, without a future, when that needs no store lookup: the store cache
    /// holds fresh answers for the certificate, or the decision ends before the store. The
    /// outcome, decision log event and metrics are those of the asynchronous check. `Err`
    /// hands `known` back when the store must be asked: nothing was done or recorded then.
    pub(crate) fn check_now(
        &self,
        generation: &Generation,
        input: CheckInput<'_>,
        known: Option<(CachedIdentity, bool)>,
        meta: &RequestMeta<'_>,
        now: i64,
    ) -> Result<Outcome, Option<(CachedIdentity, bool)>> {
        let peeked = match known.as_ref().map(|(identity, _)| identity.as_ref()) {
            Some(Ok(id)) => match self.store.peek(id.serial(), store_key(id)) {
                Some(facts) => Some(facts),
                None => return Err(known),
            },
            Some(Err(_)) => None,
            // A forwarded certificate is parsed by the check, and may need the store.
            None if input.certificate.is_some() => return Err(known),
            None => None,
        };
        let span = CheckSpan::start(meta);
        let outcome = span.current().in_scope(|| {
            let resolved = match self.resolve(generation, &input, known, now) {
                Ok(resolved) => resolved,
                Err(outcome) => return outcome,
            };
            let decision = self.certificate_rows(&resolved, &span, now).and_then(|id| {
                // Only a parsed certificate reaches the store, and its facts were peeked;
                // were they not, the check fails closed as a store outage would.
                let facts = peeked.map(|facts| self.store.count_peeked(facts));
                let facts = facts.ok_or_else(|| {
                    StoreError::Unavailable("store answers not peeked".to_owned().into())
                });
                resolved.principal_rows(id, facts, &span)
            });
            resolved.outcome(decision)
        });
        Ok(self.finish(generation, outcome, &input, meta, &span, now))
    }

    /// What every check records once decided: shadow mode, metrics, the inventory sighting,
    /// the decision log event and the span's attributes.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        generation: &Generation,
        mut outcome: Outcome,
        input: &CheckInput<'_>,
        meta: &RequestMeta<'_>,
        span: &CheckSpan<'_, '_>,
        now: i64,
    ) -> Outcome {
        let config = &generation.config;
        // Shadow mode never lends a request an identity it does not have: rows 1-3 and
        // requests that cannot be judged stay denied.
        if let Err(deny) = &outcome.decision
            && config.observe.shadow_policies.contains(&outcome.policy)
            && !matches!(
                deny.reason,
                ReasonCode::NoClientCertificate
                    | ReasonCode::MalformedCertificate
                    | ReasonCode::UntrustedIssuer
                    | ReasonCode::MalformedRequest
            )
        {
            outcome.shadow = true;
        }
        let (result, check_seconds) = if outcome.decision.is_ok() {
            ("allow", &self.hot.check_seconds_allow)
        } else {
            ("deny", &self.hot.check_seconds_deny)
        };
        let reason = outcome
            .decision
            .as_ref()
            .err()
            .map_or("", |d| d.reason.as_str());
        let policy_label = if config.policies.contains_key(&outcome.policy) {
            outcome.policy.as_str()
        } else {
            "unknown"
        };
        let principal_type = outcome
            .decision
            .as_ref()
            .map_or("", |g| g.principal_type.as_str());
        let mode = if outcome.shadow { "shadow" } else { "enforce" };
        self.metrics
            .decisions
            .with_label_values(&[result, reason, policy_label, principal_type, mode])
            .inc();
        let elapsed = span.started.elapsed();
        check_seconds.observe(elapsed.as_secs_f64());
        if outcome.decision.is_ok()
            && let (Some(id), Some(policy)) =
                (outcome.identity(), config.policies.get(&outcome.policy))
        {
            self.watch.accepted(id, policy, now);
        }
        // The decision event first: its own keys say all this. The span's copy is for traces
        // only: recording into a span makes the JSON log layer re-encode its fields, a cost
        // every check would pay with tracing off.
        if observe::decision_log::wanted(&outcome) {
            let span = span.open();
            span.in_scope(|| observe::decision_log::record(span, &outcome, input, meta, elapsed));
        }
        if let Some(span) = span.opened()
            && observe::otel::enabled()
        {
            span.record("decision", result);
            span.record("reason", reason);
            span.record("policy", policy_label);
            span.record("principal", outcome.principal().unwrap_or(""));
            span.record("mode", mode);
        }
        outcome
    }
    /// The parsed identity for a forwarded certificate, parsed at most once per generation.
    /// `None` when a forwarded header says no certificate was presented.
    fn identity(
        &self,
        generation: &Generation,
        raw: &[u8],
        encoding: CertEncoding,
        now: i64,
    ) -> Option<(CachedIdentity, bool)> {
        let key = generation
            .identities
            .key(identity_cache::Lookup::Forwarded(encoding, raw));
        if let Some(hit) = generation.identities.get(&key, now) {
            self.hot.identity_hit.inc();
            return Some((hit, true));
        }
        self.hot.identity_miss.inc();
        let config = &generation.config;
        let _parse = observe::otel::child("cert_parse");
        let parsed = match cert::extract(encoding, raw) {
            Ok(None) => return None,
            Ok(Some(bytes)) => cert::identify(&bytes, &config.identity, &config.trust, now),
            Err(malformed) => Err(malformed),
        };
        let parsed = Arc::new(parsed);
        generation.identities.insert(key, parsed.clone(), now);
        Some((parsed, false))
    }

    /// The parsed identity of the certificate the connection presented, which the TLS layer
    /// knows by the SHA-256 of its DER (`sha256`): from the identity cache by that digest, so
    /// a hit reads nothing else, or parsed from `der()` on a miss. A `der()` that is not the
    /// certificate with that digest is refused (the two can never disagree) and not cached.
    ///
    /// A digest and a forwarded certificate are different kinds of lookup in the cache
    /// ([`identity_cache::Lookup`]), so a digest's entry never stands for anything but the
    /// DER it digests.
    pub(crate) fn peer_identity<E>(
        &self,
        generation: &Generation,
        sha256: &[u8; 32],
        der: impl FnOnce() -> Result<Vec<u8>, E>,
        now: i64,
    ) -> Result<(CachedIdentity, bool), PeerMiss<E>> {
        let key = generation
            .identities
            .key(identity_cache::Lookup::Digest(sha256));
        if let Some(hit) = generation.identities.get(&key, now) {
            self.hot.identity_hit.inc();
            return Ok((hit, true));
        }
        self.hot.identity_miss.inc();
        let der = der().map_err(PeerMiss::Unavailable)?;
        if Sha256::digest(&der).as_slice() != sha256 {
            return Err(PeerMiss::NotTheConnections);
        }
        let config = &generation.config;
        let _parse = observe::otel::child("cert_parse");
        let parsed = Arc::new(cert::identify(&der, &config.identity, &config.trust, now));
        generation.identities.insert(key, parsed.clone(), now);
        Ok((parsed, false))
    }

    async fn store_facts(&self, id: &Identity) -> Result<StoreFacts, StoreError> {
        let (certificate, principal) = tokio::join!(
            self.store.certificate(id.serial()),
            self.store.principal(store_key(id))
        );
        Ok(StoreFacts {
            certificate: certificate?,
            principal: principal?,
        })
    }
}

/// The principal the store is asked about for `id`.
fn store_key(id: &Identity) -> &str {
    id.principal_id().unwrap_or_default()
}
