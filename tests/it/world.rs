//! A test world: a PKI generated in code with one client certificate per decision row, a
//! certgate configuration on free ports, and an embedded store with the principals enrolled.
//! Also what many tests share: writing a file the way an operator's deploy tool does (whole,
//! by rename), starting certgate without waiting for readiness, and telling certgate's deny
//! body from a proxy's own error page.

use std::path::{Path, PathBuf};

use certgate::pki::{CertAuthority, CertSpec, Eku, IssuedCert};

use super::harness::{Certgate, CertgateAddress, EnvoyOptions, Proc, Reply, http_get, wait_until};
use certgate::store::{
    Actor, Admin, CertificateRecord, EmbeddedStore, Principal, PrincipalStatus, Registration,
};
use time::{Duration, OffsetDateTime};

pub const ID_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 1];
pub const TYPE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 2];

/// A client certificate on disk.
#[derive(Clone, Debug)]
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub principal: String,
    /// Lowercase hex without leading zero bytes, read from the certificate by `openssl`.
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex, from `openssl x509 -fingerprint -sha256`.
    pub sha256: String,
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub config: PathBuf,
    pub grpc_port: u16,
    pub admin_port: u16,
    ca: CertAuthority,
    stranger_ca: CertAuthority,
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid")
}

