//! What the fuzz targets share: one world per process built from the test PKI, and the seed
//! corpora written from it.
//!
//! The world is `certgate bootstrap`'s (dev CA, admin and worker client certificates, their
//! principals enrolled in an embedded store, the configuration it writes) with a trusted XFCC
//! source added, plus a second CA that signs CRLs. It is created once in `fuzz/pki/` (or
//! `$CERTGATE_FUZZ_PKI`) and reused afterwards, so the corpus a long run grows keeps chaining
//! to the same CA and the decisions stay those of the moment it was made (`now`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use certgate::bootstrap::{self, BootstrapArgs};
use certgate::check::Checker;
use certgate::config::Config;
use certgate::fuzzing::CrlTarget;
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CrlSpec};
use certgate::server::ext_authz::ExtAuthz;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use prost::Message as _;

/// The header of the trusted XFCC source the world's configuration adds.
pub const XFCC: &str = "x-forwarded-client-cert";

/// Everything a target runs its input against.
pub struct World {
    /// The directory of the configuration, PKI and store.
    pub dir: PathBuf,
    /// The loaded configuration (identity rules and trust bundle of `cert::identify`).
    pub config: Config,
    /// The moment the world was made, Unix seconds: every decision is taken at it.
    pub now: i64,
    /// Runs the ext_authz service's async `check`.
    pub runtime: tokio::runtime::Runtime,
    /// The gRPC service over a `Checker` of the configuration and its enrolled store.
    pub service: ExtAuthz,
    /// CRLs are verified against the CRL-signing CA.
    pub crl: CrlTarget,
}

/// The world, made on first use (the targets call it from libFuzzer's init).
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| open().expect("building the fuzzing world"))
}

fn dir() -> PathBuf {
    std::env::var_os("CERTGATE_FUZZ_PKI").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("pki"),
        PathBuf::from,
    )
}

fn open() -> anyhow::Result<World> {
    let dir = dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !dir.join("now").exists() {
        // Built aside and renamed, so a target started meanwhile never sees half a world.
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        runtime.block_on(create(&partial))?;
        if std::fs::rename(&partial, &dir).is_err() {
            // Another process finished first: use its world.
            std::fs::remove_dir_all(&partial)?;
        }
    }
    let now: i64 = read(&dir.join("now"))?.trim().parse()?;
    let config = Config::load(&dir.join("certgate.yaml"))?;
    let metrics = Metrics::new();
    let store = runtime.block_on(certgate::app::open_store(&config, &metrics))?;
    let checker = Arc::new(Checker::new(config.clone(), store, metrics));
    let crl =
        CrlTarget::new(read(&dir.join("crl-ca.pem"))?.as_bytes()).map_err(anyhow::Error::msg)?;
    Ok(World {
        dir,
        config,
        now,
        runtime,
        service: ExtAuthz::new(checker),
        crl,
    })
}

async fn create(dir: &Path) -> anyhow::Result<()> {
    let now = certgate::clock::unix_now();
    let args = BootstrapArgs {
        out_dir: dir.to_owned(),
        domain: "example.com".into(),
        grpc_listen: ([127, 0, 0, 1], 0).into(),
        admin_listen: ([127, 0, 0, 1], 0).into(),
        admin_api_listen: None,
        force: true,
    };
    bootstrap::run(&args, now).await?;
    let mut yaml = read(&dir.join("certgate.yaml"))?;
    yaml.push_str(&format!(
        "forwarded_certificates:\n  - via: ext_authz\n    header: {XFCC}\n    format: xfcc\n    \
         envoy_forward_client_cert: sanitize_set\n    trusted_proxies: [unix]\n"
    ));
    write(dir, "certgate.yaml", yaml.as_bytes())?;
    Config::load(&dir.join("certgate.yaml")).context("the fuzzing world's configuration")?;

    let at = time::OffsetDateTime::from_unix_timestamp(now)?;
    let ca = CertAuthority::new(
        "certgate fuzz CRL CA",
        at - time::Duration::hours(1),
        at + time::Duration::days(3650),
    )?;
    write(dir, "crl-ca.pem", ca.cert_pem().as_bytes())?;
    seeds(dir, &ca, at)?;
    write(dir, "now", now.to_string().as_bytes())
}

