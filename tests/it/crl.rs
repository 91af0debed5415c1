//! CRLs end to end: a CRL server on loopback (`crl_server`) serving CRLs signed in code, with
//! every fault (down, 404, 500, slow, truncated, garbage, wrong signer, stale, huge). Most
//! decisions are asserted through `certgate::check::Checker` with the real background
//! refresher; some through a running `certgate serve`, and a bumped CRL once through Envoy.
//! Fail-secure (row 7b) through Envoy is in `fail_secure`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate::check::{CheckInput, Checker};
use certgate::config::Config;
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CertSpec, CrlSpec};
use rcgen::RevocationReason::KeyCompromise;
use time::OffsetDateTime;

use super::crl_server::{CrlServer, Mode};
use super::harness::{Certgate, CertgateAddress, Curl, EchoUpstream, Envoy};
use super::world::{World, now};

// ---------------------------------------------------------------------------------------
// PKI, configuration and a Checker with the real refresher.

struct Pki {
    root: CertAuthority,
    second: CertAuthority,
    /// `good` is never listed; `revoked` is listed in every CRL of `listing_revoked`.
    good: String,
    revoked: String,
    revoked_serial: u64,
    /// A client of the second CA.
    second_client: String,
}

fn at(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("valid")
}

impl Pki {
    fn new() -> Pki {
        let start = at(now()) - time::Duration::days(1);
        let root =
            CertAuthority::new("root", start, start + time::Duration::days(365)).expect("CA");
        let second =
            CertAuthority::new("second", start, start + time::Duration::days(365)).expect("CA");
        let spec = worker_spec();
        let good = root.issue(&spec).expect("leaf");
        let revoked = root.issue(&spec).expect("leaf");
        let second_client = second.issue(&spec).expect("leaf");
        Pki {
            root,
            second,
            good: good.cert_pem,
            revoked: revoked.cert_pem,
            revoked_serial: revoked.serial,
            second_client: second_client.cert_pem,
        }
    }

    /// A CRL of `ca` issued `age` ago, valid `validity` from then, listing `serials`.
    fn crl(
        ca: &CertAuthority,
        age: time::Duration,
        validity: time::Duration,
        serials: &[u64],
    ) -> Vec<u8> {
        ca.crl(&CrlSpec {
            revoked: serials.iter().map(|s| (*s, Some(KeyCompromise))).collect(),
            ..CrlSpec::new(at(now()) - age, validity)
        })
        .expect("sign CRL")
        .der
    }

    /// A current CRL of the root listing the `revoked` certificate.
    fn listing_revoked(&self) -> Vec<u8> {
        Self::crl(
            &self.root,
            time::Duration::seconds(30),
            time::Duration::days(1),
            &[self.revoked_serial],
        )
    }
}

