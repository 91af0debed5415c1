//! Configuration (README "Configuration"): YAML → `Raw` (serde, unknown keys refused) → validated `Config`.
//! Every problem is reported at once with its key path; the files a config names (CA bundle,
//! allowlists) are read here so a `Config` is always complete and usable.
//!
//! This module assembles the domain modules' own settings types (`crl`, `store`, `authz`,
//! `cert`); none of them knows the YAML file.

mod dn;
pub(crate) mod identity_headers;
mod problems;
mod raw;
mod reload;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use crate::store::StoreBackend;
pub use problems::{ConfigError, Problem};
pub use reload::{Unreadable, Watched};
use validate::Validator;

use crate::authz::{CertificateRules, Policy, PrincipalRules, RevocationPolicy};
use crate::cert::{CertEncoding, IdentityRules, TrustBundle};
use crate::crl::{CrlInputs, CrlSettings};
use crate::store::CacheSettings;

/// Default OID of the principal id extension (a private arc; configurable).
pub const DEFAULT_PRINCIPAL_ID_OID: &str = "1.3.6.1.4.1.59999.1.1";
/// Default OID of the principal type extension.
pub const DEFAULT_PRINCIPAL_TYPE_OID: &str = "1.3.6.1.4.1.59999.1.2";

/// How much of a deny the client sees in the response body (logs always have everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DenyDetail {
    /// Reason code and the full message.
    #[default]
    Full,
    /// Reason code only; the message is a generic text for the status.
    Reason,
}

/// Listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listen {
    /// ext_authz gRPC over TCP.
    pub(crate) grpc: Option<SocketAddr>,
    /// ext_authz gRPC over a unix socket.
    pub(crate) grpc_unix: Option<PathBuf>,
    /// Admin HTTP (`/healthz`, `/readyz`, `/metrics`).
    pub(crate) admin: Option<SocketAddr>,
    /// HTTP forward-auth (nginx `auth_request`, ingress-nginx `auth-url`, Traefik, Caddy).
    pub(crate) http: Option<SocketAddr>,
    /// The admin gRPC API over mTLS (off unless set; `admin_api` configures it).
    pub(crate) admin_api: Option<SocketAddr>,
    /// What one client may hold on the listeners.
    pub(crate) limits: ListenLimits,
}

impl Listen {
    /// Why `certgate serve` cannot run this configuration, if it cannot. The configuration
    /// is still valid: the Envoy dynamic module decides inside Envoy and serves none of
    /// these listeners, so its configuration need not name one.
    pub(crate) fn nothing_to_serve(&self) -> Option<&'static str> {
        (self.grpc.is_none() && self.grpc_unix.is_none() && self.http.is_none()).then_some(
            "listen: none of listen.grpc, listen.grpc_unix and listen.http is set: `certgate \
             serve` has nothing to serve (only the Envoy dynamic module runs without them)",
        )
    }
}

/// `listen.limits`: bounds that keep one slow or hostile client from taking the process's
/// file descriptors, memory or tasks away from everyone else (each listener has its own
/// connection cap, so a flood on forward-auth leaves admin and gRPC their share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenLimits {
    /// Open connections on the gRPC TCP listener (and, separately, on the unix socket).
    pub(crate) grpc_max_connections: usize,
    /// Open connections on the forward-auth listener.
    pub(crate) http_max_connections: usize,
    /// Open connections on the admin listener.
    pub(crate) admin_max_connections: usize,
    /// How long an HTTP client has to send a complete request head, on a new connection
    /// and between keep-alive requests; then the connection is closed.
    pub(crate) header_read_timeout: Duration,
    /// How long one request may take, gRPC or HTTP, before it is answered with an error.
    pub(crate) request_timeout: Duration,
    /// Idle time before TCP keepalive probes (and HTTP/2 pings on gRPC) check the peer.
    pub(crate) tcp_keepalive: Duration,
    /// Largest gRPC request message decoded; larger ones are refused (`OUT_OF_RANGE`)
    /// from their length prefix, before any of it is buffered.
    pub(crate) grpc_max_message_size: usize,
    /// Concurrent HTTP/2 streams per gRPC connection.
    pub(crate) grpc_max_concurrent_streams: u32,
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
pub(crate) enum Via {
    /// The ext_authz gRPC listener. Envoy passes client headers through, so only XFCC from an
    /// Envoy that replaces any client-sent copy (`forward_client_cert_details: SANITIZE_SET`)
    /// is acceptable here.
    ExtAuthz,
    /// The HTTP forward-auth listener: the ingress that calls certgate sets the header itself.
    ForwardAuth,
}

