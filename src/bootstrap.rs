//! `certgate bootstrap`: a development PKI (CA, server certificate, an admin and a worker
//! client certificate with the identity extensions), a ready configuration that trusts it, and
//! an embedded store with those principals and certificates enrolled. Not for production keys.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::cert;
use crate::config::{Config, DEFAULT_PRINCIPAL_ID_OID, DEFAULT_PRINCIPAL_TYPE_OID};
use crate::pki::{CertAuthority, CertSpec, IssuedCert};
use crate::store::{Actor, Admin, CertificateRecord, EmbeddedStore, Principal, PrincipalStatus};

/// What `certgate bootstrap` writes, and where.
#[derive(Debug, Clone)]
pub struct BootstrapArgs {
    /// Directory to write into (created if missing).
    pub out_dir: PathBuf,
    /// Domain used in names: admin@DOMAIN, worker-1@DOMAIN, certgate.DOMAIN.
    pub domain: String,
    /// ext_authz gRPC listen address written into the configuration.
    pub grpc_listen: std::net::SocketAddr,
    /// Admin listen address written into the configuration.
    pub admin_listen: std::net::SocketAddr,
    /// Admin API listen address written into the configuration (`listen.admin_api`); `None`
    /// leaves the admin API off.
    pub admin_api_listen: Option<std::net::SocketAddr>,
    /// Overwrite an existing bootstrap in the directory.
    pub force: bool,
}

fn oid_arcs(dotted: &str) -> Vec<u64> {
    dotted.split('.').filter_map(|a| a.parse().ok()).collect()
}

/// The admin API part of the configuration: the policy its calls are checked against and
/// its TLS files.
const ADMIN_API_YAML: &str = r#"admin_api:                        # the admin gRPC API (README "Operating certgate")
  policy: operators               # every call is checked against this policy
  tls:
    cert: admin-api.pem
    key: admin-api-key.pem
    client_ca: ca.pem             # operators' client certificates chain to this CA
"#;

/// The YAML written next to the PKI.
fn config_yaml(args: &BootstrapArgs) -> String {
    let admin_api_listen = args
        .admin_api_listen
        .map(|a| {
            format!(
                "  admin_api: {a}     # admin gRPC API over mTLS (certgate principal … --server)
"
            )
        })
        .unwrap_or_default();
    let admin_api = if args.admin_api_listen.is_some() {
        ADMIN_API_YAML
    } else {
        ""
    };
    format!(
        r#"# certgate configuration written by `certgate bootstrap` for a development PKI.
# Every key is documented in the README ("Configuration"); relative paths are resolved
# against this file's directory.
listen:
  grpc: {grpc}          # Envoy's ext_authz cluster points here
  admin: {admin}         # /healthz /readyz /metrics
{admin_api_listen}trust:
  ca_bundle: ca.pem               # client certificates must chain to one of these CAs
  clock_skew: 60s
identity:
  principal_id_sources: [oid, spiffe, cn]
  principal_type_sources: [store, oid, ou]
store:
  backend: embedded
  path: certgate.db
  cache_ttl: 2s                   # suspensions and revocations take effect within this
roles_by_type:
  admin: [admin]
  worker: [worker]
  operator: [operator]
default_policy: default
policies:
  default:
    max_lifetime: 90d
    require_enrolment: true
    permissions:
      admin: ["*"]
      worker: ["GET /api/*", "/job.v1.JobService/*"]
  admin:                          # routes under /admin (see envoy/front-proxy.yaml)
    max_lifetime: 7d              # emergency admin access: short-lived certificates only
    allowed_principal_types: [admin]
    cn_allowlist_file: admin-allowlist.txt
    permissions:
      admin: ["*"]
  operators:                      # who may call which admin API method
    max_lifetime: 30d
    permissions:
      operator: ["/certgate.admin.v1.*"]
      operators-read:             # give a principal roles [operators-read] to read only
        - "/certgate.admin.v1.*/List"
        - "/certgate.admin.v1.*/Get"
{admin_api}"#,
        grpc = args.grpc_listen,
        admin = args.admin_listen
    )
}

struct Client<'a> {
    file: &'a str,
    principal_id: String,
    principal_type: &'a str,
    cn: String,
    lifetime_days: i64,
}

impl<'a> Client<'a> {
    /// A client of type `principal_type` named `name`: principal `name@domain`, CN
    /// `name.domain`, files `<principal_type>.pem` and `<principal_type>-key.pem`.
    fn new(principal_type: &'a str, name: &str, domain: &str, lifetime_days: i64) -> Self {
        Client {
            file: principal_type,
            principal_id: format!("{name}@{domain}"),
            principal_type,
            cn: format!("{name}.{domain}"),
            lifetime_days,
        }
    }
}

