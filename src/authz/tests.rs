//! The decision table, one row per reason, with certificates generated in code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::path::PathMode;
use super::*;
use crate::cert::tests::rules;
use crate::cert::{TrustBundle, identify};
use crate::pki::{CertAuthority, CertSpec, Eku};
use crate::store::{CertificateRecord, Principal, PrincipalStatus, Registration};

pub(super) const NOW: i64 = 1_790_000_000;
const ID_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 1];
const TYPE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 2];

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("valid test time")
}

pub(super) struct Pki {
    ca: CertAuthority,
    trust: TrustBundle,
}

pub(super) fn pki() -> Pki {
    let ca = CertAuthority::new(
        "test CA",
        now() - Duration::days(1),
        now() + Duration::days(3650),
    )
    .expect("CA");
    let trust = TrustBundle::from_pem(ca.cert_pem().as_bytes()).expect("bundle");
    Pki { ca, trust }
}

fn client(id: &str, kind: &str) -> CertSpec {
    CertSpec {
        organizational_unit: Some(kind.to_owned()),
        custom_extensions: vec![
            (ID_OID.to_vec(), id.to_owned()),
            (TYPE_OID.to_vec(), kind.to_owned()),
        ],
        ..CertSpec::client(
            &format!("{id}.cn"),
            now() - Duration::hours(1),
            Duration::days(5),
        )
    }
}

pub(super) fn identity(pki: &Pki, spec: &CertSpec) -> Identity {
    let cert = pki.ca.issue(spec).expect("issue");
    identify(cert.cert_pem.as_bytes(), &rules(), &pki.trust, NOW).expect("parses")
}

pub(super) fn policy() -> Policy {
    let mut permissions = HashMap::new();
    permissions.insert(
        "admin".to_owned(),
        vec![Permission::parse("*").expect("valid")],
    );
    permissions.insert(
        "worker".to_owned(),
        vec![
            Permission::parse("GET /api/*").expect("valid"),
            Permission::parse("/job.v1.JobService/*").expect("valid"),
        ],
    );
    Policy {
        name: "p".into(),
        max_lifetime_secs: Some(7 * 86_400),
        expiry_warning_secs: 86_400,
        require_enrolment: true,
        allowed_principal_types: None,
        cn_allowlist: None,
        permissions,
        revocation: RevocationPolicy::Required,
        paths: PathMode::Strict,
        allowed_issuers: None,
        spiffe: None,
    }
}

pub(super) fn cert_rules() -> CertificateRules {
    CertificateRules {
        clock_skew_secs: 60,
        require_client_auth_eku: ClientAuthEku::IfPresent,
    }
}

pub(super) fn principal_rules() -> PrincipalRules {
    PrincipalRules {
        type_sources: rules().principal_type_sources,
        roles_by_type: HashMap::from([
            ("admin".to_owned(), vec!["admin".to_owned()]),
            ("worker".to_owned(), vec!["worker".to_owned()]),
        ]),
    }
}

fn enrolled(id: &str, kind: &str) -> Arc<Principal> {
    Arc::new(Principal {
        principal_id: id.into(),
        principal_type: Some(kind.into()),
        status: PrincipalStatus::Active,
        suspended_at: None,
        suspended_reason: None,
        roles: None,
        created_at: Some(0),
    })
}

const GET_API: RequestInfo<'static> = RequestInfo {
    method: "GET",
    path: "/api/jobs?x=1",
};

/// Rows 3–6: (what to change, expected reason).
#[test]
fn certificate_rows() {
    let pki = pki();
    let other = self::pki();
    let base = client("w", "worker");
    let cases: Vec<(&str, Identity, ReasonCode)> = vec![
        (
            "untrusted issuer",
            identity_from(&other, &pki, &base),
            ReasonCode::UntrustedIssuer,
        ),
        (
            "expired",
            identity(
                &pki,
                &CertSpec {
                    not_before: now() - Duration::days(3),
                    not_after: now() - Duration::days(1),
                    ..base.clone()
                },
            ),
            ReasonCode::CertificateExpired,
        ),
        (
            "not yet valid",
            identity(
                &pki,
                &CertSpec {
                    not_before: now() + Duration::hours(1),
                    not_after: now() + Duration::days(2),
                    ..base.clone()
                },
            ),
            ReasonCode::CertificateNotYetValid,
        ),
        (
            "server-only EKU",
            identity(
                &pki,
                &CertSpec {
                    eku: Eku::ServerAuth,
                    ..base.clone()
                },
            ),
            ReasonCode::WrongKeyUsage,
        ),
        (
            "code signing EKU",
            identity(
                &pki,
                &CertSpec {
                    eku: Eku::CodeSigning,
                    ..base.clone()
                },
            ),
            ReasonCode::WrongKeyUsage,
        ),
        (
            "10 day lifetime",
            identity(
                &pki,
                &CertSpec {
                    not_before: now() - Duration::days(1),
                    not_after: now() + Duration::days(9),
                    ..base.clone()
                },
            ),
            ReasonCode::LifetimeExceedsPolicy,
        ),
        (
            "no principal id",
            identity(
                &pki,
                &CertSpec {
                    common_name: None,
                    custom_extensions: vec![],
                    ..base.clone()
                },
            ),
            ReasonCode::MalformedCertificate,
        ),
    ];
    for (name, id, want) in cases {
        let got = check_certificate(&id, &policy(), &cert_rules(), NOW);
        assert_eq!(got.map_err(|d| d.reason), Err(want), "{name}");
    }
    let ok = identity(&pki, &base);
    assert_eq!(
        check_certificate(&ok, &policy(), &cert_rules(), NOW),
        Ok(())
    );
}