/// Who may hand certgate a forwarded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustedProxy {
    /// Callers from this network (the ext_authz gRPC peer, or the forward-auth HTTP peer).
    Net(ipnet::IpNet),
    /// Callers on the unix socket (a sidecar Envoy; ext_authz only).
    Unix,
}

/// A header that carries a client certificate, the way in it is read on, and the proxies
/// trusted to set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedSource {
    /// The listener this header is read on; it is ignored on the other.
    pub(crate) via: Via,
    /// Lowercase header name.
    pub(crate) header: String,
    /// How the certificate is encoded in it.
    pub(crate) encoding: CertEncoding,
    /// Callers whose header is believed; from anyone else it is ignored.
    pub(crate) trusted: Vec<TrustedProxy>,
}

impl ForwardedSource {
    /// Whether a caller at `peer` (`None`: the unix socket) may set this header.
    /// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`, what a dual-stack listener reports) are
    /// judged as the IPv4 address they are.
    pub(crate) fn trusts(&self, peer: Option<std::net::IpAddr>) -> bool {
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
pub(crate) enum RequestHeaders {
    /// `X-Original-Method` / `X-Original-URI`: nginx `auth_request`, ingress-nginx.
    Original,
    /// `X-Forwarded-Method` / `X-Forwarded-Uri`: Traefik `forwardAuth`, Caddy `forward_auth`.
    Forwarded,
}

impl RequestHeaders {
    /// The (method, URI) header names, lowercase.
    pub(crate) fn names(self) -> (&'static str, &'static str) {
        match self {
            RequestHeaders::Original => ("x-original-method", "x-original-uri"),
            RequestHeaders::Forwarded => ("x-forwarded-method", "x-forwarded-uri"),
        }
    }

    /// The header the original request's host is read from, for `policy_routes`.
    pub(crate) fn host_name(self) -> &'static str {
        match self {
            RequestHeaders::Original => "x-original-host",
            RequestHeaders::Forwarded => "x-forwarded-host",
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

/// Names of the identity headers set on allow and removed from every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderNames {
    /// Principal id.
    pub(crate) principal: String,
    /// Principal type.
    pub(crate) principal_type: String,
    /// Comma-separated roles.
    pub(crate) roles: String,
    /// Subject CN.
    pub(crate) cn: String,
    /// Serial, lowercase hex.
    pub(crate) serial: String,
    /// SHA-256 fingerprint.
    pub(crate) sha256: String,
    /// SPIFFE id, when present.
    pub(crate) spiffe_id: String,
    /// Which of them an allow sets (`response.identity_headers`).
    pub(crate) set: identity_headers::Fields,
    /// When a client-sent copy is removed (`response.remove_identity_headers`).
    pub(crate) removal: identity_headers::Removal,
}

impl HeaderNames {
    /// Every identity header name, for `headers_to_remove`.
    pub(crate) fn all(&self) -> [&str; 7] {
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
    pub(crate) source: PathBuf,
    /// Listeners (changes need a restart).
    pub(crate) listen: Listen,
    /// CAs client certificates must chain to.
    pub trust: TrustBundle,
    /// Rows 3–5 settings.
    pub certificate_rules: CertificateRules,
    /// How identity fields are read.
    pub identity: IdentityRules,
    /// Cache of parsed identities: TTL and bound.
    pub(crate) identity_cache: CacheSettings,
    /// Store backend (changes need a restart).
    pub store: StoreConfig,
    /// Type sources and default roles.
    pub principal_rules: PrincipalRules,
    /// Named policies.
    pub policies: HashMap<String, Arc<Policy>>,
    /// Policy used when the request names none.
    pub default_policy: String,
    /// Identity header names.
    pub(crate) headers: HeaderNames,
    /// Client-visible deny detail.
    pub(crate) deny_detail: DenyDetail,
    /// How often files are checked for changes.
    pub(crate) reload_interval: Duration,
    /// Every file this config depends on (itself included), for reload.
    pub(crate) watched_files: Watched,
    /// CRL sources and freshness per issuing CA.
    pub crl: CrlSettings,
    /// Headers that may carry a client certificate, each with the proxies trusted to set it
    /// (none by default: a forwarded certificate is never trusted unless configured).
    pub(crate) forwarded_certificates: Vec<ForwardedSource>,
    /// The headers the forward-auth listener reads the original method and URI from
    /// (required when `listen.http` is set).
    pub(crate) forward_auth_request_headers: Option<RequestHeaders>,
    /// Which policy a request gets when the proxy names none.
    pub(crate) policy_routes: crate::authz::routes::PolicyRoutes,
    /// Certificate inventory and expiry tiers (changes need a restart).
    pub(crate) inventory: crate::inventory::InventorySettings,
    /// Decision log, tracing, identity as metadata, shadow policies.
    pub observe: crate::observe::ObserveSettings,
    /// The admin API's policy and TLS material, when `listen.admin_api` is set (changes
    /// need a restart).
    pub(crate) admin_api: Option<AdminApiSettings>,
}

/// `admin_api`: who may call the admin API (a policy of the decision engine) and the TLS
/// material of its listener, read when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminApiSettings {
    /// The policy every call is checked against, as `POST /certgate.admin.v1.Service/Method`.
    pub(crate) policy: String,
    /// Server certificate chain, PEM.
    pub(crate) cert_pem: Vec<u8>,
    /// Its private key, PEM.
    pub(crate) key_pem: Vec<u8>,
    /// CAs a client certificate must chain to at the TLS handshake, PEM.
    pub(crate) client_ca_pem: Vec<u8>,
}

impl Config {
    /// What the revocation state follows from this configuration.
    pub(crate) fn crl_inputs(&self) -> CrlInputs {
        CrlInputs {
            settings: self.crl.clone(),
            trust: self.trust.clone(),
            clock_skew_secs: self.certificate_rules.clock_skew_secs,
            required: self.crl_required(),
        }
    }

    /// Whether some policy requires a usable CRL (so `/readyz` waits for CRLs).
    pub(crate) fn crl_required(&self) -> bool {
        !self.crl.issuers.is_empty()
            && self.policies.values().any(|p| {
                matches!(
                    p.revocation,
                    RevocationPolicy::Required | RevocationPolicy::Strict
                )
            })
    }
}

impl Config {
    /// Read, parse and validate `path` and every file it names, at the current time (a CA of
    /// the trust bundle that has expired is refused).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut watched = Watched::default();
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
            watched_files: if watched == Watched::default() {
                let mut unread = Watched::default();
                unread.record(path.to_owned(), b"");
                unread
            } else {
                watched
            },
        })
    }

    /// Parse and validate YAML text; relative paths are resolved against `path`'s directory.
    /// Pure: the clock is not read, so the validity of the bundle's CAs is not judged here
    /// (checks still judge it per request).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
        Self::validate_yaml(text, path, &mut Watched::default(), None)
    }

    fn validate_yaml(
        text: &str,
        path: &Path,
        watched: &mut Watched,
        now: Option<i64>,
    ) -> Result<Config, Vec<Problem>> {
        watched.record(path.to_owned(), text.as_bytes());
        let raw = raw::parse_raw(text)?;
        Validator::new(path.parent().unwrap_or(Path::new(".")), now).validate(raw, path, watched)
    }
}

#[cfg(test)]
mod tests;
