use std::time::Duration;

use super::*;
use crate::config::DenyDetail;
use crate::config::identity_headers::Fields;
use crate::pki::{CertAuthority, CertSpec};
use crate::store::CacheSettings;
use crate::store::fake::FakeStore;

const NOW: i64 = 1_790_000_000;

pub(super) struct Fixture {
    pub(super) checker: Checker,
    store: Arc<FakeStore>,
    pub(super) good: String,
    pub(super) stranger: String,
    _dir: tempfile::TempDir,
}

fn fixture(failing: bool) -> Fixture {
    fixture_with(failing, "")
}

/// A fixture whose configuration also holds `extra_yaml`.
pub(super) fn fixture_with(failing: bool, extra_yaml: &str) -> Fixture {
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
    let other = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
    let spec = CertSpec {
        organizational_unit: Some("worker".into()),
        ..CertSpec::client("w1", now, time::Duration::days(1))
    };
    let good = ca.issue(&spec).expect("leaf").cert_pem;
    let stranger = other.issue(&spec).expect("leaf").cert_pem;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem}}\nroles_by_type: {{worker: [worker]}}\n\
         policies:\n  default:\n    permissions: {{worker: [\"GET /api/*\"]}}\n{extra_yaml}"
    );
    let config = Config::from_yaml(&yaml, &dir.path().join("c.yaml")).expect("valid");
    let store = Arc::new(FakeStore::default());
    store.put("w1", "worker");
    store.fail(failing);
    let settings = CacheSettings {
        ttl: Duration::from_secs(60),
        max_entries: 100,
        stale_if_error: Duration::ZERO,
    };
    let metrics = Metrics::new();
    let cached = CachedStore::new(store.clone(), settings, metrics.clone());
    Fixture {
        checker: Checker::new(config, cached, metrics),
        store,
        good,
        stranger,
        _dir: dir,
    }
}

pub(super) fn input(cert: &str) -> CheckInput<'_> {
    CheckInput {
        host: None,
        certificate: Some(cert.as_bytes()),
        encoding: Default::default(),
        policy: None,
        method: "GET",
        path: "/api/x",
        malformed: None,
    }
}

fn reason(outcome: &Outcome) -> Option<ReasonCode> {
    outcome.decision.as_ref().err().map(|d| d.reason)
}

#[tokio::test]
async fn allow_sets_identity_headers() {
    let f = fixture(false);
    let outcome = f.checker.check(input(&f.good), NOW).await;
    assert_eq!(reason(&outcome), None, "{:?}", outcome.decision);
    let headers = outcome.allow_headers();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-client-principal"), Some("w1"));
    assert_eq!(get("x-client-principal-type"), Some("worker"));
    assert_eq!(get("x-client-roles"), Some("worker"));
    assert_eq!(
        get("x-client-spiffe-id"),
        None,
        "no SPIFFE id in this certificate"
    );
    assert_eq!(outcome.deny_body("r1"), None);
}

#[tokio::test]
async fn store_down_and_nothing_cached_is_503() {
    let f = fixture(true);
    let outcome = f.checker.check(input(&f.good), NOW).await;
    assert_eq!(reason(&outcome), Some(ReasonCode::StoreUnavailable));
    assert_eq!(outcome.http_status(), 503);
    let body = outcome.deny_body("req-7").expect("deny body");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["error"], "store_unavailable");
    assert_eq!(json["request_id"], "req-7");
    // The backend's own text stays in the logs: the client sees the kind of failure.
    assert_eq!(
        json["message"],
        "principal store unavailable (backend error)"
    );
}

#[tokio::test]
async fn untrusted_certificates_never_reach_the_store() {
    let f = fixture(false);
    let outcome = f.checker.check(input(&f.stranger), NOW).await;
    assert_eq!(reason(&outcome), Some(ReasonCode::UntrustedIssuer));
    assert_eq!(f.store.calls(), 0);
}

#[tokio::test]
async fn each_certificate_is_parsed_once_and_store_answers_are_cached() {
    let f = fixture(false);
    for _ in 0..3 {
        assert_eq!(reason(&f.checker.check(input(&f.good), NOW).await), None);
    }
    let m = f.checker.metrics();
    assert_eq!(
        m.cache_lookups
            .with_label_values(&["identity", "miss"])
            .get(),
        1
    );
    assert_eq!(
        m.cache_lookups
            .with_label_values(&["identity", "hit"])
            .get(),
        2
    );
    assert_eq!(f.store.calls(), 2, "one principal + one cert lookup");
}

