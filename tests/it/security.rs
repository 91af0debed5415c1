//! Regression tests for what an attacker tried (the security review): forwarded-certificate
//! headers believed from the wrong hop, a judged path other than the one served, paths an
//! upstream resolves differently, dual-stack proxies. Each runs through the real proxy
//! involved (Envoy, nginx) or the real forward-auth listener.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

use super::envoy::Stack;
use super::forward_auth::{
    NGINX_SOURCE, SOURCES, auth, escaped, get_with_cert, setup, setup_with, start_nginx,
};
use super::harness::{Curl, EchoUpstream, Mode, in_both_modes};
use super::world::{Client, World, cli_with_config};

/// Envoy (the shipped front-proxy template, `include_peer_certificate: true`, SANITIZE,
/// verifying client certificates) in front of certgate configured with every forwarded source
/// the README shows; `overrides` changes Envoy template variables.
fn envoy_setup_with(mode: Mode, overrides: &[(&str, &str)]) -> Stack {
    Stack::start_in(
        mode,
        World::new(),
        |world| {
            super::world::append_file(&world.config, SOURCES);
        },
        "VERIFY_TRUST_CHAIN",
        overrides,
    )
}

fn envoy_setup(mode: Mode) -> Stack {
    envoy_setup_with(mode, &[])
}

/// GET `path` through Envoy: (status, body).
fn send(
    s: &Stack,
    client: Option<&Client>,
    path: &str,
    headers: Vec<(&str, &str)>,
) -> (u16, String) {
    let reply = s.request(client, "GET", path, headers);
    (reply.status, reply.body)
}

