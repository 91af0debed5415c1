//! `certgate probe URL` (what the chart's `helm test` Pod runs, the image having no curl)
//! against a running certgate: its admin `/readyz` and one forward-auth check without a
//! client certificate pass; an unexpected answer, a closed port and a bad URL do not.

use std::process::Command;

use super::forward_auth::setup;
use super::harness::free_port;

/// `certgate probe ARGS`: exit code and stdout + stderr.
fn probe(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run certgate probe");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn probe_passes_on_the_expected_answer_and_fails_otherwise() {
    let s = setup("");
    let readyz = format!("http://127.0.0.1:{}/readyz", s.world.admin_port);
    let (code, out) = probe(&[&readyz]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answered 200"), "{out}");

    let auth = format!("http://127.0.0.1:{}/auth", s.http_port);
    // The proxy's description of the request, as nginx's auth_request sends it.
    let forward_auth = |extra: &[&str]| {
        let mut args = vec![
            auth.as_str(),
            "-H",
            "X-Original-Method: GET",
            "--header",
            "X-Original-URI: /api/jobs",
        ];
        args.extend_from_slice(extra);
        probe(&args)
    };
    let deny = ["--expect-status", "401"];
    let (code, out) =
        forward_auth(&[&deny[..], &["--expect-error", "no_client_certificate"]].concat());
    assert_eq!(code, 0, "{out}");
    // Without expectations a deny is a failure, and says what came.
    let (code, out) = forward_auth(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("answered 401, expected 2xx"), "{out}");
    assert!(out.contains("no_client_certificate"), "{out}");
    let (code, out) = forward_auth(&[&deny[..], &["--expect-error", "store_unavailable"]].concat());
    assert_eq!(code, 1, "{out}");
    // Without the headers certgate cannot judge the request: 400, not the expected deny.
    let (code, out) = probe(&[&auth, "--expect-status", "401"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("malformed_request"), "{out}");
    let (code, out) = probe(&[&auth, "-H", "no colon"]);
    assert_eq!(code, 2, "{out}");

    let closed = format!("http://127.0.0.1:{}/readyz", free_port());
    let (code, out) = probe(&[&closed, "--timeout", "2s"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.to_lowercase().contains("connect"), "{out}");
    let (code, out) = probe(&["ftp://example.com/"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = probe(&["not a url"]);
    assert_eq!(code, 2, "{out}");
}
