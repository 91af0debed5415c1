//! End to end through a real Envoy 1.40, a running certgate and curl: the decision rows a
//! certificate and the embedded store decide (1, 3, 4, 5, 6, 6a, 8–12) and `unknown_policy`,
//! each with its status and body; the identity headers at the upstream, checked against values
//! `openssl` reads from the certificate; suspension while serving; certgate down. Hot reload
//! through Envoy: `envoy_reload`. Elsewhere through Envoy, also in both modes: row 7
//! (`crl::served`), row 7b (`fail_secure`), store revocation (`revocation_only`),
//! `store_unavailable` and the DynamoDB rows (`dynamodb::replicas`), `malformed_request` and
//! forged certificate headers (`security`), `deny_detail` (`forwarded`).

use std::time::Duration;

use certgate::pki::Eku;
use time::Duration as Span;

use super::harness::{
    Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Mode, Reply, http_get, in_both_modes,
    wait_until,
};
use super::world::{Client, World, assert_allowed_as, certgate_deny, eku, now, write_file};

/// World + certgate + upstream + Envoy, with the usual clients enrolled. In module mode
/// certgate runs inside Envoy and `certgate` is `None`.
pub(super) struct Stack {
    pub world: World,
    pub admin: Client,
    pub worker: Client,
    pub certgate: Option<Certgate>,
    pub upstream: EchoUpstream,
    pub envoy: Envoy,
}

impl Stack {
    fn start(mode: Mode) -> Stack {
        Self::start_mode_with(mode, World::new(), |_| {})
    }

    /// The decision made in `mode`; `prepare` runs after the standard clients exist and
    /// before certgate starts.
    pub(super) fn start_mode_with(mode: Mode, world: World, prepare: impl FnOnce(&World)) -> Stack {
        Self::start_in(mode, world, prepare, "ACCEPT_UNTRUSTED", &[])
    }

    /// Like [`Self::start_mode_with`] in ext_authz mode, with Envoy's trust chain verification and some of its
    /// template variables chosen.
    pub(super) fn start_configured(
        world: World,
        prepare: impl FnOnce(&World),
        trust_chain_verification: &str,
        envoy_overrides: &[(&str, &str)],
    ) -> Stack {
        Self::start_in(
            Mode::ExtAuthz,
            world,
            prepare,
            trust_chain_verification,
            envoy_overrides,
        )
    }

    /// [`Self::start_configured`] with the decision made in `mode`.
    pub(super) fn start_in(
        mode: Mode,
        world: World,
        prepare: impl FnOnce(&World),
        trust_chain_verification: &str,
        envoy_overrides: &[(&str, &str)],
    ) -> Stack {
        Self::start_edited(
            mode,
            world,
            prepare,
            trust_chain_verification,
            envoy_overrides,
            &|config| config,
        )
    }

