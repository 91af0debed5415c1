//! What the YAML says: serde structs with their defaults (unknown keys refused), the bound
//! of every duration key, and the parse that reports each section's problems on its own.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::{
    DEFAULT_PRINCIPAL_ID_OID, DEFAULT_PRINCIPAL_TYPE_OID, DenyDetail, ListenLimits, Problem,
    RequestHeaders, Via,
};
use crate::authz::RevocationPolicy;
use crate::authz::path::PathMode;
use crate::cert::{CertEncoding, PrincipalIdSource, PrincipalTypeSource};
use crate::crl::CrlReadiness;
use crate::store::dynamodb::DynamoSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default)]
    pub(super) listen: RawListen,
    pub(super) trust: RawTrust,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) roles_by_type: HashMap<String, Vec<String>>,
    pub(super) policies: HashMap<String, RawPolicy>,
    #[serde(default = "default_policy_name")]
    pub(super) default_policy: String,
    #[serde(default)]
    pub(super) headers: RawHeaders,
    #[serde(default)]
    pub(super) response: RawResponse,
    #[serde(default)]
    pub(super) reload: RawReload,
    #[serde(default)]
    pub(super) crl: RawCrl,
    #[serde(default)]
    pub(super) forwarded_certificates: Vec<RawForwarded>,
    #[serde(default)]
    pub(super) forward_auth: RawForwardAuth,
    #[serde(default)]
    pub(super) policy_routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) inventory: RawInventory,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) tracing: RawTracing,
    #[serde(default)]
    pub(super) admin_api: RawAdminApi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) decisions: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            decisions: "deny".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTracing {
    pub(super) enabled: bool,
    pub(super) endpoint: Option<String>,
    pub(super) sample_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwarded {
    pub(super) via: Option<Via>,
    pub(super) header: String,
    pub(super) format: CertEncoding,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) envoy_forward_client_cert: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardAuth {
    pub(super) request_headers: Option<RequestHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListen {
    pub(super) grpc: Option<String>,
    pub(super) grpc_unix: Option<String>,
    pub(super) admin: Option<String>,
    pub(super) http: Option<String>,
    pub(super) admin_api: Option<String>,
    pub(super) limits: RawLimits,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            grpc: Some("127.0.0.1:9001".into()),
            grpc_unix: None,
            admin: Some("127.0.0.1:9901".into()),
            http: None,
            admin_api: None,
            limits: RawLimits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) grpc_max_connections: u64,
    pub(super) http_max_connections: u64,
    pub(super) admin_max_connections: u64,
    pub(super) header_read_timeout: String,
    pub(super) request_timeout: String,
    pub(super) tcp_keepalive: String,
    pub(super) grpc_max_message_size: RawSize,
    pub(super) grpc_max_concurrent_streams: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = ListenLimits::default();
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
pub(super) struct RawTrust {
    pub(super) ca_bundle: String,
    #[serde(default = "default_clock_skew")]
    pub(super) clock_skew: String,
    #[serde(default)]
    pub(super) require_client_auth_eku: RawEku,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdentity {
    pub(super) principal_id_sources: Vec<PrincipalIdSource>,
    pub(super) principal_id_oid: String,
    pub(super) principal_type_sources: Vec<PrincipalTypeSource>,
    pub(super) principal_type_oid: String,
    pub(super) cache_ttl: String,
    pub(super) cache_max_entries: u64,
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
pub(super) struct RawStore {
    pub(super) backend: String,
    pub(super) path: String,
    pub(super) cache_ttl: String,
    pub(super) cache_max_entries: u64,
    pub(super) stale_if_error: Option<String>,
    pub(super) dynamodb: Option<RawDynamo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDynamo {
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<String>,
    pub(super) principals_table: String,
    pub(super) certificates_table: String,
    /// `None`: derived from `principals_table` (`…principals` → `…audit`).
    pub(super) audit_table: Option<String>,
    pub(super) timeout: String,
    pub(super) attempt_timeout: String,
    pub(super) max_attempts: u32,
    pub(super) admin_timeout: String,
    pub(super) purge_expired_after: Option<String>,
}

impl Default for RawDynamo {
    fn default() -> Self {
        let d = DynamoSettings::default();
        RawDynamo {
            region: None,
            endpoint_url: None,
            principals_table: d.principals_table,
            certificates_table: d.certificates_table,
            audit_table: None,
            timeout: text(d.timeout),
            attempt_timeout: text(d.attempt_timeout),
            max_attempts: d.max_attempts,
            admin_timeout: text(d.admin_timeout),
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
pub(super) struct RawPolicy {
    pub(super) max_lifetime: Option<String>,
    pub(super) expiry_warning: Option<String>,
    #[serde(default = "yes")]
    pub(super) require_enrolment: bool,
    pub(super) allowed_principal_types: Option<Vec<String>>,
    pub(super) cn_allowlist: Option<Vec<String>>,
    pub(super) cn_allowlist_file: Option<String>,
    #[serde(default)]
    pub(super) permissions: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) revocation: RevocationPolicy,
    #[serde(default)]
    pub(super) paths: PathMode,
    pub(super) allowed_issuers: Option<Vec<String>>,
    pub(super) spiffe: Option<RawSpiffe>,
    #[serde(default = "yes")]
    pub(super) enforce: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHeaders {
    pub(super) principal: String,
    pub(super) principal_type: String,
    pub(super) roles: String,
    pub(super) cn: String,
    pub(super) serial: String,
    pub(super) sha256: String,
    pub(super) spiffe_id: String,
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
pub(super) struct RawResponse {
    pub(super) deny_detail: DenyDetail,
    pub(super) identity: crate::observe::IdentityIn,
    pub(super) identity_headers: Option<Vec<super::identity_headers::IdentityField>>,
    pub(super) remove_identity_headers: super::identity_headers::Removal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReload {
    pub(super) interval: String,
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
pub(super) struct RawCrl {
    pub(super) readiness: CrlReadiness,
    pub(super) max_age: String,
    pub(super) next_update_grace: String,
    pub(super) refresh_interval: String,
    pub(super) file_refresh_interval: String,
    pub(super) timeout: String,
    pub(super) retry_backoff: String,
    pub(super) max_retry_backoff: String,
    pub(super) max_size: RawSize,
    pub(super) cache_dir: Option<String>,
    pub(super) high_water_file: Option<String>,
    pub(super) follow_redirects: bool,
    pub(super) issuers: Vec<RawCrlIssuer>,
    pub(super) tls: RawCrlTls,
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
            tls: RawCrlTls::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrlIssuer {
    pub(super) ca: String,
    #[serde(default)]
    pub(super) sources: Vec<RawCrlSource>,
    pub(super) max_age: Option<String>,
    pub(super) next_update_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrlSource {
    pub(super) url: Option<String>,
    pub(super) file: Option<String>,
    pub(super) refresh_interval: Option<String>,
}

/// `policy_routes[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub(super) hosts: Vec<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) path_regex: Option<String>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    pub(super) policy: String,
}

/// `policies.NAME.spiffe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpiffe {
    pub(super) trust_domains: Vec<String>,
    #[serde(default)]
    pub(super) id_roles: Vec<RawIdRoles>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdRoles {
    pub(super) pattern: String,
    pub(super) roles: Vec<String>,
}

/// `trust.require_client_auth_eku`: a boolean, or `strict`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawEku {
    Bool(bool),
    Text(String),
}

impl Default for RawEku {
    fn default() -> Self {
        RawEku::Bool(true)
    }
}

/// `crl.tls`: TLS for `https://` CRL sources served by a private CA.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCrlTls {
    pub(super) ca_bundle: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
}

/// The longest value each duration key accepts, by the key's last segment. Every bound
/// keeps its consumer working: `cache_ttl + stale_if_error` or a timer's `now + interval`
/// must not overflow; below those hard limits each bound is the longest value that still
/// makes operational sense.
pub(super) fn max_duration(key: &str) -> Duration {
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

/// A default duration as the YAML would spell it, so it goes through the same parse and
/// bounds as a configured one.
fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
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
pub(super) fn parse_raw(text: &str) -> Result<Raw, Vec<Problem>> {
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
                "policy_routes" => check::<Vec<RawRoute>>(name, v, p),
                "inventory" => check::<RawInventory>(name, v, p),
                "log" => check::<RawLog>(name, v, p),
                "tracing" => check::<RawTracing>(name, v, p),
                "admin_api" => check::<RawAdminApi>(name, v, p),
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

/// `inventory:` — the certificate inventory and expiry tiers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawInventory {
    pub(super) record: bool,
    pub(super) interval: String,
    pub(super) queue_size: u64,
    pub(super) refresh_interval: String,
    pub(super) in_use_within: String,
}

impl Default for RawInventory {
    fn default() -> Self {
        RawInventory {
            record: true,
            interval: "1h".into(),
            queue_size: 10_000,
            refresh_interval: "5m".into(),
            in_use_within: "7d".into(),
        }
    }
}

/// `admin_api:` — the admin gRPC API served on `listen.admin_api`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdminApi {
    pub(super) policy: Option<String>,
    pub(super) tls: RawAdminApiTls,
}

/// `admin_api.tls:` — the listener's server certificate and the CAs its clients chain to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdminApiTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
}