/// Write everything; returns a human summary with the next commands to run.
pub async fn run(args: &BootstrapArgs, now_unix: i64) -> anyhow::Result<String> {
    let dir = &args.out_dir;
    let config_path = dir.join("certgate.yaml");
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite",
            config_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::from_unix_timestamp(now_unix).context("clock out of range")?;
    let domain = &args.domain;

    let ca = CertAuthority::new(
        &format!("certgate dev CA ({domain})"),
        now - time::Duration::hours(1),
        now + time::Duration::days(3650),
    )?;
    write(dir, "ca.pem", &ca.cert_pem())?;
    write_secret(dir, "ca-key.pem", &ca.key_pem())?;

    let server = ca.issue(&CertSpec::server(
        &["localhost", &format!("certgate.{domain}")],
        now - time::Duration::hours(1),
        time::Duration::days(365),
    ))?;
    write_pair(dir, "server", &server)?;
    if args.admin_api_listen.is_some() {
        let admin_api = ca.issue(&CertSpec::server(
            &["localhost", &format!("certgate-admin.{domain}")],
            now - time::Duration::hours(1),
            time::Duration::days(365),
        ))?;
        write_pair(dir, "admin-api", &admin_api)?;
    }

    let mut clients = vec![
        Client::new("admin", "admin", domain, 7),
        Client::new("worker", "worker-1", domain, 30),
    ];
    if args.admin_api_listen.is_some() {
        clients.push(Client::new("operator", "operator", domain, 30));
    }
    let mut issued = Vec::new();
    for c in &clients {
        let start = now - time::Duration::minutes(5);
        let spec = CertSpec {
            organizational_unit: Some(c.principal_type.to_owned()),
            uri_sans: vec![format!("spiffe://{domain}/{}/{}", c.principal_type, c.file)],
            custom_extensions: vec![
                (oid_arcs(DEFAULT_PRINCIPAL_ID_OID), c.principal_id.clone()),
                (
                    oid_arcs(DEFAULT_PRINCIPAL_TYPE_OID),
                    c.principal_type.to_owned(),
                ),
            ],
            // The lifetime counts from notBefore, so policies' max_lifetime applies exactly.
            not_after: start + time::Duration::days(c.lifetime_days),
            ..CertSpec::client(&c.cn, start, time::Duration::days(c.lifetime_days))
        };
        let cert = ca.issue(&spec)?;
        write_pair(dir, c.file, &cert)?;
        issued.push(cert);
    }
    write(
        dir,
        "admin-allowlist.txt",
        &format!("# CNs admitted by policy 'admin'\n{}\n", clients[0].cn),
    )?;
    write(dir, "certgate.yaml", &config_yaml(args))?;

    let config = Config::load(&config_path)?;
    let crate::config::StoreBackend::Embedded { path: db } = &config.store.backend else {
        anyhow::bail!("bootstrap writes an embedded-store configuration");
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store: Arc<dyn Admin> = Arc::new(EmbeddedStore::open(db)?);
    for (c, cert) in clients.iter().zip(&issued) {
        store
            .create_principal(
                &Principal {
                    principal_id: c.principal_id.clone(),
                    principal_type: Some(c.principal_type.to_owned()),
                    status: PrincipalStatus::Active,
                    suspended_at: None,
                    suspended_reason: None,
                    roles: None,
                    created_at: Some(now_unix * 1000),
                },
                &Actor::cli(),
            )
            .await?;
        let id = cert::identify(
            cert.cert_pem.as_bytes(),
            &config.identity,
            &config.trust,
            now_unix,
        )
        .context("parsing a certificate just issued")?;
        store
            .register_certificate(
                &CertificateRecord::for_identity(&id, c.principal_id.clone()),
                &Actor::cli(),
            )
            .await?;
    }

    let d = dir.display();
    let remote = args.admin_api_listen.map(|addr| {
        format!(
            "  certgate principal list --server https://localhost:{port} --cacert {d}/ca.pem \\\n      --client-cert {d}/operator.pem --client-key {d}/operator-key.pem",
            port = addr.port()
        )
    });
    let mut s = String::new();
    let _ = writeln!(s, "Wrote a development PKI and configuration to {d}/:");
    let _ = writeln!(s, "  ca.pem ca-key.pem                 CA (trust bundle)");
    let _ = writeln!(
        s,
        "  server.pem server-key.pem         server certificate for localhost"
    );
    if args.admin_api_listen.is_some() {
        let _ = writeln!(
            s,
            "  admin-api.pem admin-api-key.pem   admin API server certificate (localhost)"
        );
    }
    for c in &clients {
        let _ = writeln!(
            s,
            "  {f}.pem {f}-key.pem{pad}client: {} (type {}, {} days)",
            c.principal_id,
            c.principal_type,
            c.lifetime_days,
            f = c.file,
            pad = " ".repeat(19usize.saturating_sub(2 * c.file.len()))
        );
    }
    let _ = writeln!(
        s,
        "  certgate.yaml certgate.db         configuration and enrolled store"
    );
    let _ = writeln!(s, "\nNext:\n  certgate serve --config {d}/certgate.yaml");
    let _ = writeln!(
        s,
        "  certgate check --config {d}/certgate.yaml --cert {d}/admin.pem --path /api/hello"
    );
    if let Some(remote) = remote {
        let _ = writeln!(s, "{remote}");
    }
    Ok(s)
}

fn write(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_secret(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(dir, name, contents)?;
    let path = dir.join(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}

fn write_pair(dir: &Path, stem: &str, cert: &IssuedCert) -> anyhow::Result<()> {
    write(dir, &format!("{stem}.pem"), &cert.cert_pem)?;
    write_secret(dir, &format!("{stem}-key.pem"), &cert.key_pem)
}
