//! The decision of the README's decision table: certificate facts, store facts and a policy in, allow or
//! deny out. Pure and synchronous: no I/O, no clock (time is a parameter), no wire types.
//! The check runs in phases so the store is only consulted for certificates that pass
//! rows 1–7b: rows 3–6 from the certificate, rows 7/7b from a CRL status computed in memory
//! (`crl`), rows 8–12 from what the store says.

pub(crate) mod path;
mod policy;
pub(crate) mod routes;
pub(crate) mod spiffe;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

pub use policy::Policy;
pub(crate) use policy::{Permission, RevocationPolicy};
// The decision's CRL input, where its callers look.
pub use crate::crl::CrlStatus;

use crate::cert::{ClientAuthUsage, Identity, PrincipalTypeSource};
use crate::clock::rfc3339;
use crate::store::{CertificateFacts, CertificateRecord, Principal, PrincipalFacts, StoreError};

/// Stable reason codes, used in the response body, the logs and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// Row 1.
    NoClientCertificate,
    /// Row 2 (also: a certificate that yields no principal id).
    MalformedCertificate,
    /// Row 3.
    UntrustedIssuer,
    /// Row 4, after notAfter.
    CertificateExpired,
    /// Row 4, before notBefore.
    CertificateNotYetValid,
    /// Row 5.
    WrongKeyUsage,
    /// Row 6.
    LifetimeExceedsPolicy,
    /// Rows 7 and 8.
    CertificateRevoked,
    /// Row 7b.
    RevocationStatusUnknown,
    /// Row 9.
    PrincipalSuspended,
    /// Row 10.
    PrincipalNotEnrolled,
    /// Row 11.
    CnNotAllowed,
    /// Row 12 (also: a principal type the policy does not admit).
    PermissionDenied,
    /// The store cannot be reached and nothing usable is cached.
    StoreUnavailable,
    /// The proxy asked for a policy the configuration does not define.
    UnknownPolicy,
    /// The request's method or path cannot be judged unambiguously (a missing, repeated or
    /// non-UTF-8 forward-auth header, or a path an upstream could read differently).
    MalformedRequest,
}

