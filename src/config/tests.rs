mod admin_api;
mod crl;
mod expiry;
mod listen;
mod mesh;
mod observe;

use super::*;
use crate::cert::PrincipalTypeSource;

fn dir_with_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
    // Valid long after the tests run: `Config::load` refuses a bundle with an expired CA.
    let ca =
        crate::pki::CertAuthority::new("t", now, now + time::Duration::days(36_500)).expect("CA");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
    std::fs::write(dir.path().join("admins.txt"), "# admins\nalice\n\nbob\n").expect("write");
    dir
}

fn load(dir: &tempfile::TempDir, yaml: &str) -> Result<Config, ConfigError> {
    let path = dir.path().join("certgate.yaml");
    std::fs::write(&path, yaml).expect("write");
    Config::load(&path)
}

/// Every key in `keys` has a problem in `err`.
fn assert_problems_at(err: &ConfigError, keys: &[&str]) {
    let found: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in keys {
        assert!(found.contains(key), "{key} missing from {found:?}");
    }
}

/// Loading `yaml` fails, and the first problem is at `key` and its message mentions each of
/// `words`.
fn assert_refused_at(
    dir: &tempfile::TempDir,
    yaml: &str,
    key: &str,
    words: &[&str],
) -> ConfigError {
    let err = load(dir, yaml).expect_err(yaml);
    let first = &err.problems[0];
    assert_eq!(first.key, key, "{yaml}");
    for word in words {
        assert!(first.message.contains(word), "{first}");
    }
    err
}

const MINIMAL: &str = "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {}\n";

#[test]
fn minimal_config_has_sensible_defaults() {
    let dir = dir_with_ca();
    let config = load(&dir, MINIMAL).expect("valid");
    assert_eq!(
        config.listen.grpc,
        Some("127.0.0.1:9001".parse().expect("addr"))
    );
    assert_eq!(config.default_policy, "default");
    assert!(
        config.policies["default"].require_enrolment,
        "enrolment is required by default"
    );
    assert_eq!(config.headers.principal, "x-client-principal");
    assert_eq!(config.certificate_rules.clock_skew_secs, 60);
    assert_eq!(
        config.store.backend,
        StoreBackend::Embedded {
            path: dir.path().join("certgate.db")
        }
    );
    assert_eq!(config.store.cache.ttl, Duration::from_secs(5));
    assert!(config.watched_files.contains(&dir.path().join("ca.pem")));
    assert_eq!(
        config.principal_rules.type_sources.first(),
        Some(&PrincipalTypeSource::Store),
        "an enrolled principal's type is not overridden by a certificate's OU"
    );
}

