//! The admin API through its real TLS listener: operators authorized by certgate's own
//! decision (roles, suspension, enrolment), bad input refused with nothing written, the
//! remote CLI printing what the local one prints, and a remote suspension taking effect
//! through Envoy within the cache TTL.

use std::time::Duration;

use certgate::admin_api::pb;
use certgate::admin_api::pb::audit_service_client::AuditServiceClient;
use certgate::admin_api::pb::certificate_service_client::CertificateServiceClient;
use certgate::admin_api::pb::principal_service_client::PrincipalServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::harness::{Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, free_port, wait_until};
use super::world::{Client, World, cli_with_env, deny_reason, run_async};

/// The operators policy and roles added to the test world's configuration: `operator` may
/// call everything, `operators-read` only List and Get.
const OPERATORS: &str = r#"policies:
  operators:
    max_lifetime: 90d
    permissions:
      operator: ["/certgate.admin.v1.*"]
      operators-read:
        - "/certgate.admin.v1.*/List"
        - "/certgate.admin.v1.*/Get"
"#;

struct Api {
    world: World,
    certgate: Certgate,
    port: u16,
    worker: Client,
    operator: Client,
    reader: Client,
}

impl Api {
    fn start() -> Api {
        let world = World::new();
        let (_admin, worker) = world.admin_and_worker();
        let operator = world.client(
            "operator",
            "operator@example.com",
            &World::spec("operator@example.com", "operator", "operator.example.com"),
        );
        let reader = world.client(
            "reader",
            "reader@example.com",
            &World::spec("reader@example.com", "auditor", "reader.example.com"),
        );
        world.enrol(
            &[
                ("operator@example.com", "operator"),
                ("reader@example.com", "auditor"),
            ],
            &[&operator, &reader],
        );
        let port = free_port();
        let yaml = std::fs::read_to_string(&world.config).expect("config");
        let yaml = yaml
            .replacen(
                "listen:\n",
                &format!("listen:\n  admin_api: \"127.0.0.1:{port}\"\n"),
                1,
            )
            .replacen(
                "roles_by_type:\n",
                "roles_by_type:\n  operator: [operator]\n  auditor: [operators-read]\n",
                1,
            )
            .replacen("policies:\n", OPERATORS, 1)
            + "admin_api:\n  policy: operators\n  tls: {cert: server.pem, key: server-key.pem, client_ca: ca.pem}\n";
        std::fs::write(&world.config, yaml).expect("write config");
        let certgate = Certgate::start(&world.config, world.admin_port);
        Api {
            world,
            certgate,
            port,
            worker,
            operator,
            reader,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The certgate CLI with --server and `who`'s certificate; the configuration it would
    /// read locally does not exist, so only the server can answer.
    fn remote_cli(&self, who: &Client, args: &[&str]) -> (i32, String) {
        let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
        let (ca, cert, key) = (path(&self.world.ca_pem), path(&who.cert), path(&who.key));
        let missing = self.world.path("nowhere.yaml");
        let env = [
            ("CERTGATE_SERVER", self.url()),
            ("CERTGATE_CACERT", ca),
            ("CERTGATE_CLIENT_CERT", cert),
            ("CERTGATE_CLIENT_KEY", key),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli_with_env(&missing, args, &env)
    }

    fn pems(&self, who: Option<&Client>) -> (String, Option<(String, String)>) {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem");
        (
            read(&self.world.ca_pem),
            who.map(|c| (read(&c.cert), read(&c.key))),
        )
    }

    fn logs(&self) -> String {
        self.certgate.proc.logs()
    }
}

/// A TLS channel to the admin API, with `identity` as client certificate (none: without).
async fn channel(
    port: u16,
    ca: String,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

/// Run `f` with a PrincipalService client of `who`.
fn principals<F, Fut>(api: &Api, who: Option<&Client>, f: F)
where
    F: FnOnce(PrincipalServiceClient<Channel>, CertificateServiceClient<Channel>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (ca, identity) = api.pems(who);
    let port = api.port;
    run_async(async move {
        let ch = channel(port, ca, identity).await.expect("connect");
        f(
            PrincipalServiceClient::new(ch.clone()),
            CertificateServiceClient::new(ch),
        )
        .await;
    });
}

fn suspend(id: &str, reason: &str) -> pb::SuspendPrincipalRequest {
    pb::SuspendPrincipalRequest {
        principal_id: id.into(),
        reason: reason.into(),
    }
}

/// The refusal's code, its reason code (metadata) and message.
fn refusal(status: &tonic::Status) -> (Code, String, String) {
    let reason = status
        .metadata()
        .get("x-certgate-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status.code(), reason, status.message().to_owned())
}

/// The worker's status as the local CLI reads it from the store.
fn status_of(api: &Api, id: &str) -> String {
    let (code, out) = api.world.cli(&["principal", "get", id, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    json["status"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn remote_suspension_denies_the_worker_through_envoy_within_the_cache_ttl() {
    let api = Api::start();
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&api.world.envoy_options(
        CertgateAddress::Tcp(api.world.grpc_port),
        upstream.port,
        "ACCEPT_UNTRUSTED",
    ));
    let get = || {
        Curl {
            port: envoy.port,
            ca: &api.world.ca_pem,
            client: Some((api.worker.cert.as_path(), api.worker.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };
    assert_eq!(get().status, 200, "{}", api.logs());

    // The airunner runbook's command, with certgate's names and flags.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(["principal", "suspend", "worker-1@example.com"])
        .args(["--reason", "Compromised credentials detected"])
        .args(["--server", &api.url(), "--cacert"])
        .arg(&api.world.ca_pem)
        .arg("--client-cert")
        .arg(&api.operator.cert)
        .arg("--client-key")
        .arg(&api.operator.key)
        .env_remove("CERTGATE_CONFIG")
        .output()
        .expect("run certgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("suspended"), "{stdout}");
    assert!(
        stdout.contains("Compromised credentials detected"),
        "{stdout}"
    );
    assert_eq!(status_of(&api, "worker-1@example.com"), "suspended");

    // cache_ttl is 1s: denied within it (and some slack for a loaded machine).
    let denied = wait_until(Duration::from_secs(3), || {
        get().status == 403 || get().status == 401
    });
    let reply = get();
    assert!(denied, "still {} after 3s\n{}", reply.status, api.logs());
    assert_eq!(deny_reason(&reply).as_deref(), Some("principal_suspended"));
    assert!(
        api.certgate.metrics().contains(
            "certgate_admin_api_requests_total{method=\"/certgate.admin.v1.PrincipalService/Suspend\",outcome=\"ok\"} 1"
        ),
        "{}",
        api.certgate.metrics()
    );
}

#[test]
fn callers_are_refused_with_the_decision_reason_and_nothing_changes() {
    let api = Api::start();

    // A worker may not administer: the policy gives its role no admin method.
    principals(&api, Some(&api.worker), |mut p, _| async move {
        let err = p
            .suspend(suspend("operator@example.com", "takeover"))
            .await
            .expect_err("worker refused");
        let (code, reason, message) = refusal(&err);
        assert_eq!(code, Code::PermissionDenied, "{message}");
        assert_eq!(reason, "permission_denied");
        assert!(message.starts_with("permission_denied"), "{message}");
    });
    assert_eq!(status_of(&api, "operator@example.com"), "active");

    // The read-only role lists and reads, and may not suspend.
    principals(&api, Some(&api.reader), |mut p, _| async move {
        let list = p
            .list(pb::ListPrincipalsRequest::default())
            .await
            .expect("reader lists")
            .into_inner();
        assert_eq!(list.principals.len(), 4, "{list:?}");
        p.get(pb::GetPrincipalRequest {
            principal_id: "worker-1@example.com".into(),
        })
        .await
        .expect("reader gets");
        let err = p
            .suspend(suspend("worker-1@example.com", "not mine to do"))
            .await
            .expect_err("reader refused");
        assert_eq!(refusal(&err).0, Code::PermissionDenied);
        assert_eq!(refusal(&err).1, "permission_denied");
    });
    assert_eq!(status_of(&api, "worker-1@example.com"), "active");

    // No client certificate: the TLS handshake refuses it, or the call is unauthenticated.
    let (ca, _) = api.pems(None);
    let port = api.port;
    run_async(async move {
        let refused = match channel(port, ca, None).await {
            Err(_) => true,
            Ok(ch) => {
                // TLS 1.3: the client finishes its side of the handshake before the server's
                // refusal arrives, so the refusal shows as the call failing, with a code that
                // depends on when the connection's end is seen (UNAUTHENTICATED if the server
                // answered, else a transport error); what matters is that it did not run.
                let err = PrincipalServiceClient::new(ch)
                    .suspend(suspend("worker-1@example.com", "anonymous"))
                    .await
                    .expect_err("refused");
                err.code() != Code::Ok
            }
        };
        assert!(refused);
    });
    assert_eq!(status_of(&api, "worker-1@example.com"), "active");

    // An operator certificate revoked in the store, and one whose principal is not enrolled,
    // are refused with the reasons they get everywhere else.
    let spec = World::spec("operator@example.com", "operator", "operator.example.com");
    let revoked = api
        .world
        .client("operator-old", "operator@example.com", &spec);
    let stranger = api.world.client(
        "eve",
        "eve@example.com",
        &World::spec("eve@example.com", "operator", "eve.example.com"),
    );
    api.world.enrol(&[], &[&revoked]);
    api.world.revoke(&revoked.serial, "key_compromise");
    for (who, want_code, want_reason) in [
        (&revoked, Code::Unauthenticated, "certificate_revoked"),
        (&stranger, Code::PermissionDenied, "principal_not_enrolled"),
    ] {
        principals(&api, Some(who), move |mut p, _| async move {
            let err = p
                .suspend(suspend("worker-1@example.com", "should not happen"))
                .await
                .expect_err("refused");
            let (code, reason, message) = refusal(&err);
            assert_eq!(
                (code, reason.as_str()),
                (want_code, want_reason),
                "{message}"
            );
        });
    }
    assert_eq!(status_of(&api, "worker-1@example.com"), "active");

    // A suspended operator is refused like any suspended principal (within the cache TTL).
    api.world.suspend("operator@example.com", "left the team");
    std::thread::sleep(Duration::from_millis(1500));
    principals(&api, Some(&api.operator), |mut p, _| async move {
        let err = p
            .suspend(suspend("worker-1@example.com", "after leaving"))
            .await
            .expect_err("suspended operator refused");
        let (code, reason, message) = refusal(&err);
        assert_eq!(code, Code::Unauthenticated, "{message}");
        assert_eq!(reason, "principal_suspended");
        assert!(message.contains("left the team"), "{message}");
    });
    assert_eq!(status_of(&api, "worker-1@example.com"), "active");
    let metrics = api.certgate.metrics();
    for outcome in ["permission_denied", "principal_suspended"] {
        assert!(
            metrics.contains(&format!(
                "certgate_admin_api_requests_total{{method=\"/certgate.admin.v1.PrincipalService/Suspend\",outcome=\"{outcome}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_half_written() {
    let api = Api::start();
    principals(&api, Some(&api.operator), |mut p, mut c| async move {
        let code = |r: Result<tonic::Response<pb::Principal>, tonic::Status>| {
            r.expect_err("refused").code()
        };
        assert_eq!(
            code(p.suspend(suspend("ghost@example.com", "gone")).await),
            Code::NotFound
        );
        assert_eq!(
            code(p.suspend(suspend("worker-1@example.com", "  ")).await),
            Code::InvalidArgument
        );
        let long_id = "w".repeat(257);
        assert_eq!(
            code(p.suspend(suspend(&long_id, "too long")).await),
            Code::InvalidArgument
        );
        let long_reason = "r".repeat(1025);
        assert_eq!(
            code(
                p.suspend(suspend("worker-1@example.com", &long_reason))
                    .await
            ),
            Code::InvalidArgument
        );
        let create = pb::CreatePrincipalRequest {
            principal_id: long_id.clone(),
            principal_type: "worker".into(),
            roles: None,
        };
        assert_eq!(code(p.create(create).await), Code::InvalidArgument);
        assert_eq!(
            code(
                p.get(pb::GetPrincipalRequest {
                    principal_id: "ghost@example.com".into()
                })
                .await
            ),
            Code::NotFound
        );
        let bad_page = pb::ListPrincipalsRequest {
            page_token: "not a token!".into(),
            ..Default::default()
        };
        assert_eq!(
            p.list(bad_page).await.expect_err("bad token").code(),
            Code::InvalidArgument
        );
        let revoke = pb::RevokeCertificateRequest {
            serial: "1a2b".into(),
            reason: "remove_from_crl".into(),
            issuer: Some("CN=e2e CA".into()),
        };
        assert_eq!(
            c.revoke(revoke).await.expect_err("not a revocation").code(),
            Code::InvalidArgument
        );

        // Paging: one at a time, every principal once, in id order.
        let mut seen = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = p
                .list(pb::ListPrincipalsRequest {
                    page_size: 1,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("page")
                .into_inner();
            seen.extend(page.principals.into_iter().map(|p| p.principal_id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(
            seen,
            [
                "admin@example.com",
                "operator@example.com",
                "reader@example.com",
                "worker-1@example.com"
            ]
        );
    });
    // Nothing was written: the same four principals, all active, no certificate revoked.
    let (code, out) = api.world.cli(&["principal", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 4, "{out}");
    assert!(list.iter().all(|p| p["status"] == "active"), "{out}");
    let (code, out) = api.world.cli(&["cert", "get", "1a2b"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn the_remote_cli_prints_what_the_local_cli_prints() {
    let api = Api::start();
    api.world.suspend("admin@example.com", "on leave");
    let worker_cert = api.worker.cert.to_str().expect("utf-8").to_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["principal", "list"],
        vec!["principal", "get", "worker-1@example.com"],
        vec!["cert", "list"],
        vec!["cert", "list", "--principal", "worker-1@example.com"],
        vec!["cert", "list", "--expiring-within", "30d"],
        vec!["cert", "get", &api.worker.serial],
        vec!["check", "--cert", &worker_cert, "--path", "/api/jobs"],
        vec![
            "check",
            "--cert",
            &worker_cert,
            "--method",
            "POST",
            "--path",
            "/admin/x",
        ],
        vec![
            "principal",
            "suspend",
            "--all",
            "--except",
            "operator@example.com",
            "--reason",
            "drill",
            "--dry-run",
        ],
    ];
    for command in &commands {
        for output in [&[][..], &["-o", "json"][..]] {
            let args: Vec<&str> = command.iter().chain(output).copied().collect();
            let local = api.world.cli(&args);
            let remote = api.remote_cli(&api.operator, &args);
            assert_eq!(remote, local, "certgate {}", args.join(" "));
        }
    }
    // A refused remote command says why and exits 1.
    let (code, out) = api.remote_cli(&api.reader, &["principal", "activate", "admin@example.com"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("permission_denied"), "{out}");
}

/// An API write is recorded with the caller's certificate as its actor, and the remote
/// `audit` commands read the server's chain.
#[test]
fn api_writes_are_audited_with_the_callers_certificate() {
    let api = Api::start();
    let (code, out) = api.remote_cli(
        &api.operator,
        &[
            "principal",
            "suspend",
            "worker-1@example.com",
            "--reason",
            "audited",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (ca, identity) = api.pems(Some(&api.operator));
    let (serial, sha256) = (api.operator.serial.clone(), api.operator.sha256.clone());
    let port = api.port;
    run_async(async move {
        let ch = channel(port, ca, identity).await.expect("connect");
        let mut audit = AuditServiceClient::new(ch);
        let records = audit
            .list(pb::ListAuditRequest {
                since: None,
                principal: Some("worker-1@example.com".into()),
            })
            .await
            .expect("list")
            .into_inner()
            .records;
        let last = records.last().expect("a record of the suspension");
        assert_eq!(last.action, "principal.suspend");
        assert_eq!(last.reason.as_deref(), Some("audited"));
        let actor = last.actor.clone().expect("actor");
        assert_eq!(actor.kind, "api");
        assert_eq!(actor.principal_id.as_deref(), Some("operator@example.com"));
        assert_eq!(actor.cn.as_deref(), Some("operator.example.com"));
        assert_eq!(actor.serial, Some(serial));
        assert_eq!(actor.sha256, Some(sha256));
        let verified = audit
            .verify(pb::VerifyAuditRequest {})
            .await
            .expect("verify")
            .into_inner();
        assert!(verified.is_valid, "{verified:?}");
    });
    let (code, out) = api.remote_cli(&api.operator, &["audit", "verify", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let verified: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(verified["is_valid"], true, "{out}");
    assert!(verified["total_entries"].as_u64() > Some(0), "{out}");
    let (code, out) = api.remote_cli(
        &api.operator,
        &["audit", "list", "--principal", "worker-1@example.com"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("principal.suspend") && out.contains("audited"),
        "{out}"
    );
}

#[test]
fn bootstrap_writes_a_ready_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [grpc, admin, admin_api] = [free_port(), free_port(), free_port()];
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(["bootstrap", "--out-dir"])
        .arg(dir.path())
        .args(["--grpc-listen", &addr(grpc), "--admin-listen", &addr(admin)])
        .args(["--admin-api-listen", &addr(admin_api)])
        .output()
        .expect("bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("certgate.yaml");
    let certgate = Certgate::start(&config, admin);
    let p = |name: &str| dir.path().join(name).display().to_string();
    let remote = |who: &str, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--server".to_owned(),
            format!("https://localhost:{admin_api}"),
            "--cacert".to_owned(),
            p("ca.pem"),
            "--client-cert".to_owned(),
            p(&format!("{who}.pem")),
            "--client-key".to_owned(),
            p(&format!("{who}-key.pem")),
        ]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        cli_with_env(&dir.path().join("nowhere.yaml"), &all, &[])
    };
    let (code, out) = remote("operator", &["principal", "list"]);
    assert_eq!(code, 0, "{out}\n{}", certgate.proc.logs());
    assert!(out.contains("operator@example.com"), "{out}");
    // The bootstrapped admin has every right on the ext_authz side, none on the admin API.
    let (code, out) = remote("admin", &["principal", "list"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("permission_denied"), "{out}");
}