    /// [`Self::start_in`] with `edit` applied to Envoy's rendered configuration
    /// ([`Envoy::start_edited`]).
    pub(super) fn start_edited(
        mode: Mode,
        world: World,
        prepare: impl FnOnce(&World),
        trust_chain_verification: &str,
        envoy_overrides: &[(&str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> Stack {
        let (admin, worker) = world.admin_and_worker();
        prepare(&world);
        let certgate =
            (mode == Mode::ExtAuthz).then(|| Certgate::start(&world.config, world.admin_port));
        let upstream = EchoUpstream::start();
        let mut options = world.envoy_options(
            CertgateAddress::Tcp(world.grpc_port),
            upstream.port,
            trust_chain_verification,
        );
        if mode == Mode::Module {
            options.module_config = Some(&world.config);
        }
        let envoy = Envoy::start_edited(&options, envoy_overrides, edit);
        // The module serves certgate's admin listener: ready as `certgate serve` would be.
        let ready = wait_until(Duration::from_secs(20), || {
            matches!(http_get(world.admin_port, "/readyz"), Some((200, _)))
        });
        assert!(ready, "certgate not ready\n{}", envoy.proc.logs());
        Stack {
            world,
            admin,
            worker,
            certgate,
            upstream,
            envoy,
        }
    }

    /// The certgate server (ext_authz mode only).
    pub(super) fn certgate(&self) -> &Certgate {
        self.certgate
            .as_ref()
            .expect("a certgate server runs in ext_authz mode only")
    }

    /// certgate's Prometheus metrics, from its admin listener in either mode.
    pub(super) fn metrics(&self) -> String {
        http_get(self.world.admin_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub(super) fn get(&self, client: Option<&Client>, path: &str) -> Reply {
        self.request(client, "GET", path, vec![])
    }

    pub(super) fn request(
        &self,
        client: Option<&Client>,
        method: &str,
        path: &str,
        headers: Vec<(&str, &str)>,
    ) -> Reply {
        Curl {
            port: self.envoy.port,
            ca: &self.world.ca_pem,
            client: client.map(|c| (c.cert.as_path(), c.key.as_path())),
            method,
            path,
            headers,
        }
        .send()
    }

    pub(super) fn logs(&self) -> String {
        let certgate = self.certgate.as_ref().map(|c| c.proc.logs());
        format!(
            "{}\n{}",
            certgate.unwrap_or_default(),
            self.envoy.proc.logs()
        )
    }
}

/// Assert a deny with `status` and `reason`, and that the body has the documented shape.
#[track_caller]
pub(super) fn assert_denied(
    stack: &Stack,
    reply: &Reply,
    status: u16,
    reason: &str,
) -> serde_json::Value {
    assert_eq!(
        reply.status,
        status,
        "{reason}: body {}\n{}",
        reply.body,
        stack.logs()
    );
    let body = certgate_deny(reply)
        .unwrap_or_else(|| panic!("{reason}: not certgate's body: {reply:?}\n{}", stack.logs()));
    assert_eq!(body["error"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    body
}

fn allowed_request_carries_identity_headers_and_forged_ones_are_replaced(mode: Mode) {
    let stack = Stack::start(mode);
    let forged = vec![
        ("x-client-principal", "root@evil"),
        ("x-client-roles", "admin"),
        ("x-client-roles", "root"),
        ("X-Client-CN", "evil.example.com"),
        ("x-client-spiffe-id", "spiffe://evil/forged"),
        ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=evil\""),
    ];
    let reply = stack.request(Some(&stack.worker), "GET", "/api/jobs", forged);
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());
    let header = |n: &str| reply.upstream_header(n);
    assert_eq!(
        header("x-client-principal").as_deref(),
        Some("worker-1@example.com")
    );
    assert_eq!(header("x-client-principal-type").as_deref(), Some("worker"));
    assert_eq!(header("x-client-roles").as_deref(), Some("worker"));
    assert_eq!(
        header("x-client-cn").as_deref(),
        Some("worker-1.example.com")
    );
    assert_eq!(
        header("x-client-cert-serial"),
        Some(stack.worker.serial.clone()),
        "the serial as openssl reads it"
    );
    assert_eq!(
        header("x-client-cert-sha256"),
        Some(stack.worker.sha256.clone()),
        "SHA-256 of the DER as openssl computes it"
    );
    assert_eq!(
        header("x-client-spiffe-id"),
        None,
        "a forged header without a value to set is removed"
    );
    assert_eq!(
        header("x-forwarded-client-cert"),
        None,
        "neither the client's XFCC nor (module mode) Envoy's reaches the upstream"
    );
    assert_eq!(stack.upstream.requests(), 1);
    // The underscore spelling, which CGI-style apps treat as the same header, is refused.
    let underscore = vec![("x_client_principal", "root@evil")];
    let reply = stack.request(Some(&stack.worker), "GET", "/api/jobs", underscore);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(stack.upstream.requests(), 1);

    // The admin may do anything, also on the admin routes.
    let reply = stack.request(Some(&stack.admin), "DELETE", "/admin/users/7", vec![]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("x-client-principal").as_deref(),
        Some("admin@example.com")
    );
}

fn certificate_and_store_rows_through_envoy(mode: Mode) {
    let world = World::new();
    let base = |id: &str, kind: &str, cn: &str| World::spec(id, kind, cn);
    let t0 = now();
    let clients = {
        let w = &world;
        vec![
            (
                "no identity",
                w.client(
                    "noid",
                    "",
                    &certgate::pki::CertSpec {
                        common_name: None,
                        custom_extensions: vec![],
                        ..base("x", "worker", "x")
                    },
                ),
            ),
            (
                "stranger",
                w.stranger(
                    "stranger",
                    "worker-1@example.com",
                    &base("worker-1@example.com", "worker", "worker-1.example.com"),
                ),
            ),
            (
                "expired",
                w.client(
                    "expired",
                    "worker-1@example.com",
                    &certgate::pki::CertSpec {
                        not_before: t0 - Span::days(3),
                        not_after: t0 - Span::days(1),
                        ..base("worker-1@example.com", "worker", "worker-1.example.com")
                    },
                ),
            ),
            (
                "future",
                w.client(
                    "future",
                    "worker-1@example.com",
                    &certgate::pki::CertSpec {
                        not_before: t0 + Span::days(1),
                        not_after: t0 + Span::days(2),
                        ..base("worker-1@example.com", "worker", "worker-1.example.com")
                    },
                ),
            ),
            (
                "server eku",
                w.client(
                    "servereku",
                    "worker-1@example.com",
                    &eku(
                        base("worker-1@example.com", "worker", "worker-1.example.com"),
                        Eku::ServerAuth,
                    ),
                ),
            ),
            (
                "10 day admin",
                w.client(
                    "longadmin",
                    "admin@example.com",
                    &certgate::pki::CertSpec {
                        not_before: t0 - Span::days(1),
                        not_after: t0 + Span::days(9),
                        ..base("admin@example.com", "admin", "admin.example.com")
                    },
                ),
            ),
            (
                "revoked",
                w.client(
                    "revoked",
                    "worker-1@example.com",
                    &base("worker-1@example.com", "worker", "worker-1.example.com"),
                ),
            ),
            (
                "suspended",
                w.client(
                    "suspended",
                    "bob@example.com",
                    &base("bob@example.com", "worker", "bob.example.com"),
                ),
            ),
            (
                "unenrolled",
                w.client(
                    "unenrolled",
                    "eve@example.com",
                    &base("eve@example.com", "worker", "eve.example.com"),
                ),
            ),
            (
                "admin off list",
                w.client(
                    "admin2",
                    "admin2@example.com",
                    &base("admin2@example.com", "admin", "admin2.example.com"),
                ),
            ),
        ]
    };
    let find = |name: &str| {
        clients
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .expect("client")
    };
    let (revoked, suspended) = (find("revoked"), find("suspended"));
    let stack = Stack::start_mode_with(mode, world, |w| {
        w.enrol(
            &[
                ("bob@example.com", "worker"),
                ("admin2@example.com", "admin"),
            ],
            &[&revoked],
        );
        w.revoke(&revoked.serial, "key_compromise");
        w.suspend("bob@example.com", "Compromised credentials detected");
        let _ = &suspended;
    });

    let none = stack.get(None, "/api/jobs");
    assert_denied(&stack, &none, 401, "no_client_certificate");
    let cases: &[(&str, &str, &str, u16, &str, &str)] = &[
        (
            "no identity",
            "GET",
            "/api/jobs",
            401,
            "malformed_certificate",
            "no principal id",
        ),
        (
            "stranger",
            "GET",
            "/api/jobs",
            401,
            "untrusted_issuer",
            "signature",
        ),
        (
            "expired",
            "GET",
            "/api/jobs",
            401,
            "certificate_expired",
            "expired at",
        ),
        (
            "future",
            "GET",
            "/api/jobs",
            401,
            "certificate_not_yet_valid",
            "not valid before",
        ),
        (
            "server eku",
            "GET",
            "/api/jobs",
            401,
            "wrong_key_usage",
            "client authentication",
        ),
        (
            "10 day admin",
            "GET",
            "/admin/x",
            403,
            "lifetime_exceeds_policy",
            "Certificate lifetime (10.0 days) exceeds maximum (7 days)",
        ),
        (
            "revoked",
            "GET",
            "/api/jobs",
            401,
            "certificate_revoked",
            "key_compromise",
        ),
        (
            "suspended",
            "GET",
            "/api/jobs",
            401,
            "principal_suspended",
            "principal suspended: Compromised credentials detected",
        ),
        (
            "unenrolled",
            "GET",
            "/api/jobs",
            403,
            "principal_not_enrolled",
            "eve@example.com",
        ),
        (
            "admin off list",
            "GET",
            "/admin/x",
            403,
            "cn_not_allowed",
            "CN 'admin2.example.com' not in allowlist of policy 'admin'",
        ),
    ];
    for (name, method, path, status, reason, text) in cases {
        let client = find(name);
        let reply = stack.request(Some(&client), method, path, vec![]);
        let body = assert_denied(&stack, &reply, *status, reason);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(text),
            "{name}: message {message:?} lacks {text:?}"
        );
    }
    // Row 12: no role of the worker grants DELETE.
    let reply = stack.request(Some(&stack.worker), "DELETE", "/api/jobs/1", vec![]);
    let body = assert_denied(&stack, &reply, 403, "permission_denied");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("DELETE /api/jobs/1")),
        "{body}"
    );
    assert_eq!(
        stack.upstream.requests(),
        0,
        "no denied request reaches the upstream"
    );

    let metrics = stack.metrics();
    for reason in [
        "untrusted_issuer",
        "principal_suspended",
        "permission_denied",
        "cn_not_allowed",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("certgate_decisions_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no metric for {reason}:\n{metrics}"
        );
    }
}

fn suspension_reaches_a_running_server_within_the_ttl(mode: Mode) {
    let stack = Stack::start(mode);
    assert_eq!(stack.get(Some(&stack.worker), "/api/jobs").status, 200);
    stack
        .world
        .suspend("worker-1@example.com", "Compromised credentials detected");
    let mut last = None;
    let denied = wait_until(Duration::from_secs(10), || {
        let reply = stack.get(Some(&stack.worker), "/api/jobs");
        let done = reply.status == 401;
        last = Some(reply);
        done
    });
    let reply = last.expect("at least one request");
    assert!(denied, "still allowed after the TTL: {reply:?}");
    let body = assert_denied(&stack, &reply, 401, "principal_suspended");
    assert_eq!(
        body["message"],
        "principal suspended: Compromised credentials detected"
    );
    // Other principals are unaffected.
    assert_eq!(stack.get(Some(&stack.admin), "/api/jobs").status, 200);

    let (code, out) = stack
        .world
        .cli(&["principal", "activate", "worker-1@example.com"]);
    assert_eq!(code, 0, "{out}");
    let allowed = wait_until(Duration::from_secs(10), || {
        stack.get(Some(&stack.worker), "/api/jobs").status == 200
    });
    assert!(
        allowed,
        "not allowed again after activate\n{}",
        stack.logs()
    );
}

#[test]
fn certgate_down_means_503_never_allow() {
    let mut stack = Stack::start(Mode::ExtAuthz);
    assert_eq!(stack.get(Some(&stack.admin), "/api/jobs").status, 200);
    let certgate = stack.certgate.as_mut().expect("ext_authz mode");
    let code = certgate.proc.terminate(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "SIGTERM drains and exits 0\n{}",
        certgate.proc.logs()
    );
    let before = stack.upstream.requests();
    for client in [Some(&stack.admin), None] {
        let reply = stack.get(client, "/api/jobs");
        assert_eq!(reply.status, 503, "{reply:?}");
    }
    assert_eq!(
        stack.upstream.requests(),
        before,
        "nothing reached the upstream"
    );
}

#[test]
fn envoy_reaches_certgate_over_a_unix_socket() {
    let world = World::new();
    let socket = world.path("ext_authz.sock");
    let config = std::fs::read_to_string(&world.config).expect("read");
    let config = config.replace(
        &format!("grpc: \"127.0.0.1:{}\"", world.grpc_port),
        &format!("grpc: \"\"\n  grpc_unix: \"{}\"", socket.display()),
    );
    write_file(&world.config, config);
    let admin = world.client(
        "admin",
        "admin@example.com",
        &World::spec("admin@example.com", "admin", "admin.example.com"),
    );
    world.enrol(&[("admin@example.com", "admin")], &[&admin]);
    let mut certgate = Certgate::start(&world.config, world.admin_port);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&world.envoy_options(
        CertgateAddress::Unix(socket.clone()),
        upstream.port,
        "VERIFY_TRUST_CHAIN",
    ));
    let reply = Curl {
        port: envoy.port,
        ca: &world.ca_pem,
        client: Some((&admin.cert, &admin.key)),
        method: "GET",
        path: "/api/x",
        headers: vec![],
    }
    .send();
    assert_allowed_as(&reply, "admin@example.com", &certgate.proc.logs());
    assert_eq!(certgate.proc.terminate(Duration::from_secs(10)), Some(0));
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

fn a_spiffe_id_reaches_the_upstream_and_a_route_naming_an_undefined_policy_is_refused(mode: Mode) {
    let world = World::new();
    let spiffe_id = "spiffe://example.com/ns/prod/sa/worker";
    let spiffe = world.client(
        "spiffe",
        "worker-1@example.com",
        &certgate::pki::CertSpec {
            uri_sans: vec![spiffe_id.to_owned()],
            ..World::spec("worker-1@example.com", "worker", "worker-1.example.com")
        },
    );
    // The configuration loses its `admin` policy, which Envoy's /admin route still names in
    // its context extension.
    let stack = Stack::start_mode_with(mode, world, |w| {
        w.enrol(&[], &[&spiffe]);
        let config = std::fs::read_to_string(&w.config).expect("read");
        let (kept, _) = config
            .split_once("  admin:\n    max_lifetime")
            .expect("the admin policy is last");
        write_file(&w.config, kept);
    });
    let reply = stack.get(Some(&spiffe), "/api/jobs");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());
    assert_eq!(
        reply.upstream_header("x-client-spiffe-id").as_deref(),
        Some(spiffe_id)
    );
    assert_eq!(
        reply.upstream_header("x-client-cert-serial"),
        Some(spiffe.serial.clone())
    );
    assert_eq!(
        reply.upstream_header("x-client-cert-sha256"),
        Some(spiffe.sha256.clone())
    );

    let reply = stack.get(Some(&stack.admin), "/admin/x");
    let body = assert_denied(&stack, &reply, 403, "unknown_policy");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("'admin'")),
        "the message names the policy: {body}"
    );
    assert_eq!(stack.upstream.requests(), 1, "only the allowed request");
}