#[test]
fn allowlist_file_merges_with_inline_list() {
    let dir = dir_with_ca();
    let yaml = "trust: {ca_bundle: ca.pem}\npolicies:\n  default:\n    \
                cn_allowlist: [carol]\n    cn_allowlist_file: admins.txt\n";
    let config = load(&dir, yaml).expect("valid");
    let list = config.policies["default"]
        .cn_allowlist
        .clone()
        .expect("has a list");
    let mut names: Vec<_> = list.into_iter().collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert!(
        config
            .watched_files
            .contains(&dir.path().join("admins.txt"))
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let dir = dir_with_ca();
    let yaml = r#"
listen: {grpc: "nowhere", admin: "127.0.0.1:9901"}
trust: {ca_bundle: missing.pem, clock_skew: "soon"}
identity: {principal_id_oid: "not-an-oid"}
default_policy: nope
policies:
  admin:
    max_lifetime: "7x"
    cn_allowlist_file: absent.txt
    permissions:
      admin: ["GET"]
headers: {principal: "bad header"}
"#;
    let err = load(&dir, yaml).expect_err("invalid");
    assert_problems_at(
        &err,
        &[
            "listen.grpc",
            "trust.ca_bundle",
            "trust.clock_skew",
            "identity.principal_id_oid",
            "policies.admin.max_lifetime",
            "policies.admin.cn_allowlist_file",
            "policies.admin.permissions.admin[0]",
            "default_policy",
            "headers.principal",
        ],
    );
    let text = err.to_string();
    assert!(
        text.contains("policies.admin.max_lifetime: \"7x\" is not a duration"),
        "{text}"
    );
}

#[test]
fn unknown_and_mistyped_keys_name_their_path() {
    let dir = dir_with_ca();
    assert_refused_at(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {max_lifetim: 7d}\n",
        "policies.default.max_lifetim",
        &["max_lifetim"],
    );
    assert_refused_at(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {require_enrolment: maybe}\n",
        "policies.default.require_enrolment",
        &[],
    );
}

#[test]
fn dynamodb_store_settings_and_defaults() {
    let dir = dir_with_ca();
    let config = load(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  \
         dynamodb: {principals_table: prod_principals, endpoint_url: 'http://127.0.0.1:8000'}\n",
    )
    .expect("valid");
    let StoreBackend::DynamoDb(d) = &config.store.backend else {
        panic!("dynamodb expected: {:?}", config.store.backend);
    };
    assert_eq!(d.principals_table, "prod_principals");
    assert_eq!(d.certificates_table, "certgate_certificates");
    assert_eq!(d.audit_table, "prod_audit", "derived from principals_table");
    assert_eq!(d.endpoint_url.as_deref(), Some("http://127.0.0.1:8000"));
    assert_eq!(d.timeout, Duration::from_millis(250));
    assert_eq!(d.max_attempts, 3);
    assert_eq!(
        config.store.cache.stale_if_error,
        Duration::from_secs(60),
        "a network store rides out short outages by default"
    );
    // No `dynamodb:` section at all: every default.
    let config = load(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {backend: dynamodb}\n",
    )
    .expect("valid");
    assert!(matches!(config.store.backend, StoreBackend::DynamoDb(_)));
}

#[test]
fn the_audit_table_is_named_or_derived_and_checked() {
    let dir = dir_with_ca();
    let table = |dynamodb: &str| {
        let yaml = format!(
            "trust: {{ca_bundle: ca.pem}}\npolicies: {{default: {{}}}}\nstore:\n  backend: \
             dynamodb\n  dynamodb: {dynamodb}\n"
        );
        match load(&dir, &yaml).expect("valid").store.backend {
            StoreBackend::DynamoDb(d) => d.audit_table,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(table("{}"), "certgate_audit");
    assert_eq!(table("{principals_table: people}"), "people_audit");
    assert_eq!(table("{audit_table: trail}"), "trail");
    for (bad, key) in [
        ("{audit_table: 'no spaces'}", "store.dynamodb.audit_table"),
        (
            "{audit_table: certgate_principals}",
            "store.dynamodb.audit_table",
        ),
    ] {
        let yaml = format!(
            "trust: {{ca_bundle: ca.pem}}\npolicies: {{default: {{}}}}\nstore:\n  backend: \
             dynamodb\n  dynamodb: {bad}\n"
        );
        assert_problems_at(&load(&dir, &yaml).expect_err(bad), &[key]);
    }
}

#[test]
fn bad_dynamodb_settings_are_all_reported() {
    let dir = dir_with_ca();
    let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  \
                dynamodb:\n    principals_table: 'no spaces'\n    certificates_table: 'no spaces'\n    \
                endpoint_url: localhost:8000\n    timeout: 100ms\n    attempt_timeout: 200ms\n    \
                max_attempts: 0\n    admin_timeout: soon\n";
    let err = load(&dir, yaml).expect_err("invalid");
    assert_problems_at(
        &err,
        &[
            "store.dynamodb.principals_table",
            "store.dynamodb.certificates_table",
            "store.dynamodb.endpoint_url",
            "store.dynamodb.attempt_timeout",
            "store.dynamodb.max_attempts",
            "store.dynamodb.admin_timeout",
        ],
    );
    assert_refused_at(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {backend: redis}\n",
        "store.backend",
        &["embedded, dynamodb"],
    );
    // DynamoDB settings without the backend.
    assert_refused_at(
        &dir,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {dynamodb: {region: eu-west-1}}\n",
        "store.dynamodb",
        &[],
    );
}

#[test]
fn structural_problems_in_several_sections_are_all_reported() {
    let dir = dir_with_ca();
    let yaml = "trust: {ca_bundle: ca.pem, clock_skew: 2h}\nstore: {cache_tl: 5s}\n\
                policies:\n  a: {require_enrolment: maybe}\n  b: {max_lifetime: 0s}\n  \
                c: {permissions: 3}\nlisten: {grpc: 1}\nlisen: {}\n";
    let err = load(&dir, yaml).expect_err("invalid");
    assert_problems_at(
        &err,
        &[
            "store.cache_tl",
            "policies.a.require_enrolment",
            "policies.c.permissions",
            "lisen",
        ],
    );
    for p in &err.problems {
        assert!(!p.message.starts_with(&p.key), "path repeated in {p}");
    }
    // Structurally fine, semantically wrong: reported in the second pass.
    let yaml = "trust: {ca_bundle: ca.pem, clock_skew: 2h}\npolicies:\n  b: {max_lifetime: 0s}\n";
    let err = load(&dir, yaml).expect_err("invalid");
    assert_problems_at(&err, &["trust.clock_skew", "policies.b.max_lifetime"]);
}

#[test]
fn forwarded_sources_name_their_way_in_and_proxies() {
    let dir = dir_with_ca();
    let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nforwarded_certificates:\n  \
                - {via: forward_auth, header: x-forwarded-client-cert, format: xfcc, trusted_proxies: []}\n  \
                - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.0/33, unix]}\n  \
                - {header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.1]}\n  \
                - {via: ext_authz, header: ssl-client-cert, format: url_encoded_pem, envoy_forward_client_cert: sanitize_set, trusted_proxies: [unix]}\n  \
                - {via: ext_authz, header: x-forwarded-client-cert, format: xfcc, envoy_forward_client_cert: append_forward, trusted_proxies: [unix]}\n  \
                - {via: forward_auth, header: x-forwarded-client-cert, format: xfcc, envoy_forward_client_cert: sanitize_set, trusted_proxies: [10.0.0.1]}\n";
    let err = load(&dir, yaml).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "forwarded_certificates[0].trusted_proxies",
            "forwarded_certificates[1].trusted_proxies[0]",
            "forwarded_certificates[1].trusted_proxies[1]",
            "forwarded_certificates[2].via",
            "forwarded_certificates[3].header",
            "forwarded_certificates[4].envoy_forward_client_cert",
            "forwarded_certificates[5].envoy_forward_client_cert",
        ]
    );
    let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nforwarded_certificates:\n  \
                - {via: ext_authz, header: X-Forwarded-Client-Cert, format: xfcc, envoy_forward_client_cert: sanitize_set, trusted_proxies: [10.0.0.0/8, 127.0.0.1, unix]}\n  \
                - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [\"::ffff:192.168.0.0/120\"]}\n";
    let config = load(&dir, yaml).expect("valid");
    let source = &config.forwarded_certificates[0];
    assert_eq!(
        (source.via, source.header.as_str()),
        (Via::ExtAuthz, "x-forwarded-client-cert")
    );
    assert!(source.trusts(Some("10.1.2.3".parse().expect("ip"))));
    assert!(source.trusts(None), "unix socket callers");
    assert!(!source.trusts(Some("192.168.0.1".parse().expect("ip"))));
    // A dual-stack listener reports IPv4 callers as IPv4-mapped IPv6 addresses.
    assert!(source.trusts(Some("::ffff:127.0.0.1".parse().expect("ip"))));
    assert!(source.trusts(Some("::ffff:10.9.9.9".parse().expect("ip"))));
    assert!(!source.trusts(Some("::ffff:192.168.0.1".parse().expect("ip"))));
    let mapped = &config.forwarded_certificates[1];
    assert!(mapped.trusts(Some("192.168.0.7".parse().expect("ip"))));
    assert!(mapped.trusts(Some("::ffff:192.168.0.7".parse().expect("ip"))));
    assert!(!mapped.trusts(Some("192.168.1.7".parse().expect("ip"))));
    assert!(!mapped.trusts(None));
    assert!(
        load(&dir, MINIMAL)
            .expect("valid")
            .forwarded_certificates
            .is_empty(),
        "none by default"
    );
}

