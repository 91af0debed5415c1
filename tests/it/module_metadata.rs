//! The module's dynamic metadata as an operator reads it: Envoy's access log with
//! `%DYNAMIC_METADATA(certgate:KEY)%`, on an allow and on denies with and without an
//! identity. Its certgate.yaml names no decision listener, as the Helm chart's module mode
//! renders it: the module serves none.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::envoy::{Stack, assert_denied};
use super::harness::{Mode, wait_until};
use super::no_listener::without_decision_listener;
use super::world::World;

/// The metadata keys the module documents (README "In-process mode"); ext_authz mode sets
/// them too, under its filter's namespace.
pub(super) const KEYS: [&str; 7] = [
    "principal",
    "principal_type",
    "roles",
    "policy",
    "reason",
    "serial",
    "cn",
];

/// The dynamic-metadata namespace of certgate's answers in `mode`.
pub(super) fn namespace(mode: Mode) -> &'static str {
    match mode {
        Mode::ExtAuthz => "envoy.filters.http.ext_authz",
        Mode::Module => "certgate",
    }
}

/// A JSON access log at `path` of each request's path, status and certgate metadata (under
/// `namespace`), added to the connection manager of the rendered `envoy/module.yaml` or
/// `envoy/front-proxy.yaml`.
pub(super) fn with_access_log(config: String, path: &Path, namespace: &str) -> String {
    let anchor = "          stat_prefix: ingress\n";
    assert!(config.contains(anchor), "the Envoy configuration changed");
    let fields: String = KEYS
        .iter()
        .map(|k| format!("                  {k}: \"%DYNAMIC_METADATA({namespace}:{k})%\"\n"))
        .collect();
    let log = format!(
        "          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: \"{}\"
              log_format:
                json_format:
                  path: \"%REQ(:PATH)%\"
                  status: \"%RESPONSE_CODE%\"
{fields}",
        path.display()
    );
    // A second `access_log` key would replace the first: join the list if there is one.
    let list = "          access_log:\n";
    if config.contains(list) {
        config.replacen(list, &format!("{list}{log}"), 1)
    } else {
        config.replacen(anchor, &format!("{anchor}{list}{log}"), 1)
    }
}

/// The access log's entry for `path`, once Envoy has written it: each metadata key with its
/// value, `None` where certgate set none.
pub(super) fn entry(stack: &Stack, log: &Path, path: &str) -> Vec<(&'static str, Option<String>)> {
    let mut found = None;
    // The harness has Envoy flush file access logs every 100 ms (its default is 10 s).
    let written = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["path"] == path);
        found.is_some()
    });
    assert!(written, "no access log entry for {path}\n{}", stack.logs());
    let found = found.unwrap_or_default();
    KEYS.iter()
        .map(|k| {
            let value = found[*k].as_str().filter(|v| *v != "-").map(str::to_owned);
            (*k, value)
        })
        .collect()
}

/// The worker's request for an admin route is denied, and the access log says who and why.
pub(super) fn a_deny_logs_its_metadata(stack: &Stack, log: &Path) {
    let denied = stack.get(Some(&stack.worker), "/admin/x");
    assert_denied(stack, &denied, 403, "cn_not_allowed");
    assert_eq!(
        entry(stack, log, "/admin/x"),
        expect(&[
            ("principal", "worker-1@example.com"),
            ("policy", "admin"),
            ("reason", "cn_not_allowed"),
            ("serial", &stack.worker.serial),
            ("cn", "worker-1.example.com"),
        ])
    );
}

pub(super) fn expect(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, Option<String>)> {
    KEYS.iter()
        .map(|k| {
            let value = pairs
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| (*v).to_owned());
            (*k, value)
        })
        .collect()
}

#[test]
fn the_access_log_shows_the_modules_metadata_on_allow_and_deny() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let edit = |config: String| with_access_log(config, &log, namespace(Mode::Module));
    let stack = Stack::start_edited(
        Mode::Module,
        World::new(),
        |world| without_decision_listener(&world.config),
        "ACCEPT_UNTRUSTED",
        &[],
        &edit,
    );

    let allowed = stack.get(Some(&stack.admin), "/admin/users");
    assert_eq!(allowed.status, 200, "{}\n{}", allowed.body, stack.logs());
    // The metadata agrees with the identity headers the upstream received.
    let seen = |name: &str| allowed.upstream_header(name).expect(name);
    assert_eq!(
        entry(&stack, &log, "/admin/users"),
        expect(&[
            ("principal", "admin@example.com"),
            ("principal_type", &seen("x-client-principal-type")),
            ("roles", &seen("x-client-roles")),
            ("policy", "admin"),
            ("serial", &stack.admin.serial),
            ("cn", "admin.example.com"),
        ])
    );

    a_deny_logs_its_metadata(&stack, &log);

    let anonymous = stack.get(None, "/api/jobs");
    assert_denied(&stack, &anonymous, 401, "no_client_certificate");
    assert_eq!(
        entry(&stack, &log, "/api/jobs"),
        expect(&[("policy", "default"), ("reason", "no_client_certificate")])
    );
}
