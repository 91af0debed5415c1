//! `listen.admin_api` and `admin_api`.

use super::{MINIMAL, assert_problems_at, dir_with_ca, load};

#[test]
fn off_by_default_and_read_when_set() {
    let dir = dir_with_ca();
    let config = load(&dir, MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.admin_api, None);
    assert_eq!(config.admin_api, None);

    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.path().join("api.pem"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("api-key.pem"), key.serialize_pem()).expect("write");
    let yaml = format!(
        "{MINIMAL}listen: {{admin_api: 127.0.0.1:9443}}\n\
         admin_api: {{policy: default, tls: {{cert: api.pem, key: api-key.pem}}}}\n"
    );
    let config = load(&dir, &yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.listen.admin_api,
        Some("127.0.0.1:9443".parse().expect("addr"))
    );
    let settings = config.admin_api.expect("admin_api");
    assert_eq!(settings.policy, "default");
    // The client CAs default to the trust bundle.
    let bundle = std::fs::read(dir.path().join("ca.pem")).expect("read");
    assert_eq!(settings.client_ca_pem, bundle);
}

#[test]
fn every_problem_is_reported_at_its_key() {
    let dir = dir_with_ca();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").expect("write");
    let yaml = format!(
        "{MINIMAL}listen: {{admin_api: 127.0.0.1:9443}}\n\
         admin_api: {{policy: operators, tls: {{cert: junk.pem, client_ca: missing.pem}}}}\n"
    );
    let err = load(&dir, &yaml).expect_err("refused");
    assert_problems_at(
        &err,
        &[
            "admin_api.policy",
            "admin_api.tls.cert",
            "admin_api.tls.key",
            "admin_api.tls.client_ca",
        ],
    );
    let yaml = format!("{MINIMAL}listen: {{admin_api: nowhere}}\n");
    let err = load(&dir, &yaml).expect_err("refused");
    assert_problems_at(&err, &["listen.admin_api"]);
    let yaml = format!("{MINIMAL}admin_api: {{colour: red}}\n");
    let err = load(&dir, &yaml).expect_err("refused");
    assert_problems_at(&err, &["admin_api.colour"]);
}