/// Finding 1: with a forward-auth source for `ssl-client-cert` trusted from 127.0.0.1 (where
/// Envoy calls certgate from), a client with no certificate sent the URL-encoded PEM of an
/// enrolled admin certificate through Envoy and was let in as that admin.
fn ext_authz_never_reads_a_header_the_client_can_send_through_envoy(mode: Mode) {
    let s = envoy_setup(mode);
    let admin = escaped(&s.admin.cert);
    let admin_b64 = {
        let pem = std::fs::read_to_string(&s.admin.cert).expect("read");
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let xfcc = format!("Cert=\"{admin}\"");
    let rfc9440 = format!(":{admin_b64}:");
    let forged: [(&str, &str); 5] = [
        ("ssl-client-cert", &admin),
        ("x-forwarded-client-cert", &xfcc),
        ("x-forwarded-tls-client-cert", &admin_b64),
        ("client-cert", &rfc9440),
        ("x-amzn-mtls-clientcert-leaf", &admin),
    ];
    for (header, value) in forged {
        let (status, body) = send(&s, None, "/api/jobs", vec![(header, value)]);
        assert_eq!(
            (status, body.contains("no_client_certificate")),
            (401, true),
            "{header}: {body}\n{}",
            s.logs()
        );
    }
    // With a certificate of its own, the client is itself, whatever it sends.
    let (status, body) = send(
        &s,
        Some(&s.worker),
        "/api/jobs",
        vec![("ssl-client-cert", &admin)],
    );
    assert_eq!(status, 200, "{body}");
    let principal = serde_json::from_str::<serde_json::Value>(&body).expect("json")["headers"]
        ["x-client-principal"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(principal.as_deref(), Some("worker-1@example.com"));
    assert_eq!(
        s.upstream.requests(),
        1,
        "no forged request reached the app"
    );
}

/// Startup refuses, with a reason, every configuration that would believe a
/// client-controllable header on the ext_authz listener.
#[test]
fn config_refuses_client_controllable_ext_authz_sources() {
    let world = World::new();
    let base = std::fs::read_to_string(&world.config).expect("read");
    let cases: &[(&str, &str)] = &[
        (
            "forwarded_certificates:\n  - {via: ext_authz, header: ssl-client-cert, format: url_encoded_pem, envoy_forward_client_cert: sanitize_set, trusted_proxies: [127.0.0.1]}\n",
            "Envoy passes client-sent headers through",
        ),
        (
            "forwarded_certificates:\n  - {via: ext_authz, header: x-forwarded-client-cert, format: xfcc, trusted_proxies: [127.0.0.1]}\n",
            "SANITIZE_SET",
        ),
        (
            "forwarded_certificates:\n  - {header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [127.0.0.1]}\n",
            "forwarded_certificates[0].via",
        ),
        (
            "forwarded_certificates:\n  - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [unix]}\n",
            "TCP only",
        ),
        (
            "listen: http: \"127.0.0.1:9002\"\n",
            "forward_auth.request_headers",
        ),
    ];
    for (extra, why) in cases {
        let text = match extra.strip_prefix("listen:") {
            // An extra listener on the existing `listen:` section.
            Some(listener) => base.replacen("listen:\n", &format!("listen:\n {listener}"), 1),
            None => format!("{base}{extra}"),
        };
        super::world::write_file(&world.config, &text);
        let (code, out) = cli_with_config(&world.config, &["config", "validate"]);
        assert_eq!(code, 2, "{extra}: {out}");
        assert!(out.contains(why), "{extra}: expected {why:?} in {out}");
    }
}

/// Finding 2: nginx's auth subrequest carries every client header. A worker asking for
/// `/admin/users` with a non-UTF-8 byte in the query and its own `X-Forwarded-Uri: /api/jobs`
/// was judged as `GET /api/jobs` and reached `/admin/users`.
#[test]
fn nginx_judges_the_request_it_serves() {
    let s = setup(NGINX_SOURCE);
    // A byte-level upstream: the echo upstream's HTTP parser would itself refuse the 0xff
    // byte and hide whether nginx let the request through.
    let upstream = RawUpstream::start();
    let nginx = start_nginx(&s.world, s.http_port, upstream.port);
    let mut url = format!("https://localhost:{}/admin/users?q=", nginx.port).into_bytes();
    url.push(0xff);
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&s.world.ca_pem)
        .arg("--cert")
        .arg(&s.worker.cert)
        .arg("--key")
        .arg(&s.worker.key)
        .args([
            "-H",
            "X-Forwarded-Uri: /api/jobs",
            "-H",
            "X-Forwarded-Method: GET",
        ])
        .arg(OsString::from_vec(url))
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(status, "200", "{}", s.certgate.proc.logs());
    assert_eq!(upstream.requests(), 0, "the app was reached");
    assert!(
        s.certgate.proc.logs().contains("malformed_request"),
        "{}",
        s.certgate.proc.logs()
    );

    // Straight to the listener: a missing, repeated or non-UTF-8 original URI is a 400,
    // never a fallback to another header or to `GET /`.
    let worker = escaped(&s.worker.cert);
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("x-original-method", "GET".into())],
        vec![
            ("x-original-method", "GET".into()),
            ("x-forwarded-uri", "/api/jobs".into()),
        ],
        vec![
            ("x-original-method", "GET".into()),
            ("x-original-uri", "/api/jobs".into()),
            ("x-original-uri", "/admin/users".into()),
        ],
        vec![("x-original-uri", "/api/jobs".into())],
        vec![
            ("x-original-method", "GET".into()),
            ("x-original-uri", "/api/jobs".into()),
            ("ssl-client-cert", worker.clone()),
            ("ssl-client-cert", worker.clone()),
        ],
    ];
    for mut h in cases {
        if !h.iter().any(|(k, _)| *k == "ssl-client-cert") {
            h.push(("ssl-client-cert", worker.clone()));
        }
        let (status, _, body) = auth(s.http_port, "/auth", &h);
        assert_eq!(
            (status, body.contains("\"error\":\"malformed_request\"")),
            (400, true),
            "{h:?}: {body}"
        );
    }
}

