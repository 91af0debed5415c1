//! A mesh gateway through a real Envoy that sends no context extensions (as Istio's CUSTOM
//! action does): `policy_routes` choose the policy by host and path, a context extension
//! still wins, `allowed_issuers` split two CAs of one bundle between policies, SPIFFE
//! X509-SVIDs get roles by id pattern without enrolment, and `require_client_auth_eku:
//! strict` refuses a certificate without EKU while an openssl-made RSA admin certificate
//! passes.

use std::path::Path;
use std::process::Command;

use certgate::pki::{CertAuthority, CertSpec, Eku};
use time::Duration as Span;

use super::envoy::{Stack, assert_denied};
use super::world::{Client, World, now, openssl_serial, openssl_sha256, write_file};

const PARTNER_CA: &str = "CN=partner CA, O=certgate dev";

fn mesh_config(grpc: u16, admin: u16) -> String {
    format!(
        r#"listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"}}
trust: {{ca_bundle: ca.pem, clock_skew: 5s, require_client_auth_eku: strict}}
store: {{path: certgate.db, cache_ttl: 1s}}
roles_by_type: {{admin: [admin], worker: [worker], partner: [partner]}}
default_policy: default
policy_routes:
  - {{hosts: [admin.example.test], path_prefix: /admin, policy: admin}}
  - {{hosts: ["*.example.test"], path_prefix: /jobs, policy: workload}}
  - {{path_regex: "/partner/[a-z]+", methods: [GET], policy: partner}}
policies:
  default:
    permissions: {{admin: ["*"], worker: ["GET /api/*"]}}
  admin:
    max_lifetime: 7d
    allowed_principal_types: [admin]
    allowed_issuers: ["CN=e2e CA, O=certgate dev", "CN=ops CA"]
    permissions: {{admin: ["*"]}}
  workload:
    require_enrolment: false
    spiffe:
      trust_domains: [prod.example]
      id_roles: [{{pattern: "spiffe://prod.example/ns/*/sa/batch-*", roles: [worker]}}]
    permissions: {{worker: ["* /jobs/*"]}}
  partner:
    require_enrolment: false
    allowed_issuers: ["{PARTNER_CA}"]
    permissions: {{partner: ["GET /partner/*"]}}
"#
    )
}

