//! Configuration (README "Configuration"): YAML → `Raw` (serde, unknown keys refused) → validated `Config`.
//! Every problem is reported at once with its key path; the files a config names (CA bundle,
//! allowlists) are read here so a `Config` is always complete and usable.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use x509_parser::der_parser::oid::Oid;

use crate::authz::path::PathMode;
use crate::authz::{CertificateRules, Permission, Policy, PrincipalRules, RevocationPolicy};
use crate::cert::{
    CertEncoding, IdentityRules, PrincipalIdSource, PrincipalTypeSource, TrustBundle,
};
use crate::crl::{CrlConfig, CrlIssuer, CrlLocation, CrlReadiness, CrlSource, Freshness};
use crate::store::CacheSettings;
use crate::store::dynamodb::DynamoSettings;

/// Default OID of the principal id extension (a private arc; configurable).
pub const DEFAULT_PRINCIPAL_ID_OID: &str = "1.3.6.1.4.1.59999.1.1";
/// Default OID of the principal type extension.
pub const DEFAULT_PRINCIPAL_TYPE_OID: &str = "1.3.6.1.4.1.59999.1.2";

// ---------------------------------------------------------------------------------------
// Raw: what the YAML says.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    listen: RawListen,
    trust: RawTrust,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    roles_by_type: HashMap<String, Vec<String>>,
    policies: HashMap<String, RawPolicy>,
    #[serde(default = "default_policy_name")]
    default_policy: String,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    response: RawResponse,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    crl: RawCrl,
    #[serde(default)]
    forwarded_certificates: Vec<RawForwarded>,
    #[serde(default)]
    forward_auth: RawForwardAuth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarded {
    via: Option<Via>,
    header: String,
    format: CertEncoding,
    trusted_proxies: Vec<String>,
    envoy_forward_client_cert: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    request_headers: Option<RequestHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    grpc: Option<String>,
    grpc_unix: Option<String>,
    admin: Option<String>,
    http: Option<String>,
    limits: RawLimits,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            grpc: Some("127.0.0.1:9001".into()),
            grpc_unix: None,
            admin: Some("127.0.0.1:9901".into()),
            http: None,
            limits: RawLimits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    grpc_max_connections: u64,
    http_max_connections: u64,
    admin_max_connections: u64,
    header_read_timeout: String,
    request_timeout: String,
    tcp_keepalive: String,
    grpc_max_message_size: RawSize,
    grpc_max_concurrent_streams: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = ListenLimits::default();
        let text = |d: Duration| humantime::format_duration(d).to_string();
        RawLimits {
            grpc_max_connections: d.grpc_max_connections as u64,
            http_max_connections: d.http_max_connections as u64,
            admin_max_connections: d.admin_max_connections as u64,
            header_read_timeout: text(d.header_read_timeout),
            request_timeout: text(d.request_timeout),
            tcp_keepalive: text(d.tcp_keepalive),
            grpc_max_message_size: RawSize::Bytes(d.grpc_max_message_size as u64),
            grpc_max_concurrent_streams: u64::from(d.grpc_max_concurrent_streams),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    ca_bundle: String,
    #[serde(default = "default_clock_skew")]
    clock_skew: String,
    #[serde(default = "yes")]
    require_client_auth_eku: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    principal_id_sources: Vec<PrincipalIdSource>,
    principal_id_oid: String,
    principal_type_sources: Vec<PrincipalTypeSource>,
    principal_type_oid: String,
    cache_ttl: String,
    cache_max_entries: u64,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            principal_id_sources: vec![
                PrincipalIdSource::Oid,
                PrincipalIdSource::Spiffe,
                PrincipalIdSource::Cn,
            ],
            principal_id_oid: DEFAULT_PRINCIPAL_ID_OID.into(),
            principal_type_sources: vec![
                // The enrolled record is authoritative; a certificate's OU is often free
                // text a CA copies from a request.
                PrincipalTypeSource::Store,
                PrincipalTypeSource::Oid,
                PrincipalTypeSource::Ou,
            ],
            principal_type_oid: DEFAULT_PRINCIPAL_TYPE_OID.into(),
            cache_ttl: "10m".into(),
            cache_max_entries: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    backend: String,
    path: String,
    cache_ttl: String,
    cache_max_entries: u64,
    stale_if_error: Option<String>,
    dynamodb: Option<RawDynamo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDynamo {
    region: Option<String>,
    endpoint_url: Option<String>,
    principals_table: String,
    certificates_table: String,
    timeout: String,
    attempt_timeout: String,
    max_attempts: u32,
    admin_timeout: String,
    purge_expired_after: Option<String>,
}

impl Default for RawDynamo {
    fn default() -> Self {
        let d = DynamoSettings::default();
        RawDynamo {
            region: None,
            endpoint_url: None,
            principals_table: d.principals_table,
            certificates_table: d.certificates_table,
            timeout: humantime::format_duration(d.timeout).to_string(),
            attempt_timeout: humantime::format_duration(d.attempt_timeout).to_string(),
            max_attempts: d.max_attempts,
            admin_timeout: humantime::format_duration(d.admin_timeout).to_string(),
            purge_expired_after: None,
        }
    }
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "embedded".into(),
            path: "certgate.db".into(),
            cache_ttl: "5s".into(),
            cache_max_entries: 100_000,
            stale_if_error: None,
            dynamodb: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_lifetime: Option<String>,
    #[serde(default = "yes")]
    require_enrolment: bool,
    allowed_principal_types: Option<Vec<String>>,
    cn_allowlist: Option<Vec<String>>,
    cn_allowlist_file: Option<String>,
    #[serde(default)]
    permissions: HashMap<String, Vec<String>>,
    #[serde(default)]
    revocation: RevocationPolicy,
    #[serde(default)]
    paths: PathMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHeaders {
    principal: String,
    principal_type: String,
    roles: String,
    cn: String,
    serial: String,
    sha256: String,
    spiffe_id: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            principal: "x-client-principal".into(),
            principal_type: "x-client-principal-type".into(),
            roles: "x-client-roles".into(),
            cn: "x-client-cn".into(),
            serial: "x-client-cert-serial".into(),
            sha256: "x-client-cert-sha256".into(),
            spiffe_id: "x-client-spiffe-id".into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawResponse {
    deny_detail: DenyDetail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReload {
    interval: String,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            interval: "2s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCrl {
    readiness: CrlReadiness,
    max_age: String,
    next_update_grace: String,
    refresh_interval: String,
    file_refresh_interval: String,
    timeout: String,
    retry_backoff: String,
    max_retry_backoff: String,
    max_size: RawSize,
    cache_dir: Option<String>,
    high_water_file: Option<String>,
    follow_redirects: bool,
    issuers: Vec<RawCrlIssuer>,
}

impl Default for RawCrl {
    fn default() -> Self {
        RawCrl {
            readiness: CrlReadiness::Wait,
            max_age: "24h".into(),
            next_update_grace: "0s".into(),
            refresh_interval: "1h".into(),
            file_refresh_interval: "1m".into(),
            timeout: "10s".into(),
            retry_backoff: "1s".into(),
            max_retry_backoff: "5m".into(),
            max_size: RawSize::Text("64MiB".into()),
            cache_dir: None,
            high_water_file: None,
            follow_redirects: false,
            issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrlIssuer {
    ca: String,
    #[serde(default)]
    sources: Vec<RawCrlSource>,
    max_age: Option<String>,
    next_update_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrlSource {
    url: Option<String>,
    file: Option<String>,
    refresh_interval: Option<String>,
}

/// The longest value each duration key accepts, by the key's last segment. Every bound
/// keeps its consumer working: the store cache (moka) panics on a TTL over 1000 years, and
/// `cache_ttl + stale_if_error` or a timer's `now + interval` must not overflow; below those
/// hard limits each bound is the longest value that still makes operational sense.
fn max_duration(key: &str) -> Duration {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    let name = key.rsplit('.').next().unwrap_or(key);
    Duration::from_secs(match name {
        // A suspension or revocation in the store takes effect within the TTL.
        "cache_ttl" if key.starts_with("store.") => DAY,
        "cache_ttl" | "stale_if_error" => 7 * DAY,
        // Larger would switch off the validity check (row 4) in all but name.
        "clock_skew" => HOUR,
        "interval" => HOUR,
        "timeout" | "attempt_timeout" if key.starts_with("store.dynamodb.") => 5 * MINUTE,
        "admin_timeout" => HOUR,
        "max_age" => 366 * DAY,
        "next_update_grace" => 30 * DAY,
        "refresh_interval" | "file_refresh_interval" => 7 * DAY,
        "retry_backoff" => HOUR,
        "max_retry_backoff" => DAY,
        "timeout" | "header_read_timeout" | "request_timeout" => 10 * MINUTE,
        // TCP_KEEPIDLE takes at most 32767 s on Linux.
        "tcp_keepalive" => 2 * HOUR,
        // Lifetimes and purge delays are compared with certificate dates, in seconds and
        // epoch milliseconds: a century is far past any certificate and far from overflow.
        _ => 36_525 * DAY,
    })
}

fn default_policy_name() -> String {
    "default".into()
}
fn default_clock_skew() -> String {
    "60s".into()
}
fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------
// Config: what certgate runs with.

/// How much of a deny the client sees in the response body (logs always have everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyDetail {
    /// Reason code and the full message.
    #[default]
    Full,
    /// Reason code only; the message is a generic text for the status.
    Reason,
}

/// Listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// ext_authz gRPC over TCP.
    pub grpc: Option<SocketAddr>,
    /// ext_authz gRPC over a unix socket.
    pub grpc_unix: Option<PathBuf>,
    /// Admin HTTP (`/healthz`, `/readyz`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// HTTP forward-auth (nginx `auth_request`, ingress-nginx `auth-url`, Traefik, Caddy).
    pub http: Option<SocketAddr>,
    /// What one client may hold on the listeners.
    pub limits: ListenLimits,
}

/// `listen.limits`: bounds that keep one slow or hostile client from taking the process's
/// file descriptors, memory or tasks away from everyone else (each listener has its own
/// connection cap, so a flood on forward-auth leaves admin and gRPC their share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Open connections on the gRPC TCP listener (and, separately, on the unix socket).
    pub grpc_max_connections: usize,
    /// Open connections on the forward-auth listener.
    pub http_max_connections: usize,
    /// Open connections on the admin listener.
    pub admin_max_connections: usize,
    /// How long an HTTP client has to send a complete request head, on a new connection
    /// and between keep-alive requests; then the connection is closed.
    pub header_read_timeout: Duration,
    /// How long one request may take, gRPC or HTTP, before it is answered with an error.
    pub request_timeout: Duration,
    /// Idle time before TCP keepalive probes (and HTTP/2 pings on gRPC) check the peer.
    pub tcp_keepalive: Duration,
    /// Largest gRPC request message decoded; larger ones are refused (`OUT_OF_RANGE`)
    /// from their length prefix, before any of it is buffered.
    pub grpc_max_message_size: usize,
    /// Concurrent HTTP/2 streams per gRPC connection.
    pub grpc_max_concurrent_streams: u32,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            grpc_max_connections: 4096,
            http_max_connections: 4096,
            admin_max_connections: 64,
            // An ingress sends its auth subrequest's head at once; 10 s is generous for a
            // real client and short for a slowloris.
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            // A CheckRequest is a few KiB: the PEM certificate (~1-2 KiB per certificate)
            // and the request headers (Envoy's default cap is 60 KiB). 1 MiB leaves room
            // for `with_request_body` and long chains; tonic's default is 4 MiB.
            grpc_max_message_size: 1 << 20,
            grpc_max_concurrent_streams: 1024,
        }
    }
}

/// The way in a forwarded-certificate header is believed on (`forwarded_certificates[].via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The ext_authz gRPC listener. Envoy passes client headers through, so only XFCC from an
    /// Envoy that replaces any client-sent copy (`forward_client_cert_details: SANITIZE_SET`)
    /// is acceptable here.
    ExtAuthz,
    /// The HTTP forward-auth listener: the ingress that calls certgate sets the header itself.
    ForwardAuth,
}

impl Via {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::ExtAuthz => "ext_authz",
            Via::ForwardAuth => "forward_auth",
        }
    }
}

/// Who may hand certgate a forwarded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxy {
    /// Callers from this network (the ext_authz gRPC peer, or the forward-auth HTTP peer).
    Net(ipnet::IpNet),
    /// Callers on the unix socket (a sidecar Envoy; ext_authz only).
    Unix,
}

