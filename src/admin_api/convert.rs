//! Store records and decisions to and from their wire form. Both directions are total for
//! what certgate writes, so the remote CLI prints exactly what the local one does.

use super::pb;
use crate::check::Outcome;
use crate::clock::rfc3339;
use crate::store::{
    Actor, AuditRecord, CertificateRecord, Principal, PrincipalStatus, Registration, Sighting,
    Verification,
};

impl From<PrincipalStatus> for pb::PrincipalStatus {
    fn from(s: PrincipalStatus) -> Self {
        match s {
            PrincipalStatus::Active => pb::PrincipalStatus::Active,
            PrincipalStatus::Suspended => pb::PrincipalStatus::Suspended,
        }
    }
}

impl From<&Principal> for pb::Principal {
    fn from(p: &Principal) -> Self {
        pb::Principal {
            principal_id: p.principal_id.clone(),
            principal_type: p.principal_type.clone(),
            status: pb::PrincipalStatus::from(p.status).into(),
            suspended_at: p.suspended_at,
            suspended_reason: p.suspended_reason.clone(),
            roles: p.roles.clone().map(|roles| pb::Roles { roles }),
            created_at: p.created_at,
        }
    }
}

impl From<pb::Principal> for Principal {
    fn from(p: pb::Principal) -> Self {
        Principal {
            status: match p.status() {
                pb::PrincipalStatus::Suspended => PrincipalStatus::Suspended,
                _ => PrincipalStatus::Active,
            },
            principal_id: p.principal_id,
            principal_type: p.principal_type,
            suspended_at: p.suspended_at,
            suspended_reason: p.suspended_reason,
            roles: p.roles.map(|r| r.roles),
            created_at: p.created_at,
        }
    }
}

impl From<&CertificateRecord> for pb::CertificateRecord {
    fn from(c: &CertificateRecord) -> Self {
        pb::CertificateRecord {
            serial_number: c.serial_number.clone(),
            registration: c.registration.as_ref().map(|r| pb::Registration {
                principal_id: r.principal_id.clone(),
                issuer: r.issuer.clone(),
                sha256: r.sha256.clone(),
                not_before: r.not_before,
                expires_at: r.expires_at,
            }),
            revoked: c.revoked,
            revoked_at: c.revoked_at,
            revocation_reason: c.revocation_reason.clone(),
        }
    }
}

impl From<pb::CertificateRecord> for CertificateRecord {
    fn from(c: pb::CertificateRecord) -> Self {
        CertificateRecord {
            serial_number: c.serial_number,
            registration: c.registration.map(|r| Registration {
                principal_id: r.principal_id,
                issuer: r.issuer,
                sha256: r.sha256,
                not_before: r.not_before,
                expires_at: r.expires_at,
            }),
            revoked: c.revoked,
            revoked_at: c.revoked_at,
            revocation_reason: c.revocation_reason,
        }
    }
}

impl From<&Sighting> for pb::Sighting {
    fn from(s: &Sighting) -> Self {
        pb::Sighting {
            sha256: s.sha256.clone(),
            serial_number: s.serial_number.clone(),
            issuer: s.issuer.clone(),
            principal_id: s.principal_id.clone(),
            not_before: s.not_before,
            expires_at: s.expires_at,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
        }
    }
}

impl From<pb::Sighting> for Sighting {
    fn from(s: pb::Sighting) -> Self {
        Sighting {
            sha256: s.sha256,
            serial_number: s.serial_number,
            issuer: s.issuer,
            principal_id: s.principal_id,
            not_before: s.not_before,
            expires_at: s.expires_at,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
        }
    }
}

impl From<&Actor> for pb::Actor {
    fn from(a: &Actor) -> Self {
        let none = pb::Actor::default();
        match a {
            Actor::Api {
                principal_id,
                cn,
                serial,
                sha256,
            } => pb::Actor {
                kind: "api".into(),
                principal_id: Some(principal_id.clone()),
                cn: cn.clone(),
                serial: Some(serial.clone()),
                sha256: Some(sha256.clone()),
                ..none
            },
            Actor::Cli { user } => pb::Actor {
                kind: "cli".into(),
                user: Some(user.clone()),
                ..none
            },
            Actor::Migrate { user } => pb::Actor {
                kind: "migrate".into(),
                user: Some(user.clone()),
                ..none
            },
        }
    }
}