impl ReasonCode {
    /// Every reason code, in table order.
    pub const ALL: [ReasonCode; 16] = [
        ReasonCode::NoClientCertificate,
        ReasonCode::MalformedCertificate,
        ReasonCode::UntrustedIssuer,
        ReasonCode::CertificateExpired,
        ReasonCode::CertificateNotYetValid,
        ReasonCode::WrongKeyUsage,
        ReasonCode::LifetimeExceedsPolicy,
        ReasonCode::CertificateRevoked,
        ReasonCode::RevocationStatusUnknown,
        ReasonCode::PrincipalSuspended,
        ReasonCode::PrincipalNotEnrolled,
        ReasonCode::CnNotAllowed,
        ReasonCode::PermissionDenied,
        ReasonCode::StoreUnavailable,
        ReasonCode::UnknownPolicy,
        ReasonCode::MalformedRequest,
    ];

    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::NoClientCertificate => "no_client_certificate",
            ReasonCode::MalformedCertificate => "malformed_certificate",
            ReasonCode::UntrustedIssuer => "untrusted_issuer",
            ReasonCode::CertificateExpired => "certificate_expired",
            ReasonCode::CertificateNotYetValid => "certificate_not_yet_valid",
            ReasonCode::WrongKeyUsage => "wrong_key_usage",
            ReasonCode::LifetimeExceedsPolicy => "lifetime_exceeds_policy",
            ReasonCode::CertificateRevoked => "certificate_revoked",
            ReasonCode::RevocationStatusUnknown => "revocation_status_unknown",
            ReasonCode::PrincipalSuspended => "principal_suspended",
            ReasonCode::PrincipalNotEnrolled => "principal_not_enrolled",
            ReasonCode::CnNotAllowed => "cn_not_allowed",
            ReasonCode::PermissionDenied => "permission_denied",
            ReasonCode::StoreUnavailable => "store_unavailable",
            ReasonCode::UnknownPolicy => "unknown_policy",
            ReasonCode::MalformedRequest => "malformed_request",
        }
    }

    /// The HTTP status of a deny with this reason.
    pub fn http_status(self) -> u16 {
        match self {
            ReasonCode::LifetimeExceedsPolicy
            | ReasonCode::PrincipalNotEnrolled
            | ReasonCode::CnNotAllowed
            | ReasonCode::PermissionDenied
            | ReasonCode::UnknownPolicy => 403,
            ReasonCode::RevocationStatusUnknown | ReasonCode::StoreUnavailable => 503,
            ReasonCode::MalformedRequest => 400,
            _ => 401,
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A denial: the reason code and a message an on-call engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// Stable code.
    pub reason: ReasonCode,
    /// Human text.
    pub message: String,
}

impl Deny {
    /// A deny with `reason` and `message`.
    pub(crate) fn new(reason: ReasonCode, message: impl Into<String>) -> Self {
        Deny {
            reason,
            message: message.into(),
        }
    }

    /// Fail closed when the store cannot answer. The message reaches the client, so it
    /// names the kind of failure only: an outage's text has the DynamoDB endpoint, table
    /// names or the SQLite path, which the "store lookup failed" log line keeps. A corrupt
    /// record names the record (the client's own principal or serial) and what is wrong.
    pub(crate) fn store_unavailable(err: &StoreError) -> Self {
        let message = match err {
            StoreError::Unavailable(outage) => {
                format!("principal store unavailable ({})", outage.cause.as_str())
            }
            StoreError::Corrupt { .. } => format!("principal store unavailable: {err}"),
            _ => "principal store unavailable".to_owned(),
        };
        Deny::new(ReasonCode::StoreUnavailable, message)
    }
}

/// What an allow grants: the resolved type and roles of the principal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Resolved principal type (empty when no source yields one).
    pub(crate) principal_type: String,
    /// Roles, in configured order.
    pub(crate) roles: Vec<String>,
}

/// Settings of rows 3–5 that are not per policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateRules {
    /// Allowed clock difference for notBefore/notAfter, seconds.
    pub(crate) clock_skew_secs: i64,
    /// Row 5: how the extended key usage is judged.
    pub(crate) require_client_auth_eku: ClientAuthEku,
}

/// `trust.require_client_auth_eku`: `false`, `true` or `strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuthEku {
    /// Not judged.
    Off,
    /// An EKU extension must include clientAuth; a certificate without one passes
    /// (unrestricted, RFC 5280 4.2.1.12).
    IfPresent,
    /// An EKU extension must be present and include clientAuth.
    Strict,
}

/// The request being authorized.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// HTTP method (`POST` for gRPC).
    pub method: &'a str,
    /// Path as `path::normalize` returned it for the policy's mode (no query string).
    pub path: &'a str,
}

/// What the store says about this certificate and its principal.
#[derive(Debug, Clone, Default)]
pub struct StoreFacts {
    /// The certificate's record, looked up by serial.
    pub certificate: Option<Arc<CertificateFacts>>,
    /// The principal's record.
    pub principal: Option<Arc<PrincipalFacts>>,
}

impl StoreFacts {
    /// The facts of full records (the store cache hands out the facts directly).
    pub fn of(certificate: Option<&CertificateRecord>, principal: Option<&Principal>) -> Self {
        StoreFacts {
            certificate: certificate.map(|c| Arc::new(c.into())),
            principal: principal.map(|p| Arc::new(p.into())),
        }
    }
}

/// Settings of rows 9–12 that are not per policy.
#[derive(Debug, Clone, Default)]
pub struct PrincipalRules {
    /// Order of principal type sources.
    pub(crate) type_sources: Vec<PrincipalTypeSource>,
    /// Default roles by principal type, when the record has no override.
    pub(crate) roles_by_type: HashMap<String, Vec<String>>,
}

