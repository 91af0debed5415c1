//! What only the in-process mode (certgate inside Envoy 1.40 as its dynamic module) has to
//! prove beyond the decision table it shares with ext_authz mode (`envoy`, `envoy_reload`): a
//! request waiting for the store is paused whole (a POST's body never reaches the upstream
//! before the decision), a client leaving while its lookup is pending does not hurt Envoy, and
//! a fault inside the module denies instead of crashing Envoy or letting the request through.

use std::process::Command;
use std::time::Duration;

use super::dynamodb::replica_config_with;
use super::envoy::{Stack, assert_denied};
use super::harness::{AWS_ENV, Mode, Moto, Reply, wait_until};
use super::world::{World, cli_with_env};

/// The module's lookup deadline in these tests; DynamoDB's own is far longer, so a frozen
/// store is noticed by the module's deadline.
const MODULE_OPTIONS: &str = r#", "lookup_timeout_ms": 300"#;

/// Module mode on DynamoDB (moto) with the admin and worker registered there.
fn on_dynamodb() -> (Stack, Moto) {
    let moto = Moto::start();
    let stack = Stack::start_in(
        Mode::Module,
        World::new(),
        |w| {
            let (grpc, admin) = (w.grpc_port, w.admin_port);
            let deadline = "timeout: 5s, attempt_timeout: 5s";
            replica_config_with(w, &moto, "certgate.yaml", grpc, admin, deadline);
            let cli = |args: &[&str]| {
                let (code, out) = cli_with_env(&w.config, args, AWS_ENV);
                assert_eq!(code, 0, "certgate {args:?}: {out}");
            };
            cli(&["store", "init"]);
            for (principal, kind, pem) in [
                ("admin@example.com", "admin", "admin.pem"),
                ("worker-1@example.com", "worker", "worker.pem"),
            ] {
                cli(&["principal", "create", principal, "--type", kind]);
                let cert = w.path(pem);
                cli(&["cert", "register", "--cert", cert.to_str().expect("utf-8")]);
            }
        },
        "ACCEPT_UNTRUSTED",
        &[("MODULE_OPTIONS", MODULE_OPTIONS)],
    );
    (stack, moto)
}

/// `curl -X POST --data-binary BODY` with the admin's certificate; the status, or `None` when
/// curl gave up (`max_time`).
fn post(stack: &Stack, body: &str, max_time: &str) -> (Option<u16>, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            max_time,
        ])
        .arg("--cacert")
        .arg(&stack.world.ca_pem)
        .arg("--cert")
        .arg(&stack.admin.cert)
        .arg("--key")
        .arg(&stack.admin.key)
        .args(["-X", "POST", "--data-binary", body])
        .arg(format!("https://localhost:{}/api/jobs", stack.envoy.port))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.parse().ok().filter(|&c| c != 0), body.to_owned())
}

#[test]
fn a_post_waiting_for_a_frozen_store_is_never_forwarded_and_ends_in_503() {
    let (stack, moto) = on_dynamodb();
    moto.pause();
    let (status, body) = post(&stack, "delete everything", "10");
    let reply = Reply {
        status: status.expect("an answer"),
        body,
    };
    assert_denied(&stack, &reply, 503, "store_unavailable");
    assert_eq!(stack.upstream.requests(), 0, "nothing reached the upstream");

    moto.resume();
    let (status, body) = post(&stack, "a job", "10");
    assert_eq!(status, Some(200), "{body}\n{}", stack.logs());
    assert_eq!(stack.upstream.requests(), 1);
}

#[test]
fn a_client_leaving_while_its_lookup_is_pending_does_not_hurt_envoy() {
    let (mut stack, moto) = on_dynamodb();
    moto.pause();
    // curl gives up at 100 ms, before the module's 300 ms deadline answers.
    let (status, _) = post(&stack, "a job", "0.1");
    assert_eq!(status, None, "the client left before any answer");
    // The deadline passes for a stream that is gone.
    std::thread::sleep(Duration::from_millis(600));
    assert!(stack.envoy.proc.is_running(), "{}", stack.logs());
    let reply = stack.get(None, "/api/jobs");
    assert_denied(&stack, &reply, 401, "no_client_certificate");

    moto.resume();
    let allowed = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&stack.admin), "/api/jobs").status == 200
    });
    assert!(allowed, "{}", stack.logs());
    assert_eq!(stack.upstream.requests(), 1, "only the allowed request");
}

#[test]
fn a_panic_in_the_module_denies_and_envoy_keeps_serving() {
    let mut stack = Stack::start_in(
        Mode::Module,
        World::new(),
        |_| {},
        "ACCEPT_UNTRUSTED",
        &[("MODULE_OPTIONS", r#", "test_fault": "panic""#)],
    );
    for _ in 0..3 {
        let reply = stack.get(Some(&stack.admin), "/api/jobs");
        assert_eq!(reply.status, 500, "{reply:?}");
    }
    assert_eq!(stack.upstream.requests(), 0, "nothing reached the upstream");
    assert!(stack.envoy.proc.is_running(), "{}", stack.logs());
    assert!(
        stack.logs().contains("certgate module hook panicked"),
        "{}",
        stack.logs()
    );
}