#[tokio::test]
async fn no_certificate_unknown_policy_and_garbage() {
    let f = fixture(false);
    let none = CheckInput {
        certificate: None,
        ..input("")
    };
    assert_eq!(
        reason(&f.checker.check(none, NOW).await),
        Some(ReasonCode::NoClientCertificate)
    );
    let blank = input("  \n");
    assert_eq!(
        reason(&f.checker.check(blank, NOW).await),
        Some(ReasonCode::NoClientCertificate)
    );
    let garbage = input("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert_eq!(
        reason(&f.checker.check(garbage, NOW).await),
        Some(ReasonCode::MalformedCertificate)
    );
    let unknown = CheckInput {
        policy: Some("nope"),
        ..input(&f.good)
    };
    let outcome = f.checker.check(unknown, NOW).await;
    assert_eq!(reason(&outcome), Some(ReasonCode::UnknownPolicy));
    assert_eq!(
        f.checker
            .metrics()
            .decisions
            .with_label_values(&["deny", "unknown_policy", "unknown", "", "enforce"])
            .get(),
        1,
        "unknown policy names do not become metric labels"
    );
}

#[tokio::test]
async fn reason_only_detail_hides_the_message() {
    let f = fixture_with(false, "response: {deny_detail: reason}\n");
    let outcome = f.checker.check(input(&f.stranger), NOW).await;
    assert_eq!(outcome.config().deny_detail, DenyDetail::Reason);
    let body = outcome.deny_body("r").expect("deny");
    assert!(
        body.contains("untrusted_issuer") && !body.contains("trust bundle"),
        "{body}"
    );
}

#[tokio::test]
async fn an_outcome_is_rendered_with_the_configuration_that_decided_it() {
    let f = fixture(false);
    let before = f.checker.generation();
    let mut renamed = Config::clone(&before.config);
    renamed.headers.principal = "x-renamed-principal".into();
    f.checker.replace_config(renamed);
    let principal_header = |outcome: &Outcome| {
        let headers = outcome.allow_headers();
        headers
            .iter()
            .find(|(_, value)| value == "w1")
            .map(|(name, _)| (*name).to_owned())
    };
    let decided_before = f
        .checker
        .check_in(&before, input(&f.good), &RequestMeta::module("r"), NOW)
        .await;
    assert_eq!(
        principal_header(&decided_before).as_deref(),
        Some("x-client-principal")
    );
    let decided_after = f.checker.check(input(&f.good), NOW).await;
    assert_eq!(
        principal_header(&decided_after).as_deref(),
        Some("x-renamed-principal")
    );
}

#[tokio::test]
async fn a_shadow_policy_answers_its_denies_as_identity_less_allows_but_not_untrusted_issuers() {
    let f = fixture_with(false, "    enforce: false\n");
    let admin_path = CheckInput {
        path: "/admin",
        ..input(&f.good)
    };
    let shadow = f.checker.check(admin_path, NOW).await;
    let deny = shadow.decision.as_ref().expect_err("would be denied");
    assert_eq!(deny.reason, ReasonCode::PermissionDenied);
    assert!(shadow.shadow);
    assert_eq!(shadow.http_status(), 200);
    assert!(shadow.deny_body("r").is_none());
    assert!(shadow.allow_headers().is_empty());
    let counted = f.checker.metrics().decisions.with_label_values(&[
        "deny",
        "permission_denied",
        "default",
        "",
        "shadow",
    ]);
    assert_eq!(counted.get(), 1);

    let untrusted = f.checker.check(input(&f.stranger), NOW).await;
    assert!(!untrusted.shadow);
    assert_eq!(untrusted.http_status(), 401);
}

#[tokio::test]
async fn metadata_only_sets_no_identity_header_and_every_answer_carries_metadata() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    use envoy_types::pb::google::protobuf::value::Kind;

    let f = fixture_with(false, "response: {identity: metadata_only}\n");
    let allowed = f.checker.check(input(&f.good), NOW).await;
    let response = crate::server::ext_authz::to_response(&allowed, "r-1", Fields::ALL);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("an allow: {response:?}");
    };
    assert!(ok.headers.is_empty(), "{ok:?}");
    assert!(
        ok.headers_to_remove
            .iter()
            .any(|h| h == "x-client-principal")
    );
    let field =
        |response: &envoy_types::ext_authz::v3::pb::CheckResponse, key: &str| match &response
            .dynamic_metadata
            .as_ref()?
            .fields
            .get(key)?
            .kind
        {
            Some(Kind::StringValue(v)) => Some(v.clone()),
            _ => None,
        };
    assert_eq!(field(&response, "principal").as_deref(), Some("w1"));
    assert_eq!(field(&response, "decision").as_deref(), Some("allow"));
    assert_eq!(field(&response, "request_id").as_deref(), Some("r-1"));

    let denied = f.checker.check(input(&f.stranger), NOW).await;
    let response = crate::server::ext_authz::to_response(&denied, "r-2", Fields::ALL);
    assert_eq!(
        field(&response, "reason").as_deref(),
        Some("untrusted_issuer")
    );
    assert_eq!(field(&response, "decision").as_deref(), Some("deny"));
}