fn identity_from(issuer: &Pki, verifier: &Pki, spec: &CertSpec) -> Identity {
    let cert = issuer.ca.issue(spec).expect("issue");
    identify(cert.cert_pem.as_bytes(), &rules(), &verifier.trust, NOW).expect("parses")
}

#[test]
fn untrusted_wins_over_expired_and_expired_over_usage() {
    let (pki, other) = (pki(), pki());
    let spec = CertSpec {
        not_before: now() - Duration::days(3),
        not_after: now() - Duration::days(1),
        eku: Eku::ServerAuth,
        ..client("w", "worker")
    };
    let untrusted = identity_from(&other, &pki, &spec);
    let got = check_certificate(&untrusted, &policy(), &cert_rules(), NOW).map_err(|d| d.reason);
    assert_eq!(got, Err(ReasonCode::UntrustedIssuer));
    let trusted = identity(&pki, &spec);
    let got = check_certificate(&trusted, &policy(), &cert_rules(), NOW).map_err(|d| d.reason);
    assert_eq!(got, Err(ReasonCode::CertificateExpired));
}

#[test]
fn skew_and_switches() {
    let pki = pki();
    let spec = CertSpec {
        not_before: now() + Duration::seconds(30),
        not_after: now() + Duration::days(1),
        eku: Eku::ServerAuth,
        ..client("w", "worker")
    };
    let id = identity(&pki, &spec);
    let lax = CertificateRules {
        clock_skew_secs: 60,
        require_client_auth_eku: ClientAuthEku::Off,
    };
    assert_eq!(
        check_certificate(&id, &policy(), &lax, NOW),
        Ok(()),
        "30s early is within skew"
    );
    let no_eku = identity(
        &pki,
        &CertSpec {
            eku: Eku::None,
            ..client("w", "worker")
        },
    );
    assert_eq!(
        check_certificate(&no_eku, &policy(), &cert_rules(), NOW),
        Ok(())
    );
    let strict = CertificateRules {
        require_client_auth_eku: ClientAuthEku::Strict,
        ..cert_rules()
    };
    assert_eq!(
        check_certificate(&no_eku, &policy(), &strict, NOW).map_err(|d| d.reason),
        Err(ReasonCode::WrongKeyUsage),
        "strict: no EKU extension is not enough"
    );
}

#[test]
fn lifetime_message_is_actionable() {
    let pki = pki();
    let id = identity(
        &pki,
        &CertSpec {
            not_before: now() - Duration::days(1),
            not_after: now() + Duration::days(9),
            ..client("w", "worker")
        },
    );
    let deny = check_certificate(&id, &policy(), &cert_rules(), NOW).expect_err("too long");
    assert_eq!(
        deny.message,
        "Certificate lifetime (10.0 days) exceeds maximum (7 days) of policy 'p'"
    );
}