/// A valid configuration with `key` (dotted, e.g. `store.cache_ttl`) set to `value`.
fn with(key: &str, value: &str) -> String {
    let (section, rest) = key.split_once('.').expect("dotted key");
    let nested = |inner: String| {
        rest.split('.')
            .rev()
            .fold(inner, |inner, k| format!("{{{k}: {inner}}}"))
    };
    match section {
        "trust" => {
            format!("trust: {{ca_bundle: ca.pem, {rest}: {value}}}\npolicies: {{default: {{}}}}\n")
        }
        "policies" => format!(
            "trust: {{ca_bundle: ca.pem}}\npolicies: {}\n",
            nested(value.to_owned())
        ),
        _ => format!("{MINIMAL}{section}: {}\n", nested(value.to_owned())),
    }
}

#[test]
fn every_duration_is_bounded_by_what_its_consumer_accepts() {
    let dir = dir_with_ca();
    // (key, largest accepted, refused): one row per duration key.
    let rows = [
        ("store.cache_ttl", "1d", "25h"),
        ("store.stale_if_error", "7d", "2000y"),
        ("identity.cache_ttl", "7d", "8d"),
        ("reload.interval", "1h", "61m"),
        ("trust.clock_skew", "1h", "2h"),
        ("crl.max_age", "366d", "367d"),
        ("crl.next_update_grace", "30d", "31d"),
        ("crl.refresh_interval", "7d", "8d"),
        ("crl.file_refresh_interval", "7d", "8d"),
        ("crl.timeout", "10m", "11m"),
        ("crl.retry_backoff", "1h", "2h"),
        ("crl.max_retry_backoff", "1d", "2d"),
        ("listen.limits.header_read_timeout", "10m", "11m"),
        ("listen.limits.request_timeout", "10m", "11m"),
        ("listen.limits.tcp_keepalive", "2h", "3h"),
        ("policies.default.max_lifetime", "36525d", "2000y"),
    ];
    for (key, ok, refused) in rows {
        load(&dir, &with(key, ok)).unwrap_or_else(|e| panic!("{key}: {ok}: {e}"));
        let err = assert_refused_at(&dir, &with(key, refused), key, &[refused, "maximum"]);
        assert_eq!(err.problems.len(), 1, "{key}: {:?}", err.problems);
    }
    let dynamo = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  dynamodb: ";
    for (key, refused) in [
        ("timeout", "{timeout: 6m, attempt_timeout: 1s}"),
        ("attempt_timeout", "{timeout: 5m, attempt_timeout: 6m}"),
        ("admin_timeout", "{admin_timeout: 2h}"),
        ("purge_expired_after", "{purge_expired_after: 2000y}"),
    ] {
        let err = load(&dir, &format!("{dynamo}{refused}\n")).expect_err(refused);
        let key = format!("store.dynamodb.{key}");
        assert!(
            err.problems
                .iter()
                .any(|p| p.key == key && p.message.contains("maximum")),
            "{key}: {:?}",
            err.problems
        );
    }
}

