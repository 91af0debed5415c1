//! The decision of one check in three stages, so that the store, the only step that may wait,
//! sits between two synchronous ones: [`Checker::resolve`] (rows 1–2: the request can be
//! judged, a certificate is present, the policy is known; the identity parsed),
//! [`Checker::certificate_rows`] (rows 3–7, the CRL snapshot included) and
//! [`Resolved::principal_rows`] (rows 8–12 on the store's facts). The asynchronous check
//! awaits the store between the last two; [`Checker::check_now`] passes facts it found fresh
//! in the store cache, and so decides without a future.

use std::borrow::Cow;
use std::sync::Arc;

use super::span::CheckSpan;
use super::{CheckInput, Checker, Generation, Outcome, choose_policy, is_method};
use crate::authz::{self, Deny, Grant, Policy, ReasonCode, RequestInfo, StoreFacts};
use crate::cert::{CachedIdentity, Identity};
use crate::config::Config;
use crate::observe;
use crate::store::StoreError;

/// A check that passed rows 1–2: its policy, normalised path and parsed certificate.
pub(super) struct Resolved<'c> {
    config: &'c Arc<Config>,
    policy_name: &'c str,
    route: Option<usize>,
    policy: &'c Policy,
    method: &'c str,
    path: Cow<'c, str>,
    identity: CachedIdentity,
    identity_cached: bool,
}

impl Checker {
    /// Rows 1–2 and the identity: the outcome when the request is decided before its
    /// certificate is looked at.
    pub(super) fn resolve<'c>(
        &self,
        generation: &'c Generation,
        input: &CheckInput<'c>,
        known: Option<(CachedIdentity, bool)>,
        now: i64,
    ) -> Result<Resolved<'c>, Outcome> {
        let config = &generation.config;
        let (policy_name, route) = choose_policy(config, input);
        let deny = |reason, message: String| Outcome {
            decision: Err(Deny::new(reason, message)),
            policy: policy_name.to_owned(),
            route,
            identity: None,
            config: config.clone(),
            shadow: false,
            identity_cached: false,
        };
        if let Some(problem) = input.malformed {
            return Err(deny(
                ReasonCode::MalformedRequest,
                format!("the proxy's description of the request cannot be used: {problem}"),
            ));
        }
        let certificate = match (known, input.certificate) {
            (Some(known), _) => Ok(known),
            (None, Some(raw)) if !raw.trim_ascii().is_empty() => Err(raw),
            _ => {
                return Err(deny(
                    ReasonCode::NoClientCertificate,
                    "no client certificate was presented".into(),
                ));
            }
        };
        let Some(policy) = config.policies.get(policy_name) else {
            return Err(deny(
                ReasonCode::UnknownPolicy,
                format!("policy '{policy_name}' is not defined in the configuration"),
            ));
        };
        if !is_method(input.method) {
            return Err(deny(
                ReasonCode::MalformedRequest,
                format!(
                    "method '{}' is not an HTTP method",
                    input.method.escape_debug()
                ),
            ));
        }
        let path = match authz::path::normalize(input.path, policy.paths) {
            Ok(path) => path,
            Err(why) => {
                return Err(deny(
                    ReasonCode::MalformedRequest,
                    format!(
                        "request path '{}' refused ({} paths of policy '{}'): {why}",
                        input.path.escape_debug(),
                        policy.paths.as_str(),
                        policy.name
                    ),
                ));
            }
        };
        let identity = certificate.map_or_else(
            |raw| self.identity(generation, raw, input.encoding, now),
            Some,
        );
        let Some((identity, identity_cached)) = identity else {
            return Err(deny(
                ReasonCode::NoClientCertificate,
                "the forwarded-certificate header carries no certificate".into(),
            ));
        };
        Ok(Resolved {
            config,
            policy_name,
            route,
            policy,
            method: input.method,
            path,
            identity,
            identity_cached,
        })
    }

    /// Rows 3–7: the certificate (parsed, chain, lifetime, certificate rules) and its CRL
    /// status; the identity the store is asked about when they pass.
    pub(super) fn certificate_rows<'r>(
        &self,
        resolved: &'r Resolved<'_>,
        span: &CheckSpan<'_, '_>,
        now: i64,
    ) -> Result<&'r Identity, Deny> {
        let (config, policy) = (resolved.config, resolved.policy);
        let id = match resolved.identity.as_ref() {
            Ok(id) => id,
            Err(malformed) => {
                return Err(Deny::new(
                    ReasonCode::MalformedCertificate,
                    malformed.to_string(),
                ));
            }
        };
        authz::check_certificate(id, policy, &config.certificate_rules, now)?;
        let crl_status = {
            let _crl = observe::otel::child("crl_lookup");
            self.revocation.status(id, now)
        };
        authz::check_revocation(id, policy, &crl_status)?;
        if let authz::CrlStatus::Unknown(why) = &crl_status
            && policy.revocation == authz::RevocationPolicy::Optional
        {
            span.in_scope(|| tracing::warn!(policy = %policy.name, serial = %id.serial(), reason = %why, "revocation status unknown; allowed by policy (revocation: optional)"));
        }
        Ok(id)
    }
}

impl Resolved<'_> {
    /// Rows 8–12 on what the store said of `id`.
    pub(super) fn principal_rows(
        &self,
        id: &Identity,
        facts: Result<StoreFacts, StoreError>,
        span: &CheckSpan<'_, '_>,
    ) -> Result<Grant, Deny> {
        match facts {
            Ok(facts) => authz::check_principal(
                id,
                self.policy,
                &self.config.principal_rules,
                &facts,
                RequestInfo {
                    method: self.method,
                    path: &self.path,
                },
            ),
            Err(err) => {
                span.in_scope(|| tracing::warn!(error = %err, "store lookup failed"));
                Err(Deny::store_unavailable(&err))
            }
        }
    }

    /// The outcome of `decision`, with the parsed certificate.
    pub(super) fn outcome(self, decision: Result<Grant, Deny>) -> Outcome {
        Outcome {
            decision,
            policy: self.policy_name.to_owned(),
            route: self.route,
            identity: Some(self.identity),
            config: self.config.clone(),
            shadow: false,
            identity_cached: self.identity_cached,
        }
    }
}
