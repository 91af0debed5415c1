//! CRLs through Envoy and through a running `certgate serve`: a bumped CRL, `crl inspect`, a
//! rolled-over CA and a planted older CRL after a restart.

use std::time::Duration;

use certgate::pki::{CertAuthority, CrlSpec};
use rcgen::RevocationReason::KeyCompromise;

use super::{Pki, Served, at, fetched, root_source, worker_spec};
use crate::it::crl_server::{CrlServer, Mode as Serving};
use crate::it::envoy::{Stack, assert_denied};
use crate::it::harness::{Mode, in_both_modes};
use crate::it::world::{World, now};

// ---------------------------------------------------------------------------------------
// Through Envoy.

fn envoy_denies_a_serial_revoked_in_a_bumped_crl(mode: Mode) {
    let world = World::new();
    let crl = |world: &World, age_secs: i64, serials: &[u64]| {
        world
            .crl(&CrlSpec {
                revoked: serials.iter().map(|s| (*s, Some(KeyCompromise))).collect(),
                ..CrlSpec::new(
                    at(now()) - time::Duration::seconds(age_secs),
                    time::Duration::days(1),
                )
            })
            .der
    };
    let server = CrlServer::new(crl(&world, 60, &[]));
    // Ready only once the CRL is loaded (readiness: wait, the default): the stack waits for
    // /readyz.
    let stack = Stack::start_mode_with(mode, world, |w| {
        crate::it::world::append_file(
            &w.config,
            &format!(
                "crl:\n  retry_backoff: 100ms\n  issuers:\n    - ca: \"CN=e2e CA, O=certgate dev\"\n      sources: [{{url: \"{}\", refresh_interval: 300ms}}]\n",
                server.url()
            ),
        );
    });
    let get = || stack.get(Some(&stack.worker), "/api/jobs");
    let reply = get();
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());

    let serial = u64::from_str_radix(&stack.worker.serial, 16).expect("hex serial");
    server.set(Serving::Serve, Some(crl(&stack.world, 30, &[serial])));
    let denied = crate::it::harness::wait_until(Duration::from_secs(10), || get().status == 401);
    assert!(denied, "still allowed after the CRL bump\n{}", stack.logs());
    let reply = get();
    let body = assert_denied(&stack, &reply, 401, "certificate_revoked");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("key_compromise")),
        "{body}"
    );
    let metrics = stack.metrics();
    assert!(
        metrics.contains("certgate_crl_entries{issuer=\"O=certgate dev, CN=e2e CA\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("certgate_crl_usable{issuer=\"O=certgate dev, CN=e2e CA\"} 1"));
}

in_both_modes!(envoy_denies_a_serial_revoked_in_a_bumped_crl);

