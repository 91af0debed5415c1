//! CRLs end to end: a CRL server on loopback (`crl_server`) serving CRLs signed in code, with
//! every fault (down, 404, 500, slow, truncated, garbage, wrong signer, stale, huge). Most
//! decisions are asserted through `certgate::check::Checker` with the real background
//! refresher; some through a running `certgate serve`, and a bumped CRL once through Envoy.
//! Fail-secure (row 7b) through Envoy is in `fail_secure`.

mod anchors;
mod checker;
mod served;

use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate::check::{CheckInput, Checker};
use certgate::config::Config;
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CertSpec, CrlSpec};
use rcgen::RevocationReason::KeyCompromise;
use time::OffsetDateTime;

use super::harness::Certgate;
use super::world::now;

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
                host: None,
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
