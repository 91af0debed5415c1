//! Forwarded certificates and the HTTP forward-auth endpoint: directly, through a real nginx
//! (`auth_request`, also with a route naming an undefined policy), and through Envoy
//! forwarding XFCC to the ext_authz check. The other header formats: `forwarded`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::harness::{
    Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Proc, free_port, http_get, wait_until,
};
use super::world::{Client, World, assert_allowed_as, certgate_deny, write_file};

pub(super) const SOURCES: &str = r#"
forwarded_certificates:
  - via: forward_auth
    header: ssl-client-cert
    format: url_encoded_pem
    trusted_proxies: [127.0.0.1/32]
  - via: forward_auth
    header: x-forwarded-client-cert
    format: xfcc
    trusted_proxies: ["127.0.0.1"]
  - via: ext_authz
    header: x-forwarded-client-cert
    format: xfcc
    envoy_forward_client_cert: sanitize_set
    trusted_proxies: ["127.0.0.1", unix]
"#;

/// A forward-auth source for nginx's `ssl-client-cert`, trusted from loopback.
pub(super) const NGINX_SOURCE: &str = "forwarded_certificates:\n  - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [127.0.0.1/32]}\n";

/// The X-Original-* pair for `GET uri` and `ssl-client-cert` carrying `cert`.
pub(super) fn get_with_cert(uri: &str, cert: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("x-original-method", "GET".to_owned()),
        ("x-original-uri", uri.to_owned()),
        ("ssl-client-cert", escaped(cert)),
    ]
}

pub(super) struct Setup {
    pub world: World,
    pub admin: Client,
    pub worker: Client,
    pub http_port: u16,
    pub certgate: Certgate,
}

/// certgate with the forward-auth listener reading the X-Original-* pair; `extra` is
/// appended to its configuration.
pub(super) fn setup(extra: &str) -> Setup {
    setup_with("127.0.0.1", "original", extra)
}

/// certgate with the forward-auth listener on `host` (an IP literal), reading the `pair`
/// (`original` or `forwarded`) request headers.
pub(super) fn setup_with(host: &str, pair: &str, extra: &str) -> Setup {
    let world = World::new();
    let http_port = free_port();
    let config = std::fs::read_to_string(&world.config).expect("read");
    let config = config.replacen(
        "listen:\n",
        &format!("listen:\n  http: \"{host}:{http_port}\"\n"),
        1,
    );
    write_file(
        &world.config,
        format!("{config}forward_auth: {{request_headers: {pair}}}\n{extra}"),
    );
    let (admin, worker) = world.admin_and_worker();
    let certgate = Certgate::start(&world.config, world.admin_port);
    Setup {
        world,
        admin,
        worker,
        http_port,
        certgate,
    }
}