/// Rows 3–6 (and the principal id): everything decidable from the certificate alone.
/// `now` is Unix seconds.
pub fn check_certificate(
    id: &Identity,
    policy: &Policy,
    rules: &CertificateRules,
    now: i64,
) -> Result<(), Deny> {
    let anchor = id
        .chain_at(now, rules.clock_skew_secs)
        .map_err(|failure| Deny::new(ReasonCode::UntrustedIssuer, failure.to_string()))?;
    if let Some(allowed) = &policy.allowed_issuers
        && !allowed.contains(&anchor.key)
    {
        return Err(Deny::new(
            ReasonCode::UntrustedIssuer,
            format!(
                "issuing CA '{}' is not among the allowed_issuers of policy '{}'",
                anchor.subject, policy.name
            ),
        ));
    }
    spiffe::check_svid(id, policy)?;
    if now.saturating_add(rules.clock_skew_secs) < id.not_before() {
        return Err(Deny::new(
            ReasonCode::CertificateNotYetValid,
            format!(
                "certificate is not valid before {}",
                rfc3339(id.not_before())
            ),
        ));
    }
    if now.saturating_sub(rules.clock_skew_secs) > id.not_after() {
        return Err(Deny::new(
            ReasonCode::CertificateExpired,
            format!("certificate expired at {}", rfc3339(id.not_after())),
        ));
    }
    let eku_refused = match (rules.require_client_auth_eku, id.client_auth()) {
        (ClientAuthEku::Off, _) | (_, ClientAuthUsage::Allowed) => None,
        (ClientAuthEku::IfPresent, ClientAuthUsage::Unrestricted) => None,
        (ClientAuthEku::Strict, ClientAuthUsage::Unrestricted) => Some(
            "certificate has no extended key usage extension, and trust.require_client_auth_eku is strict",
        ),
        (_, ClientAuthUsage::NotAllowed) => {
            Some("extended key usage does not include TLS client authentication")
        }
    };
    if let Some(message) = eku_refused {
        return Err(Deny::new(ReasonCode::WrongKeyUsage, message));
    }
    if let Some(max) = policy.max_lifetime_secs
        && id.lifetime_secs() > max
    {
        return Err(Deny::new(
            ReasonCode::LifetimeExceedsPolicy,
            format!(
                "Certificate lifetime ({:.1} days) exceeds maximum ({} days) of policy '{}'",
                id.lifetime_secs() as f64 / 86_400.0,
                days(max),
                policy.name
            ),
        ));
    }
    if id.principal_id().is_none() {
        return Err(Deny::new(
            ReasonCode::MalformedCertificate,
            "certificate carries no principal id (no identity extension, SPIFFE URI SAN or CN)",
        ));
    }
    Ok(())
}

/// Rows 7 and 7b. Call after [`check_certificate`] passed.
pub(crate) fn check_revocation(
    id: &Identity,
    policy: &Policy,
    status: &CrlStatus,
) -> Result<(), Deny> {
    let required = match policy.revocation {
        RevocationPolicy::Off => return Ok(()),
        RevocationPolicy::Required | RevocationPolicy::Strict => true,
        RevocationPolicy::Optional => false,
    };
    match status {
        CrlStatus::NotListed => Ok(()),
        CrlStatus::Revoked { reason, revoked_at } => Err(Deny::new(
            ReasonCode::CertificateRevoked,
            format!(
                "certificate {} revoked by the CRL of '{}' ({reason}) at {}",
                id.serial(),
                id.issuer(),
                rfc3339(*revoked_at)
            ),
        )),
        CrlStatus::Unknown(why) if required => Err(Deny::new(
            ReasonCode::RevocationStatusUnknown,
            format!("revocation status unknown: {why}"),
        )),
        CrlStatus::NotConfigured if policy.revocation == RevocationPolicy::Strict => {
            Err(Deny::new(
                ReasonCode::RevocationStatusUnknown,
                format!(
                    "revocation status unknown: no CRL is configured for issuer '{}', and policy '{}' requires one (revocation: strict)",
                    id.issuer(),
                    policy.name
                ),
            ))
        }
        CrlStatus::Unknown(_) | CrlStatus::NotConfigured => Ok(()),
    }
}