/// A header that carries a client certificate, the way in it is read on, and the proxies
/// trusted to set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedSource {
    /// The listener this header is read on; it is ignored on the other.
    pub via: Via,
    /// Lowercase header name.
    pub header: String,
    /// How the certificate is encoded in it.
    pub encoding: CertEncoding,
    /// Callers whose header is believed; from anyone else it is ignored.
    pub trusted: Vec<TrustedProxy>,
}

impl ForwardedSource {
    /// Whether a caller at `peer` (`None`: the unix socket) may set this header.
    /// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`, what a dual-stack listener reports) are
    /// judged as the IPv4 address they are.
    pub fn trusts(&self, peer: Option<std::net::IpAddr>) -> bool {
        let peer = peer.map(|ip| ip.to_canonical());
        self.trusted.iter().any(|t| match (t, peer) {
            (TrustedProxy::Unix, None) => true,
            (TrustedProxy::Net(net), Some(ip)) => net.contains(&ip),
            _ => false,
        })
    }
}

/// Which pair of headers an ingress sends the original request's method and URI in
/// (`forward_auth.request_headers`). Only that pair is read: a client can add the other
/// pair, and most ingresses pass it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestHeaders {
    /// `X-Original-Method` / `X-Original-URI`: nginx `auth_request`, ingress-nginx.
    Original,
    /// `X-Forwarded-Method` / `X-Forwarded-Uri`: Traefik `forwardAuth`, Caddy `forward_auth`.
    Forwarded,
}

impl RequestHeaders {
    /// The (method, URI) header names, lowercase.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            RequestHeaders::Original => ("x-original-method", "x-original-uri"),
            RequestHeaders::Forwarded => ("x-forwarded-method", "x-forwarded-uri"),
        }
    }
}

/// Which store backend and how it is cached.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend.
    pub backend: StoreBackend,
    /// Cache in front of it.
    pub cache: CacheSettings,
}

/// `store.backend` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// One SQLite file (`store.path`).
    Embedded {
        /// Path of the SQLite file.
        path: PathBuf,
    },
    /// Amazon DynamoDB tables (`store.dynamodb`).
    DynamoDb(DynamoSettings),
}

/// Names of the identity headers set on allow and removed from every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// Principal id.
    pub principal: String,
    /// Principal type.
    pub principal_type: String,
    /// Comma-separated roles.
    pub roles: String,
    /// Subject CN.
    pub cn: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// SPIFFE id, when present.
    pub spiffe_id: String,
}

impl HeaderNames {
    /// Every identity header name, for `headers_to_remove`.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.principal,
            &self.principal_type,
            &self.roles,
            &self.cn,
            &self.serial,
            &self.sha256,
            &self.spiffe_id,
        ]
    }
}

/// A validated configuration: every file it names has been read and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The YAML file it came from.
    pub source: PathBuf,
    /// Listeners (changes need a restart).
    pub listen: Listen,
    /// CAs client certificates must chain to.
    pub trust: TrustBundle,
    /// Rows 3–5 settings.
    pub certificate_rules: CertificateRules,
    /// How identity fields are read.
    pub identity: IdentityRules,
    /// Cache of parsed identities: TTL and bound.
    pub identity_cache: CacheSettings,
    /// Store backend (changes need a restart).
    pub store: StoreConfig,
    /// Type sources and default roles.
    pub principal_rules: PrincipalRules,
    /// Named policies.
    pub policies: HashMap<String, Arc<Policy>>,
    /// Policy used when the request names none.
    pub default_policy: String,
    /// Identity header names.
    pub headers: HeaderNames,
    /// Client-visible deny detail.
    pub deny_detail: DenyDetail,
    /// How often files are checked for changes.
    pub reload_interval: Duration,
    /// Every file this config depends on (itself included), for reload.
    pub watched_files: Vec<PathBuf>,
    /// CRL sources and freshness per issuing CA.
    pub crl: CrlConfig,
    /// Headers that may carry a client certificate, each with the proxies trusted to set it
    /// (none by default: a forwarded certificate is never trusted unless configured).
    pub forwarded_certificates: Vec<ForwardedSource>,
    /// The headers the forward-auth listener reads the original method and URI from
    /// (required when `listen.http` is set).
    pub forward_auth_request_headers: Option<RequestHeaders>,
}

impl Config {
    /// Whether some policy requires a usable CRL (so `/readyz` waits for CRLs).
    pub fn crl_required(&self) -> bool {
        !self.crl.issuers.is_empty()
            && self.policies.values().any(|p| {
                matches!(
                    p.revocation,
                    RevocationPolicy::Required | RevocationPolicy::Strict
                )
            })
    }
}