/// An openssl CA (`CN=ops CA`, RSA-2048) and an admin certificate it signs with SHA-256 and
/// clientAuth, as an operator's runbook issues them; principal id from the CN.
fn openssl_admin(dir: &Path) -> (String, Client) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "30",
        "-subj",
        "/CN=ops CA",
        "-keyout",
        "ops-ca-key.pem",
        "-out",
        "ops-ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-subj",
        "/OU=admin/CN=ops-admin@example.com",
        "-keyout",
        "ops-admin-key.pem",
        "-out",
        "ops-admin.csr",
    ]);
    std::fs::write(
        dir.join("ops-admin.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .expect("write");
    run(&[
        "x509",
        "-req",
        "-in",
        "ops-admin.csr",
        "-CA",
        "ops-ca.pem",
        "-CAkey",
        "ops-ca-key.pem",
        "-CAcreateserial",
        "-sha256",
        "-days",
        "5",
        "-extfile",
        "ops-admin.ext",
        "-out",
        "ops-admin.pem",
    ]);
    let cert = dir.join("ops-admin.pem");
    let client = Client {
        serial: openssl_serial(&cert),
        sha256: openssl_sha256(&cert),
        key: dir.join("ops-admin-key.pem"),
        cert,
        principal: "ops-admin@example.com".into(),
    };
    let ca = std::fs::read_to_string(dir.join("ops-ca.pem")).expect("ops CA");
    (ca, client)
}

/// A client certificate from `ca`, written into the world's directory.
fn issue(world: &World, ca: &CertAuthority, name: &str, spec: &CertSpec) -> Client {
    world.write_client(name, name, &ca.issue(spec).expect("issue"))
}

struct Mesh {
    stack: Stack,
    partner: Client,
    ops_admin: Client,
    batch: Client,
    two_uris: Client,
    foreign: Client,
    suspended: Client,
    no_eku: Client,
}

/// The world's CA (admin, worker, SVIDs), a partner CA and an openssl ops CA in one bundle;
/// Envoy's /admin route carries `admin_route_context`.
fn mesh(admin_route_context: &str) -> Mesh {
    let world = World::new();
    let start = now() - Span::days(1);
    let partner_ca =
        CertAuthority::new("partner CA", start, start + Span::days(365)).expect("partner CA");
    let (ops_ca, ops_admin) = openssl_admin(world.dir.path());
    let world_ca = std::fs::read_to_string(&world.ca_pem).expect("ca.pem");
    // certgate's bundle; Envoy accepts any client certificate and leaves judging to certgate.
    write_file(
        &world.ca_pem,
        format!("{world_ca}{}{ops_ca}", partner_ca.cert_pem()),
    );
    write_file(
        &world.config,
        mesh_config(world.grpc_port, world.admin_port),
    );
    let partner = issue(
        &world,
        &partner_ca,
        "partner",
        &CertSpec {
            organizational_unit: Some("partner".into()),
            ..CertSpec::client("partner.example.net", now() - Span::hours(1), Span::days(5))
        },
    );
    let own = |name: &str, spec: &CertSpec| world.client(name, name, spec);
    let batch_id = "spiffe://prod.example/ns/jobs/sa/batch-7";
    let suspended_id = "spiffe://prod.example/ns/jobs/sa/batch-9";
    let (batch, two_uris, foreign, suspended, no_eku) = {
        let ca_client = |name: &str, uris: &[&str]| {
            let spec = CertSpec {
                common_name: None,
                uri_sans: uris.iter().map(|u| (*u).to_owned()).collect(),
                ..CertSpec::client("x", now() - Span::hours(1), Span::days(1))
            };
            own(name, &spec)
        };
        (
            ca_client("batch", &[batch_id]),
            ca_client(
                "two-uris",
                &[batch_id, "spiffe://prod.example/ns/jobs/sa/batch-8"],
            ),
            ca_client("foreign", &["spiffe://evil.example/ns/jobs/sa/batch-7"]),
            ca_client("suspended", &[suspended_id]),
            own(
                "no-eku",
                &CertSpec {
                    eku: Eku::None,
                    ..World::spec("admin@example.com", "admin", "admin.example.com")
                },
            ),
        )
    };
    let prepare = |w: &World| {
        w.enrol(
            &[("ops-admin@example.com", "admin"), (suspended_id, "worker")],
            &[&ops_admin],
        );
        w.suspend(suspended_id, "workload quarantined");
    };
    let stack = Stack::start_configured(
        world,
        prepare,
        "ACCEPT_UNTRUSTED",
        &[("ADMIN_ROUTE_CONTEXT", admin_route_context)],
    );
    Mesh {
        stack,
        partner,
        ops_admin,
        batch,
        two_uris,
        foreign,
        suspended,
        no_eku,
    }
}

impl Mesh {
    fn get(&self, client: &Client, host: &str, path: &str) -> super::harness::Reply {
        self.stack
            .request(Some(client), "GET", path, vec![("host", host)])
    }

    #[track_caller]
    fn denied(&self, client: &Client, host: &str, path: &str, status: u16, reason: &str) -> String {
        let reply = self.get(client, host, path);
        let body = assert_denied(&self.stack, &reply, status, reason);
        body["message"].as_str().unwrap_or_default().to_owned()
    }
}

#[test]
fn one_gateway_without_context_extensions_serves_admin_and_workload_policies() {
    let mesh = mesh("{}");
    let (admin, worker) = (&mesh.stack.admin, &mesh.stack.worker);
    let logs = mesh.stack.logs();

    // /admin on admin.example.test: the admin policy (types, issuers, 7-day lifetime).
    let reply = mesh.get(admin, "admin.example.test", "/admin/users/7");
    assert_eq!(reply.status, 200, "{}\n{logs}", reply.body);
    let message = mesh.denied(
        worker,
        "admin.example.test:443",
        "/admin/users/7",
        403,
        "permission_denied",
    );
    assert!(message.contains("policy 'admin'"), "{message}");
    // The same path on another host is not routed: default_policy decides.
    let message = mesh.denied(
        worker,
        "www.example.org",
        "/admin/users/7",
        403,
        "permission_denied",
    );
    assert!(message.contains("policy 'default'"), "{message}");
    // A dot segment is resolved by Envoy before routing and before certgate routes.
    let message = mesh.denied(
        worker,
        "admin.example.test",
        "/api/../admin/x",
        403,
        "permission_denied",
    );
    assert!(message.contains("policy 'admin'"), "{message}");

    // /jobs on *.example.test: the workload policy; the SVID has no record and gets its
    // roles from the id pattern.
    let reply = mesh.get(&mesh.batch, "jobs.example.test", "/jobs/42");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, mesh.stack.logs());
    assert_eq!(
        reply.upstream_header("x-client-spiffe-id").as_deref(),
        Some("spiffe://prod.example/ns/jobs/sa/batch-7")
    );
    assert_eq!(
        reply.upstream_header("x-client-roles").as_deref(),
        Some("worker")
    );
    // The same SVID outside the routes meets default_policy, which requires enrolment.
    mesh.denied(
        &mesh.batch,
        "jobs.example.test",
        "/api/jobs",
        403,
        "principal_not_enrolled",
    );

    // X509-SVID rules of the workload policy.
    let message = mesh.denied(
        &mesh.two_uris,
        "jobs.example.test",
        "/jobs/42",
        401,
        "malformed_certificate",
    );
    assert!(message.contains("2 URI SANs"), "{message}");
    let message = mesh.denied(
        &mesh.foreign,
        "jobs.example.test",
        "/jobs/42",
        401,
        "untrusted_issuer",
    );
    assert!(
        message.contains("evil.example") && message.contains("'workload'"),
        "{message}"
    );
    let message = mesh.denied(
        &mesh.suspended,
        "jobs.example.test",
        "/jobs/42",
        401,
        "principal_suspended",
    );
    assert!(message.contains("workload quarantined"), "{message}");
    // An admin certificate is not an SVID.
    mesh.denied(
        admin,
        "jobs.example.test",
        "/jobs/42",
        401,
        "malformed_certificate",
    );

    // Two CAs, two policies: the partner CA on its own policy, never on the admin policy.
    let reply = mesh.get(&mesh.partner, "partner.example.net", "/partner/orders");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, mesh.stack.logs());
    let message = mesh.denied(
        &mesh.partner,
        "admin.example.test",
        "/admin/users",
        401,
        "untrusted_issuer",
    );
    assert!(
        message.contains("partner CA") && message.contains("policy 'admin'"),
        "{message}"
    );
    // And the world's admin is not a partner.
    let message = mesh.denied(
        admin,
        "partner.example.net",
        "/partner/orders",
        401,
        "untrusted_issuer",
    );
    assert!(message.contains("policy 'partner'"), "{message}");

    // require_client_auth_eku: strict.
    let message = mesh.denied(
        &mesh.no_eku,
        "admin.example.test",
        "/admin/x",
        401,
        "wrong_key_usage",
    );
    assert!(message.contains("strict"), "{message}");
    let reply = mesh.get(&mesh.ops_admin, "admin.example.test", "/admin/x");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, mesh.stack.logs());
    assert_eq!(
        reply.upstream_header("x-client-principal").as_deref(),
        Some("ops-admin@example.com")
    );
}