/// An upstream that answers 200 to any bytes and counts the connections that sent any.
struct RawUpstream {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).is_ok_and(|n| n > 0) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            }
        });
        RawUpstream { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Paths a worker allowed `GET /api/*` used to reach `/admin/*` with: Tomcat, Jetty and
/// Spring read `..;/` as `..`; some servers decode `%2f`/`%5c` before routing, or decode
/// twice.
const CLIMBING_PATHS: [&str; 6] = [
    "/api/..;/admin/users",
    "/api/..%2fadmin/users",
    "/api/..%2Fadmin/users",
    "/api/..%5cadmin",
    "/api/%252e%252e/admin",
    "/api/%2e%2e%2fadmin",
];

/// Finding 3 through Envoy with its default path handling (no `normalize_path`, escaped
/// slashes kept): the paths reach certgate, and the upstream, as sent.
fn envoy_paths_an_upstream_could_resolve_elsewhere_are_refused(mode: Mode) {
    let s = envoy_setup_with(
        mode,
        &[
            ("NORMALIZE_PATH", "false"),
            ("ESCAPED_SLASHES_ACTION", "KEEP_UNCHANGED"),
        ],
    );
    for path in CLIMBING_PATHS {
        let (status, body) = send(&s, Some(&s.worker), path, vec![]);
        assert_eq!(
            (status, body.contains("\"error\":\"malformed_request\"")),
            (400, true),
            "{path}: {body}\n{}",
            s.logs()
        );
    }
    assert_eq!(s.upstream.requests(), 0, "the app was reached");
    // What the worker may do still works, encoded or not.
    for path in ["/api/jobs", "/api/%6Aobs?x=..%2f"] {
        let (status, body) = send(&s, Some(&s.worker), path, vec![]);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = send(&s, Some(&s.admin), "/api/..;/admin", vec![]);
    assert_eq!(status, 400, "even an admin's ambiguous path: {body}");
    drop(s);

    // With the shipped template's normalisation, Envoy resolves or redirects these itself
    // before routing; what reaches certgate is what the upstream serves, and never an allow
    // for the worker.
    let s = envoy_setup(mode);
    for path in CLIMBING_PATHS {
        let (status, body) = send(&s, Some(&s.worker), path, vec![]);
        assert_ne!(status, 200, "{path}: {body}");
    }
    assert_eq!(s.upstream.requests(), 0, "the app was reached");
}

in_both_modes!(
    ext_authz_never_reads_a_header_the_client_can_send_through_envoy,
    envoy_paths_an_upstream_could_resolve_elsewhere_are_refused,
);

/// Finding 3 through nginx (which passes `$request_uri` as sent).
#[test]
fn nginx_paths_an_upstream_could_resolve_elsewhere_are_refused() {
    let s = setup(NGINX_SOURCE);
    let upstream = EchoUpstream::start();
    let nginx = start_nginx(&s.world, s.http_port, upstream.port);
    for path in CLIMBING_PATHS {
        let reply = Curl {
            port: nginx.port,
            ca: &s.world.ca_pem,
            client: Some((s.worker.cert.as_path(), s.worker.key.as_path())),
            method: "GET",
            path,
            headers: vec![],
        }
        .send();
        assert_ne!(reply.status, 200, "{path}: {}", reply.body);
    }
    assert_eq!(upstream.requests(), 0, "the app was reached");
    let logs = s.certgate.proc.logs();
    assert_eq!(
        logs.matches("malformed_request").count(),
        CLIMBING_PATHS.len(),
        "{logs}"
    );
}

/// Finding 9: a forward-auth listener on `[::]` sees IPv4 callers as `::ffff:a.b.c.d`; a proxy
/// trusted as `127.0.0.1/32` must still be recognised.
#[test]
fn dual_stack_listener_trusts_ipv4_proxies() {
    let s = setup_with("[::]", "original", NGINX_SOURCE);
    let h = get_with_cert("/api/jobs", &s.worker.cert);
    let (status, head, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(status, 200, "{body}\n{}", s.certgate.proc.logs());
    assert!(
        head.contains("x-client-principal: worker-1@example.com"),
        "{head}"
    );
}
