//! One authorization check, end to end and wire-agnostic: identity cache → rows 1–6 → store
//! (cached) → rows 8–12 → metrics and logs. Shared by the gRPC server, the HTTP forward-auth
//! endpoint and `certgate check`, so a dry run decides exactly as the server does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::authz::{self, Deny, Grant, ReasonCode, RequestInfo, StoreFacts};
use crate::cert::{self, CachedIdentity, Identity};
use crate::config::{Config, DenyDetail, HeaderNames};
use crate::metrics::Metrics;
use crate::store::{CachedStore, StoreError};

/// A configuration generation with the caches that depend on it (parsed identities are only
/// valid for the trust bundle and identity rules they were built with).
pub struct Generation {
    /// The validated configuration.
    pub config: Arc<Config>,
    identities: moka::sync::Cache<[u8; 32], CachedIdentity>,
}

impl Generation {
    /// A generation for `config`, with an empty identity cache.
    pub fn new(config: Config) -> Self {
        let identities = moka::sync::Cache::builder()
            .max_capacity(config.identity_cache.max_entries)
            .time_to_live(config.identity_cache.ttl.max(Duration::from_secs(1)))
            .build();
        Generation {
            config: Arc::new(config),
            identities,
        }
    }
}

/// What the proxy told us about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckInput<'a> {
    /// The client certificate as forwarded (URL-encoded PEM, PEM or DER), if any.
    pub certificate: Option<&'a [u8]>,
    /// Policy named by the route (`context_extensions["policy"]`), if any.
    pub policy: Option<&'a str>,
    /// HTTP method (`POST` for gRPC).
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
}

/// The result of a check, with everything needed to answer and to explain it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Allow (with the grant) or deny.
    pub decision: Result<Grant, Deny>,
    /// Policy that was applied (or asked for, when unknown).
    pub policy: String,
    /// Parsed certificate, when one was present and parsed.
    pub identity: Option<Arc<Result<Identity, cert::MalformedCertificate>>>,
}

impl Outcome {
    /// The parsed identity, if the certificate parsed.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref().and_then(|r| r.as_ref().ok())
    }

    /// The principal id, when the certificate yielded one.
    pub fn principal(&self) -> Option<&str> {
        self.identity().and_then(|i| i.principal_id.as_deref())
    }

    /// HTTP status of the answer (200 on allow).
    pub fn http_status(&self) -> u16 {
        match &self.decision {
            Ok(_) => 200,
            Err(deny) => deny.reason.http_status(),
        }
    }

    /// Identity headers to set upstream on allow (empty on deny).
    pub fn allow_headers<'h>(&self, names: &'h HeaderNames) -> Vec<(&'h str, String)> {
        let (Ok(grant), Some(id)) = (&self.decision, self.identity()) else {
            return Vec::new();
        };
        let mut headers = Vec::with_capacity(7);
        headers.push((
            names.principal.as_str(),
            id.principal_id.clone().unwrap_or_default(),
        ));
        headers.push((names.principal_type.as_str(), grant.principal_type.clone()));
        headers.push((names.roles.as_str(), grant.roles.join(",")));
        if let Some(cn) = &id.common_name {
            headers.push((names.cn.as_str(), cn.clone()));
        }
        headers.push((names.serial.as_str(), id.serial.clone()));
        headers.push((names.sha256.as_str(), id.sha256.clone()));
        if let Some(spiffe) = &id.spiffe_id {
            headers.push((names.spiffe_id.as_str(), spiffe.clone()));
        }
        headers
    }

    /// JSON body of a deny, `{"error","message","request_id"}` (SPEC 4).
    pub fn deny_body(&self, detail: DenyDetail, request_id: &str) -> Option<String> {
        let deny = self.decision.as_ref().err()?;
        let message = match detail {
            DenyDetail::Full => deny.message.as_str(),
            DenyDetail::Reason => generic_message(deny.reason.http_status()),
        };
        Some(
            serde_json::json!({
                "error": deny.reason.as_str(),
                "message": message,
                "request_id": request_id,
            })
            .to_string(),
        )
    }
}

fn generic_message(status: u16) -> &'static str {
    match status {
        401 => "client certificate not accepted",
        403 => "access denied",
        _ => "authorization temporarily unavailable",
    }
}

/// Runs checks against the current configuration generation and the cached store.
pub struct Checker {
    generation: ArcSwap<Generation>,
    store: CachedStore,
    metrics: Metrics,
}