#[test]
fn listen_limits_defaults_and_bounds() {
    let dir = dir_with_ca();
    let limits = load(&dir, MINIMAL).expect("valid").listen.limits;
    assert_eq!(limits, ListenLimits::default());
    assert_eq!(limits.grpc_max_message_size, 1 << 20);
    let config = load(
        &dir,
        &format!(
            "{MINIMAL}listen:\n  limits: {{http_max_connections: 50, grpc_max_message_size: 256KiB, \
             header_read_timeout: 2s}}\n"
        ),
    )
    .expect("valid");
    assert_eq!(config.listen.limits.http_max_connections, 50);
    assert_eq!(config.listen.limits.grpc_max_message_size, 256 << 10);
    assert_eq!(
        config.listen.limits.header_read_timeout,
        Duration::from_secs(2)
    );
    let err = load(
        &dir,
        &format!(
            "{MINIMAL}listen:\n  limits: {{grpc_max_connections: 0, admin_max_connections: 2000000, \
             header_read_timeout: 0s, request_timeout: soon, tcp_keepalive: 0s, \
             grpc_max_message_size: 1GiB, grpc_max_concurrent_streams: 0}}\n"
        ),
    )
    .expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listen.limits.grpc_max_connections",
            "listen.limits.admin_max_connections",
            "listen.limits.header_read_timeout",
            "listen.limits.request_timeout",
            "listen.limits.tcp_keepalive",
            "listen.limits.grpc_max_message_size",
            "listen.limits.grpc_max_concurrent_streams",
        ]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever duration validation accepts builds the caches and timers without a
    /// panic (2000y used to panic in moka's builder; a huge TTL plus stale_if_error
    /// overflowed a `Duration` add).
    #[test]
    fn accepted_durations_never_panic_their_consumers(
        durations in proptest::collection::vec(
            (
                proptest::prop_oneof![0u64..100, 0u64..100_000, 0u64..=u64::MAX],
                proptest::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "w", "M", "y"]),
            ),
            4,
        ),
    ) {
        let dir = dir_with_ca();
        let text: Vec<String> = durations.iter().map(|(n, unit)| format!("{n}{unit}")).collect();
        let yaml = format!(
            "{MINIMAL}store: {{cache_ttl: {}, stale_if_error: {}}}\nidentity: {{cache_ttl: {}}}\nreload: {{interval: {}}}\n",
            text[0], text[1], text[2], text[3]
        );
        if let Ok(config) = load(&dir, &yaml) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let metrics = crate::metrics::Metrics::new();
                let store = crate::store::open(&config.store.backend, crate::store::Purpose::Serve)
                    .await
                    .expect("embedded store");
                let cached = crate::store::CachedStore::new(store, config.store.cache, metrics.clone());
                let mut ticker = tokio::time::interval(config.reload_interval);
                ticker.tick().await;
                let checker = crate::check::Checker::new(config, cached, metrics);
                let _ = checker.config();
            });
        }
    }
}