/// The certgate configuration the end-to-end tests run with.
pub fn config_yaml(grpc: &str, admin: &str) -> String {
    format!(
        r#"listen:
  grpc: "{grpc}"
  admin: "{admin}"
trust: {{ca_bundle: ca.pem, clock_skew: 5s}}
store: {{path: certgate.db, cache_ttl: 1s}}
reload: {{interval: 200ms}}
roles_by_type:
  admin: [admin]
  worker: [worker]
default_policy: default
policies:
  default:
    max_lifetime: 90d
    permissions:
      admin: ["*"]
      worker: ["GET /api/*"]
  admin:
    max_lifetime: 7d
    allowed_principal_types: [admin]
    cn_allowlist_file: admin-allowlist.txt
    permissions:
      admin: ["*"]
"#
    )
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = now() - Duration::days(1);
        let ca = CertAuthority::new("e2e CA", start, start + Duration::days(3650)).expect("CA");
        // Same subject as the real CA, different key: only the signature can tell them apart.
        let stranger_ca =
            CertAuthority::new("e2e CA", start, start + Duration::days(3650)).expect("CA");
        let p = |name: &str| dir.path().join(name);
        write_file(&p("ca.pem"), ca.cert_pem());
        let server = ca
            .issue(&CertSpec::server(&["localhost"], start, Duration::days(30)))
            .expect("server cert");
        write_file(&p("server.pem"), &server.cert_pem);
        write_file(&p("server-key.pem"), &server.key_pem);
        write_file(&p("admin-allowlist.txt"), "admin.example.com\n");
        let grpc_port = crate::it::harness::free_port();
        let admin_port = crate::it::harness::free_port();
        let config = p("certgate.yaml");
        write_file(
            &config,
            config_yaml(
                &format!("127.0.0.1:{grpc_port}"),
                &format!("127.0.0.1:{admin_port}"),
            ),
        );
        World {
            ca_pem: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server-key.pem"),
            config,
            grpc_port,
            admin_port,
            dir,
            ca,
            stranger_ca,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client spec with the identity extensions of `principal` and type `kind`.
    pub fn spec(principal: &str, kind: &str, cn: &str) -> CertSpec {
        CertSpec {
            organizational_unit: Some(kind.to_owned()),
            custom_extensions: vec![
                (ID_OID.to_vec(), principal.to_owned()),
                (TYPE_OID.to_vec(), kind.to_owned()),
            ],
            ..CertSpec::client(cn, now() - Duration::hours(1), Duration::days(5))
        }
    }

    /// Write an issued certificate and its key into the world's directory as `name`.
    pub fn write_client(&self, name: &str, principal: &str, issued: &IssuedCert) -> Client {
        let cert = self.path(&format!("{name}.pem"));
        let key = self.path(&format!("{name}-key.pem"));
        write_file(&cert, &issued.cert_pem);
        write_file(&key, &issued.key_pem);
        Client {
            serial: openssl_serial(&cert),
            sha256: openssl_sha256(&cert),
            cert,
            key,
            principal: principal.to_owned(),
        }
    }

    /// Issue a client certificate from the trusted CA.
    pub fn client(&self, name: &str, principal: &str, spec: &CertSpec) -> Client {
        let issued = self.ca.issue(spec).expect("issue");
        self.write_client(name, principal, &issued)
    }

    /// Sign a CRL with the trusted CA.
    pub fn crl(&self, spec: &certgate::pki::CrlSpec) -> certgate::pki::IssuedCrl {
        self.ca.crl(spec).expect("sign CRL")
    }

    /// The CA that [`World::stranger`] issues from (same name as the trusted one, another
    /// key), PEM.
    pub fn stranger_ca_pem(&self) -> String {
        self.stranger_ca.cert_pem()
    }

    /// Issue a client certificate from a CA outside the trust bundle.
    pub fn stranger(&self, name: &str, principal: &str, spec: &CertSpec) -> Client {
        let issued = self.stranger_ca.issue(spec).expect("issue");
        self.write_client(name, principal, &issued)
    }

    /// Enrol principals (id, type) and register the given clients' certificates.
    pub fn enrol(&self, principals: &[(&str, &str)], certs: &[&Client]) {
        let db = self.path("certgate.db");
        let principals: Vec<(String, String)> = principals
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let certs: Vec<Client> = certs.iter().map(|c| (*c).clone()).collect();
        run_async(async move {
            let store = EmbeddedStore::open(&db).expect("store");
            for (id, kind) in principals {
                store
                    .create_principal(
                        &Principal {
                            principal_id: id,
                            principal_type: Some(kind),
                            status: PrincipalStatus::Active,
                            suspended_at: None,
                            suspended_reason: None,
                            roles: None,
                            created_at: Some(0),
                        },
                        &Actor::cli(),
                    )
                    .await
                    .expect("create principal");
            }
            for c in certs {
                store
                    .register_certificate(
                        &CertificateRecord {
                            serial_number: c.serial.clone(),
                            registration: Some(Registration {
                                principal_id: c.principal.clone(),
                                issuer: "CN=e2e CA".into(),
                                sha256: String::new(),
                                not_before: 0,
                                expires_at: (now() + Duration::days(5)).unix_timestamp() * 1000,
                            }),
                            revoked: false,
                            revoked_at: None,
                            revocation_reason: None,
                        },
                        &Actor::cli(),
                    )
                    .await
                    .expect("register certificate");
            }
        });
    }

    /// The usual pair, issued and enrolled: admin@example.com (type admin, CN on the admin
    /// allowlist) and worker-1@example.com (type worker).
    pub fn admin_and_worker(&self) -> (Client, Client) {
        let admin = self.client(
            "admin",
            "admin@example.com",
            &World::spec("admin@example.com", "admin", "admin.example.com"),
        );
        let worker = self.client(
            "worker",
            "worker-1@example.com",
            &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
        );
        self.enrol(
            &[
                ("admin@example.com", "admin"),
                ("worker-1@example.com", "worker"),
            ],
            &[&admin, &worker],
        );
        (admin, worker)
    }

    /// Envoy in front of this world's certgate, with its server certificate and CA bundle.
    pub fn envoy_options<'a>(
        &'a self,
        certgate: CertgateAddress,
        upstream_port: u16,
        trust_chain_verification: &'a str,
    ) -> EnvoyOptions<'a> {
        EnvoyOptions {
            server_cert: &self.server_cert,
            server_key: &self.server_key,
            ca_bundle: &self.ca_pem,
            certgate,
            upstream_port,
            trust_chain_verification,
            module_config: None,
        }
    }

    /// Suspend `principal` with `reason` through the CLI.
    pub fn suspend(&self, principal: &str, reason: &str) {
        let (code, out) = self.cli(&["principal", "suspend", principal, "--reason", reason]);
        assert_eq!(code, 0, "{out}");
    }

    /// Revoke the certificate `serial` in the store with `reason` through the CLI.
    pub fn revoke(&self, serial: &str, reason: &str) {
        let (code, out) = self.cli(&["cert", "revoke", serial, "--reason", reason]);
        assert_eq!(code, 0, "{out}");
    }

    /// Run the certgate CLI against this world's configuration; returns (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        cli_with_config(&self.config, args)
    }
}

pub fn cli_with_config(config: &Path, args: &[&str]) -> (i32, String) {
    cli_with_env(config, args, &[])
}

/// The certgate CLI with `CERTGATE_CONFIG=config` and extra environment variables.
pub fn cli_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .env("CERTGATE_CONFIG", config)
        .envs(env.iter().copied())
        .output()
        .expect("run certgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn run_async<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f);
}

pub fn eku(spec: CertSpec, eku: Eku) -> CertSpec {
    CertSpec { eku, ..spec }
}