pub(super) fn escaped(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("read cert");
    percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// (status, headers text, body) of a plain HTTP request to the forward-auth endpoint.
pub(super) fn auth(port: u16, path: &str, headers: &[(&str, String)]) -> (u16, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (head, body) = (dir.path().join("h"), dir.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body);
    cmd.args(["-w", "%{http_code}"]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        std::fs::read_to_string(head)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        std::fs::read_to_string(body).unwrap_or_default(),
    )
}

#[test]
fn forward_auth_endpoint_reads_configured_headers_only() {
    let s = setup(SOURCES);
    let admin = escaped(&s.admin.cert);
    let original = |m: &str, u: &str| {
        vec![
            ("x-original-method", m.to_owned()),
            ("x-original-uri", u.to_owned()),
        ]
    };

    let mut h = original("GET", "/api/jobs");
    h.push(("ssl-client-cert", admin.clone()));
    let (status, head, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(status, 200, "{body}\n{}", s.certgate.proc.logs());
    assert!(
        head.contains("x-client-principal: admin@example.com"),
        "{head}"
    );
    assert!(head.contains("x-client-roles: admin"), "{head}");

    // A policy in the query.
    let worker = escaped(&s.worker.cert);
    let mut h = original("GET", "/api/jobs");
    h.push(("ssl-client-cert", worker.clone()));
    let (status, _, body) = auth(s.http_port, "/auth?policy=admin", &h);
    assert_eq!(
        (status, body.contains("cn_not_allowed")),
        (403, true),
        "{body}"
    );

    // XFCC: the rightmost element is the trusted proxy's; a forged one to its left is not read.
    let stranger = std::fs::read_to_string(&s.worker.cert).expect("read");
    let forged =
        percent_encoding::utf8_percent_encode(&stranger, percent_encoding::NON_ALPHANUMERIC);
    let xfcc = format!("Cert=\"{forged}\";Subject=\"CN=x,OU=a;b\",By=spiffe://gw;Cert=\"{admin}\"");
    let mut h = original("DELETE", "/api/anything");
    h.push(("x-forwarded-client-cert", xfcc));
    let (status, head, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("x-client-principal: admin@example.com"),
        "{head}"
    );

    // A certificate from outside the trust bundle is verified like any other, and bad
    // percent-escapes or quoting in XFCC are a clean deny.
    let stranger = s.world.stranger(
        "stranger",
        "admin@example.com",
        &World::spec("admin@example.com", "admin", "admin.example.com"),
    );
    let mut h = original("GET", "/api/jobs");
    h.push(("ssl-client-cert", escaped(&stranger.cert)));
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("untrusted_issuer")),
        (401, true),
        "{body}"
    );
    for xfcc in [
        "Cert=\"%ZZ%GG-----BEGIN\"",
        "By=x;Cert=\"unterminated",
        "Cert",
    ] {
        let mut h = original("GET", "/api/jobs");
        h.push(("x-forwarded-client-cert", xfcc.to_owned()));
        let (status, _, body) = auth(s.http_port, "/auth", &h);
        assert_eq!(
            (status, body.contains("malformed_certificate")),
            (401, true),
            "{xfcc}: {body}"
        );
    }

    // No certificate, garbage, a header nobody configured.
    let (status, _, body) = auth(s.http_port, "/auth", &original("GET", "/"));
    assert_eq!(
        (status, body.contains("no_client_certificate")),
        (401, true),
        "{body}"
    );
    let mut h = original("GET", "/");
    h.push(("ssl-client-cert", "%%%garbage".to_owned()));
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("malformed_certificate")),
        (401, true),
        "{body}"
    );
    let mut h = original("GET", "/");
    h.push(("x-forwarded-tls-client-cert", "MIIB".to_owned()));
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("no_client_certificate")),
        (401, true),
        "{body}"
    );
}

#[test]
fn forward_auth_reads_the_forwarded_pair_when_configured() {
    // Traefik/Caddy: X-Forwarded-Method / X-Forwarded-Uri, set by the ingress itself.
    let s = setup_with("127.0.0.1", "forwarded", SOURCES);
    let worker = escaped(&s.worker.cert);
    let h = vec![
        ("x-forwarded-method", "DELETE".to_owned()),
        ("x-forwarded-uri", "/api/jobs/1".to_owned()),
        ("ssl-client-cert", worker.clone()),
    ];
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_denied"), "{body}");
    let h = vec![
        ("x-forwarded-method", "GET".to_owned()),
        ("x-forwarded-uri", "/api/jobs/1".to_owned()),
        ("ssl-client-cert", worker.clone()),
    ];
    let (status, head, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("x-client-principal: worker-1@example.com"),
        "{head}"
    );
    // The other pair is a client's to send: it never stands in for a missing one.
    let h = vec![
        ("x-original-method", "GET".to_owned()),
        ("x-original-uri", "/api/jobs/1".to_owned()),
        ("ssl-client-cert", worker),
    ];
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("malformed_request")),
        (400, true),
        "{body}"
    );
}