struct Gate {
    checker: Arc<Checker>,
    refresher: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Gate {
    /// Stop the refresher and hand back the directory (for a "restart" over it).
    fn stop(mut self) -> tempfile::TempDir {
        self.refresher.abort();
        std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

const ROOT_DN: &str = "CN=root, O=certgate dev";
const SECOND_DN: &str = "O=certgate dev, CN=second";

/// A checker whose CRL section is `crl_yaml` (indented two spaces, under `crl:`), with both
/// CAs in the bundle and the refresher running. `dir` lets a test reuse a directory.
fn gate_in(pki: &Pki, dir: tempfile::TempDir, crl_yaml: &str) -> Gate {
    let bundle = format!("{}{}", pki.root.cert_pem(), pki.second.cert_pem());
    gate_with_bundle(&bundle, dir, crl_yaml)
}

/// [`gate_in`] with `bundle` (PEM) as the trust bundle.
fn gate_with_bundle(bundle: &str, dir: tempfile::TempDir, crl_yaml: &str) -> Gate {
    std::fs::write(dir.path().join("ca.pem"), bundle).expect("write");
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem}}\nstore: {{path: certgate.db}}\nroles_by_type: {{worker: [worker]}}\n\
         policies:\n  default:\n    require_enrolment: false\n    permissions: {{worker: [\"GET /api/*\"]}}\n\
         crl:\n  timeout: 400ms\n  retry_backoff: 100ms\n  max_retry_backoff: 200ms\n{crl_yaml}"
    );
    let config = Config::from_yaml(&yaml, &dir.path().join("certgate.yaml"))
        .unwrap_or_else(|p| panic!("{p:?}\n{yaml}"));
    let metrics = Metrics::new();
    let certgate::config::StoreBackend::Embedded { path } = &config.store.backend else {
        panic!("embedded store expected");
    };
    let backend = certgate::store::EmbeddedStore::open(path).expect("store");
    let store =
        certgate::store::CachedStore::new(Arc::new(backend), config.store.cache, metrics.clone());
    let checker = Arc::new(Checker::new(config, store, metrics));
    let refresher = certgate::crl::refresh::spawn(checker.revocation().clone());
    Gate {
        checker,
        refresher,
        _dir: dir,
    }
}

/// One root issuer with one URL source refreshed every 200ms.
fn gate(pki: &Pki, url: &str) -> Gate {
    gate_in(
        pki,
        tempfile::tempdir().expect("tempdir"),
        &root_source(url),
    )
}

fn root_source(url: &str) -> String {
    format!(
        "  issuers:\n    - ca: \"{ROOT_DN}\"\n      sources: [{{url: \"{url}\", refresh_interval: 200ms}}]\n"
    )
}

/// (reason code or "allow", message) of a GET /api/x with `cert`.
async fn decide(gate: &Gate, cert: &str) -> (String, String) {
    let outcome = gate
        .checker
        .check(
            CheckInput {
                certificate: Some(cert.as_bytes()),
                encoding: Default::default(),
                policy: None,
                method: "GET",
                path: "/api/x",
                malformed: None,
            },
            certgate::clock::unix_now(),
        )
        .await;
    match outcome.decision {
        Ok(_) => ("allow".into(), String::new()),
        Err(d) => (d.reason.as_str().into(), d.message),
    }
}

/// Wait (up to 10s) until `cert` gets `want`; returns the message.
#[track_caller]
fn eventually<'a>(
    gate: &'a Gate,
    cert: &'a str,
    want: &'a str,
) -> impl std::future::Future<Output = String> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (got, message) = decide(gate, cert).await;
            if got == want {
                return message;
            }
            if Instant::now() > deadline {
                panic!("{caller}: wanted {want}, still {got}: {message}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Wait until the refresher has counted `n` more rounds with `outcome` than `before`.
async fn rounds(gate: &Gate, url: &str, outcome: &str, more_than: u64) {
    let counter = gate
        .checker
        .metrics()
        .crl_fetches
        .with_label_values(&[url, outcome]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.get() <= more_than {
        assert!(
            Instant::now() < deadline,
            "no '{outcome}' round of {url} (metrics:\n{})",
            gate.checker.metrics().render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fetches(gate: &Gate, url: &str, outcome: &str) -> u64 {
    gate.checker
        .metrics()
        .crl_fetches
        .with_label_values(&[url, outcome])
        .get()
}

// ---------------------------------------------------------------------------------------
// Through the Checker.

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
// Through Envoy.

#[test]
fn envoy_denies_a_serial_revoked_in_a_bumped_crl() {
    let world = World::new();
    let worker = world.client(
        "worker",
        "worker-1@example.com",
        &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
    );
    world.enrol(&[("worker-1@example.com", "worker")], &[&worker]);
    let crl = |age_secs: i64, serials: &[u64]| {
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
    let server = CrlServer::new(crl(60, &[]));
    let mut config = std::fs::read_to_string(&world.config).expect("config");
    config.push_str(&format!(
        "crl:\n  retry_backoff: 100ms\n  issuers:\n    - ca: \"CN=e2e CA, O=certgate dev\"\n      sources: [{{url: \"{}\", refresh_interval: 300ms}}]\n",
        server.url()
    ));
    super::world::write_file(&world.config, config);
    // Ready only once the CRL is loaded (readiness: wait, the default).
    let certgate = Certgate::start(&world.config, world.admin_port);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&world.envoy_options(
        CertgateAddress::Tcp(world.grpc_port),
        upstream.port,
        "ACCEPT_UNTRUSTED",
    ));
    let get = || {
        Curl {
            port: envoy.port,
            ca: &world.ca_pem,
            client: Some((worker.cert.as_path(), worker.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };
    let logs = || format!("{}\n{}", certgate.proc.logs(), envoy.proc.logs());
    let reply = get();
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, logs());

    let serial = u64::from_str_radix(&worker.serial, 16).expect("hex serial");
    server.set(Mode::Serve, Some(crl(30, &[serial])));
    let denied = super::harness::wait_until(Duration::from_secs(10), || get().status == 401);
    assert!(denied, "still allowed after the CRL bump\n{}", logs());
    let reply = get();
    let body = super::world::certgate_deny(&reply)
        .unwrap_or_else(|| panic!("not certgate's answer: {reply:?}\n{}", logs()));
    assert_eq!(body["error"], "certificate_revoked", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("key_compromise")),
        "{body}"
    );
    let metrics = certgate.metrics();
    assert!(
        metrics.contains("certgate_crl_entries{issuer=\"O=certgate dev, CN=e2e CA\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("certgate_crl_usable{issuer=\"O=certgate dev, CN=e2e CA\"} 1"));
}

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

/// A `certgate serve` configuration written into `dir`.
struct Served {
    config: std::path::PathBuf,
    grpc: u16,
    admin: u16,
}

impl Served {
    /// gRPC and admin on free ports, `bundle` (PEM) as the trust bundle, workers allowed
    /// `GET /api/*` without enrolment, `crl_yaml` (indented two spaces) under `crl:`.
    fn new(dir: &std::path::Path, bundle: &str, crl_yaml: &str) -> Served {
        std::fs::write(dir.join("ca.pem"), bundle).expect("write");
        let (grpc, admin) = (super::harness::free_port(), super::harness::free_port());
        let config = dir.join("certgate.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {{grpc: \"127.0.0.1:{grpc}\", admin: \"127.0.0.1:{admin}\"}}\n\
                 trust: {{ca_bundle: ca.pem, clock_skew: 5s}}\nstore: {{path: certgate.db}}\n\
                 roles_by_type: {{worker: [worker]}}\n\
                 policies:\n  default:\n    require_enrolment: false\n    permissions: {{worker: [\"GET /api/*\"]}}\n\
                 crl:\n  timeout: 400ms\n  retry_backoff: 100ms\n  max_retry_backoff: 200ms\n{crl_yaml}"
            ),
        )
        .expect("write");
        Served {
            config,
            grpc,
            admin,
        }
    }

    fn start(&self) -> Certgate {
        Certgate::start(&self.config, self.admin)
    }

    fn decide(&self, pem: &str) -> (String, String) {
        super::world::grpc_decision(self.grpc, pem, "/api/x")
    }
}

/// Whether `metrics` counts a fetch of `url` with an outcome in `outcomes`.
fn fetched(metrics: &str, url: &str, outcomes: &[&str]) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("certgate_crl_fetches_total")
            && l.contains(&format!("\"{url}\""))
            && outcomes
                .iter()
                .any(|o| l.contains(&format!("outcome=\"{o}\"")))
    })
}

fn worker_spec() -> CertSpec {
    CertSpec {
        organizational_unit: Some("worker".into()),
        ..CertSpec::client(
            "w1",
            at(now()) - time::Duration::hours(1),
            time::Duration::days(5),
        )
    }
}

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
    let both = super::harness::wait_until(Duration::from_secs(10), || {
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
    let loaded = super::harness::wait_until(Duration::from_secs(10), || {
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
    let tried = super::harness::wait_until(Duration::from_secs(10), || {
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

// ---------------------------------------------------------------------------------------
// Trust anchors.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_of_an_expired_ca_is_untrusted() {
    let pki = Pki::new();
    let retired = CertAuthority::new(
        "retired",
        at(now()) - time::Duration::days(400),
        at(now()) - time::Duration::days(2),
    )
    .expect("CA");
    let leaf = retired.issue(&worker_spec()).expect("leaf");
    let bundle = format!("{}{}", pki.root.cert_pem(), retired.cert_pem());
    let gate = gate_with_bundle(&bundle, tempfile::tempdir().expect("tempdir"), "");
    let (reason, message) = decide(&gate, &leaf.cert_pem).await;
    assert_eq!(reason, "untrusted_issuer", "{message}");
    assert!(
        message.contains("CN=retired") && message.contains("expired at"),
        "{message}"
    );
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
}

#[test]
fn a_ca_that_expires_while_certgate_runs_stops_validating() {
    // The CA expires a few seconds after start (plus the 5s clock skew of `Served`).
    let expiry = at(now()) + time::Duration::seconds(3);
    let ca = CertAuthority::new("short-lived CA", expiry - time::Duration::days(30), expiry)
        .expect("CA");
    let leaf = ca.issue(&worker_spec()).expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::new(dir.path(), &ca.cert_pem(), "");
    let certgate = served.start();
    assert_eq!(served.decide(&leaf.cert_pem).0, "allow");
    let mut last = (String::new(), String::new());
    let denied = super::harness::wait_until(Duration::from_secs(30), || {
        last = served.decide(&leaf.cert_pem);
        last.0 == "untrusted_issuer"
    });
    assert!(denied, "still {last:?}\n{}", certgate.proc.logs());
    assert!(
        last.1.contains("CN=short-lived CA") && last.1.contains("expired at"),
        "{}",
        last.1
    );
}

#[test]
fn config_validate_refuses_an_expired_ca_and_warns_before_one_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = CertAuthority::new(
        "valid",
        at(now()) - time::Duration::days(1),
        at(now()) + time::Duration::days(365),
    )
    .expect("CA");
    let expired = CertAuthority::new(
        "retired",
        at(now()) - time::Duration::days(400),
        at(now()) - time::Duration::days(2),
    )
    .expect("CA");
    let expiring = CertAuthority::new(
        "expiring",
        at(now()) - time::Duration::days(300),
        at(now()) + time::Duration::days(10),
    )
    .expect("CA");
    let config = dir.path().join("certgate.yaml");
    std::fs::write(
        &config,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\n",
    )
    .expect("write");
    let validate = |bundle: String| {
        std::fs::write(dir.path().join("ca.pem"), bundle).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
            .args(["config", "validate", "--config"])
            .arg(&config)
            .output()
            .expect("run certgate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = validate(format!("{}{}", valid.cert_pem(), expired.cert_pem()));
    assert_eq!(code, Some(2), "an expired CA is refused: {stderr}");
    assert!(
        stderr.contains("trust.ca_bundle")
            && stderr.contains("CN=retired")
            && stderr.contains("expired at")
            && stderr.contains("remove it from the bundle"),
        "{stderr}"
    );
    let (code, stderr) = validate(format!("{}{}", valid.cert_pem(), expiring.cert_pem()));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("CN=expiring") && stderr.contains("expires"),
        "{stderr}"
    );
    let (code, stderr) = validate(valid.cert_pem());
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
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