/// One problem, with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `policies.admin.max_lifetime`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The configuration cannot be used; lists every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem, in key order of discovery.
    pub problems: Vec<Problem>,
    /// The files this version names (itself included), so a reload loop can notice the fix.
    pub watched_files: Vec<PathBuf>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Read, parse and validate `path` and every file it names, at the current time (a CA of
    /// the trust bundle that has expired is refused).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut watched = Vec::new();
        let result = std::fs::read_to_string(path)
            .map_err(|e| {
                vec![Problem {
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                }]
            })
            .and_then(|text| {
                Self::validate_yaml(&text, path, &mut watched, Some(crate::clock::unix_now()))
            });
        result.map_err(|problems| ConfigError {
            file: path.to_owned(),
            problems,
            watched_files: if watched.is_empty() {
                vec![path.to_owned()]
            } else {
                watched
            },
        })
    }

    /// Parse and validate YAML text; relative paths are resolved against `path`'s directory.
    /// Pure: the clock is not read, so the validity of the bundle's CAs is not judged here
    /// (checks still judge it per request).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
        Self::validate_yaml(text, path, &mut Vec::new(), None)
    }

    fn validate_yaml(
        text: &str,
        path: &Path,
        watched: &mut Vec<PathBuf>,
        now: Option<i64>,
    ) -> Result<Config, Vec<Problem>> {
        let raw = parse_raw(text)?;
        Validator {
            base: path.parent().unwrap_or(Path::new(".")),
            problems: Vec::new(),
            now,
        }
        .validate(raw, path, watched)
    }
}

/// Deserialize one section, recording a problem with its key path on failure.
fn section<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_norway::Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| {
            let inner = e.path().to_string();
            let key = match (prefix, inner.as_str()) {
                (p, ".") => p.to_owned(),
                ("", i) => i.to_owned(),
                (p, i) => format!("{p}.{i}"),
            };
            let message = e.into_inner().to_string();
            let message = message
                .strip_prefix(&format!("{key}: "))
                .unwrap_or(&message)
                .to_owned();
            problems.push(Problem { key, message });
        })
        .ok()
}

/// [`section`] for its problems only.
fn check<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_norway::Value,
    problems: &mut Vec<Problem>,
) {
    let _ = section::<T>(prefix, value, problems);
}