#[test]
fn a_context_extension_still_wins_over_the_routes() {
    // Envoy's /admin route names the partner policy: the routes would choose admin.
    let mesh = mesh("{policy: partner}");
    let message = mesh.denied(
        &mesh.stack.admin,
        "admin.example.test",
        "/admin/users",
        401,
        "untrusted_issuer",
    );
    assert!(message.contains("policy 'partner'"), "{message}");
    let reply = mesh.get(&mesh.partner, "admin.example.test", "/admin/users");
    // The partner policy grants GET /partner/* only.
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Other paths are not on that Envoy route: the routes choose as before.
    let reply = mesh.get(&mesh.batch, "jobs.example.test", "/jobs/1");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, mesh.stack.logs());

    // `certgate check` says which route chose, and that a named policy wins.
    let world = &mesh.stack.world;
    let cert = mesh.stack.admin.cert.to_str().expect("utf-8 path");
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check",
            "--cert",
            cert,
            "--host",
            "admin.example.test",
            "--path",
            "/admin/users",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out) = world.cli(&args);
        let json: serde_json::Value = serde_json::from_str(&out).expect("json");
        (code, json)
    };
    let (code, json) = check(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["policy"], "admin", "{json}");
    assert_eq!(
        json["route"], "policy_routes[0] hosts=admin.example.test path_prefix=/admin",
        "{json}"
    );
    let (_, json) = check(&["--policy", "default"]);
    assert_eq!(json["policy"], "default", "{json}");
    assert_eq!(
        json["route"],
        serde_json::Value::Null,
        "a named policy wins: {json}"
    );
}

#[test]
fn forward_auth_routes_by_the_host_nginx_sets() {
    use super::forward_auth::{NGINX_SOURCE, setup, start_nginx_with};
    let routes =
        "policy_routes:\n  - {hosts: [admin.example.test], path_prefix: /api, policy: admin}\n";
    let s = setup(&format!("{NGINX_SOURCE}{routes}"));
    let upstream = super::harness::EchoUpstream::start();
    // The auth subrequest names no policy (`?policy=`): the routes choose.
    let nginx = start_nginx_with(&s.world, s.http_port, upstream.port, "", &[]);
    let get = |headers: Vec<(&str, &str)>| {
        super::harness::Curl {
            port: nginx.port,
            ca: &s.world.ca_pem,
            client: Some((s.worker.cert.as_path(), s.worker.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers,
        }
        .send()
    };
    let logs = || s.certgate.proc.logs();
    // admin.example.test/api is the admin policy, which admits no worker.
    let reply = get(vec![("host", "admin.example.test")]);
    assert_eq!(reply.status, 403, "{}\n{}", reply.body, logs());
    assert!(
        logs()
            .lines()
            .any(|l| l.contains("\"decision\":\"deny\"") && l.contains("\"policy\":\"admin\"")),
        "{}",
        logs()
    );
    // Another host: default_policy lets the worker read /api.
    assert_eq!(
        get(vec![("host", "www.example.org")]).status,
        200,
        "{}",
        logs()
    );
    // The client's own X-Original-Host is replaced by nginx's $host.
    let forged = vec![
        ("host", "www.example.org"),
        ("x-original-host", "admin.example.test"),
    ];
    assert_eq!(get(forged).status, 200, "{}", logs());
}