impl From<pb::Actor> for Actor {
    fn from(a: pb::Actor) -> Self {
        let user = a.user.unwrap_or_default();
        match a.kind.as_str() {
            "api" => Actor::Api {
                principal_id: a.principal_id.unwrap_or_default(),
                cn: a.cn,
                serial: a.serial.unwrap_or_default(),
                sha256: a.sha256.unwrap_or_default(),
            },
            "migrate" => Actor::Migrate { user },
            _ => Actor::Cli { user },
        }
    }
}

impl From<&AuditRecord> for pb::AuditRecord {
    fn from(r: &AuditRecord) -> Self {
        pb::AuditRecord {
            sequence: r.sequence,
            at: r.at,
            actor: Some((&r.actor).into()),
            action: r.action.clone(),
            target: r.target.clone(),
            reason: r.reason.clone(),
            before_json: r.before.as_ref().map(ToString::to_string),
            after_json: r.after.as_ref().map(ToString::to_string),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// A record as the server sent it; JSON that does not parse is kept as a JSON string, so
/// `audit verify` reports the record rather than the transport failing.
impl From<pb::AuditRecord> for AuditRecord {
    fn from(r: pb::AuditRecord) -> Self {
        let json =
            |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        AuditRecord {
            sequence: r.sequence,
            at: r.at,
            actor: r.actor.unwrap_or_default().into(),
            action: r.action,
            target: r.target,
            reason: r.reason,
            before: r.before_json.map(json),
            after: r.after_json.map(json),
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl From<&Verification> for pb::VerifyAuditResponse {
    fn from(v: &Verification) -> Self {
        pb::VerifyAuditResponse {
            is_valid: v.is_valid,
            total_entries: v.total_entries,
            first_invalid_sequence: v.first_invalid_sequence,
        }
    }
}

impl From<pb::VerifyAuditResponse> for Verification {
    fn from(v: pb::VerifyAuditResponse) -> Self {
        Verification {
            is_valid: v.is_valid,
            total_entries: v.total_entries,
            first_invalid_sequence: v.first_invalid_sequence,
        }
    }
}

/// What `certgate check` reports of a decision, locally or through `DecisionService/Check`.
pub(crate) fn check_response(outcome: &Outcome) -> pb::CheckResponse {
    let grant = outcome.decision.as_ref().ok();
    let deny = outcome.decision.as_ref().err();
    // Which `policy_routes` entry chose the policy, as its key path and what it matches.
    let route = outcome.route.map(|i| {
        let described = outcome
            .config()
            .policy_routes
            .describe(i)
            .unwrap_or_default();
        format!("policy_routes[{i}] {described}")
    });
    pb::CheckResponse {
        decision: if grant.is_some() { "allow" } else { "deny" }.into(),
        status: outcome.http_status().into(),
        reason: deny.map(|d| d.reason.as_str().to_owned()),
        message: deny.map_or_else(|| "allowed".to_owned(), |d| d.message.clone()),
        policy: outcome.policy.clone(),
        route,
        principal: outcome.principal().map(str::to_owned),
        principal_type: grant.map(|g| g.principal_type.clone()),
        roles: grant.map(|g| g.roles.clone()).unwrap_or_default(),
        headers: outcome
            .allow_headers()
            .into_iter()
            .map(|(name, value)| pb::Header {
                name: name.to_owned(),
                value,
            })
            .collect(),
        certificate: outcome.identity().map(|id| pb::CheckedCertificate {
            subject: id.subject().to_owned(),
            issuer: id.issuer().to_owned(),
            serial: id.serial().to_string(),
            sha256: id.sha256_hex(),
            not_before: rfc3339(id.not_before()),
            not_after: rfc3339(id.not_after()),
        }),
    }
}
