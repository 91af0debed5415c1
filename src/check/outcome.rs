//! What a check answers, and how an adapter renders it: always with the configuration the
//! decision was made with, so a reload between deciding and answering cannot mix two.

use std::sync::Arc;

use crate::authz::{Deny, Grant};
use crate::cert::{self, Identity};
use crate::config::identity_headers::IdentityField;
use crate::config::{Config, DenyDetail};

/// The result of a check, with everything needed to answer and to explain it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Allow (with the grant) or deny.
    pub decision: Result<Grant, Deny>,
    /// Policy that was applied (or asked for, when unknown).
    pub(crate) policy: String,
    /// The index of the `policy_routes` entry that chose the policy, if one did.
    pub(crate) route: Option<usize>,
    /// Parsed certificate, when one was present and parsed.
    pub(crate) identity: Option<Arc<Result<Identity, cert::MalformedCertificate>>>,
    /// The configuration that decided: the answer's header names and deny detail come from
    /// it, never from one loaded later.
    pub(super) config: Arc<Config>,
    /// A deny of a policy with `enforce: false`: answered as an allow without identity.
    pub(crate) shadow: bool,
    /// The parsed certificate came from the identity cache.
    pub(crate) identity_cached: bool,
}

impl Outcome {
    /// A deny decided outside the checker (an embedding's deadline), answered with `config`.
    pub(crate) fn denied(config: Arc<Config>, policy: &str, deny: Deny) -> Outcome {
        Outcome {
            decision: Err(deny),
            policy: policy.to_owned(),
            route: None,
            identity: None,
            config,
            shadow: false,
            identity_cached: false,
        }
    }

    /// The configuration generation this outcome was decided with.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The parsed identity, if the certificate parsed.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref().and_then(|r| r.as_ref().ok())
    }

    /// The principal id, when the certificate yielded one.
    pub(crate) fn principal(&self) -> Option<&str> {
        self.identity().and_then(Identity::principal_id)
    }

    /// HTTP status of the answer (200 on allow).
    pub(crate) fn http_status(&self) -> u16 {
        match &self.decision {
            Err(deny) if !self.shadow => deny.reason.http_status(),
            _ => 200,
        }
    }

    /// Identity headers to set upstream on allow (empty on deny): those of
    /// `response.identity_headers` the identity has.
    pub(crate) fn allow_headers(&self) -> Vec<(&str, String)> {
        let (Ok(grant), Some(id)) = (&self.decision, self.identity()) else {
            return Vec::new();
        };
        let names = &self.config.headers;
        let set = |field| names.set.has(field);
        let values = [
            (
                &names.principal,
                set(IdentityField::Principal)
                    .then(|| id.principal_id().unwrap_or_default().to_owned()),
            ),
            (
                &names.principal_type,
                set(IdentityField::PrincipalType).then(|| grant.principal_type.clone()),
            ),
            (
                &names.roles,
                set(IdentityField::Roles).then(|| grant.roles.join(",")),
            ),
            (
                &names.cn,
                id.common_name()
                    .filter(|_| set(IdentityField::Cn))
                    .map(str::to_owned),
            ),
            (
                &names.serial,
                set(IdentityField::Serial).then(|| id.serial().to_string()),
            ),
            (
                &names.sha256,
                set(IdentityField::Sha256).then(|| id.sha256_hex()),
            ),
            (
                &names.spiffe_id,
                id.spiffe_id()
                    .filter(|_| set(IdentityField::SpiffeId))
                    .map(str::to_owned),
            ),
        ];
        values
            .into_iter()
            .filter_map(|(name, value)| Some((name.as_str(), value?)))
            .collect()
    }

    /// JSON body of a deny, `{"error","message","request_id"}` (README "How a request flows");
    /// none for an allow or a shadow deny.
    pub(crate) fn deny_body(&self, request_id: &str) -> Option<String> {
        let deny = self.decision.as_ref().err().filter(|_| !self.shadow)?;
        let message = match self.config.deny_detail {
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
        400 => "request cannot be judged",
        401 => "client certificate not accepted",
        403 => "access denied",
        _ => "authorization temporarily unavailable",
    }
}
