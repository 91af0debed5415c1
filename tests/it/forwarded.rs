//! Forwarded-certificate formats and sources end to end: the AWS ALB and base64-DER headers
//! set by a real nginx, RFC 9440 `Client-Cert` sent to the forward-auth endpoint by the test
//! acting as the trusted proxy (nginx cannot produce it without scripting), XFCC from an Envoy
//! that reaches certgate over a unix socket (`trusted_proxies: unix`), and
//! `response.deny_detail: reason` through Envoy.

use std::time::Duration;

use base64::Engine as _;

use super::envoy::Stack;
use super::forward_auth::{Setup, auth, setup, start_nginx_with};
use super::harness::{Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Mode, in_both_modes};
use super::world::{
    Client, World, append_file, assert_allowed_as, certgate_deny, deny_reason, write_file,
};

const FORMATS: &str = "forwarded_certificates:\n  \
    - {via: forward_auth, header: x-amzn-mtls-clientcert-leaf, format: aws_alb, trusted_proxies: [127.0.0.1/32]}\n  \
    - {via: forward_auth, header: x-forwarded-tls-client-cert, format: base64_der, trusted_proxies: [127.0.0.1/32]}\n  \
    - {via: forward_auth, header: client-cert, format: rfc9440, trusted_proxies: [127.0.0.1/32]}\n";

/// The line of `nginx.conf` that hands certgate the certificate.
const NGINX_CERT_LINE: &str = "proxy_set_header ssl-client-cert $ssl_client_escaped_cert;";

/// Through nginx set up with `edits`: the worker is allowed with its own identity at the
/// upstream, no certificate is 401, and nothing denied reaches the upstream.
fn through_nginx(s: &Setup, what: &str, edits: &[(&str, &str)]) {
    let upstream = EchoUpstream::start();
    let nginx = start_nginx_with(&s.world, s.http_port, upstream.port, "default", edits);
    let get = |client: Option<&Client>| {
        Curl {
            port: nginx.port,
            ca: &s.world.ca_pem,
            client: client.map(|c| (c.cert.as_path(), c.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };
    let reply = get(Some(&s.worker));
    assert_eq!(
        reply.status,
        200,
        "{what}: {}\n{}\n{}",
        reply.body,
        nginx.proc.logs(),
        s.certgate.proc.logs()
    );
    assert_eq!(
        reply.upstream_header("x-client-principal").as_deref(),
        Some("worker-1@example.com"),
        "{what}"
    );
    assert_eq!(
        reply.upstream_header("x-client-cert-sha256"),
        Some(s.worker.sha256.clone()),
        "{what}"
    );
    assert_eq!(get(None).status, 401, "{what}: no certificate");
    assert_eq!(upstream.requests(), 1, "{what}");
}

#[test]
fn alb_and_base64_der_headers_through_nginx_and_rfc9440_to_the_endpoint() {
    let s = setup(FORMATS);
    through_nginx(
        &s,
        "aws_alb",
        &[(
            NGINX_CERT_LINE,
            "proxy_set_header x-amzn-mtls-clientcert-leaf $ssl_client_escaped_cert;",
        )],
    );
    // Base64 DER as Traefik sends it, URL-encoded: nginx's escaped PEM without its armour.
    let map = "map $ssl_client_escaped_cert $cg_der {\n        \
        \"~*^-----BEGIN%20CERTIFICATE-----%0A(?<b64>.*)%0A-----END%20CERTIFICATE-----%0A$\" $b64;\n        \
        default \"\";\n    }\n    upstream certgate {";
    through_nginx(
        &s,
        "base64_der",
        &[
            (
                NGINX_CERT_LINE,
                "proxy_set_header x-forwarded-tls-client-cert $cg_der;",
            ),
            ("upstream certgate {", map),
        ],
    );

    // RFC 9440: `:base64 of the DER:`, the DER from openssl.
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&s.worker.cert)
        .output()
        .expect("openssl");
    assert!(der.status.success());
    let value = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(&der.stdout)
    );
    let headers = vec![
        ("x-original-method", "GET".to_owned()),
        ("x-original-uri", "/api/jobs".to_owned()),
        ("client-cert", value),
    ];
    let (status, head, body) = auth(s.http_port, "/auth", &headers);
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains(&format!("x-client-cert-sha256: {}", s.worker.sha256)),
        "{head}"
    );
    let bare = vec![
        headers[0].clone(),
        headers[1].clone(),
        ("client-cert", headers[2].1.trim_matches(':').to_owned()),
    ];
    let (status, _, body) = auth(s.http_port, "/auth", &bare);
    assert_eq!(status, 401, "without the colons it is not RFC 9440: {body}");
    assert!(body.contains("malformed_certificate"), "{body}");
}

