//! A CRL served over HTTPS by a server whose certificate comes from a private CA (as Vault PKI
//! or AD CS serve them): fetched with `crl.tls.ca_bundle`, and without it refused with a log
//! line that says what to set while checks that need the CRL are denied
//! `revocation_status_unknown`. The server is `openssl s_server -WWW`.

use std::process::Command;
use std::time::Duration;

use certgate::pki::{CertAuthority, CertSpec, CrlSpec};
use time::Duration as Span;

use super::harness::{Certgate, Proc, free_port, port_open, wait_until};
use super::world::{World, grpc_decision, now, spawn_certgate, write_file};

const SERIAL: u64 = 0x4a11_0000_0000_0007;

struct Served {
    world: World,
    worker_pem: String,
    url: String,
    _server: Proc,
}

/// A world whose worker certificate is revoked by the CRL `openssl s_server` serves, and the
/// private CA of that server in `crl-server-ca.pem`.
fn served() -> Served {
    let world = World::new();
    let worker = world.client(
        "worker",
        "worker-1@example.com",
        &CertSpec {
            serial: Some(SERIAL),
            ..World::spec("worker-1@example.com", "worker", "worker-1.example.com")
        },
    );
    world.enrol(&[("worker-1@example.com", "worker")], &[&worker]);
    let www = world.path("www");
    std::fs::create_dir(&www).expect("mkdir");
    let crl = world.crl(&CrlSpec {
        revoked: vec![(SERIAL, None)],
        ..CrlSpec::new(now() - Span::minutes(1), Span::days(1))
    });
    write_file(&www.join("issuing.crl"), &crl.der);
    let start = now() - Span::days(1);
    let private = CertAuthority::new("CRL server CA", start, start + Span::days(30)).expect("CA");
    let server = private
        .issue(&CertSpec::server(&["localhost"], start, Span::days(30)))
        .expect("server certificate");
    write_file(&world.path("crl-server-ca.pem"), private.cert_pem());
    write_file(&world.path("crl-server.pem"), &server.cert_pem);
    write_file(&world.path("crl-server-key.pem"), &server.key_pem);
    let port = free_port();
    let proc = Proc::spawn_ready(
        "openssl s_server",
        Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(world.path("crl-server.pem"))
            .arg("-key")
            .arg(world.path("crl-server-key.pem"))
            .current_dir(&www),
        Duration::from_secs(10),
        || port_open(port),
    );
    Served {
        worker_pem: std::fs::read_to_string(&worker.cert).expect("worker PEM"),
        url: format!("https://localhost:{port}/issuing.crl"),
        world,
        _server: proc,
    }
}

fn with_crl(served: &Served, tls: &str) {
    let config = std::fs::read_to_string(&served.world.config).expect("config");
    write_file(
        &served.world.config,
        format!(
            "{config}crl:\n  readiness: serve\n  retry_backoff: 100ms\n{tls}  issuers:\n    - ca: \"CN=e2e CA, O=certgate dev\"\n      sources: [{{url: \"{}\"}}]\n",
            served.url
        ),
    );
}

#[test]
fn a_crl_from_a_private_ca_https_server_is_fetched_with_crl_tls_ca_bundle() {
    let served = served();
    with_crl(&served, "  tls: {ca_bundle: crl-server-ca.pem}\n");
    let certgate = Certgate::start(&served.world.config, served.world.admin_port);
    let revoked = wait_until(Duration::from_secs(10), || {
        grpc_decision(served.world.grpc_port, &served.worker_pem, "/api/jobs").0
            == "certificate_revoked"
    });
    assert!(revoked, "{}", certgate.proc.logs());
}

#[test]
fn without_crl_tls_the_private_ca_server_is_refused_and_said_so() {
    let served = served();
    with_crl(&served, "");
    let certgate = spawn_certgate(&served.world.config, served.world.admin_port, &[]);
    let explained = wait_until(Duration::from_secs(10), || {
        certgate.proc.logs().contains("set crl.tls.ca_bundle")
    });
    assert!(explained, "{}", certgate.proc.logs());
    let (reason, message) = grpc_decision(served.world.grpc_port, &served.worker_pem, "/api/jobs");
    assert_eq!(reason, "revocation_status_unknown", "{message}");
}