/// Rows 8–12.
#[test]
fn principal_rows() {
    let pki = pki();
    let id = identity(&pki, &client("w@x", "worker"));
    let revoked = Arc::new(CertificateRecord {
        serial_number: id.serial().to_string(),
        registration: Some(Registration {
            principal_id: "w@x".into(),
            issuer: id.issuer().to_owned(),
            sha256: id.sha256_hex(),
            not_before: 0,
            expires_at: 0,
        }),
        revoked: true,
        revoked_at: Some(NOW * 1000),
        revocation_reason: Some("key_compromise".into()),
    });
    let suspended = Arc::new(Principal {
        status: PrincipalStatus::Suspended,
        suspended_reason: Some("Compromised credentials detected".into()),
        ..(*enrolled("w@x", "worker")).clone()
    });
    let facts = |certificate: Option<Arc<CertificateRecord>>, principal: Option<Arc<Principal>>| {
        StoreFacts::of(certificate.as_deref(), principal.as_deref())
    };
    let allowlisted = Policy {
        cn_allowlist: Some(HashSet::from(["other".to_owned()])),
        ..policy()
    };
    let admins_only = Policy {
        allowed_principal_types: Some(HashSet::from(["admin".to_owned()])),
        ..policy()
    };
    let revocation_only = Arc::new(CertificateRecord {
        registration: None,
        revoked_at: None,
        ..(*revoked).clone()
    });
    let cases: Vec<(&str, Policy, StoreFacts, RequestInfo<'_>, ReasonCode, &str)> = vec![
        (
            "revocation-only record",
            policy(),
            facts(Some(revocation_only), Some(enrolled("w@x", "worker"))),
            GET_API,
            ReasonCode::CertificateRevoked,
            "revoked (key_compromise)",
        ),
        (
            "revoked in store",
            policy(),
            facts(Some(revoked), Some(enrolled("w@x", "worker"))),
            GET_API,
            ReasonCode::CertificateRevoked,
            "(key_compromise)",
        ),
        (
            "suspended",
            policy(),
            facts(None, Some(suspended)),
            GET_API,
            ReasonCode::PrincipalSuspended,
            "principal suspended: Compromised credentials detected",
        ),
        (
            "not enrolled",
            policy(),
            facts(None, None),
            GET_API,
            ReasonCode::PrincipalNotEnrolled,
            "'w@x' is not enrolled",
        ),
        (
            "cn not allowed",
            allowlisted,
            facts(None, Some(enrolled("w@x", "worker"))),
            GET_API,
            ReasonCode::CnNotAllowed,
            "CN 'w@x.cn' not in allowlist of policy 'p'",
        ),
        (
            "type not admitted",
            admins_only,
            facts(None, Some(enrolled("w@x", "worker"))),
            GET_API,
            ReasonCode::PermissionDenied,
            "principal type 'worker'",
        ),
        (
            "no role grants DELETE",
            policy(),
            facts(None, Some(enrolled("w@x", "worker"))),
            RequestInfo {
                method: "DELETE",
                path: "/api/jobs",
            },
            ReasonCode::PermissionDenied,
            "grants DELETE /api/jobs",
        ),
    ];
    for (name, policy, facts, request, want, text) in cases {
        let deny =
            check_principal(&id, &policy, &principal_rules(), &facts, request).expect_err(name);
        assert_eq!(deny.reason, want, "{name}");
        assert!(deny.message.contains(text), "{name}: {}", deny.message);
    }
}

#[test]
fn allow_resolves_type_and_roles() {
    let pki = pki();
    let id = identity(&pki, &client("w@x", "worker"));
    let facts = StoreFacts::of(None, Some(&enrolled("w@x", "worker")));
    let grant =
        check_principal(&id, &policy(), &principal_rules(), &facts, GET_API).expect("allow");
    assert_eq!(
        grant,
        Grant {
            principal_type: "worker".into(),
            roles: vec!["worker".into()]
        }
    );
    let grpc = RequestInfo {
        method: "POST",
        path: "/job.v1.JobService/ListJobs",
    };
    assert!(check_principal(&id, &policy(), &principal_rules(), &facts, grpc).is_ok());

    // A store role override replaces the type's default roles.
    let mut admin = (*enrolled("w@x", "worker")).clone();
    admin.roles = Some(vec!["admin".into()]);
    let facts = StoreFacts::of(None, Some(&admin));
    let delete = RequestInfo {
        method: "DELETE",
        path: "/anything",
    };
    let grant = check_principal(&id, &policy(), &principal_rules(), &facts, delete).expect("allow");
    assert_eq!(grant.roles, vec!["admin".to_owned()]);

    // A record without a type (written before certgate): the type comes from the cert.
    let untyped = Principal {
        principal_type: None,
        created_at: None,
        ..(*enrolled("w@x", "admin")).clone()
    };
    let facts = StoreFacts::of(None, Some(&untyped));
    let grant =
        check_principal(&id, &policy(), &principal_rules(), &facts, GET_API).expect("allow");
    assert_eq!(grant.principal_type, "worker");
    assert_eq!(grant.roles, vec!["worker".to_owned()]);

    // Without enrolment required, an unknown principal gets its type's roles from the cert.
    let open = Policy {
        require_enrolment: false,
        ..policy()
    };
    let facts = StoreFacts::default();
    assert!(check_principal(&id, &open, &principal_rules(), &facts, GET_API).is_ok());
}