#[test]
fn xfcc_is_trusted_from_an_envoy_on_the_unix_socket_only() {
    let world = World::new();
    let socket = world.path("ext_authz.sock");
    let config = std::fs::read_to_string(&world.config).expect("read");
    let config = config.replace(
        "  admin: \"",
        &format!("  grpc_unix: \"{}\"\n  admin: \"", socket.display()),
    );
    write_file(
        &world.config,
        format!(
            "{config}forwarded_certificates:\n  - {{via: ext_authz, header: x-forwarded-client-cert, \
             format: xfcc, envoy_forward_client_cert: sanitize_set, trusted_proxies: [unix]}}\n"
        ),
    );
    let (admin, _) = world.admin_and_worker();
    let certgate = Certgate::start(&world.config, world.admin_port);
    let upstream = EchoUpstream::start();
    // Like an Istio gateway: the certificate only in XFCC, which Envoy sets itself.
    let xfcc_only = [
        ("INCLUDE_PEER_CERTIFICATE", "false"),
        ("FORWARD_CLIENT_CERT_DETAILS", "SANITIZE_SET"),
    ];
    let start = |address| {
        Envoy::start_with(
            &world.envoy_options(address, upstream.port, "VERIFY_TRUST_CHAIN"),
            &xfcc_only,
        )
    };
    let get = |envoy: &Envoy| {
        Curl {
            port: envoy.port,
            ca: &world.ca_pem,
            client: Some((admin.cert.as_path(), admin.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };
    let unix = start(CertgateAddress::Unix(socket.clone()));
    let reply = get(&unix);
    assert_allowed_as(&reply, "admin@example.com", &certgate.proc.logs());
    // The same Envoy setup over TCP from 127.0.0.1, which is not in trusted_proxies.
    let tcp = start(CertgateAddress::Tcp(world.grpc_port));
    let reply = get(&tcp);
    assert_eq!(
        (reply.status, deny_reason(&reply).as_deref()),
        (401, Some("no_client_certificate")),
        "{reply:?}"
    );
}

fn deny_detail_reason_gives_the_client_a_generic_message_and_the_log_the_full_one(mode: Mode) {
    let stack = Stack::start_in(
        mode,
        World::new(),
        |w| {
            append_file(&w.config, "response: {deny_detail: reason}\n");
            w.suspend("worker-1@example.com", "Compromised credentials detected");
        },
        "ACCEPT_UNTRUSTED",
        &[],
    );
    let reply = stack.request(Some(&stack.worker), "GET", "/api/jobs", vec![]);
    let body = certgate_deny(&reply).unwrap_or_else(|| panic!("not certgate's: {reply:?}"));
    assert_eq!(reply.status, 401);
    assert_eq!(body["error"], "principal_suspended", "{body}");
    assert_eq!(body["message"], "client certificate not accepted", "{body}");
    let reply = stack.request(Some(&stack.admin), "GET", "/admin/x", vec![]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let logged = super::harness::wait_until(Duration::from_secs(5), || {
        stack.logs().contains("Compromised credentials detected")
    });
    assert!(logged, "{}", stack.logs());
}

in_both_modes!(deny_detail_reason_gives_the_client_a_generic_message_and_the_log_the_full_one);
