//! A configuration without a decision listener: valid (the Envoy dynamic module serves
//! none), and said to be one `certgate serve` cannot run.

use super::*;

const MODULE_ONLY: &str = "listen: {grpc: \"\", admin: 127.0.0.1:9901}
trust: {ca_bundle: ca.pem}
policies:
  default: {}
";

#[test]
fn a_configuration_without_decision_listeners_is_valid_for_the_module_only() {
    let dir = dir_with_ca();
    let config = load(&dir, MODULE_ONLY).expect("valid for the module");
    assert_eq!(config.listen.grpc, None);
    assert_eq!(
        config.listen.admin,
        Some("127.0.0.1:9901".parse().expect("addr"))
    );
    let why = config.listen.nothing_to_serve().expect("serve refuses it");
    assert!(why.starts_with("listen: "), "{why}");
    assert!(
        why.contains("listen.grpc, listen.grpc_unix and listen.http"),
        "{why}"
    );
}

#[test]
fn any_decision_listener_gives_serve_something_to_serve() {
    let dir = dir_with_ca();
    let defaults = load(&dir, MINIMAL).expect("valid");
    assert_eq!(defaults.listen.nothing_to_serve(), None, "grpc by default");
    let unix = MODULE_ONLY.replace("grpc: \"\"", "grpc: \"\", grpc_unix: /tmp/certgate.sock");
    let unix = load(&dir, &unix).expect("valid");
    assert_eq!(unix.listen.nothing_to_serve(), None);
}

#[test]
fn a_bad_listener_address_is_still_reported_without_the_others() {
    let dir = dir_with_ca();
    let yaml = MODULE_ONLY.replace("admin: 127.0.0.1:9901", "admin: nowhere");
    let err = assert_refused_at(
        &dir,
        &yaml,
        "listen.admin",
        &["\"nowhere\" is not an address"],
    );
    assert_eq!(err.problems.len(), 1, "{err}");
}
