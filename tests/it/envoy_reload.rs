//! Hot reload through Envoy 1.40, with certgate as a server (ext_authz) and inside Envoy
//! (module): the allowlist file, a broken or incomplete configuration (refused, counted once
//! per change, the last good one kept), and a CA bundle rotation (a CA added is trusted, a CA
//! removed is not) — all without a restart.

use std::time::Duration;

use super::dynamodb::metric;
use super::envoy::{Stack, assert_denied};
use super::harness::{Mode, in_both_modes, wait_until};
use super::world::{World, write_file};

/// Wait (10 s) until certgate has counted at least `n` refused reloads; the count then.
fn reload_failures_reach(stack: &Stack, n: u32) -> f64 {
    let failures = || {
        metric(
            &stack.metrics(),
            "certgate_config_reloads_total{outcome=\"failure\"}",
        )
    };
    let reached = wait_until(Duration::from_secs(10), || failures() >= f64::from(n));
    assert!(
        reached,
        "{n} refused reloads not counted:\n{}",
        stack.metrics()
    );
    failures()
}

fn allowlist_hot_reload_and_a_bad_reload_keeps_the_last_good_config(mode: Mode) {
    let world = World::new();
    let admin2 = world.client(
        "admin2",
        "admin2@example.com",
        &World::spec("admin2@example.com", "admin", "admin2.example.com"),
    );
    let stack = Stack::start_mode_with(mode, world, |w| {
        w.enrol(&[("admin2@example.com", "admin")], &[])
    });
    let reply = stack.get(Some(&admin2), "/admin/x");
    assert_denied(&stack, &reply, 403, "cn_not_allowed");

    write_file(
        &stack.world.path("admin-allowlist.txt"),
        "admin.example.com\nadmin2.example.com\n",
    );
    let allowed = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&admin2), "/admin/x").status == 200
    });
    assert!(allowed, "allowlist change not picked up\n{}", stack.logs());

    // A broken config is refused; the last good one (with admin2 allowed) stays in force.
    let good = std::fs::read_to_string(&stack.world.config).expect("read config");
    let broken = good.replace("max_lifetime: 7d", "max_lifetime: 7x");
    write_file(&stack.world.config, broken);
    assert_eq!(
        reload_failures_reach(&stack, 1),
        1.0,
        "one refusal per change"
    );
    assert!(
        stack.logs().contains("7x"),
        "the refusal names the bad value"
    );
    assert_eq!(stack.get(Some(&admin2), "/admin/x").status, 200);
    assert_eq!(stack.get(Some(&stack.admin), "/api/x").status, 200);

    // A version naming an allowlist file that does not exist yet is refused too; creating
    // the file is noticed, and the new list (without admin2) takes effect.
    let pointed = good.replace("admin-allowlist.txt", "admin-allowlist-v2.txt");
    write_file(&stack.world.config, pointed);
    assert_eq!(
        reload_failures_reach(&stack, 2),
        2.0,
        "one refusal per change"
    );
    write_file(
        &stack.world.path("admin-allowlist-v2.txt"),
        "admin.example.com\n",
    );
    let denied = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&admin2), "/admin/x").status == 403
    });
    assert!(
        denied,
        "creating the missing file was not noticed\n{}",
        stack.logs()
    );
    assert_eq!(stack.get(Some(&stack.admin), "/admin/x").status, 200);
}

fn ca_bundle_rotation_takes_effect_without_a_restart(mode: Mode) {
    // certgate's bundle is its own file (Envoy and curl keep using ca.pem); the new CA has
    // the old one's name and another key, as in a rollover.
    let world = World::new();
    let rolled = world.stranger(
        "rolled",
        "worker-1@example.com",
        &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
    );
    let bundle = world.path("bundle.pem");
    let stack = Stack::start_mode_with(mode, world, |w| {
        w.enrol(&[], &[&rolled]);
        std::fs::copy(&w.ca_pem, &bundle).expect("copy bundle");
        let config = std::fs::read_to_string(&w.config).expect("read");
        write_file(
            &w.config,
            config.replace("ca_bundle: ca.pem", "ca_bundle: bundle.pem"),
        );
    });
    let reply = stack.get(Some(&rolled), "/api/jobs");
    assert_denied(&stack, &reply, 401, "untrusted_issuer");

    let old = std::fs::read_to_string(&stack.world.ca_pem).expect("read");
    let new = stack.world.stranger_ca_pem();
    write_file(&bundle, format!("{old}{new}"));
    let allowed = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&rolled), "/api/jobs").status == 200
    });
    assert!(allowed, "the added CA is not trusted\n{}", stack.logs());
    assert_eq!(stack.get(Some(&stack.worker), "/api/jobs").status, 200);

    write_file(&bundle, new);
    let refused = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&stack.worker), "/api/jobs").status == 401
    });
    assert!(refused, "the removed CA is still trusted\n{}", stack.logs());
    let reply = stack.get(Some(&stack.worker), "/api/jobs");
    assert_denied(&stack, &reply, 401, "untrusted_issuer");
    assert_eq!(stack.get(Some(&rolled), "/api/jobs").status, 200);
}

in_both_modes!(
    allowlist_hot_reload_and_a_bad_reload_keeps_the_last_good_config,
    ca_bundle_rotation_takes_effect_without_a_restart,
);
