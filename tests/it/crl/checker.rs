//! CRLs through `certgate::check::Checker` with the real background refresher: revocation,
//! server faults, limits, several CAs, the persisted cache, file sources, redirects and
//! what /readyz shows.

use std::time::Duration;

use certgate::pki::{CertAuthority, CrlSpec};

use super::{
    Pki, ROOT_DN, SECOND_DN, at, decide, eventually, fetches, gate, gate_in, root_source, rounds,
};
use crate::it::crl_server::{CrlServer, Mode};
use crate::it::world::now;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_serial_and_bumping_the_crl_denies_at_the_next_refresh() {
    let pki = Pki::new();
    let empty = Pki::crl(
        &pki.root,
        time::Duration::minutes(2),
        time::Duration::days(1),
        &[],
    );
    let server = CrlServer::new(empty);
    let gate = gate(&pki, &server.url());
    eventually(&gate, &pki.revoked, "allow").await;
    assert_eq!(
        gate.checker
            .revocation()
            .readiness(certgate::clock::unix_now()),
        Ok(())
    );
    // Unchanged CRL: the refresher asks conditionally and gets 304.
    rounds(&gate, &server.url(), "not_modified", 0).await;
    assert!(server.requests().1 >= 1);

    server.set(Mode::Serve, Some(pki.listing_revoked()));
    let message = eventually(&gate, &pki.revoked, "certificate_revoked").await;
    assert!(
        message.contains("(key_compromise) at") && message.contains("CN=root"),
        "{message}"
    );
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
    gate.checker
        .revocation()
        .export_gauges(certgate::clock::unix_now());
    let metrics = gate.checker.metrics().render();
    assert!(
        metrics.contains("certgate_crl_entries{issuer=\"O=certgate dev, CN=root\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"updated\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_server_down_at_start_then_up_then_down_again() {
    let pki = Pki::new();
    let mut server = CrlServer::down(pki.listing_revoked());
    let gate = gate(&pki, &server.url());
    let message = eventually(&gate, &pki.good, "revocation_status_unknown").await;
    assert!(
        message.contains("no CRL of issuer 'O=certgate dev, CN=root' has been loaded"),
        "{message}"
    );
    rounds(&gate, &server.url(), "error", 0).await;
    let (_, message) = decide(&gate, &pki.good).await;
    assert!(message.contains("transport error"), "{message}");
    let not_ready = gate
        .checker
        .revocation()
        .readiness(certgate::clock::unix_now())
        .expect_err("not ready while no CRL is loaded")
        .to_string();
    assert!(not_ready.contains("CN=root"), "{not_ready}");

    server.start();
    eventually(&gate, &pki.good, "allow").await;
    eventually(&gate, &pki.revoked, "certificate_revoked").await;

    // Down again: the last good CRL stays in force while it is fresh.
    server.stop();
    let errors = fetches(&gate, &server.url(), "error");
    rounds(&gate, &server.url(), "error", errors).await;
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
    assert_eq!(decide(&gate, &pki.revoked).await.0, "certificate_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_denies_at_start_and_never_replaces_a_good_crl() {
    let pki = Pki::new();
    let start = at(now()) - time::Duration::days(1);
    let lookalike = CertAuthority::new("root", start, start + time::Duration::days(9)).expect("CA");
    let good_crl = pki.listing_revoked();
    let day = time::Duration::days(1);
    // (what, how the server answers, body, refresh outcome, message fragment)
    type Fault<'a> = (&'a str, Mode, Option<Vec<u8>>, &'a str, &'a str);
    let cases: Vec<Fault<'_>> = vec![
        ("404", Mode::Status(404), None, "error", "HTTP status 404"),
        ("500", Mode::Status(500), None, "error", "HTTP status 500"),
        (
            "slow past the timeout",
            Mode::Slow(Duration::from_secs(2)),
            None,
            "error",
            "no complete response within",
        ),
        (
            "truncated in transit",
            Mode::Truncate,
            None,
            "error",
            "transport error",
        ),
        (
            "truncated file",
            Mode::Serve,
            Some(good_crl[..good_crl.len() / 2].to_vec()),
            "invalid",
            "malformed CRL",
        ),
        (
            "garbage",
            Mode::Serve,
            Some(b"<html><body>502 Bad Gateway</body></html>".to_vec()),
            "invalid",
            "not a DER or PEM CRL",
        ),
        (
            "signed by another CA of the bundle",
            Mode::Serve,
            Some(Pki::crl(&pki.second, time::Duration::seconds(10), day, &[])),
            "invalid",
            "configured for 'O=certgate dev, CN=root'",
        ),
        (
            "same name, another key",
            Mode::Serve,
            Some(Pki::crl(&lookalike, time::Duration::seconds(10), day, &[])),
            "invalid",
            "signature does not verify",
        ),
        (
            "nextUpdate in the past",
            Mode::Serve,
            Some(Pki::crl(
                &pki.root,
                time::Duration::hours(3),
                time::Duration::hours(2),
                &[],
            )),
            "stale",
            "past its nextUpdate",
        ),
        (
            "older than max_age",
            Mode::Serve,
            Some(Pki::crl(&pki.root, time::Duration::hours(25), day * 7, &[])),
            "stale",
            "max_age is 1d0h",
        ),
    ];
    for (what, mode, body, outcome, fragment) in cases {
        // At start: nothing usable, so the fail-secure 503 with the reason.
        let server = CrlServer::new(body.clone().unwrap_or_else(|| good_crl.clone()));
        server.set(mode.clone(), None);
        let gate = gate(&pki, &server.url());
        rounds(&gate, &server.url(), outcome, 0).await;
        let (reason, message) = decide(&gate, &pki.good).await;
        assert_eq!(reason, "revocation_status_unknown", "{what}: {message}");
        assert!(message.contains(fragment), "{what}: {message}");
        drop(gate);

        // After a good CRL: the fault is counted and the good CRL stays in force.
        server.set(Mode::Serve, Some(good_crl.clone()));
        let gate = self::gate(&pki, &server.url());
        eventually(&gate, &pki.revoked, "certificate_revoked").await;
        let before = fetches(&gate, &server.url(), outcome);
        server.set(mode, body);
        rounds(&gate, &server.url(), outcome, before).await;
        assert_eq!(decide(&gate, &pki.good).await.0, "allow", "{what}");
        assert_eq!(
            decide(&gate, &pki.revoked).await.0,
            "certificate_revoked",
            "{what}"
        );
        if outcome == "invalid" {
            let failures: u64 = gate
                .checker
                .metrics()
                .render()
                .lines()
                .filter(|l| l.starts_with("certgate_crl_verification_failures_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            assert!(failures >= 1, "{what}: verification failures are counted");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_crls_are_cut_off_at_the_limit_and_large_ones_load() {
    let pki = Pki::new();
    let mut serials: Vec<u64> = (1..50_000u64).map(|i| i * 7919).collect();
    serials.push(pki.revoked_serial);
    let big = Pki::crl(
        &pki.root,
        time::Duration::seconds(30),
        time::Duration::days(1),
        &serials,
    );
    assert!(big.len() > 1 << 20, "{} bytes", big.len());
    let server = CrlServer::new(big);

    let limited = gate_in(
        &pki,
        tempfile::tempdir().expect("tempdir"),
        &format!("  max_size: 512KiB\n{}", root_source(&server.url())),
    );
    rounds(&limited, &server.url(), "error", 0).await;
    let (reason, message) = decide(&limited, &pki.good).await;
    assert_eq!(reason, "revocation_status_unknown");
    assert!(
        message.contains("larger than the limit of 524288 bytes"),
        "{message}"
    );
    drop(limited);

    let gate = gate(&pki, &server.url());
    eventually(&gate, &pki.revoked, "certificate_revoked").await;
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cas_each_with_its_own_crl_are_fresh_independently() {
    let pki = Pki::new();
    let root = CrlServer::new(pki.listing_revoked());
    let second = CrlServer::new(Pki::crl(
        &pki.second,
        time::Duration::seconds(30),
        time::Duration::days(1),
        &[],
    ));
    let yaml = format!(
        "  issuers:\n    - ca: \"{ROOT_DN}\"\n      sources: [{{url: \"{}\", refresh_interval: 200ms}}]\n    - ca: \"{SECOND_DN}\"\n      sources: [{{url: \"{}\", refresh_interval: 200ms}}]\n",
        root.url(),
        second.url().replace("root.crl", "second.crl")
    );
    let gate = gate_in(&pki, tempfile::tempdir().expect("tempdir"), &yaml);
    eventually(&gate, &pki.second_client, "allow").await;
    eventually(&gate, &pki.revoked, "certificate_revoked").await;

    // The second CA's CRL server starts serving a stale CRL: only its certificates are
    // affected, with a message naming that issuer.
    second.set(
        Mode::Serve,
        Some(Pki::crl(
            &pki.second,
            time::Duration::hours(30),
            time::Duration::days(7),
            &[],
        )),
    );
    // A fresh CRL in force is not replaced by the stale one…
    let stale_url = second.url().replace("root.crl", "second.crl");
    rounds(&gate, &stale_url, "stale", 0).await;
    assert_eq!(decide(&gate, &pki.second_client).await.0, "allow");
    // …but as time passes the one in force ages out: judged at check time, per issuer.
    let later = certgate::clock::unix_now() + 2 * 86_400;
    let config = gate.checker.config();
    let second_ca = config
        .trust
        .cas()
        .iter()
        .find(|ca| ca.subject == SECOND_DN)
        .expect("the second CA");
    let status =
        gate.checker
            .revocation()
            .snapshot()
            .status(second_ca, &"01".parse().expect("hex"), later);
    assert!(
        matches!(status, certgate::authz::CrlStatus::Unknown(ref cause)
            if cause.to_string().contains("CN=second") && cause.to_string().contains("stale")),
        "{status:?}"
    );
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_crl_is_persisted_and_survives_a_restart_without_the_server() {
    let pki = Pki::new();
    let mut server = CrlServer::new(pki.listing_revoked());
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!("  cache_dir: crl-cache\n{}", root_source(&server.url()));
    let first = gate_in(&pki, dir, &yaml);
    eventually(&first, &pki.revoked, "certificate_revoked").await;
    let cache = first._dir.path().join("crl-cache");
    assert_eq!(
        std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0),
        1,
        "one persisted CRL in {}",
        cache.display()
    );
    server.stop();
    // "Restart": a new checker over the same directory, CRL server down.
    let dir = first.stop();
    let second = gate_in(&pki, dir, &yaml);
    eventually(&second, &pki.good, "allow").await;
    assert_eq!(decide(&second, &pki.revoked).await.0, "certificate_revoked");
    assert_eq!(
        second
            .checker
            .revocation()
            .readiness(certgate::clock::unix_now()),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_and_the_readiness_choice() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let crl_path = dir.path().join("root.crl.pem");
    let yaml = format!(
        "  readiness: serve\n  issuers:\n    - ca: \"{ROOT_DN}\"\n      sources: [{{file: root.crl.pem, refresh_interval: 100ms}}]\n"
    );
    let gate = gate_in(&pki, dir, &yaml);
    // readiness: serve — ready at once, and denying until the CRL is there.
    assert_eq!(
        gate.checker
            .revocation()
            .readiness(certgate::clock::unix_now()),
        Ok(())
    );
    rounds(&gate, &crl_path.display().to_string(), "error", 0).await;
    let message = eventually(&gate, &pki.good, "revocation_status_unknown").await;
    assert!(message.contains("cannot read"), "{message}");
    let pem = pki
        .root
        .crl(&CrlSpec {
            revoked: vec![(pki.revoked_serial, None)],
            ..CrlSpec::new(
                at(now()) - time::Duration::seconds(20),
                time::Duration::days(1),
            )
        })
        .expect("crl")
        .pem;
    std::fs::write(&crl_path, pem).expect("write");
    eventually(&gate, &pki.good, "allow").await;
    let message = eventually(&gate, &pki.revoked, "certificate_revoked").await;
    assert!(message.contains("(unspecified)"), "{message}");
}

// ---------------------------------------------------------------------------------------
// Hygiene: redirects and what /readyz shows.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_unless_asked_and_then_only_on_the_same_host() {
    let pki = Pki::new();
    let target = CrlServer::new(pki.listing_revoked());
    let redirect = CrlServer::new(Vec::new());
    redirect.set(Mode::Redirect(target.url()), None);

    let gate = gate(&pki, &redirect.url());
    rounds(&gate, &redirect.url(), "error", 0).await;
    let (reason, message) = decide(&gate, &pki.good).await;
    assert_eq!(reason, "revocation_status_unknown", "{message}");
    assert!(message.contains("redirect"), "{message}");
    assert_eq!(target.requests().0, 0, "the redirect was not followed");
    drop(gate);

    let follow = |url: &str| format!("  follow_redirects: true\n{}", root_source(url));
    let gate = gate_in(
        &pki,
        tempfile::tempdir().expect("tempdir"),
        &follow(&redirect.url()),
    );
    eventually(&gate, &pki.revoked, "certificate_revoked").await;
    drop(gate);

    // Another host (the same machine by another name) is refused even then.
    redirect.set(
        Mode::Redirect(target.url().replace("127.0.0.1", "localhost")),
        None,
    );
    let before = target.requests().0;
    let gate = gate_in(
        &pki,
        tempfile::tempdir().expect("tempdir"),
        &follow(&redirect.url()),
    );
    rounds(&gate, &redirect.url(), "error", 0).await;
    let (reason, message) = decide(&gate, &pki.good).await;
    assert_eq!(reason, "revocation_status_unknown", "{message}");
    assert!(message.contains("redirect"), "{message}");
    assert_eq!(target.requests().0, before, "no request to another host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_ca_and_the_reason_class_but_no_url() {
    let pki = Pki::new();
    let server = CrlServer::down(pki.listing_revoked());
    let gate = gate(&pki, &server.url());
    rounds(&gate, &server.url(), "error", 0).await;
    let why = gate
        .checker
        .revocation()
        .readiness(certgate::clock::unix_now())
        .expect_err("not ready")
        .to_string();
    assert!(
        why.contains("CN=root") && why.contains("key sha256:") && why.contains("fetch failed"),
        "{why}"
    );
    assert!(
        !why.contains("127.0.0.1") && !why.contains("http") && !why.contains("transport"),
        "{why}"
    );
    // The deny message and the log keep the detail.
    let (_, message) = decide(&gate, &pki.good).await;
    assert!(message.contains("transport error"), "{message}");
}
