//! `certgate cert revoke SERIAL --issuer DN` on the embedded store, against a running server
//! behind Envoy: a serial certgate never registered gets a revocation-only record and is
//! denied 401 `certificate_revoked`; without `--issuer` the CLI says what is missing; an
//! issuer that is not the registered one is refused.

use std::time::Duration;

use super::envoy::{Stack, assert_denied};
use super::harness::{Mode, in_both_modes, wait_until};
use super::world::World;

fn an_unregistered_serial_revoked_with_its_issuer_is_denied(mode: Mode) {
    let world = World::new();
    let stranger = world.client(
        "stranger",
        "stranger@example.com",
        &World::spec("stranger@example.com", "worker", "stranger.example.com"),
    );
    let stack = Stack::start_mode_with(mode, world, |w| {
        let (code, out) = w.cli(&[
            "principal",
            "create",
            "stranger@example.com",
            "--type",
            "worker",
        ]);
        assert_eq!(code, 0, "{out}");
    });
    assert_eq!(stack.get(Some(&stranger), "/api/jobs").status, 200);

    let revoke = |extra: &[&str]| {
        let mut args = vec![
            "cert",
            "revoke",
            &stranger.serial,
            "--reason",
            "key_compromise",
        ];
        args.extend_from_slice(extra);
        stack.world.cli(&args)
    };
    let (code, out) = revoke(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pass --issuer"), "{out}");
    assert_eq!(stack.get(Some(&stranger), "/api/jobs").status, 200);

    let (code, out) = revoke(&["--issuer", "CN=e2e CA", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["revocation_only"], true, "{got}");
    assert_eq!(got["revocation_reason"], "key_compromise", "{got}");
    let mut last = None;
    let denied = wait_until(Duration::from_secs(10), || {
        let reply = stack.get(Some(&stranger), "/api/jobs");
        let done = reply.status == 401;
        last = Some(reply);
        done
    });
    assert!(denied, "{:?}\n{}", last, stack.logs());
    let body = assert_denied(
        &stack,
        last.as_ref().expect("a reply"),
        401,
        "certificate_revoked",
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("key_compromise")),
        "{body}"
    );
    assert_eq!(stack.get(Some(&stack.worker), "/api/jobs").status, 200);

    // A registered serial: the issuer must be the registered one.
    let (code, out) = stack.world.cli(&[
        "cert",
        "revoke",
        &stack.worker.serial,
        "--reason",
        "superseded",
        "--issuer",
        "CN=another CA",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is registered with issuer"), "{out}");
    assert_eq!(stack.get(Some(&stack.worker), "/api/jobs").status, 200);
}

in_both_modes!(an_unregistered_serial_revoked_with_its_issuer_is_denied);