/// YAML → `Raw`, checking each section (and each policy) on its own first so that one typo
/// does not hide the others: every problem is reported at once.
fn parse_raw(text: &str) -> Result<Raw, Vec<Problem>> {
    use serde_norway::Value;
    let value: Value = serde_norway::from_str(text).map_err(|e| {
        vec![Problem {
            key: String::new(),
            message: format!("not valid YAML: {e}"),
        }]
    })?;
    let mut problems = Vec::new();
    if let Value::Mapping(map) = &value {
        for (key, v) in map {
            let name = key.as_str().unwrap_or("?");
            let v = v.clone();
            let p = &mut problems;
            match name {
                "listen" => check::<RawListen>(name, v, p),
                "trust" => check::<RawTrust>(name, v, p),
                "identity" => check::<RawIdentity>(name, v, p),
                "store" => check::<RawStore>(name, v, p),
                "roles_by_type" => check::<HashMap<String, Vec<String>>>(name, v, p),
                "default_policy" => check::<String>(name, v, p),
                "headers" => check::<RawHeaders>(name, v, p),
                "response" => check::<RawResponse>(name, v, p),
                "reload" => check::<RawReload>(name, v, p),
                "crl" => check::<RawCrl>(name, v, p),
                "forwarded_certificates" => check::<Vec<RawForwarded>>(name, v, p),
                "forward_auth" => check::<RawForwardAuth>(name, v, p),
                "policies" => match v {
                    Value::Mapping(policies) => {
                        for (policy, pv) in policies {
                            let key = format!("policies.{}", policy.as_str().unwrap_or("?"));
                            check::<RawPolicy>(&key, pv, p);
                        }
                    }
                    other => check::<HashMap<String, RawPolicy>>(name, other, p),
                },
                other => p.push(Problem {
                    key: other.to_owned(),
                    message: "unknown key".into(),
                }),
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // Every section parsed on its own: what is left is the whole (e.g. a missing section).
    section::<Raw>("", value, &mut problems).ok_or(problems)
}

struct Validator<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
    /// When set (Unix seconds), trust anchors expired at this time are refused.
    now: Option<i64>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// A duration no longer than what its consumer accepts ([`max_duration`]); a value that
    /// does not parse or is too long is a problem (and ZERO, or the maximum, stands in).
    fn duration(&mut self, key: &str, text: &str) -> Duration {
        let parsed = humantime::parse_duration(text).unwrap_or_else(|e| {
            self.problem(
                key,
                format!("\"{text}\" is not a duration ({e}); use e.g. 30s, 5m, 7d"),
            );
            Duration::ZERO
        });
        let max = max_duration(key);
        if parsed > max {
            self.problem(
                key,
                format!(
                    "\"{text}\" is more than the maximum of {}",
                    humantime::format_duration(max)
                ),
            );
            return max;
        }
        parsed
    }

    /// A count in `min..=max`; outside it a problem, and the nearest bound.
    fn count(&mut self, key: &str, value: u64, min: u64, max: u64) -> u64 {
        if !(min..=max).contains(&value) {
            self.problem(key, format!("{value} is outside {min}..={max}"));
        }
        value.clamp(min, max)
    }

    fn limits(&mut self, raw: &RawLimits) -> ListenLimits {
        let key = |k: &str| format!("listen.limits.{k}");
        let mut connections = |k: &str, v: u64| {
            // More than a million descriptors is beyond any RLIMIT_NOFILE we would get.
            self.count(&key(k), v, 1, 1_000_000) as usize
        };
        let grpc_max_connections = connections("grpc_max_connections", raw.grpc_max_connections);
        let http_max_connections = connections("http_max_connections", raw.http_max_connections);
        let admin_max_connections = connections("admin_max_connections", raw.admin_max_connections);
        let mut positive = |k: &str, text: &str| {
            let d = self.duration(&key(k), text);
            if d.is_zero() && humantime::parse_duration(text).is_ok() {
                self.problem(key(k), "must be greater than zero");
            }
            d
        };
        let header_read_timeout = positive("header_read_timeout", &raw.header_read_timeout);
        let request_timeout = positive("request_timeout", &raw.request_timeout);
        let tcp_keepalive = positive("tcp_keepalive", &raw.tcp_keepalive);
        let size_key = key("grpc_max_message_size");
        let reported = self.problems.len();
        let size = self.size(&size_key, &raw.grpc_max_message_size);
        // 4 KiB: below that not even a certificate fits; 64 MiB: past that one request
        // could hold a noticeable share of a replica's memory.
        let grpc_max_message_size = if self.problems.len() == reported {
            self.count(&size_key, size, 4 << 10, 64 << 20) as usize
        } else {
            ListenLimits::default().grpc_max_message_size
        };
        let grpc_max_concurrent_streams = self.count(
            &key("grpc_max_concurrent_streams"),
            raw.grpc_max_concurrent_streams,
            1,
            100_000,
        ) as u32;
        ListenLimits {
            grpc_max_connections,
            http_max_connections,
            admin_max_connections,
            header_read_timeout,
            request_timeout,
            tcp_keepalive,
            grpc_max_message_size,
            grpc_max_concurrent_streams,
        }
    }

    fn addr(&mut self, key: &str, text: Option<&str>) -> Option<SocketAddr> {
        let text = text.filter(|t| !t.is_empty())?;
        text.parse()
            .map_err(|_| {
                self.problem(
                    key,
                    format!("\"{text}\" is not an address like 127.0.0.1:9001"),
                )
            })
            .ok()
    }

    fn dynamodb(&mut self, raw: RawDynamo) -> DynamoSettings {
        let key = |k: &str| format!("store.dynamodb.{k}");
        for (name, table) in [
            ("principals_table", &raw.principals_table),
            ("certificates_table", &raw.certificates_table),
        ] {
            // DynamoDB's own rule for table names.
            let valid = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                self.problem(
                    key(name),
                    format!(
                        "\"{table}\" is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"
                    ),
                );
            }
        }
        if raw.principals_table == raw.certificates_table {
            self.problem(
                key("certificates_table"),
                "must differ from store.dynamodb.principals_table",
            );
        }
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            self.problem(
                key("endpoint_url"),
                format!("\"{url}\" is not an http:// or https:// URL"),
            );
        }
        if raw.max_attempts == 0 {
            self.problem(key("max_attempts"), "must be at least 1");
        }
        let timeout = self.duration(&key("timeout"), &raw.timeout);
        let attempt_timeout = self.duration(&key("attempt_timeout"), &raw.attempt_timeout);
        let admin_timeout = self.duration(&key("admin_timeout"), &raw.admin_timeout);
        for (name, d) in [
            ("timeout", timeout),
            ("attempt_timeout", attempt_timeout),
            ("admin_timeout", admin_timeout),
        ] {
            if d.is_zero() {
                self.problem(key(name), "must be more than 0");
            }
        }
        if attempt_timeout > timeout {
            self.problem(
                key("attempt_timeout"),
                "is longer than store.dynamodb.timeout (the deadline of all attempts)",
            );
        }
        let purge_expired_after = raw
            .purge_expired_after
            .as_deref()
            .map(|t| self.duration(&key("purge_expired_after"), t));
        DynamoSettings {
            region: raw.region.filter(|r| !r.is_empty()),
            endpoint_url: raw.endpoint_url.filter(|u| !u.is_empty()),
            principals_table: raw.principals_table,
            certificates_table: raw.certificates_table,
            timeout,
            attempt_timeout,
            max_attempts: raw.max_attempts,
            admin_timeout,
            purge_expired_after,
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        self.base.join(text)
    }

    fn read_file(&mut self, key: &str, text: &str, watched: &mut Vec<PathBuf>) -> Option<Vec<u8>> {
        let path = self.path(text);
        watched.push(path.clone());
        std::fs::read(&path)
            .map_err(|e| self.problem(key, format!("cannot read {}: {e}", path.display())))
            .ok()
    }

    fn oid(&mut self, key: &str, text: &str) -> Oid<'static> {
        match text.parse::<Oid<'static>>() {
            Ok(oid) if text.contains('.') => oid,
            _ => {
                self.problem(
                    key,
                    format!("\"{text}\" is not a dotted OID like 1.3.6.1.4.1.59999.1.1"),
                );
                Oid::new(std::borrow::Cow::Borrowed(&[]))
            }
        }
    }

    fn header(&mut self, key: &str, name: String) -> String {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            self.problem(key, format!("\"{name}\" is not a valid header name"));
        }
        name.to_ascii_lowercase()
    }

    fn validate(
        mut self,
        raw: Raw,
        source: &Path,
        watched: &mut Vec<PathBuf>,
    ) -> Result<Config, Vec<Problem>> {
        watched.push(source.to_owned());

        let listen = Listen {
            grpc: self.addr("listen.grpc", raw.listen.grpc.as_deref()),
            grpc_unix: raw
                .listen
                .grpc_unix
                .filter(|p| !p.is_empty())
                .map(|p| self.path(&p)),
            admin: self.addr("listen.admin", raw.listen.admin.as_deref()),
            http: self.addr("listen.http", raw.listen.http.as_deref()),
            limits: self.limits(&raw.listen.limits),
        };
        if listen.grpc.is_none() && listen.grpc_unix.is_none() && listen.http.is_none() {
            self.problem(
                "listen",
                "none of listen.grpc, listen.grpc_unix and listen.http is set: nothing to serve",
            );
        }

        let trust = self
            .read_file("trust.ca_bundle", &raw.trust.ca_bundle, watched)
            .and_then(|pem| {
                TrustBundle::from_pem(&pem)
                    .map_err(|e| self.problem("trust.ca_bundle", e.to_string()))
                    .ok()
            });
        let certificate_rules = CertificateRules {
            clock_skew_secs: self
                .duration("trust.clock_skew", &raw.trust.clock_skew)
                .as_secs() as i64,
            require_client_auth_eku: raw.trust.require_client_auth_eku,
        };
        if let (Some(now), Some(trust)) = (self.now, &trust) {
            self.no_expired_anchors(trust, now, certificate_rules.clock_skew_secs);
        }

        let id = &raw.identity;
        if id.principal_id_sources.is_empty() {
            self.problem(
                "identity.principal_id_sources",
                "must name at least one source",
            );
        }
        let identity = IdentityRules {
            principal_id_sources: id.principal_id_sources.clone(),
            principal_id_oid: self.oid("identity.principal_id_oid", &id.principal_id_oid),
            principal_type_sources: id.principal_type_sources.clone(),
            principal_type_oid: self.oid("identity.principal_type_oid", &id.principal_type_oid),
        };
        let identity_cache = CacheSettings {
            ttl: self.duration("identity.cache_ttl", &id.cache_ttl),
            max_entries: id.cache_max_entries,
            stale_if_error: Duration::ZERO,
        };

        let backend = match raw.store.backend.as_str() {
            "embedded" => {
                if raw.store.dynamodb.is_some() {
                    self.problem(
                        "store.dynamodb",
                        "set, but store.backend is embedded (set store.backend: dynamodb)",
                    );
                }
                StoreBackend::Embedded {
                    path: self.path(&raw.store.path),
                }
            }
            "dynamodb" => {
                StoreBackend::DynamoDb(self.dynamodb(raw.store.dynamodb.unwrap_or_default()))
            }
            other => {
                self.problem(
                    "store.backend",
                    format!("unknown backend \"{other}\" (supported: embedded, dynamodb)"),
                );
                StoreBackend::Embedded {
                    path: self.path(&raw.store.path),
                }
            }
        };
        let store = StoreConfig {
            cache: CacheSettings {
                ttl: self.duration("store.cache_ttl", &raw.store.cache_ttl),
                max_entries: raw.store.cache_max_entries,
                stale_if_error: match &raw.store.stale_if_error {
                    Some(text) => self.duration("store.stale_if_error", text),
                    // A shared network store has outages a local file does not: by default
                    // a replica keeps answering for principals it has seen for one minute.
                    None if matches!(backend, StoreBackend::DynamoDb(_)) => Duration::from_secs(60),
                    None => Duration::ZERO,
                },
            },
            backend,
        };

        let mut policy_names: Vec<_> = raw.policies.keys().cloned().collect();
        policy_names.sort();
        let mut raw_policies = raw.policies;
        let mut policies = HashMap::new();
        for name in policy_names {
            let Some(rp) = raw_policies.remove(&name) else {
                continue;
            };
            let policy = self.policy(&name, rp, watched);
            policies.insert(name, Arc::new(policy));
        }
        if policies.is_empty() {
            self.problem("policies", "at least one policy is required");
        } else if !policies.contains_key(&raw.default_policy) {
            self.problem(
                "default_policy",
                format!("\"{}\" is not one of the policies", raw.default_policy),
            );
        }

        let h = raw.headers;
        let headers = HeaderNames {
            principal: self.header("headers.principal", h.principal),
            principal_type: self.header("headers.principal_type", h.principal_type),
            roles: self.header("headers.roles", h.roles),
            cn: self.header("headers.cn", h.cn),
            serial: self.header("headers.serial", h.serial),
            sha256: self.header("headers.sha256", h.sha256),
            spiffe_id: self.header("headers.spiffe_id", h.spiffe_id),
        };
        let reload_interval = self.duration("reload.interval", &raw.reload.interval);
        if reload_interval.is_zero() {
            self.problem("reload.interval", "must be greater than zero");
        }

        let crl = self.crl(raw.crl, trust.as_ref());
        let forwarded_certificates = raw
            .forwarded_certificates
            .into_iter()
            .enumerate()
            .map(|(i, f)| self.forwarded(i, f))
            .collect();
        let forward_auth_request_headers = raw.forward_auth.request_headers;
        if listen.http.is_some() && forward_auth_request_headers.is_none() {
            self.problem(
                "forward_auth.request_headers",
                "listen.http is set: name the headers your ingress sends the original request \
                 in, `original` (X-Original-Method/X-Original-URI: nginx, ingress-nginx) or \
                 `forwarded` (X-Forwarded-Method/X-Forwarded-Uri: Traefik, Caddy)",
            );
        }

        match (trust, self.problems.is_empty()) {
            (Some(trust), true) => Ok(Config {
                source: source.to_owned(),
                listen,
                trust,
                certificate_rules,
                identity,
                identity_cache,
                store,
                principal_rules: PrincipalRules {
                    type_sources: raw.identity.principal_type_sources,
                    roles_by_type: raw.roles_by_type,
                },
                policies,
                default_policy: raw.default_policy,
                headers,
                deny_detail: raw.response.deny_detail,
                reload_interval,
                watched_files: watched.clone(),
                crl,
                forwarded_certificates,
                forward_auth_request_headers,
            }),
            _ => Err(self.problems),
        }
    }

    fn forwarded(&mut self, i: usize, raw: RawForwarded) -> ForwardedSource {
        let key = format!("forwarded_certificates[{i}]");
        let header = self.header(&format!("{key}.header"), raw.header);
        let via = raw.via.unwrap_or_else(|| {
            self.problem(
                format!("{key}.via"),
                "name the way in this header is believed on: `forward_auth` (the ingress that \
                 calls the HTTP listener sets it) or `ext_authz` (only x-forwarded-client-cert \
                 from an Envoy with forward_client_cert_details: SANITIZE_SET)",
            );
            Via::ForwardAuth
        });
        match via {
            Via::ExtAuthz => {
                // Envoy copies every client header into the CheckRequest; the only header it
                // rewrites itself is XFCC, and only under SANITIZE_SET (SANITIZE drops it).
                if header != "x-forwarded-client-cert" || raw.format != CertEncoding::Xfcc {
                    self.problem(
                        format!("{key}.header"),
                        format!(
                            "\"{header}\" (format {}) cannot be trusted via ext_authz: Envoy \
                             passes client-sent headers through to certgate, so a client without \
                             a certificate could send any enrolled certificate in it; via \
                             ext_authz only `x-forwarded-client-cert` with `format: xfcc` is \
                             accepted",
                            raw.format.as_str()
                        ),
                    );
                }
                if raw.envoy_forward_client_cert.as_deref() != Some("sanitize_set") {
                    self.problem(
                        format!("{key}.envoy_forward_client_cert"),
                        "via ext_authz, XFCC is trusted only from an Envoy that replaces any \
                         client-sent copy: configure its HTTP connection manager with \
                         forward_client_cert_details: SANITIZE_SET (Istio: gatewayTopology \
                         forwardClientCertDetails: SANITIZE_SET) and say so here with \
                         `envoy_forward_client_cert: sanitize_set`",
                    );
                }
            }
            Via::ForwardAuth => {
                if raw.envoy_forward_client_cert.is_some() {
                    self.problem(
                        format!("{key}.envoy_forward_client_cert"),
                        "only meaningful with via: ext_authz",
                    );
                }
            }
        }
        if raw.trusted_proxies.is_empty() {
            self.problem(
                format!("{key}.trusted_proxies"),
                "name the proxies allowed to set this header (CIDRs, or \"unix\" for ext_authz)",
            );
        }
        let trusted = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(j, text)| {
                let at = format!("{key}.trusted_proxies[{j}]");
                if text == "unix" {
                    if via == Via::ForwardAuth {
                        self.problem(
                            at,
                            "\"unix\" names callers of the gRPC unix socket; the forward-auth \
                             listener is TCP only",
                        );
                        return None;
                    }
                    return Some(TrustedProxy::Unix);
                }
                let net = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                net.map(|n| TrustedProxy::Net(canonical_net(n)))
                    .map_err(|_| {
                        self.problem(
                            at,
                            format!("\"{text}\" is not a CIDR, an IP address or \"unix\""),
                        )
                    })
                    .ok()
            })
            .collect();
        ForwardedSource {
            via,
            header,
            encoding: raw.format,
            trusted,
        }
    }

    fn size(&mut self, key: &str, raw: &RawSize) -> u64 {
        let text = match raw {
            RawSize::Bytes(n) => return *n,
            RawSize::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let factor: Option<u64> = match unit.trim() {
            "" | "B" => Some(1),
            "KiB" | "K" | "KB" => Some(1 << 10),
            "MiB" | "M" | "MB" => Some(1 << 20),
            "GiB" | "G" | "GB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<u64>(), factor) {
            (Ok(n), Some(f)) if n.checked_mul(f).is_some() => n * f,
            _ => {
                self.problem(
                    key,
                    format!("\"{text}\" is not a size; use e.g. 64MiB, 512KiB or a byte count"),
                );
                0
            }
        }
    }

    fn crl(&mut self, raw: RawCrl, trust: Option<&TrustBundle>) -> CrlConfig {
        let max_age = self.duration("crl.max_age", &raw.max_age);
        if max_age.is_zero() {
            self.problem("crl.max_age", "must be greater than zero");
        }
        let grace = self.duration("crl.next_update_grace", &raw.next_update_grace);
        let url_interval = self.duration("crl.refresh_interval", &raw.refresh_interval);
        let file_interval = self.duration("crl.file_refresh_interval", &raw.file_refresh_interval);
        let timeout = self.duration("crl.timeout", &raw.timeout);
        let retry_backoff = self.duration("crl.retry_backoff", &raw.retry_backoff);
        let max_retry_backoff = self.duration("crl.max_retry_backoff", &raw.max_retry_backoff);
        for (key, d) in [
            ("crl.refresh_interval", url_interval),
            ("crl.file_refresh_interval", file_interval),
            ("crl.timeout", timeout),
            ("crl.retry_backoff", retry_backoff),
        ] {
            if d.is_zero() {
                self.problem(key, "must be greater than zero");
            }
        }
        let max_size = self.size("crl.max_size", &raw.max_size);
        // Subjects of the bundle's CAs, as text and DER, to resolve `ca:`.
        let subjects: Vec<(String, Vec<u8>)> = trust
            .map(|t| {
                t.ca_certificates()
                    .iter()
                    .filter_map(|der| {
                        use x509_parser::prelude::FromDer;
                        let (_, c) =
                            x509_parser::certificate::X509Certificate::from_der(der).ok()?;
                        Some((c.subject().to_string(), c.subject().as_raw().to_vec()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut issuers: Vec<CrlIssuer> = Vec::new();
        for (i, ri) in raw.issuers.into_iter().enumerate() {
            let key = format!("crl.issuers[{i}]");
            let found = subjects.iter().find(|(text, _)| dn_matches(&ri.ca, text));
            let (name, subject_der) = match (found, trust) {
                (Some((text, der)), _) => (text.clone(), der.clone()),
                (None, Some(_)) => {
                    let known: Vec<String> =
                        subjects.iter().map(|(t, _)| format!("'{t}'")).collect();
                    self.problem(
                        format!("{key}.ca"),
                        format!(
                            "no CA of the trust bundle has the subject '{}' (the bundle has: {})",
                            ri.ca,
                            known.join(", ")
                        ),
                    );
                    continue;
                }
                // The bundle itself is broken; that problem is already reported.
                (None, None) => continue,
            };
            if issuers.iter().any(|other| other.name == name) {
                self.problem(
                    format!("{key}.ca"),
                    format!("'{name}' is configured twice; list all its sources under one entry"),
                );
                continue;
            }
            if ri.sources.is_empty() {
                self.problem(
                    format!("{key}.sources"),
                    "must list at least one url or file",
                );
            }
            let mut sources = Vec::new();
            for (j, rs) in ri.sources.into_iter().enumerate() {
                let skey = format!("{key}.sources[{j}]");
                let (location, default_interval) = match (rs.url, rs.file) {
                    (Some(url), None) => {
                        let lower = url.to_ascii_lowercase();
                        if !(lower.starts_with("http://") || lower.starts_with("https://"))
                            || url.parse::<axum::http::Uri>().is_err()
                        {
                            self.problem(
                                format!("{skey}.url"),
                                format!("\"{url}\" is not an http:// or https:// URL"),
                            );
                        }
                        (CrlLocation::Url(url), url_interval)
                    }
                    (None, Some(file)) => (CrlLocation::File(self.path(&file)), file_interval),
                    _ => {
                        self.problem(skey, "give exactly one of url or file");
                        continue;
                    }
                };
                let refresh_interval = match rs.refresh_interval {
                    Some(text) => {
                        let d = self.duration(&format!("{skey}.refresh_interval"), &text);
                        if d.is_zero() {
                            self.problem(
                                format!("{skey}.refresh_interval"),
                                "must be greater than zero",
                            );
                        }
                        d
                    }
                    None => default_interval,
                };
                sources.push(CrlSource {
                    location,
                    refresh_interval,
                });
            }
            let issuer_max_age = match &ri.max_age {
                Some(t) => self.duration(&format!("{key}.max_age"), t),
                None => max_age,
            };
            let issuer_grace = match &ri.next_update_grace {
                Some(t) => self.duration(&format!("{key}.next_update_grace"), t),
                None => grace,
            };
            issuers.push(CrlIssuer {
                name,
                subject_der,
                freshness: Freshness {
                    max_age_secs: issuer_max_age.as_secs() as i64,
                    next_update_grace_secs: issuer_grace.as_secs() as i64,
                },
                sources,
            });
        }
        self.crl_keys_are_not_shared(&issuers, trust);
        let cache_dir = raw
            .cache_dir
            .filter(|d| !d.is_empty())
            .map(|d| self.path(&d).components().collect::<PathBuf>());
        let high_water_file = self.crl_high_water_file(raw.high_water_file, cache_dir.as_deref());
        CrlConfig {
            readiness: raw.readiness,
            timeout,
            retry_backoff,
            max_retry_backoff: max_retry_backoff.max(retry_backoff),
            max_size,
            cache_dir,
            high_water_file,
            follow_redirects: raw.follow_redirects,
            issuers,
        }
    }

    /// An expired CA validates nothing (checks deny its certificates `untrusted_issuer`); in
    /// the bundle it is a mistake to fix, so the configuration is refused (fail fast).
    fn no_expired_anchors(&mut self, trust: &TrustBundle, now: i64, skew: i64) {
        for ca in trust.expired(now, skew) {
            self.problem(
                "trust.ca_bundle",
                format!(
                    "CA #{} '{}' expired at {} and validates nothing: remove it from the bundle",
                    ca.position,
                    ca.subject,
                    crate::authz::rfc3339(ca.not_after)
                ),
            );
        }
    }

    /// CRL state is keyed by CA key; one key under two configured issuer names would make
    /// one name's CRL decide for the other's certificates.
    fn crl_keys_are_not_shared(&mut self, issuers: &[CrlIssuer], trust: Option<&TrustBundle>) {
        let Some(trust) = trust else { return };
        let configured =
            |ca: &crate::cert::Anchor| issuers.iter().any(|i| i.subject_der == ca.subject_der);
        let cas: Vec<_> = trust.cas().iter().filter(|ca| configured(ca)).collect();
        for (i, a) in cas.iter().enumerate() {
            if let Some(b) = cas[..i]
                .iter()
                .find(|b| b.key == a.key && b.subject_der != a.subject_der)
            {
                self.problem(
                    "crl.issuers",
                    format!(
                        "CAs #{} '{}' and #{} '{}' of the trust bundle share one key ({}) under two names;                          certgate keeps CRLs per CA key, so configure CRLs for one of them only",
                        b.position, b.subject, a.position, a.subject, a.key
                    ),
                );
            }
        }
    }

    /// `crl.high_water_file`: as given, else beside `cache_dir` (`<cache_dir>.high-water.json`)
    /// when there is one; never inside it, where whoever can plant an old CRL could also
    /// lower the mark.
    fn crl_high_water_file(
        &mut self,
        raw: Option<String>,
        cache_dir: Option<&Path>,
    ) -> Option<PathBuf> {
        let file = match (raw.filter(|f| !f.is_empty()), cache_dir) {
            (Some(file), _) => self.path(&file).components().collect::<PathBuf>(),
            (None, Some(dir)) => {
                let mut file = dir.as_os_str().to_owned();
                file.push(".high-water.json");
                PathBuf::from(file)
            }
            (None, None) => return None,
        };
        if let Some(dir) = cache_dir
            && file.starts_with(dir)
        {
            self.problem(
                "crl.high_water_file",
                format!(
                    "{} is inside crl.cache_dir ({}): whoever can write the cache could lower                      the mark that keeps older CRLs out; put it elsewhere",
                    file.display(),
                    dir.display()
                ),
            );
        }
        Some(file)
    }

    fn policy(&mut self, name: &str, rp: RawPolicy, watched: &mut Vec<PathBuf>) -> Policy {
        let key = format!("policies.{name}");
        let max_lifetime_secs = rp.max_lifetime.map(|text| {
            let lifetime = self.duration(&format!("{key}.max_lifetime"), &text);
            // (A value that did not parse is already reported, as ZERO.)
            if lifetime.is_zero() && humantime::parse_duration(&text).is_ok() {
                self.problem(format!("{key}.max_lifetime"), "must be greater than zero");
            }
            i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)
        });
        let mut allowlist: Option<HashSet<String>> =
            rp.cn_allowlist.map(|l| l.into_iter().collect());
        if let Some(file) = rp.cn_allowlist_file {
            let file_key = format!("{key}.cn_allowlist_file");
            if let Some(bytes) = self.read_file(&file_key, &file, watched) {
                match String::from_utf8(bytes) {
                    Ok(text) => allowlist.get_or_insert_default().extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_owned),
                    ),
                    Err(_) => self.problem(file_key, "file is not UTF-8 text"),
                }
            }
        }
        let mut permissions = HashMap::new();
        for (role, patterns) in rp.permissions {
            let mut parsed = Vec::with_capacity(patterns.len());
            for (i, text) in patterns.iter().enumerate() {
                match Permission::parse(text) {
                    Ok(p) => parsed.push(p),
                    Err(e) => self.problem(format!("{key}.permissions.{role}[{i}]"), e.to_string()),
                }
            }
            permissions.insert(role, parsed);
        }
        Policy {
            name: name.to_owned(),
            max_lifetime_secs,
            require_enrolment: rp.require_enrolment,
            allowed_principal_types: rp.allowed_principal_types.map(|t| t.into_iter().collect()),
            cn_allowlist: allowlist,
            permissions,
            revocation: rp.revocation,
            paths: rp.paths,
        }
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is, so it
/// matches peers the way [`ForwardedSource::trusts`] sees them.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), len) if len >= 96 => {
                ipnet::Ipv4Net::new(v4, len - 96).map_or(net, ipnet::IpNet::V4)
            }
            _ => net,
        },
        v4 => v4,
    }
}

/// Whether a DN written in the configuration names the CA subject `ca` (as certgate prints
/// it): the same attributes and values in either order (openssl and RFC 4514 list them in
/// opposite orders), attribute types case-insensitive, spaces around `=` and `,` ignored.
fn dn_matches(configured: &str, ca: &str) -> bool {
    fn parts(dn: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut escaped = false;
        for c in dn.chars() {
            match c {
                _ if escaped => {
                    current.push(c);
                    escaped = false;
                }
                '\\' => {
                    current.push(c);
                    escaped = true;
                }
                ',' | '/' => out.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        out.push(current);
        out.into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim().to_ascii_uppercase(), v.trim()),
                None => p.trim().to_owned(),
            })
            .collect()
    }
    let (a, b) = (parts(configured), parts(ca));
    !a.is_empty() && (a == b || a.iter().eq(b.iter().rev()))
}