#[test]
fn crl_inspect_on_a_file_and_a_url() {
    let pki = Pki::new();
    let der = pki.listing_revoked();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("root.crl");
    std::fs::write(&file, &der).expect("write");
    std::fs::write(dir.path().join("ca.pem"), pki.root.cert_pem()).expect("write");
    std::fs::write(
        dir.path().join("certgate.yaml"),
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\n",
    )
    .expect("write");
    let server = CrlServer::new(der);
    let serial = format!("{:x}", pki.revoked_serial);
    for source in [file.display().to_string(), server.url()] {
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
                .args(["crl", "inspect", &source, "-o", "json"])
                .args(args)
                .output()
                .expect("run certgate");
            let json: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
            (out.status.code(), json)
        };
        let (code, json) = run(&[]);
        assert_eq!(code, Some(0), "{source}: {json}");
        assert_eq!(json["entries"], 1, "{json}");
        assert_eq!(json["fresh"], true, "{json}");
        assert!(
            json["issuer"].as_str().is_some_and(|i| i.contains("root")),
            "{json}"
        );

        let config = dir.path().join("certgate.yaml").display().to_string();
        let (code, json) = run(&["--config", &config, "--serial", &serial]);
        assert_eq!(code, Some(1), "a listed serial exits 1: {json}");
        assert_eq!(json["signature"]["valid"], true, "{json}");
        assert_eq!(
            json["signature"]["ca_key_sha256"].as_str().map(str::len),
            Some(64),
            "the key of the CA that signed it: {json}"
        );
        assert_eq!(json["serial"]["listed"], true, "{json}");
        assert_eq!(json["serial"]["reason"], "key_compromise", "{json}");
        let (code, json) = run(&["--serial", "0badc0de"]);
        assert_eq!(
            (code, json["serial"]["listed"].as_bool()),
            (Some(0), Some(false)),
            "{json}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Through a running `certgate serve` (gRPC straight to it, no Envoy).

#[test]
fn a_rolled_over_ca_of_the_same_name_is_judged_by_its_own_crl() {
    // A CA rollover: the old and the new CA have one subject name and two keys, and both are
    // in the bundle while old certificates are still in use.
    let start = at(now()) - time::Duration::days(1);
    let old =
        CertAuthority::new("rollover CA", start, start + time::Duration::days(365)).expect("CA");
    let new =
        CertAuthority::new("rollover CA", start, start + time::Duration::days(365)).expect("CA");
    let revoked = old.issue(&worker_spec()).expect("leaf");
    let old_good = old.issue(&worker_spec()).expect("leaf");
    let new_leaf = new.issue(&worker_spec()).expect("leaf");
    // The old CA's CRL revokes one of its certificates; the new CA publishes a later, empty
    // CRL. One `sources` list serves both.
    let day = time::Duration::days(1);
    let old_server = CrlServer::new(Pki::crl(
        &old,
        time::Duration::seconds(60),
        day,
        &[revoked.serial],
    ));
    let new_server = CrlServer::new(Pki::crl(&new, time::Duration::seconds(10), day, &[]));
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::new(
        dir.path(),
        &format!("{}{}", old.cert_pem(), new.cert_pem()),
        &format!(
            "  readiness: serve\n  issuers:\n    - ca: \"CN=rollover CA, O=certgate dev\"\n      sources:\n        - {{url: \"{}\", refresh_interval: 200ms}}\n        - {{url: \"{}\", refresh_interval: 200ms}}\n",
            old_server.url(),
            new_server.url()
        ),
    );
    let certgate = served.start();
    // Both CRLs fetched and verified (in whichever order) before anything is judged.
    let both = crate::it::harness::wait_until(Duration::from_secs(10), || {
        let metrics = certgate.metrics();
        [old_server.url(), new_server.url()]
            .iter()
            .all(|url| fetched(&metrics, url, &["updated", "older", "unchanged"]))
    });
    assert!(both, "both CRLs fetched\n{}", certgate.metrics());
    let (reason, message) = served.decide(&revoked.cert_pem);
    assert_eq!(
        reason,
        "certificate_revoked",
        "a serial revoked by the old CA's CRL: {message}\n{}",
        certgate.proc.logs()
    );
    assert_eq!(served.decide(&old_good.cert_pem).0, "allow");
    assert_eq!(served.decide(&new_leaf.cert_pem).0, "allow");
}

#[test]
fn an_older_crl_planted_in_the_cache_does_not_unrevoke_after_a_restart() {
    let pki = Pki::new();
    let mut server = CrlServer::new(pki.listing_revoked());
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::new(
        dir.path(),
        &pki.root.cert_pem(),
        &format!(
            "  readiness: serve\n  cache_dir: crl-cache\n{}",
            root_source(&server.url())
        ),
    );
    let cache = dir.path().join("crl-cache");
    let cached = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "crl"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut first = served.start();
    let loaded = crate::it::harness::wait_until(Duration::from_secs(10), || {
        served.decide(&pki.revoked).0 == "certificate_revoked" && !cached().is_empty()
    });
    assert!(loaded, "CRL loaded and persisted\n{}", first.proc.logs());
    first.proc.terminate(Duration::from_secs(10));

    // Someone who can write the cache directory (and nothing else) puts back an older CRL
    // of the same CA, validly signed, from before the revocation; the CRL server is down.
    let older = Pki::crl(
        &pki.root,
        time::Duration::minutes(10),
        time::Duration::days(1),
        &[],
    );
    for file in cached() {
        std::fs::write(file, &older).expect("plant the older CRL");
    }
    server.stop();

    let second = served.start();
    // The refresher loads the persisted CRL before its first fetch, whose failure is counted.
    let tried = crate::it::harness::wait_until(Duration::from_secs(10), || {
        fetched(&second.metrics(), &server.url(), &["error"])
    });
    assert!(tried, "a failed fetch\n{}", second.proc.logs());
    let (reason, message) = served.decide(&pki.revoked);
    assert!(
        reason == "certificate_revoked" || reason == "revocation_status_unknown",
        "the revoked certificate got {reason}: {message}\n{}",
        second.proc.logs()
    );
    // This design refuses the planted CRL, so nothing is in force until the server is back.
    assert_eq!(reason, "revocation_status_unknown", "{message}");
    assert!(
        second
            .proc
            .logs()
            .contains("CRL refused: older than the newest CRL already installed for this CA key"),
        "the refusal is logged\n{}",
        second.proc.logs()
    );
}