#[test]
fn forwarded_headers_are_not_trusted_unless_configured() {
    // Configured, but only for a network the caller is not in.
    let s = setup(
        "forwarded_certificates:\n  - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.0/8]}\n",
    );
    let h = get_with_cert("/api/jobs", &s.admin.cert);
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("no_client_certificate")),
        (401, true),
        "{body}"
    );
    drop(s);
    // Not configured at all.
    let s = setup("");
    let h = get_with_cert("/api/jobs", &s.admin.cert);
    let (status, _, body) = auth(s.http_port, "/auth", &h);
    assert_eq!(
        (status, body.contains("no_client_certificate")),
        (401, true),
        "{body}"
    );
}

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map_or_else(|| "nginx".to_owned(), |p| (*p).to_owned())
}

pub(super) struct Nginx {
    pub proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

pub(super) fn start_nginx(world: &World, certgate_http: u16, upstream: u16) -> Nginx {
    start_nginx_with(world, certgate_http, upstream, "default", &[])
}

/// nginx from `nginx.conf` asking certgate with `?policy=policy`, with each `(from, to)` of
/// `edits` replaced in the rendered configuration (every `from` must be there).
pub(super) fn start_nginx_with(
    world: &World,
    certgate_http: u16,
    upstream: u16,
    policy: &str,
    edits: &[(&str, &str)],
) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let template = include_str!("nginx.conf");
    let conf = [
        ("PREFIX", dir.path().display().to_string()),
        ("CERTGATE_HTTP_PORT", certgate_http.to_string()),
        ("LISTEN_PORT", port.to_string()),
        ("SERVER_CERT", world.server_cert.display().to_string()),
        ("SERVER_KEY", world.server_key.display().to_string()),
        ("UPSTREAM_PORT", upstream.to_string()),
        ("POLICY", policy.to_owned()),
    ]
    .iter()
    .fold(template.to_owned(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    });
    let conf = edits.iter().fold(conf, |conf, (from, to)| {
        assert!(conf.contains(from), "nginx.conf has no {from:?}");
        conf.replace(from, to)
    });
    let path = dir.path().join("nginx.conf");
    write_file(&path, conf);
    let mut proc = Proc::spawn(
        "nginx",
        Command::new(nginx_binary())
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path()),
    );
    let up = wait_until(Duration::from_secs(10), || {
        !proc.is_running() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        up && proc.is_running(),
        "nginx did not start\n{}\n{}",
        proc.logs(),
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
    Nginx {
        proc,
        port,
        _dir: dir,
    }
}

#[test]
fn nginx_auth_request_end_to_end() {
    let mut s = setup(NGINX_SOURCE);
    let upstream = EchoUpstream::start();
    let nginx = start_nginx(&s.world, s.http_port, upstream.port);
    let get = |client: Option<&Client>, method: &str, headers: Vec<(&str, &str)>| {
        Curl {
            port: nginx.port,
            ca: &s.world.ca_pem,
            client: client.map(|c| (c.cert.as_path(), c.key.as_path())),
            method,
            path: "/api/jobs",
            headers,
        }
        .send()
    };
    let forged = vec![
        ("x-client-principal", "root@evil"),
        ("x-client-spiffe-id", "spiffe://evil"),
    ];
    let reply = get(Some(&s.worker), "GET", forged);
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, nginx.proc.logs());
    assert_eq!(
        reply.upstream_header("x-client-principal").as_deref(),
        Some("worker-1@example.com")
    );
    assert_eq!(
        reply.upstream_header("x-client-roles").as_deref(),
        Some("worker")
    );
    assert_eq!(
        reply.upstream_header("x-client-spiffe-id"),
        None,
        "a forged header never reaches the app"
    );
    assert_eq!(upstream.requests(), 1);

    assert_eq!(get(None, "GET", vec![]).status, 401, "no certificate");
    assert_eq!(
        get(Some(&s.worker), "DELETE", vec![]).status,
        403,
        "no role grants DELETE"
    );
    // A client cannot hand nginx a certificate in the header nginx itself sets.
    let fake = escaped(&s.admin.cert);
    assert_eq!(
        get(None, "GET", vec![("ssl-client-cert", &fake)]).status,
        401
    );
    assert_eq!(
        upstream.requests(),
        1,
        "denied requests never reach the app"
    );

    assert_eq!(s.certgate.proc.terminate(Duration::from_secs(10)), Some(0));
    let reply = get(Some(&s.admin), "GET", vec![]);
    assert!(
        reply.status >= 500,
        "certgate down must not allow: {}",
        reply.status
    );
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn envoy_xfcc_forwarding_to_ext_authz() {
    let world = World::new();
    let config = std::fs::read_to_string(&world.config).expect("read");
    write_file(&world.config, format!("{config}{SOURCES}"));
    let admin = world.client(
        "admin",
        "admin@example.com",
        &World::spec("admin@example.com", "admin", "admin.example.com"),
    );
    world.enrol(&[("admin@example.com", "admin")], &[&admin]);
    let certgate = Certgate::start(&world.config, world.admin_port);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start_with(
        &world.envoy_options(
            CertgateAddress::Tcp(world.grpc_port),
            upstream.port,
            "VERIFY_TRUST_CHAIN",
        ),
        // Like an Istio gateway: no peer certificate in the check, the client certificate in
        // XFCC, which Envoy sets itself (SANITIZE_SET drops whatever the client sent).
        &[
            ("INCLUDE_PEER_CERTIFICATE", "false"),
            ("FORWARD_CLIENT_CERT_DETAILS", "SANITIZE_SET"),
        ],
    );
    let send = |client: Option<&Client>, headers: Vec<(&str, &str)>| {
        Curl {
            port: envoy.port,
            ca: &world.ca_pem,
            client: client.map(|c| (c.cert.as_path(), c.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers,
        }
        .send()
    };
    let reply = send(Some(&admin), vec![]);
    assert_allowed_as(&reply, "admin@example.com", &certgate.proc.logs());

    // A client-forged XFCC element never counts: without a client certificate there is none.
    let forged = format!("Cert=\"{}\"", escaped(&admin.cert));
    let reply = send(None, vec![("x-forwarded-client-cert", &forged)]);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.body.contains("no_client_certificate"),
        "{}",
        reply.body
    );
    let _ = http_get(certgate.admin_port, "/healthz");
}

#[test]
fn nginx_asking_for_an_undefined_policy_gets_403_unknown_policy() {
    let s = setup(NGINX_SOURCE);
    let upstream = EchoUpstream::start();
    let nginx = start_nginx_with(&s.world, s.http_port, upstream.port, "nope", &[]);
    let reply = Curl {
        port: nginx.port,
        ca: &s.world.ca_pem,
        client: Some((s.worker.cert.as_path(), s.worker.key.as_path())),
        method: "GET",
        path: "/api/jobs",
        headers: vec![],
    }
    .send();
    // nginx passes the status on and answers with its own error page.
    assert_eq!(reply.status, 403, "{}\n{}", reply.body, nginx.proc.logs());
    assert_eq!(upstream.requests(), 0);
    let metrics = s.certgate.metrics();
    let unknown: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("certgate_decisions_total"))
        .filter(|l| l.contains("reason=\"unknown_policy\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        unknown, 1.0,
        "certgate decided nginx's subrequest:\n{metrics}"
    );

    // certgate's own answer to the same subrequest: status and body.
    let (status, _, body) = auth(
        s.http_port,
        "/auth?policy=nope",
        &get_with_cert("/api/jobs", &s.worker.cert),
    );
    assert_eq!(status, 403, "{body}");
    let reply = super::harness::Reply { status, body };
    let body = certgate_deny(&reply).unwrap_or_else(|| panic!("not certgate's: {reply:?}"));
    assert_eq!(body["error"], "unknown_policy", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("'nope'")),
        "{body}"
    );
}