/// Rows 8–12, given what the store says. Call only after [`check_certificate`] passed.
pub fn check_principal(
    id: &Identity,
    policy: &Policy,
    rules: &PrincipalRules,
    facts: &StoreFacts,
    request: RequestInfo<'_>,
) -> Result<Grant, Deny> {
    let principal_id = id.principal_id().unwrap_or_default();
    if let Some(CertificateFacts::Revoked { at, reason }) = facts.certificate.as_deref() {
        let mut message = format!("certificate {} revoked", id.serial());
        if let Some(reason) = reason {
            let _ = write!(message, " ({reason})");
        }
        if let Some(at) = at {
            let _ = write!(message, " at {}", rfc3339(at / 1000));
        }
        return Err(Deny::new(ReasonCode::CertificateRevoked, message));
    }
    let record = facts.principal.as_deref();
    if let Some(reason) = record.and_then(PrincipalFacts::suspension) {
        let reason = reason.unwrap_or("no reason recorded");
        return Err(Deny::new(
            ReasonCode::PrincipalSuspended,
            format!("principal suspended: {reason}"),
        ));
    }
    if policy.require_enrolment && record.is_none() {
        return Err(Deny::new(
            ReasonCode::PrincipalNotEnrolled,
            format!(
                "principal '{principal_id}' is not enrolled, and policy '{}' requires enrolment",
                policy.name
            ),
        ));
    }
    if let Some(allowlist) = &policy.cn_allowlist {
        let cn = id.common_name().unwrap_or_default();
        if !allowlist.contains(cn) {
            return Err(Deny::new(
                ReasonCode::CnNotAllowed,
                format!("CN '{cn}' not in allowlist of policy '{}'", policy.name),
            ));
        }
    }
    let principal_type = resolve_type(id, record, &rules.type_sources).unwrap_or_default();
    if let Some(allowed) = &policy.allowed_principal_types
        && !allowed.contains(principal_type)
    {
        return Err(Deny::new(
            ReasonCode::PermissionDenied,
            format!(
                "principal type '{principal_type}' of '{principal_id}' is not admitted by policy '{}'",
                policy.name
            ),
        ));
    }
    // An enrolled record's roles, else the policy's roles for the SPIFFE id, else the type's.
    let roles: &[String] = match record.and_then(PrincipalFacts::roles) {
        Some(roles) => roles,
        None => spiffe::roles(id, policy).unwrap_or_else(|| {
            rules
                .roles_by_type
                .get(principal_type)
                .map_or(&[], Vec::as_slice)
        }),
    };
    // Already normalised (no query string, no dot segments): see `path::normalize`.
    let path = request.path;
    let granted = roles.iter().any(|role| {
        policy
            .permissions
            .get(role)
            .is_some_and(|perms| perms.iter().any(|p| p.grants(request.method, path)))
    });
    if !granted {
        return Err(Deny::new(
            ReasonCode::PermissionDenied,
            format!(
                "no role of principal '{principal_id}' (roles: {}) grants {} {path} in policy '{}'",
                if roles.is_empty() {
                    "none".to_owned()
                } else {
                    roles.join(",")
                },
                request.method,
                policy.name
            ),
        ));
    }
    Ok(Grant {
        principal_type: principal_type.to_owned(),
        roles: roles.to_vec(),
    })
}

/// The principal type from the first source, in the configured order, that has one.
pub(crate) fn resolve_type<'a>(
    id: &'a Identity,
    record: Option<&'a PrincipalFacts>,
    sources: &[PrincipalTypeSource],
) -> Option<&'a str> {
    sources.iter().find_map(|source| match source {
        PrincipalTypeSource::Oid => id.type_from_oid(),
        PrincipalTypeSource::Ou => id.organizational_unit(),
        PrincipalTypeSource::Store => record.and_then(PrincipalFacts::principal_type),
    })
}

fn days(secs: i64) -> String {
    if secs % 86_400 == 0 {
        (secs / 86_400).to_string()
    } else {
        format!("{:.1}", secs as f64 / 86_400.0)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_spiffe;