/// Seed inputs for every target in `dir/seeds/<target>/`, in the shapes the service meets.
fn seeds(dir: &Path, crl_ca: &CertAuthority, at: time::OffsetDateTime) -> anyhow::Result<()> {
    let seed = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join("seeds").join(target);
        std::fs::create_dir_all(&d)?;
        write(&d, name, bytes)
    };
    let mut pems = Vec::new();
    for name in ["admin", "worker", "server", "ca"] {
        pems.push((name, read(&dir.join(format!("{name}.pem")))?));
    }
    for (name, pem) in &pems {
        let der = pem_der(pem)?;
        let url = url_encode(pem);
        let b64 = STANDARD.encode(&der);
        seed("cert", &format!("{name}.pem"), pem.as_bytes())?;
        seed("cert", &format!("{name}.url"), url.as_bytes())?;
        seed("cert", &format!("{name}.der"), &der)?;
        // The forwarded target's first byte picks the format (see fuzz_targets/forwarded.rs).
        let xfcc = format!(r#"By=spiffe://gw;Hash=ab;Cert="{url}";Subject="CN=x,OU=a;b""#);
        for (selector, value) in [
            (0u8, format!("By=spiffe://a;Cert=\"FORGED\",{xfcc}")),
            (1, url.clone()),
            (2, format!("{b64},{b64}")),
            (3, format!(":{b64}:")),
            (4, url.clone()),
        ] {
            let mut input = vec![selector];
            input.extend_from_slice(value.as_bytes());
            seed("forwarded", &format!("{name}.{selector}"), &input)?;
        }
    }
    for (i, path) in [
        "/api/hello",
        "/api/hello?x=1&y=%2F",
        "/job.v1.JobService/Run",
        "/a/%2Fb/c%3Bd",
        "/a/..%2Fadmin",
        "/%2e%2e/x",
        "/caf%C3%A9/",
        "/100%",
        "/a//b;c",
        "/x%2541",
    ]
    .iter()
    .enumerate()
    {
        for mode in [0u8, 1] {
            let mut input = vec![mode];
            input.extend_from_slice(path.as_bytes());
            seed("path", &format!("{i}.{mode}"), &input)?;
        }
    }
    for (i, revoked) in [
        vec![],
        vec![(1u64, None), (0x7fff_ffff_ffff_ffff, None)],
        vec![
            (42, Some(rcgen::RevocationReason::KeyCompromise)),
            (43, Some(rcgen::RevocationReason::CessationOfOperation)),
            (256, Some(rcgen::RevocationReason::CaCompromise)),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let crl = crl_ca.crl(&CrlSpec {
            revoked,
            number: i as u64 + 1,
            ..CrlSpec::new(at, time::Duration::days(7))
        })?;
        seed("crl", &format!("{i}.der"), &crl.der)?;
        seed("crl", &format!("{i}.pem"), crl.pem.as_bytes())?;
    }
    let admin = url_encode(&pems[0].1);
    for (name, request) in [
        (
            "peer",
            check_request(Some(&admin), None, "GET", "/api/hello", None),
        ),
        (
            "admin",
            check_request(Some(&admin), None, "POST", "/admin/x", Some("admin")),
        ),
        (
            "xfcc",
            check_request(None, Some(&admin), "GET", "/api/hello?q=1", None),
        ),
        ("none", check_request(None, None, "GET", "/", None)),
    ] {
        seed("check_request", name, &request.encode_to_vec())?;
    }
    seed(
        "config",
        "bootstrap.yaml",
        read(&dir.join("certgate.yaml"))?.as_bytes(),
    )?;
    seed(
        "config",
        "example.yaml",
        include_str!("../../deploy/certgate.example.yaml").as_bytes(),
    )?;
    for (table, lines) in certgate::fuzzing::store_item_seeds() {
        seed("store_items", table, &lines)?;
    }
    Ok(())
}

/// A `CheckRequest` as Envoy sends it: the certificate in `source` or in the XFCC header.
fn check_request(
    peer: Option<&str>,
    xfcc: Option<&str>,
    method: &str,
    path: &str,
    policy: Option<&str>,
) -> CheckRequest {
    let mut headers = std::collections::HashMap::new();
    headers.insert("x-request-id".to_owned(), "fuzz-1".to_owned());
    if let Some(cert) = xfcc {
        headers.insert(XFCC.to_owned(), format!("Hash=ab;Cert=\"{cert}\""));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: peer.map(|c| Peer {
                certificate: c.to_owned(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: "api.example.com".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: policy
                .map(|p| [("policy".to_owned(), p.to_owned())].into())
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

/// The DER of a one-certificate PEM.
fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(STANDARD.decode(body)?)
}

/// Envoy's escaping of `source.certificate` and XFCC `Cert=`.
fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}