impl Checker {
    /// A checker for `config`, reading state through `store`.
    pub fn new(config: Config, store: CachedStore, metrics: Metrics) -> Self {
        Checker {
            generation: ArcSwap::from_pointee(Generation::new(config)),
            store,
            metrics,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.generation.load().config.clone()
    }

    /// Put a new configuration in force (parsed identities are dropped with the old one).
    pub fn replace_config(&self, config: Config) {
        self.generation.store(Arc::new(Generation::new(config)));
    }

    /// The store cache (for the admin and CLI paths).
    pub fn store(&self) -> &CachedStore {
        &self.store
    }

    /// The metrics this checker records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decide one request. `now` is Unix seconds, read by the caller at the edge.
    pub async fn check(&self, input: CheckInput<'_>, now: i64) -> Outcome {
        let started = Instant::now();
        let generation = self.generation.load_full();
        let outcome = self.decide(&generation, input, now).await;
        let config = &generation.config;
        let result = if outcome.decision.is_ok() {
            "allow"
        } else {
            "deny"
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
        self.metrics
            .decisions
            .with_label_values(&[result, reason, policy_label, principal_type])
            .inc();
        self.metrics
            .check_seconds
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        if let Err(deny) = &outcome.decision {
            tracing::info!(
                decision = "deny",
                reason = deny.reason.as_str(),
                message = %deny.message,
                policy = %outcome.policy,
                principal = outcome.principal().unwrap_or(""),
                serial = outcome.identity().map_or("", |i| i.serial.as_str()),
                method = input.method,
                path = input.path,
                "request denied"
            );
        }
        outcome
    }

    async fn decide(&self, generation: &Generation, input: CheckInput<'_>, now: i64) -> Outcome {
        let config = &generation.config;
        let policy_name = input
            .policy
            .filter(|p| !p.is_empty())
            .unwrap_or(&config.default_policy);
        let deny = |reason, message: String| Outcome {
            decision: Err(Deny::new(reason, message)),
            policy: policy_name.to_owned(),
            identity: None,
        };
        let Some(policy) = config.policies.get(policy_name) else {
            return deny(
                ReasonCode::UnknownPolicy,
                format!("policy '{policy_name}' is not defined in the configuration"),
            );
        };
        let raw = match input.certificate {
            Some(raw) if !raw.trim_ascii().is_empty() => raw,
            _ => {
                return deny(
                    ReasonCode::NoClientCertificate,
                    "no client certificate was presented".into(),
                );
            }
        };
        let identity = self.identity(generation, raw, now);
        let mut outcome = Outcome {
            decision: Ok(Grant::default()),
            policy: policy_name.to_owned(),
            identity: Some(identity.clone()),
        };
        let id = match identity.as_ref() {
            Ok(id) => id,
            Err(malformed) => {
                outcome.decision = Err(Deny::new(
                    ReasonCode::MalformedCertificate,
                    malformed.to_string(),
                ));
                return outcome;
            }
        };
        if let Err(deny) = authz::check_certificate(id, policy, &config.certificate_rules, now) {
            outcome.decision = Err(deny);
            return outcome;
        }
        outcome.decision = match self.store_facts(id).await {
            Ok(facts) => authz::check_principal(
                id,
                policy,
                &config.principal_rules,
                &facts,
                RequestInfo {
                    method: input.method,
                    path: input.path,
                },
            ),
            Err(err) => {
                tracing::warn!(error = %err, "store lookup failed");
                Err(Deny::store_unavailable(&err))
            }
        };
        outcome
    }

    /// The parsed identity for a forwarded certificate, parsed at most once per generation.
    fn identity(&self, generation: &Generation, raw: &[u8], now: i64) -> CachedIdentity {
        let key: [u8; 32] = Sha256::digest(raw).into();
        if let Some(hit) = generation.identities.get(&key) {
            self.metrics
                .cache_lookups
                .with_label_values(&["identity", "hit"])
                .inc();
            return hit;
        }
        self.metrics
            .cache_lookups
            .with_label_values(&["identity", "miss"])
            .inc();
        let config = &generation.config;
        let parsed = Arc::new(cert::identify(raw, &config.identity, &config.trust, now));
        if let Ok(id) = parsed.as_ref() {
            let days_left = (id.not_after - now) as f64 / 86_400.0;
            self.metrics
                .client_cert_days_to_expiry
                .with_label_values(&["all"])
                .observe(days_left);
            if (0.0..7.0).contains(&days_left) {
                tracing::warn!(
                    principal = id.principal_id.as_deref().unwrap_or(""),
                    serial = %id.serial,
                    days_left = format!("{days_left:.1}"),
                    "client certificate expires soon"
                );
            }
        }
        generation.identities.insert(key, parsed.clone());
        parsed
    }

    async fn store_facts(&self, id: &Identity) -> Result<StoreFacts, StoreError> {
        let principal_id = id.principal_id.as_deref().unwrap_or_default();
        let (certificate, principal) = tokio::join!(
            self.store.certificate(&id.serial),
            self.store.principal(principal_id)
        );
        Ok(StoreFacts {
            certificate: certificate?,
            principal: principal?,
        })
    }
}
