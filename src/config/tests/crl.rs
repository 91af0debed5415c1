//! The `crl` section: issuers resolved against the trust bundle, and where the high-water
//! file may go.

use time::OffsetDateTime;

use crate::config::{Config, Problem};
use crate::pki::CertAuthority;

const NOW: i64 = 1_790_000_000;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

/// A directory whose `ca.pem` holds one CA, `CN=root, O=certgate dev`.
fn dir_with_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = CertAuthority::new("root", at(NOW - 86_400), at(NOW + 365 * 86_400)).expect("CA");
    std::fs::write(dir.path().join("ca.pem"), root.cert_pem()).expect("write");
    dir
}

fn config_with(dir: &tempfile::TempDir, crl_yaml: &str) -> Result<Config, Vec<Problem>> {
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem}}\npolicies:\n  default: {{}}\n  lax: {{revocation: optional}}\n{crl_yaml}"
    );
    Config::from_yaml(&yaml, &dir.path().join("certgate.yaml"))
}

#[test]
fn bad_crl_config_names_every_key() {
    let dir = dir_with_root();
    let yaml = r#"crl:
  max_age: "soon"
  max_size: "lots"
  issuers:
    - ca: "CN=nobody"
      sources: [{url: "http://x/a.crl"}]
    - ca: "CN=root, O=certgate dev"
      sources:
        - {url: "ftp://x/a.crl"}
        - {url: "http://x/a.crl", file: "a.crl"}
        - {file: "a.crl", refresh_interval: "0s"}
    - ca: "CN=root, O=certgate dev"
      sources: []
"#;
    let problems = config_with(&dir, yaml).expect_err("invalid");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "crl.max_age",
        "crl.max_size",
        "crl.issuers[0].ca",
        "crl.issuers[1].sources[0].url",
        "crl.issuers[1].sources[1]",
        "crl.issuers[1].sources[2].refresh_interval",
        "crl.issuers[2].ca",
    ] {
        assert!(keys.contains(&key), "{key} missing from {problems:?}");
    }
    let unknown = problems
        .iter()
        .find(|p| p.key == "crl.issuers[0].ca")
        .expect("reported");
    assert!(
        unknown.message.contains("CN=root"),
        "lists the bundle's subjects: {}",
        unknown.message
    );
}

#[test]
fn the_high_water_file_lives_outside_the_cache() {
    let dir = dir_with_root();
    let config = config_with(&dir, "crl:\n  cache_dir: state/crl/\n").expect("valid");
    assert_eq!(
        config.crl.high_water_file,
        Some(dir.path().join("state/crl.high-water.json")),
        "beside the cache directory by default"
    );
    let config = config_with(
        &dir,
        "crl:\n  high_water_file: /var/lib/certgate/crl.json\n",
    )
    .expect("valid");
    assert_eq!(
        config.crl.high_water_file.as_deref(),
        Some(std::path::Path::new("/var/lib/certgate/crl.json"))
    );
    assert_eq!(
        config_with(&dir, "").expect("valid").crl.high_water_file,
        None
    );
    let problems = config_with(
        &dir,
        "crl:\n  cache_dir: cache\n  high_water_file: cache/marks.json\n",
    )
    .expect_err("inside the cache");
    assert_eq!(problems[0].key, "crl.high_water_file", "{problems:?}");
    assert!(problems[0].message.contains("inside crl.cache_dir"));
}

#[test]
fn one_key_under_two_configured_names_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = CertAuthority::new("a", at(NOW - 86_400), at(NOW + 86_400)).expect("CA");
    let b = a
        .reissued("b", at(NOW - 86_400), at(NOW + 86_400))
        .expect("CA");
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", a.cert_pem(), b.cert_pem()),
    )
    .expect("write");
    let issuers =
        "crl:\n  issuers:\n    - ca: \"CN=a, O=certgate dev\"\n      sources: [{file: a.crl}]\n";
    assert!(
        config_with(&dir, issuers).is_ok(),
        "CRLs for one of the names"
    );
    let both =
        format!("{issuers}    - ca: \"CN=b, O=certgate dev\"\n      sources: [{{file: b.crl}}]\n");
    let problems = config_with(&dir, &both).expect_err("two names, one key");
    assert!(
        problems
            .iter()
            .any(|p| p.key == "crl.issuers" && p.message.contains("share one key")),
        "{problems:?}"
    );
}
