//! The X509-SVID rules and roles by SPIFFE id of a policy with `spiffe`, on certificates
//! made in code: which reason each rule gives, and roles without a store record.

use super::spiffe::{IdRoles, SpiffeRules};
use super::tests::{NOW, cert_rules, identity, pki, policy, principal_rules};
use super::*;
use crate::pki::CertSpec;
use time::Duration;

fn workload() -> Policy {
    Policy {
        require_enrolment: false,
        spiffe: Some(SpiffeRules {
            trust_domains: vec!["prod.example".into()],
            id_roles: vec![
                IdRoles::new(
                    "spiffe://prod.example/ns/*/sa/batch-*",
                    vec!["worker".into()],
                )
                .expect("pattern"),
            ],
        }),
        ..policy()
    }
}

fn svid(uris: &[&str]) -> CertSpec {
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    CertSpec {
        common_name: None,
        uri_sans: uris.iter().map(|u| (*u).to_owned()).collect(),
        ..CertSpec::client("x", now - Duration::hours(1), Duration::days(1))
    }
}

#[test]
fn svid_rules_give_malformed_or_untrusted() {
    let pki = pki();
    let good = "spiffe://prod.example/ns/jobs/sa/batch-1";
    let cases: &[(&[&str], Option<ReasonCode>)] = &[
        (&[good], None),
        (&[], Some(ReasonCode::MalformedCertificate)),
        (
            &[good, "spiffe://prod.example/ns/jobs/sa/batch-2"],
            Some(ReasonCode::MalformedCertificate),
        ),
        (
            &["https://prod.example/x"],
            Some(ReasonCode::MalformedCertificate),
        ),
        (
            &[good, "https://prod.example/x"],
            Some(ReasonCode::MalformedCertificate),
        ),
        (
            &["spiffe://prod.example/ns//sa/x"],
            Some(ReasonCode::MalformedCertificate),
        ),
        (
            &["spiffe://other.example/ns/jobs/sa/batch-1"],
            Some(ReasonCode::UntrustedIssuer),
        ),
    ];
    for (uris, want) in cases {
        let id = identity(&pki, &svid(uris));
        let got = check_certificate(&id, &workload(), &cert_rules(), NOW).err();
        assert_eq!(got.as_ref().map(|d| d.reason), *want, "{uris:?}: {got:?}");
        if let Some(deny) = got {
            assert!(deny.message.contains("policy 'p'"), "{}", deny.message);
        }
    }
    // Without `spiffe`, a certificate with two URI SANs is judged as before.
    let two = identity(&pki, &svid(&[good, "https://x"]));
    assert_eq!(
        check_certificate(&two, &policy(), &cert_rules(), NOW),
        Ok(())
    );
}

#[test]
fn id_roles_grant_without_a_record_and_a_record_still_suspends() {
    let pki = pki();
    let request = RequestInfo {
        method: "GET",
        path: "/api/jobs",
    };
    let batch = identity(&pki, &svid(&["spiffe://prod.example/ns/jobs/sa/batch-1"]));
    let grant = check_principal(
        &batch,
        &workload(),
        &principal_rules(),
        &StoreFacts::default(),
        request,
    )
    .expect("allowed by pattern roles");
    assert_eq!(grant.roles, ["worker"]);
    let web = identity(&pki, &svid(&["spiffe://prod.example/ns/jobs/sa/web"]));
    let deny = check_principal(
        &web,
        &workload(),
        &principal_rules(),
        &StoreFacts::default(),
        request,
    )
    .expect_err("no pattern matches");
    assert_eq!(deny.reason, ReasonCode::PermissionDenied);
    let record = crate::store::Principal {
        principal_id: "spiffe://prod.example/ns/jobs/sa/batch-1".into(),
        principal_type: None,
        status: crate::store::PrincipalStatus::Suspended,
        suspended_at: Some(0),
        suspended_reason: Some("quarantined".into()),
        roles: None,
        created_at: Some(0),
    };
    let suspended = StoreFacts::of(None, Some(&record));
    let deny = check_principal(&batch, &workload(), &principal_rules(), &suspended, request)
        .expect_err("suspended");
    assert_eq!(deny.reason, ReasonCode::PrincipalSuspended);
}
