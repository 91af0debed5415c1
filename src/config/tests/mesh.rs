//! `policy_routes`, `allowed_issuers`, `spiffe`, `trust.require_client_auth_eku` and
//! `crl.tls`: bad values reported with their key paths, good ones resolved at load.

use time::OffsetDateTime;

use crate::authz::ClientAuthEku;
use crate::config::{Config, Problem};
use crate::pki::CertAuthority;

const NOW: i64 = 1_790_000_000;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

/// A directory whose `ca.pem` holds two CAs, `CN=workload, O=certgate dev` and
/// `CN=partner, O=certgate dev`; the partner CA's PEM is also in `partner.pem`.
fn two_cas() -> (tempfile::TempDir, CertAuthority) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = |name| CertAuthority::new(name, at(NOW - 86_400), at(NOW + 365 * 86_400)).expect("CA");
    let (workload, partner) = (ca("workload"), ca("partner"));
    let bundle = format!("{}{}", workload.cert_pem(), partner.cert_pem());
    std::fs::write(dir.path().join("ca.pem"), bundle).expect("write");
    std::fs::write(dir.path().join("partner.pem"), partner.cert_pem()).expect("write");
    (dir, partner)
}

fn config_with(dir: &tempfile::TempDir, yaml: &str) -> Result<Config, Vec<Problem>> {
    let yaml = format!("trust: {{ca_bundle: ca.pem}}\n{yaml}");
    Config::from_yaml(&yaml, &dir.path().join("certgate.yaml"))
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn bad_mesh_values_name_their_keys() {
    let (dir, _) = two_cas();
    let yaml = r#"trust: {ca_bundle: ca.pem, require_client_auth_eku: always}
policies:
  default: {}
  admin:
    allowed_issuers: ["CN=nobody", "sha256:zz", "not a dn at all ="]
    spiffe:
      trust_domains: ["Prod.Example", "spiffe://x"]
      id_roles: [{pattern: "prod.example/*", roles: [worker]}]
  empty:
    allowed_issuers: []
    spiffe: {trust_domains: []}
policy_routes:
  - {hosts: ["admin.example.test:8443"], path_prefix: "admin", policy: admin}
  - {path_regex: "/jobs/(", methods: ["G3T"], policy: nope}
  - {path_prefix: "/a", path_regex: "/b", policy: admin}
crl:
  tls: {ca_bundle: missing.pem, client_cert: partner.pem}
"#;
    let problems = Config::from_yaml(yaml, &dir.path().join("certgate.yaml")).expect_err("invalid");
    let found = keys(&problems);
    for key in [
        "trust.require_client_auth_eku",
        "policies.admin.allowed_issuers[0]",
        "policies.admin.allowed_issuers[1]",
        "policies.admin.allowed_issuers[2]",
        "policies.admin.spiffe.trust_domains[0]",
        "policies.admin.spiffe.trust_domains[1]",
        "policies.admin.spiffe.id_roles[0].pattern",
        "policies.empty.allowed_issuers",
        "policies.empty.spiffe.trust_domains",
        "policy_routes[0].hosts[0]",
        "policy_routes[0].path_prefix",
        "policy_routes[1].path_regex",
        "policy_routes[1].methods[0]",
        "policy_routes[1].policy",
        "policy_routes[2]",
        "crl.tls.ca_bundle",
        "crl.tls.client_key",
    ] {
        assert!(found.contains(&key), "{key} missing from {problems:#?}");
    }
    let unknown = problems
        .iter()
        .find(|p| p.key == "policies.admin.allowed_issuers[0]")
        .expect("reported");
    assert!(
        unknown.message.contains("CN=partner"),
        "lists the bundle's CAs: {}",
        unknown.message
    );
}

#[test]
fn allowed_issuers_resolve_to_ca_keys_by_dn_in_either_order_or_by_fingerprint() {
    let (dir, partner) = two_cas();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(partner.cert_pem().as_bytes())
        .map(|d: rustls_pki_types::CertificateDer<'_>| d.to_vec())
        .expect("pem");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
    let yaml = format!(
        r#"policies:
  default: {{}}
  by_rfc4514: {{allowed_issuers: ["O=certgate dev,CN=partner"]}}
  by_openssl_order: {{allowed_issuers: ["CN=partner, O=certgate dev"]}}
  by_digest: {{allowed_issuers: ["sha256:{digest}"]}}
"#
    );
    let config = config_with(&dir, &yaml).expect("valid");
    let partner_key = config
        .trust
        .cas()
        .iter()
        .find(|ca| ca.subject.contains("partner"))
        .expect("partner CA")
        .key;
    for name in ["by_rfc4514", "by_openssl_order", "by_digest"] {
        assert_eq!(
            config.policies[name].allowed_issuers,
            Some(vec![partner_key]),
            "{name}"
        );
    }
    assert_eq!(config.policies["default"].allowed_issuers, None);
}

#[test]
fn eku_setting_keeps_booleans_and_adds_strict() {
    let (dir, _) = two_cas();
    for (value, want) in [
        ("true", ClientAuthEku::IfPresent),
        ("false", ClientAuthEku::Off),
        ("strict", ClientAuthEku::Strict),
    ] {
        let text = format!(
            "trust: {{ca_bundle: ca.pem, require_client_auth_eku: {value}}}\npolicies: {{default: {{}}}}\n"
        );
        let config = Config::from_yaml(&text, &dir.path().join("certgate.yaml")).expect("valid");
        assert_eq!(
            config.certificate_rules.require_client_auth_eku, want,
            "{value}"
        );
    }
    let config = config_with(&dir, "policies: {default: {}}\n").expect("valid");
    assert_eq!(
        config.certificate_rules.require_client_auth_eku,
        ClientAuthEku::IfPresent,
        "the default is unchanged"
    );
}

#[test]
fn routes_choose_by_host_and_normalised_path() {
    let (dir, _) = two_cas();
    let yaml = r#"policies: {default: {}, admin: {}, workload: {}}
policy_routes:
  - {hosts: ["admin.example.test"], path_prefix: /admin, policy: admin}
  - {hosts: ["*.example.test"], path_regex: "/jobs/.*", methods: [get], policy: workload}
"#;
    let config = config_with(&dir, yaml).expect("valid");
    let routes = &config.policy_routes;
    assert_eq!(
        routes.choose(Some("admin.example.test:443"), "GET", "/admin/users"),
        Some((0, "admin"))
    );
    assert_eq!(
        routes.choose(Some("a.example.test"), "GET", "/jobs/7"),
        Some((1, "workload"))
    );
    assert_eq!(
        routes.choose(Some("a.example.test"), "POST", "/jobs/7"),
        None
    );
    assert_eq!(
        routes.describe(1).as_deref(),
        Some("hosts=*.example.test path_regex=^(?:/jobs/.*)$ methods=GET")
    );
}
