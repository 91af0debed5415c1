//! `log:`, `tracing:`, `response.identity` and `policies.*.enforce`.

use super::{MINIMAL, assert_refused_at, dir_with_ca, load};
use crate::observe::{DecisionLog, IdentityIn};

#[test]
fn defaults_log_denies_trace_nothing_and_enforce_every_policy() {
    let dir = dir_with_ca();
    let config = load(&dir, MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.observe.decisions, DecisionLog::Deny);
    assert!(!config.observe.tracing.enabled);
    assert_eq!(config.observe.identity, IdentityIn::HeadersAndMetadata);
    assert!(config.observe.shadow_policies.is_empty());
}

#[test]
fn settings_are_read() {
    let dir = dir_with_ca();
    let yaml = "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {}\n  new: {enforce: false}\n\
                log: {decisions: sample(100)}\nresponse: {identity: metadata_only}\n\
                tracing: {enabled: true, endpoint: \"http://collector:4317\", sample_ratio: 0.5}\n";
    let config = load(&dir, yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.observe.decisions, DecisionLog::Sample(100));
    assert_eq!(config.observe.identity, IdentityIn::MetadataOnly);
    assert_eq!(
        config.observe.shadow_policies.iter().collect::<Vec<_>>(),
        ["new"]
    );
    let tracing = &config.observe.tracing;
    assert!(tracing.enabled);
    assert_eq!(tracing.endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(tracing.sample_ratio, Some(0.5));
}

#[test]
fn bad_values_are_reported_at_their_key() {
    let dir = dir_with_ca();
    for (extra, key) in [
        ("log: {decisions: sometimes}\n", "log.decisions"),
        ("log: {decisions: sample(0)}\n", "log.decisions"),
        ("tracing: {sample_ratio: 1.5}\n", "tracing.sample_ratio"),
        (
            "tracing: {endpoint: \"collector:4317\"}\n",
            "tracing.endpoint",
        ),
        ("tracing: {enabled: yes please}\n", "tracing.enabled"),
        ("response: {identity: nowhere}\n", "response.identity"),
        (
            "response: {identity_headers: [principal, nope]}\n",
            "response.identity_headers[1]",
        ),
        (
            "response: {identity_headers: []}\n",
            "response.identity_headers",
        ),
        (
            "response: {remove_identity_headers: sometimes}\n",
            "response.remove_identity_headers",
        ),
    ] {
        assert_refused_at(&dir, &format!("{MINIMAL}{extra}"), key, &[]);
    }
}