/// An ext_authz `Check` of `GET path` with `pem` (URL-encoded, as Envoy sends it) as the
/// client certificate.
pub fn check_request(
    pem: &str,
    path: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: percent_encoding::utf8_percent_encode(
                    pem,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Assert an allow whose upstream request carried `principal`; `logs` on failure.
#[track_caller]
pub fn assert_allowed_as(reply: &Reply, principal: &str, logs: &str) {
    assert_eq!(reply.status, 200, "{}\n{logs}", reply.body);
    assert_eq!(
        reply.upstream_header("x-client-principal").as_deref(),
        Some(principal)
    );
}

/// One ext_authz `Check` of `GET path` with `pem` as the client certificate, sent straight to
/// certgate's gRPC port (no Envoy): `("allow", "")` or `(reason code, message)` of the deny.
pub fn grpc_decision(port: u16, pem: &str, path: &str) -> (String, String) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let request = check_request(pem, path);
    let (tx, rx) = std::sync::mpsc::channel();
    run_async(async move {
        let answer = async {
            let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .map_err(|e| e.to_string())?;
            let response = client.check(request).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(match response.into_inner().http_response {
                Some(HttpResponse::DeniedResponse(d)) => {
                    let body: serde_json::Value =
                        serde_json::from_str(&d.body).map_err(|e| e.to_string())?;
                    (
                        body["error"].as_str().unwrap_or_default().to_owned(),
                        body["message"].as_str().unwrap_or_default().to_owned(),
                    )
                }
                _ => ("allow".to_owned(), String::new()),
            })
        };
        let _ = tx.send(answer.await);
    });
    rx.recv()
        .expect("an answer")
        .unwrap_or_else(|e| ("rpc_failed".to_owned(), e))
}

/// Write `contents` to `path` whole: a temporary file beside it, then a rename, so a running
/// certgate that polls the file never reads half of it.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    let dir = path.parent().expect("a file in a directory");
    let mut temp = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    std::io::Write::write_all(&mut temp, contents.as_ref()).expect("write temp file");
    temp.persist(path)
        .unwrap_or_else(|e| panic!("rename onto {}: {e}", path.display()));
}

/// [`write_file`] with `text` appended to what `path` holds.
pub fn append_file(path: &Path, text: &str) {
    let old = std::fs::read_to_string(path).expect("read");
    write_file(path, format!("{old}{text}"));
}

fn openssl_x509(cert: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(cert)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl x509 {args:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, value) = text.trim().split_once('=').expect("NAME=VALUE");
    value.to_ascii_lowercase()
}

/// The serial as the decision contract spells it (lowercase hex, no colons, no leading zero
/// bytes), from `openssl x509 -serial`.
pub fn openssl_serial(cert: &Path) -> String {
    let hex = openssl_x509(cert, &["-serial"]);
    let mut digits = hex.as_str();
    while digits.len() > 2 && digits.starts_with("00") {
        digits = &digits[2..];
    }
    digits.to_owned()
}

/// SHA-256 of the certificate's DER, lowercase hex, from `openssl x509 -fingerprint`.
pub fn openssl_sha256(cert: &Path) -> String {
    openssl_x509(cert, &["-fingerprint", "-sha256"]).replace(':', "")
}

/// certgate's deny body (`error`, `message`, `request_id`), or None when the body is not one
/// — e.g. Envoy's own bodiless 503 when certgate did not answer within Envoy's timeout.
pub fn certgate_deny(reply: &Reply) -> Option<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    ["error", "message", "request_id"]
        .iter()
        .all(|k| body[k].is_string())
        .then_some(body)
}

/// The reason code of certgate's deny, or None for an allow or a body that is not certgate's.
pub fn deny_reason(reply: &Reply) -> Option<String> {
    certgate_deny(reply).and_then(|b| b["error"].as_str().map(str::to_owned))
}

/// `certgate serve` without waiting for `/readyz` (for tests of a certgate that is not
/// ready); it is up once `/readyz` answers at all.
pub fn spawn_certgate(config: &Path, admin_port: u16, env: &[(&str, &str)]) -> Certgate {
    let mut proc = Proc::spawn(
        "certgate",
        std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CERTGATE_LOG", "info")
            .envs(env.iter().copied()),
    );
    let up = wait_until(std::time::Duration::from_secs(20), || {
        !proc.is_running() || http_get(admin_port, "/readyz").is_some()
    });
    assert!(
        up && proc.is_running(),
        "certgate did not start\n{}",
        proc.logs()
    );
    Certgate { proc, admin_port }
}