/// A watched file exists but cannot be read right now (out of descriptors, permissions, a
/// directory in its place): nothing is known about its contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// A cheap fingerprint of the contents of `files`, used to notice that a config, CA bundle
/// or allowlist changed. A missing file counts as empty (deleting or creating one is a
/// change); a file that cannot be read is an error, never a change: taking it for one made
/// a process out of descriptors reload, and flush its caches, once it could read again.
pub fn fingerprint(files: &[PathBuf]) -> Result<u64, Unreadable> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut hasher);
        let contents = match std::fs::read(f) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Unreadable {
                    path: f.clone(),
                    source,
                });
            }
        };
        contents.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_ca() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
        // Valid long after the tests run: `Config::load` refuses a bundle with an expired CA.
        let ca = crate::pki::CertAuthority::new("t", now, now + time::Duration::days(36_500))
            .expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
        std::fs::write(dir.path().join("admins.txt"), "# admins\nalice\n\nbob\n").expect("write");
        dir
    }

    fn load(dir: &tempfile::TempDir, yaml: &str) -> Result<Config, ConfigError> {
        let path = dir.path().join("certgate.yaml");
        std::fs::write(&path, yaml).expect("write");
        Config::load(&path)
    }

    const MINIMAL: &str = "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {}\n";

    #[test]
    fn minimal_config_has_sensible_defaults() {
        let dir = dir_with_ca();
        let config = load(&dir, MINIMAL).expect("valid");
        assert_eq!(
            config.listen.grpc,
            Some("127.0.0.1:9001".parse().expect("addr"))
        );
        assert_eq!(config.default_policy, "default");
        assert!(
            config.policies["default"].require_enrolment,
            "enrolment is required by default"
        );
        assert_eq!(config.headers.principal, "x-client-principal");
        assert_eq!(config.certificate_rules.clock_skew_secs, 60);
        assert_eq!(
            config.store.backend,
            StoreBackend::Embedded {
                path: dir.path().join("certgate.db")
            }
        );
        assert_eq!(config.store.cache.ttl, Duration::from_secs(5));
        assert!(config.watched_files.contains(&dir.path().join("ca.pem")));
        assert_eq!(
            config.principal_rules.type_sources.first(),
            Some(&PrincipalTypeSource::Store),
            "an enrolled principal's type is not overridden by a certificate's OU"
        );
    }

    #[test]
    fn allowlist_file_merges_with_inline_list() {
        let dir = dir_with_ca();
        let yaml = "trust: {ca_bundle: ca.pem}\npolicies:\n  default:\n    \
                    cn_allowlist: [carol]\n    cn_allowlist_file: admins.txt\n";
        let config = load(&dir, yaml).expect("valid");
        let list = config.policies["default"]
            .cn_allowlist
            .clone()
            .expect("has a list");
        let mut names: Vec<_> = list.into_iter().collect();
        names.sort();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert!(
            config
                .watched_files
                .contains(&dir.path().join("admins.txt"))
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let dir = dir_with_ca();
        let yaml = r#"
listen: {grpc: "nowhere", admin: "127.0.0.1:9901"}
trust: {ca_bundle: missing.pem, clock_skew: "soon"}
identity: {principal_id_oid: "not-an-oid"}
default_policy: nope
policies:
  admin:
    max_lifetime: "7x"
    cn_allowlist_file: absent.txt
    permissions:
      admin: ["GET"]
headers: {principal: "bad header"}
"#;
        let err = load(&dir, yaml).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "listen.grpc",
            "trust.ca_bundle",
            "trust.clock_skew",
            "identity.principal_id_oid",
            "policies.admin.max_lifetime",
            "policies.admin.cn_allowlist_file",
            "policies.admin.permissions.admin[0]",
            "default_policy",
            "headers.principal",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let text = err.to_string();
        assert!(
            text.contains("policies.admin.max_lifetime: \"7x\" is not a duration"),
            "{text}"
        );
    }

    #[test]
    fn unknown_and_mistyped_keys_name_their_path() {
        let dir = dir_with_ca();
        let err = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {max_lifetim: 7d}\n",
        )
        .expect_err("unknown key");
        assert_eq!(err.problems[0].key, "policies.default.max_lifetim");
        assert!(
            err.problems[0].message.contains("max_lifetim"),
            "{:?}",
            err.problems
        );
        let err = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {require_enrolment: maybe}\n",
        )
        .expect_err("wrong type");
        assert_eq!(err.problems[0].key, "policies.default.require_enrolment");
    }

    #[test]
    fn dynamodb_store_settings_and_defaults() {
        let dir = dir_with_ca();
        let config = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  \
             dynamodb: {principals_table: prod_principals, endpoint_url: 'http://127.0.0.1:8000'}\n",
        )
        .expect("valid");
        let StoreBackend::DynamoDb(d) = &config.store.backend else {
            panic!("dynamodb expected: {:?}", config.store.backend);
        };
        assert_eq!(d.principals_table, "prod_principals");
        assert_eq!(d.certificates_table, "certgate_certificates");
        assert_eq!(d.endpoint_url.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(d.timeout, Duration::from_millis(250));
        assert_eq!(d.max_attempts, 3);
        assert_eq!(
            config.store.cache.stale_if_error,
            Duration::from_secs(60),
            "a network store rides out short outages by default"
        );
        // No `dynamodb:` section at all: every default.
        let config = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {backend: dynamodb}\n",
        )
        .expect("valid");
        assert!(matches!(config.store.backend, StoreBackend::DynamoDb(_)));
    }

    #[test]
    fn bad_dynamodb_settings_are_all_reported() {
        let dir = dir_with_ca();
        let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  \
                    dynamodb:\n    principals_table: 'no spaces'\n    certificates_table: 'no spaces'\n    \
                    endpoint_url: localhost:8000\n    timeout: 100ms\n    attempt_timeout: 200ms\n    \
                    max_attempts: 0\n    admin_timeout: soon\n";
        let err = load(&dir, yaml).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "store.dynamodb.principals_table",
            "store.dynamodb.certificates_table",
            "store.dynamodb.endpoint_url",
            "store.dynamodb.attempt_timeout",
            "store.dynamodb.max_attempts",
            "store.dynamodb.admin_timeout",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let err = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {backend: redis}\n",
        )
        .expect_err("invalid");
        assert_eq!(err.problems[0].key, "store.backend");
        assert!(
            err.problems[0].message.contains("embedded, dynamodb"),
            "{}",
            err.problems[0]
        );
        let err = load(
            &dir,
            "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore: {dynamodb: {region: eu-west-1}}\n",
        )
        .expect_err("dynamodb settings without the backend");
        assert_eq!(err.problems[0].key, "store.dynamodb");
    }

    #[test]
    fn structural_problems_in_several_sections_are_all_reported() {
        let dir = dir_with_ca();
        let yaml = "trust: {ca_bundle: ca.pem, clock_skew: 2h}\nstore: {cache_tl: 5s}\n\
                    policies:\n  a: {require_enrolment: maybe}\n  b: {max_lifetime: 0s}\n  \
                    c: {permissions: 3}\nlisten: {grpc: 1}\nlisen: {}\n";
        let err = load(&dir, yaml).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "store.cache_tl",
            "policies.a.require_enrolment",
            "policies.c.permissions",
            "lisen",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        for p in &err.problems {
            assert!(!p.message.starts_with(&p.key), "path repeated in {p}");
        }
        // Structurally fine, semantically wrong: reported in the second pass.
        let yaml =
            "trust: {ca_bundle: ca.pem, clock_skew: 2h}\npolicies:\n  b: {max_lifetime: 0s}\n";
        let err = load(&dir, yaml).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"trust.clock_skew") && keys.contains(&"policies.b.max_lifetime"));
    }

    #[test]
    fn forwarded_sources_name_their_way_in_and_proxies() {
        let dir = dir_with_ca();
        let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nforwarded_certificates:\n  \
                    - {via: forward_auth, header: x-forwarded-client-cert, format: xfcc, trusted_proxies: []}\n  \
                    - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.0/33, unix]}\n  \
                    - {header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.1]}\n  \
                    - {via: ext_authz, header: ssl-client-cert, format: url_encoded_pem, envoy_forward_client_cert: sanitize_set, trusted_proxies: [unix]}\n  \
                    - {via: ext_authz, header: x-forwarded-client-cert, format: xfcc, envoy_forward_client_cert: append_forward, trusted_proxies: [unix]}\n  \
                    - {via: forward_auth, header: x-forwarded-client-cert, format: xfcc, envoy_forward_client_cert: sanitize_set, trusted_proxies: [10.0.0.1]}\n";
        let err = load(&dir, yaml).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "forwarded_certificates[0].trusted_proxies",
                "forwarded_certificates[1].trusted_proxies[0]",
                "forwarded_certificates[1].trusted_proxies[1]",
                "forwarded_certificates[2].via",
                "forwarded_certificates[3].header",
                "forwarded_certificates[4].envoy_forward_client_cert",
                "forwarded_certificates[5].envoy_forward_client_cert",
            ]
        );
        let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nforwarded_certificates:\n  \
                    - {via: ext_authz, header: X-Forwarded-Client-Cert, format: xfcc, envoy_forward_client_cert: sanitize_set, trusted_proxies: [10.0.0.0/8, 127.0.0.1, unix]}\n  \
                    - {via: forward_auth, header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [\"::ffff:192.168.0.0/120\"]}\n";
        let config = load(&dir, yaml).expect("valid");
        let source = &config.forwarded_certificates[0];
        assert_eq!(
            (source.via, source.header.as_str()),
            (Via::ExtAuthz, "x-forwarded-client-cert")
        );
        assert!(source.trusts(Some("10.1.2.3".parse().expect("ip"))));
        assert!(source.trusts(None), "unix socket callers");
        assert!(!source.trusts(Some("192.168.0.1".parse().expect("ip"))));
        // A dual-stack listener reports IPv4 callers as IPv4-mapped IPv6 addresses.
        assert!(source.trusts(Some("::ffff:127.0.0.1".parse().expect("ip"))));
        assert!(source.trusts(Some("::ffff:10.9.9.9".parse().expect("ip"))));
        assert!(!source.trusts(Some("::ffff:192.168.0.1".parse().expect("ip"))));
        let mapped = &config.forwarded_certificates[1];
        assert!(mapped.trusts(Some("192.168.0.7".parse().expect("ip"))));
        assert!(mapped.trusts(Some("::ffff:192.168.0.7".parse().expect("ip"))));
        assert!(!mapped.trusts(Some("192.168.1.7".parse().expect("ip"))));
        assert!(!mapped.trusts(None));
        assert!(
            load(&dir, MINIMAL)
                .expect("valid")
                .forwarded_certificates
                .is_empty(),
            "none by default"
        );
    }

    /// A valid configuration with `key` (dotted, e.g. `store.cache_ttl`) set to `value`.
    fn with(key: &str, value: &str) -> String {
        let (section, rest) = key.split_once('.').expect("dotted key");
        let nested = |inner: String| {
            rest.split('.')
                .rev()
                .fold(inner, |inner, k| format!("{{{k}: {inner}}}"))
        };
        match section {
            "trust" => format!(
                "trust: {{ca_bundle: ca.pem, {rest}: {value}}}\npolicies: {{default: {{}}}}\n"
            ),
            "policies" => format!(
                "trust: {{ca_bundle: ca.pem}}\npolicies: {}\n",
                nested(value.to_owned())
            ),
            _ => format!("{MINIMAL}{section}: {}\n", nested(value.to_owned())),
        }
    }

    #[test]
    fn every_duration_is_bounded_by_what_its_consumer_accepts() {
        let dir = dir_with_ca();
        // (key, largest accepted, refused): one row per duration key.
        let rows = [
            ("store.cache_ttl", "1d", "25h"),
            ("store.stale_if_error", "7d", "2000y"),
            ("identity.cache_ttl", "7d", "8d"),
            ("reload.interval", "1h", "61m"),
            ("trust.clock_skew", "1h", "2h"),
            ("crl.max_age", "366d", "367d"),
            ("crl.next_update_grace", "30d", "31d"),
            ("crl.refresh_interval", "7d", "8d"),
            ("crl.file_refresh_interval", "7d", "8d"),
            ("crl.timeout", "10m", "11m"),
            ("crl.retry_backoff", "1h", "2h"),
            ("crl.max_retry_backoff", "1d", "2d"),
            ("listen.limits.header_read_timeout", "10m", "11m"),
            ("listen.limits.request_timeout", "10m", "11m"),
            ("listen.limits.tcp_keepalive", "2h", "3h"),
            ("policies.default.max_lifetime", "36525d", "2000y"),
        ];
        for (key, ok, refused) in rows {
            load(&dir, &with(key, ok)).unwrap_or_else(|e| panic!("{key}: {ok}: {e}"));
            let err = load(&dir, &with(key, refused)).expect_err(refused);
            assert_eq!(err.problems.len(), 1, "{key}: {:?}", err.problems);
            assert_eq!(err.problems[0].key, key);
            assert!(
                err.problems[0].message.contains(refused)
                    && err.problems[0].message.contains("maximum"),
                "{}",
                err.problems[0]
            );
        }
        let dynamo = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\nstore:\n  backend: dynamodb\n  dynamodb: ";
        for (key, refused) in [
            ("timeout", "{timeout: 6m, attempt_timeout: 1s}"),
            ("attempt_timeout", "{timeout: 5m, attempt_timeout: 6m}"),
            ("admin_timeout", "{admin_timeout: 2h}"),
            ("purge_expired_after", "{purge_expired_after: 2000y}"),
        ] {
            let err = load(&dir, &format!("{dynamo}{refused}\n")).expect_err(refused);
            let key = format!("store.dynamodb.{key}");
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.key == key && p.message.contains("maximum")),
                "{key}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn listen_limits_defaults_and_bounds() {
        let dir = dir_with_ca();
        let limits = load(&dir, MINIMAL).expect("valid").listen.limits;
        assert_eq!(limits, ListenLimits::default());
        assert_eq!(limits.grpc_max_message_size, 1 << 20);
        let config = load(
            &dir,
            &format!(
                "{MINIMAL}listen:\n  limits: {{http_max_connections: 50, grpc_max_message_size: 256KiB, \
                 header_read_timeout: 2s}}\n"
            ),
        )
        .expect("valid");
        assert_eq!(config.listen.limits.http_max_connections, 50);
        assert_eq!(config.listen.limits.grpc_max_message_size, 256 << 10);
        assert_eq!(
            config.listen.limits.header_read_timeout,
            Duration::from_secs(2)
        );
        let err = load(
            &dir,
            &format!(
                "{MINIMAL}listen:\n  limits: {{grpc_max_connections: 0, admin_max_connections: 2000000, \
                 header_read_timeout: 0s, request_timeout: soon, tcp_keepalive: 0s, \
                 grpc_max_message_size: 1GiB, grpc_max_concurrent_streams: 0}}\n"
            ),
        )
        .expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.limits.grpc_max_connections",
                "listen.limits.admin_max_connections",
                "listen.limits.header_read_timeout",
                "listen.limits.request_timeout",
                "listen.limits.tcp_keepalive",
                "listen.limits.grpc_max_message_size",
                "listen.limits.grpc_max_concurrent_streams",
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever duration validation accepts builds the caches and timers without a
        /// panic (2000y used to panic in moka's builder; a huge TTL plus stale_if_error
        /// overflowed a `Duration` add).
        #[test]
        fn accepted_durations_never_panic_their_consumers(
            durations in proptest::collection::vec(
                (
                    proptest::prop_oneof![0u64..100, 0u64..100_000, 0u64..=u64::MAX],
                    proptest::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "w", "M", "y"]),
                ),
                4,
            ),
        ) {
            let dir = dir_with_ca();
            let text: Vec<String> = durations.iter().map(|(n, unit)| format!("{n}{unit}")).collect();
            let yaml = format!(
                "{MINIMAL}store: {{cache_ttl: {}, stale_if_error: {}}}\nidentity: {{cache_ttl: {}}}\nreload: {{interval: {}}}\n",
                text[0], text[1], text[2], text[3]
            );
            if let Ok(config) = load(&dir, &yaml) {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async {
                    let metrics = crate::metrics::Metrics::new();
                    let store = crate::store::open(&config.store.backend, crate::store::Purpose::Serve)
                        .await
                        .expect("embedded store");
                    let cached = crate::store::CachedStore::new(store, config.store.cache, metrics.clone());
                    let mut ticker = tokio::time::interval(config.reload_interval);
                    ticker.tick().await;
                    let checker = crate::check::Checker::new(config, cached, metrics);
                    let _ = checker.config();
                });
            }
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_a_change() {
        let dir = dir_with_ca();
        let file = dir.path().join("ca.pem");
        let missing = dir.path().join("absent.txt");
        let before = fingerprint(&[file.clone(), missing.clone()]).expect("readable");
        assert_eq!(fingerprint(&[file.clone(), missing]).ok(), Some(before));
        // A directory cannot be read as a file, as a file cannot without descriptors.
        let err = fingerprint(&[file, dir.path().to_owned()]).expect_err("unreadable");
        assert_eq!(err.path, dir.path());
    }

    #[test]
    fn forward_auth_names_its_request_headers() {
        let dir = dir_with_ca();
        let yaml =
            "listen: {http: 127.0.0.1:9002}\ntrust: {ca_bundle: ca.pem}\npolicies: {default: {}}\n";
        let err = load(&dir, yaml).expect_err("invalid");
        assert_eq!(err.problems[0].key, "forward_auth.request_headers");
        let config = load(
            &dir,
            &format!("{yaml}forward_auth: {{request_headers: forwarded}}\n"),
        )
        .expect("valid");
        assert_eq!(
            config
                .forward_auth_request_headers
                .map(RequestHeaders::names),
            Some(("x-forwarded-method", "x-forwarded-uri"))
        );
        assert!(
            load(
                &dir,
                &format!("{yaml}forward_auth: {{request_headers: both}}\n")
            )
            .is_err()
        );
    }

    #[test]
    fn garbage_ca_bundle_is_refused() {
        let dir = dir_with_ca();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").expect("write");
        let err = load(&dir, MINIMAL).expect_err("no CA");
        assert_eq!(err.problems[0].key, "trust.ca_bundle");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let dir = dir_with_ca();
        let example = include_str!("../deploy/certgate.example.yaml");
        std::fs::write(dir.path().join("cn-allowlist.txt"), "admin.example.com\n").expect("write");
        // The example's CRL issuer, added to the bundle.
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example Client CA");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let example_ca = params.self_signed(&key).expect("CA");
        let bundle = std::fs::read_to_string(dir.path().join("ca.pem")).expect("read");
        std::fs::write(dir.path().join("ca.pem"), bundle + &example_ca.pem()).expect("write");
        let config = load(&dir, example).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.policies.len() >= 2);
        assert_eq!(config.crl.issuers.len(), 1);
        assert_eq!(config.crl.issuers[0].sources.len(), 2);
        assert!(config.crl_required(), "fail-secure by default");
    }
}