#[test]
fn an_unreadable_file_is_an_error_not_a_change() {
    let dir = dir_with_ca();
    let file = dir.path().join("ca.pem");
    let missing = dir.path().join("absent.txt");
    let fingerprint =
        |paths: &[&std::path::Path]| Watched::read(paths.iter().copied()).map(|w| w.fingerprint());
    let before = fingerprint(&[&file, &missing]).expect("readable");
    assert_eq!(fingerprint(&[&file, &missing]).ok(), Some(before));
    // A directory cannot be read as a file, as a file cannot without descriptors.
    let err = fingerprint(&[&file, dir.path()]).expect_err("unreadable");
    assert_eq!(err.path, dir.path());
}

#[test]
fn forward_auth_names_its_request_headers() {
    let dir = dir_with_ca();
    let yaml =
        "listen: {http: 127.0.0.1:9002}\ntrust: {ca_bundle: ca.pem}\npolicies: {default: {}}\n";
    assert_refused_at(&dir, yaml, "forward_auth.request_headers", &[]);
    let config = load(
        &dir,
        &format!("{yaml}forward_auth: {{request_headers: forwarded}}\n"),
    )
    .expect("valid");
    assert_eq!(
        config
            .forward_auth_request_headers
            .map(RequestHeaders::names),
        Some(("x-forwarded-method", "x-forwarded-uri"))
    );
    assert!(
        load(
            &dir,
            &format!("{yaml}forward_auth: {{request_headers: both}}\n")
        )
        .is_err()
    );
}

#[test]
fn garbage_ca_bundle_is_refused() {
    let dir = dir_with_ca();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").expect("write");
    assert_refused_at(&dir, MINIMAL, "trust.ca_bundle", &[]);
}

#[test]
fn shipped_example_config_is_valid() {
    let dir = dir_with_ca();
    let example = include_str!("../../deploy/certgate.example.yaml");
    std::fs::write(dir.path().join("cn-allowlist.txt"), "admin.example.com\n").expect("write");
    // The example's CRL issuer, added to the bundle.
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Client CA");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let example_ca = params.self_signed(&key).expect("CA");
    let bundle = std::fs::read_to_string(dir.path().join("ca.pem")).expect("read");
    std::fs::write(dir.path().join("ca.pem"), bundle + &example_ca.pem()).expect("write");
    let config = load(&dir, example).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.policies.len() >= 2);
    assert_eq!(config.crl.issuers.len(), 1);
    assert_eq!(config.crl.issuers[0].sources.len(), 2);
    assert!(config.crl_required(), "fail-secure by default");
}
