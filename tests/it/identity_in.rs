//! `response.identity` through Envoy in both modes, as an app team and an operator check it:
//! the identity headers the upstream receives (client-sent copies never among them) and the
//! dynamic metadata Envoy's access log shows, on an allow and on a deny.

use super::envoy::{Stack, assert_denied};
use super::harness::{Mode, in_both_modes};
use super::module_metadata::{a_deny_logs_its_metadata, entry, expect, namespace, with_access_log};
use super::world::{World, append_file};

/// Identity headers a client sends, hoping the upstream believes them.
const FORGED: [(&str, &str); 2] = [
    ("x-client-principal", "forged@example.com"),
    ("x-client-cn", "forged.example.com"),
];

/// A stack deciding with `response.identity: identity`, Envoy writing its access log to
/// `log`.
fn start(mode: Mode, identity: &str, log: &std::path::Path) -> Stack {
    let edit = |config: String| with_access_log(config, log, namespace(mode));
    Stack::start_edited(
        mode,
        World::new(),
        |world| {
            append_file(
                &world.config,
                &format!("response: {{identity: {identity}}}\n"),
            )
        },
        "ACCEPT_UNTRUSTED",
        &[],
        &edit,
    )
}

/// `headers_only`: an allow sets the identity headers and no metadata; a deny keeps its
/// metadata, so the access log still says why.
fn headers_only_sets_headers_on_allow_and_metadata_on_deny(mode: Mode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let stack = start(mode, "headers_only", &log);

    let allowed = stack.request(Some(&stack.admin), "GET", "/admin/users", FORGED.to_vec());
    assert_eq!(allowed.status, 200, "{}\n{}", allowed.body, stack.logs());
    assert_eq!(
        allowed.upstream_header("x-client-principal").as_deref(),
        Some("admin@example.com")
    );
    assert_eq!(
        allowed.upstream_header("x-client-cn").as_deref(),
        Some("admin.example.com")
    );
    assert_eq!(
        entry(&stack, &log, "/admin/users"),
        expect(&[]),
        "no metadata on allow"
    );

    a_deny_logs_its_metadata(&stack, &log);
}

/// `metadata_only`: an allow sets no identity header at the upstream and removes the ones the
/// client sent; the identity is in the metadata.
fn metadata_only_removes_identity_headers_and_sets_metadata(mode: Mode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let stack = start(mode, "metadata_only", &log);

    let allowed = stack.request(Some(&stack.admin), "GET", "/admin/users", FORGED.to_vec());
    assert_eq!(allowed.status, 200, "{}\n{}", allowed.body, stack.logs());
    let headers = allowed.json()["headers"].clone();
    let identity: Vec<&String> = headers
        .as_object()
        .expect("the upstream's headers")
        .keys()
        .filter(|name| name.starts_with("x-client-"))
        .collect();
    assert!(
        identity.is_empty(),
        "identity headers reached the upstream: {headers}"
    );
    let logged = entry(&stack, &log, "/admin/users");
    let value = |key: &str| {
        logged
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(value("principal").as_deref(), Some("admin@example.com"));
    assert_eq!(value("policy").as_deref(), Some("admin"));
    assert_eq!(
        value("serial").as_deref(),
        Some(stack.admin.serial.as_str())
    );
    assert_eq!(value("cn").as_deref(), Some("admin.example.com"));
    assert!(
        value("principal_type").is_some() && value("roles").is_some(),
        "{logged:?}"
    );
    assert_eq!(value("reason"), None);

    let denied = stack.get(Some(&stack.worker), "/admin/x");
    assert_denied(&stack, &denied, 403, "cn_not_allowed");
    assert_eq!(
        entry(&stack, &log, "/admin/x")
            .into_iter()
            .find(|(k, _)| *k == "reason"),
        Some(("reason", Some("cn_not_allowed".to_owned())))
    );
}

in_both_modes!(
    headers_only_sets_headers_on_allow_and_metadata_on_deny,
    metadata_only_removes_identity_headers_and_sets_metadata,
);