#[test]
fn type_source_order() {
    let pki = pki();
    let id = identity(
        &pki,
        &CertSpec {
            custom_extensions: vec![],
            ..client("w@x", "from-ou")
        },
    );
    let record = PrincipalFacts::from(&*enrolled("w@x", "from-store"));
    let order = |s: &[PrincipalTypeSource]| resolve_type(&id, Some(&record), s).map(str::to_owned);
    use PrincipalTypeSource::*;
    assert_eq!(order(&[Oid, Ou, Store]).as_deref(), Some("from-ou"));
    assert_eq!(order(&[Store, Ou]).as_deref(), Some("from-store"));
    assert_eq!(order(&[Oid]), None);
}

/// The README's decision table, written out: every reason code with its exact status.
#[test]
fn every_reason_has_the_documented_status() {
    use ReasonCode as R;
    let table: &[(ReasonCode, &str, u16)] = &[
        (R::NoClientCertificate, "no_client_certificate", 401),
        (R::MalformedCertificate, "malformed_certificate", 401),
        (R::UntrustedIssuer, "untrusted_issuer", 401),
        (R::CertificateExpired, "certificate_expired", 401),
        (R::CertificateNotYetValid, "certificate_not_yet_valid", 401),
        (R::WrongKeyUsage, "wrong_key_usage", 401),
        (R::LifetimeExceedsPolicy, "lifetime_exceeds_policy", 403),
        (R::CertificateRevoked, "certificate_revoked", 401),
        (R::RevocationStatusUnknown, "revocation_status_unknown", 503),
        (R::PrincipalSuspended, "principal_suspended", 401),
        (R::PrincipalNotEnrolled, "principal_not_enrolled", 403),
        (R::CnNotAllowed, "cn_not_allowed", 403),
        (R::PermissionDenied, "permission_denied", 403),
        (R::StoreUnavailable, "store_unavailable", 503),
        (R::UnknownPolicy, "unknown_policy", 403),
        (R::MalformedRequest, "malformed_request", 400),
    ];
    assert_eq!(
        table.len(),
        ReasonCode::ALL.len(),
        "a reason is missing here"
    );
    for (reason, code, status) in table {
        assert_eq!(reason.as_str(), *code);
        assert_eq!(reason.http_status(), *status, "{code}");
    }
}

#[test]
fn crl_rows_7_and_7b() {
    let pki = pki();
    let id = identity(&pki, &client("w@x", "worker"));
    let revoked = CrlStatus::Revoked {
        reason: "key_compromise",
        revoked_at: NOW - 60,
    };
    let unknown = CrlStatus::Unknown(Box::new(crate::crl::UnknownCause::Stale {
        issuer: "CN=test CA".to_owned(),
        key: crate::cert::CaKey([7; 32]),
        staleness: crate::crl::Staleness::TooOld {
            this_update: NOW - 30 * 3600,
            age_secs: 30 * 3600,
            max_age_secs: 24 * 3600,
        },
        last_error: None,
    }));
    let with = |revocation| Policy {
        revocation,
        ..policy()
    };
    use RevocationPolicy::*;
    // (policy, status, expected deny reason, message fragment)
    let cases: Vec<(RevocationPolicy, &CrlStatus, Option<ReasonCode>, &str)> = vec![
        (Required, &CrlStatus::NotListed, None, ""),
        (Required, &CrlStatus::NotConfigured, None, ""),
        (
            Required,
            &revoked,
            Some(ReasonCode::CertificateRevoked),
            "(key_compromise) at",
        ),
        (
            Required,
            &unknown,
            Some(ReasonCode::RevocationStatusUnknown),
            "issued 1d6h ago",
        ),
        (Strict, &CrlStatus::NotListed, None, ""),
        (
            Strict,
            &CrlStatus::NotConfigured,
            Some(ReasonCode::RevocationStatusUnknown),
            "no CRL is configured",
        ),
        (
            Strict,
            &unknown,
            Some(ReasonCode::RevocationStatusUnknown),
            "stale",
        ),
        (
            Optional,
            &revoked,
            Some(ReasonCode::CertificateRevoked),
            "revoked by the CRL",
        ),
        (Optional, &unknown, None, ""),
        (Optional, &CrlStatus::NotConfigured, None, ""),
        (Off, &revoked, None, ""),
        (Off, &unknown, None, ""),
    ];
    for (revocation, status, want, fragment) in cases {
        let got = check_revocation(&id, &with(revocation), status);
        assert_eq!(
            got.as_ref().err().map(|d| d.reason),
            want,
            "{revocation:?} {status:?}"
        );
        if let Err(deny) = got {
            assert!(deny.message.contains(fragment), "{}", deny.message);
        }
    }
    assert_eq!(ReasonCode::RevocationStatusUnknown.http_status(), 503);
    assert_eq!(ReasonCode::CertificateRevoked.http_status(), 401);
}