#[tokio::test]
async fn headers_only_gives_an_allow_identity_headers_and_no_metadata_and_a_deny_its_metadata() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;

    let f = fixture_with(false, "response: {identity: headers_only}\n");
    let allowed = f.checker.check(input(&f.good), NOW).await;
    assert!(allowed.decision.is_ok(), "{:?}", allowed.decision);
    let response = crate::server::ext_authz::to_response(&allowed, "r-1", Fields::ALL);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("an allow: {response:?}");
    };
    let principal = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-client-principal");
    assert_eq!(principal.map(|h| h.value.as_str()), Some("w1"), "{ok:?}");
    assert_eq!(response.dynamic_metadata, None);

    let denied = f.checker.check(input(&f.stranger), NOW).await;
    let response = crate::server::ext_authz::to_response(&denied, "r-2", Fields::ALL);
    let reason = response
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get("reason"))
        .and_then(|v| v.kind.clone());
    assert_eq!(
        reason,
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
            "untrusted_issuer".into()
        ))
    );
}

#[tokio::test]
async fn a_peer_certificate_is_known_by_its_digest_and_never_by_another_certificate() {
    let f = fixture(false);
    let good = cert::decode_certificate(f.good.as_bytes()).expect("DER");
    let stranger = cert::decode_certificate(f.stranger.as_bytes()).expect("DER");
    let digest: [u8; 32] = Sha256::digest(&good).into();
    let generation = f.checker.generation();
    let peer = |der: &Vec<u8>| {
        let der = der.clone();
        f.checker
            .peer_identity(&generation, &digest, move || Ok::<_, ()>(der), NOW)
    };

    // Another certificate than the connection's: refused, and nothing is cached for it.
    assert!(matches!(peer(&stranger), Err(PeerMiss::NotTheConnections)));
    let (parsed, cached) = peer(&good).expect("the connection's certificate");
    assert!(!cached);
    // Known by the digest from now on: the certificate is not even asked for.
    let (hit, cached) = f
        .checker
        .peer_identity(&generation, &digest, || Err("not read on a hit"), NOW)
        .expect("cached");
    assert!(cached && Arc::ptr_eq(&hit, &parsed));
    // Unless the caller cannot give it on a miss, which is the caller's to answer.
    let other: [u8; 32] = Sha256::digest(&stranger).into();
    let unavailable = f
        .checker
        .peer_identity(&generation, &other, || Err("no XFCC"), NOW);
    assert!(matches!(unavailable, Err(PeerMiss::Unavailable("no XFCC"))));

    let input = CheckInput {
        certificate: None,
        ..input("")
    };
    let meta = RequestMeta::module("r1");
    let outcome = f
        .checker
        .check_peer_in(&generation, input, (hit, true), &meta, NOW)
        .await;
    assert_eq!(reason(&outcome), None, "{:?}", outcome.decision);
    assert_eq!(outcome.principal(), Some("w1"));
}

/// Allows that differ from `allowed` (an allow of `f.good`) in one thing an adapter renders
/// from: the roles, the principal type, the policy, the parsed identity, the configuration
/// generation (the checker's configuration is reloaded).
pub(super) async fn allows_that_differ(
    f: &Fixture,
    allowed: &Outcome,
) -> Vec<(&'static str, Outcome)> {
    let mut more_roles = allowed.clone();
    let mut other_type = allowed.clone();
    if let (Ok(roles), Ok(kind)) = (&mut more_roles.decision, &mut other_type.decision) {
        roles.roles.push("admin".into());
        kind.principal_type = "human".into();
    }
    let mut other_policy = allowed.clone();
    other_policy.policy = "other".into();
    let mut reparsed = allowed.clone();
    reparsed.identity = allowed.identity.as_deref().cloned().map(Arc::new);
    f.checker.replace_config(Config::clone(allowed.config()));
    let reloaded = f.checker.check(input(&f.good), NOW).await;
    assert!(!Arc::ptr_eq(reloaded.config(), allowed.config()));
    vec![
        ("role change", more_roles),
        ("principal type", other_type),
        ("policy", other_policy),
        ("identity", reparsed),
        ("reload", reloaded),
    ]
}