/// `response.identity_headers` and `remove_identity_headers: when_sent`: the application gets
/// the identity headers asked for, and never a client's copy of any identity header, neither
/// of one certgate no longer sets nor of one it removes only because the client sent it.
fn fewer_identity_headers_still_never_let_a_forged_one_through(mode: Mode) {
    let stack = Stack::start_mode_with(mode, World::new(), |world| {
        let mut config = std::fs::read_to_string(&world.config).expect("config");
        config.push_str(
            "\nresponse: {identity_headers: [principal, roles], remove_identity_headers: when_sent}\n",
        );
        write_file(&world.config, config);
    });
    let reply = stack.get(Some(&stack.worker), "/api/jobs");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());
    let header = |reply: &Reply, n: &str| reply.upstream_header(n);
    assert_eq!(
        header(&reply, "x-client-principal").as_deref(),
        Some("worker-1@example.com")
    );
    assert_eq!(header(&reply, "x-client-roles").as_deref(), Some("worker"));
    for unset in [
        "x-client-cn",
        "x-client-cert-sha256",
        "x-client-principal-type",
    ] {
        assert_eq!(header(&reply, unset), None, "{unset} is not asked for");
    }
    let forged = vec![
        ("x-client-principal", "root@evil"),
        ("X-Client-CN", "evil.example.com"),
        ("x-client-cert-serial", "00"),
        ("x-client-spiffe-id", "spiffe://evil/forged"),
    ];
    let reply = stack.request(Some(&stack.worker), "GET", "/api/jobs", forged);
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());
    assert_eq!(
        header(&reply, "x-client-principal").as_deref(),
        Some("worker-1@example.com")
    );
    for forged in ["x-client-cn", "x-client-cert-serial", "x-client-spiffe-id"] {
        assert_eq!(
            header(&reply, forged),
            None,
            "a client's {forged} is removed"
        );
    }
    assert_eq!(stack.upstream.requests(), 2);
}

in_both_modes!(
    allowed_request_carries_identity_headers_and_forged_ones_are_replaced,
    fewer_identity_headers_still_never_let_a_forged_one_through,
    certificate_and_store_rows_through_envoy,
    suspension_reaches_a_running_server_within_the_ttl,
    a_spiffe_id_reaches_the_upstream_and_a_route_naming_an_undefined_policy_is_refused,
);
