//! The module reads the client certificate from `x-forwarded-client-cert`, which a client can
//! send too. With the shipped `SANITIZE_SET` Envoy replaces it; these tests run Envoy
//! misconfigured, so that a client's own XFCC reaches the module, and check a forged
//! certificate (the admin's, sent by the worker over the worker's own mTLS connection) is
//! never taken as the connection's identity: the module only accepts the certificate whose
//! SHA-256 is the connection's, which Envoy takes from the TLS session.

use std::process::Command;

use super::envoy::{Stack, assert_denied};
use super::forward_auth::escaped;
use super::harness::{Mode, Reply};
use super::world::{Client, World, assert_allowed_as};

/// Module mode with Envoy's `forward_client_cert_details` set to `details`.
fn module_with_xfcc(details: &str) -> Stack {
    let edit = |config: String| {
        let shipped = "forward_client_cert_details: SANITIZE_SET";
        assert!(config.contains(shipped), "envoy/module.yaml changed");
        config.replace(shipped, &format!("forward_client_cert_details: {details}"))
    };
    Stack::start_edited(
        Mode::Module,
        World::new(),
        |_| {},
        "ACCEPT_UNTRUSTED",
        &[],
        &edit,
    )
}

/// An XFCC element carrying `client`'s certificate, as Envoy would write it.
fn xfcc_of(client: &Client) -> String {
    format!("Hash={};Cert=\"{}\"", client.sha256, escaped(&client.cert))
}

/// `requests` (path and extra headers) sent in order by one curl with `client`'s certificate,
/// so over one connection: each reply with the number of connections curl opened for it.
fn on_one_connection(
    stack: &Stack,
    client: &Client,
    requests: &[(&str, Vec<(&str, String)>)],
) -> Vec<(Reply, u32)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("curl");
    for (i, (path, headers)) in requests.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-s", "-S", "--max-time", "10", "-o"])
            .arg(dir.path().join(i.to_string()))
            .args(["-w", "%{http_code} %{num_connects}\\n", "--cacert"])
            .arg(&stack.world.ca_pem)
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key);
        for (name, value) in headers {
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
        cmd.arg(format!("https://localhost:{}{path}", stack.envoy.port));
    }
    let out = cmd.output().expect("curl runs");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let replies: Vec<(Reply, u32)> = written
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let (code, connects) = line.split_once(' ').expect("code and connects");
            let reply = Reply {
                status: code.parse().expect("status"),
                body: std::fs::read_to_string(dir.path().join(i.to_string())).unwrap_or_default(),
            };
            (reply, connects.parse().expect("connects"))
        })
        .collect();
    assert_eq!(
        replies.len(),
        requests.len(),
        "{written}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    replies
}

/// `FORWARD_ONLY`: Envoy passes the client's XFCC on and adds nothing, so the only certificate
/// the module is shown is the one the client chose.
#[test]
fn a_forged_xfcc_that_envoy_passes_on_is_refused_every_time() {
    let stack = module_with_xfcc("FORWARD_ONLY");
    let forged = vec![("x-forwarded-client-cert", xfcc_of(&stack.admin))];
    // Each refusal closes the connection: curl opens a new one for the next request.
    let replies = on_one_connection(
        &stack,
        &stack.worker,
        &[
            ("/admin/x", forged.clone()),
            ("/admin/x", forged.clone()),
            ("/api/jobs", forged),
            ("/api/jobs", vec![]),
        ],
    );
    for (reply, _) in &replies {
        let body = assert_denied(&stack, reply, 400, "malformed_request");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("x-forwarded-client-cert"), "{body}");
    }
    assert_eq!(stack.upstream.requests(), 0, "nothing reached the upstream");
    // Nothing was cached: the admin's own connection, with no XFCC, is refused as well.
    let (reply, _) = &on_one_connection(&stack, &stack.admin, &[("/admin/x", vec![])])[0];
    assert_denied(&stack, reply, 400, "malformed_request");
    assert_eq!(stack.upstream.requests(), 0, "nothing reached the upstream");
}

/// `APPEND_FORWARD`: Envoy appends its own element after the client's. Whether the worker's
/// certificate is new to the module or already known, its requests are decided as the worker.
#[test]
fn a_forged_xfcc_before_envoys_own_is_never_the_identity() {
    let stack = module_with_xfcc("APPEND_FORWARD");
    // An unterminated quote swallows the `,` before Envoy's element: refused, not read as
    // the admin's certificate, and nothing cached.
    let broken = format!("Cert=\"{}", escaped(&stack.admin.cert));
    let (reply, _) = &on_one_connection(
        &stack,
        &stack.worker,
        &[("/api/jobs", vec![("x-forwarded-client-cert", broken)])],
    )[0];
    let body = assert_denied(&stack, reply, 401, "malformed_certificate");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unterminated quote"),
        "{body}"
    );

    let forged = vec![("x-forwarded-client-cert", xfcc_of(&stack.admin))];
    let replies = on_one_connection(
        &stack,
        &stack.worker,
        &[
            // Not known by its digest yet: the module decodes XFCC, whose last element is
            // Envoy's.
            ("/admin/x", forged.clone()),
            ("/api/jobs", vec![]),
            // Known by the connection's certificate digest: XFCC is not read.
            ("/admin/x", forged.clone()),
            ("/api/jobs", forged),
        ],
    );
    assert_eq!(
        replies.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [1, 0, 0, 0],
        "one connection"
    );
    for i in [0, 2] {
        let body = assert_denied(&stack, &replies[i].0, 403, "cn_not_allowed");
        assert_eq!(
            body["message"], "CN 'worker-1.example.com' not in allowlist of policy 'admin'",
            "request {i}"
        );
    }
    for i in [1, 3] {
        let reply = &replies[i].0;
        assert_allowed_as(reply, "worker-1@example.com", &stack.logs());
        assert_eq!(
            reply.upstream_header("x-client-cert-sha256").as_deref(),
            Some(stack.worker.sha256.as_str())
        );
        assert_eq!(reply.upstream_header("x-forwarded-client-cert"), None);
    }
    assert_eq!(stack.upstream.requests(), 2, "only the worker's own GETs");
}
