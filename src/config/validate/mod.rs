//! Raw → `Config`: every value checked, every file named read, every problem kept. The
//! `Validator` is one type; its sections live in the files below.

mod admin_api;
mod crl;
mod crl_tls;
mod expiry;
mod listen;
mod mesh;
mod observe;
mod policy;
mod routes;
mod store;
mod trust;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use x509_parser::der_parser::oid::Oid;

use super::identity_headers::Fields;
use super::raw::{Raw, RawSize, max_duration};
use super::{Config, HeaderNames, Listen, Problem, Watched};
use crate::authz::PrincipalRules;
use crate::cert::IdentityRules;
use crate::store::CacheSettings;

pub(super) struct Validator<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
    /// When set (Unix seconds), trust anchors expired at this time are refused.
    now: Option<i64>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(base: &'a Path, now: Option<i64>) -> Validator<'a> {
        Validator {
            base,
            problems: Vec::new(),
            now,
        }
    }

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

    fn path(&self, text: &str) -> PathBuf {
        self.base.join(text)
    }

    fn read_file(&mut self, key: &str, text: &str, watched: &mut Watched) -> Option<Vec<u8>> {
        let path = self.path(text);
        match std::fs::read(&path) {
            Ok(bytes) => {
                watched.record(path, &bytes);
                Some(bytes)
            }
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", path.display()));
                watched.record(path, b"");
                None
            }
        }
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

    pub(super) fn validate(
        mut self,
        raw: Raw,
        source: &Path,
        watched: &mut Watched,
    ) -> Result<Config, Vec<Problem>> {
        let listen = Listen {
            grpc: self.addr("listen.grpc", raw.listen.grpc.as_deref()),
            grpc_unix: raw
                .listen
                .grpc_unix
                .filter(|p| !p.is_empty())
                .map(|p| self.path(&p)),
            admin: self.addr("listen.admin", raw.listen.admin.as_deref()),
            http: self.addr("listen.http", raw.listen.http.as_deref()),
            admin_api: self.addr("listen.admin_api", raw.listen.admin_api.as_deref()),
            limits: self.limits(&raw.listen.limits),
        };

        let (trust, certificate_rules) = self.trust(&raw.trust, watched);

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

        let store = self.store(raw.store);
        let inventory = self.inventory(raw.inventory);

        let mut policy_names: Vec<_> = raw.policies.keys().cloned().collect();
        policy_names.sort();
        let observe = self.observe(&raw.log, &raw.tracing, raw.response.identity, &raw.policies);
        let mut raw_policies = raw.policies;
        let mut policies = HashMap::new();
        for name in policy_names {
            let Some(rp) = raw_policies.remove(&name) else {
                continue;
            };
            let policy = self.policy(&name, rp, watched, trust.as_ref());
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

        if raw
            .response
            .identity_headers
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            self.problem(
                "response.identity_headers",
                "empty: name at least one identity header, or use `response.identity: \
                 metadata_only` for an allow that sets none",
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
            set: raw
                .response
                .identity_headers
                .map_or(Fields::ALL, |fields| fields.into_iter().collect()),
            removal: raw.response.remove_identity_headers,
        };
        let reload_interval = self.duration("reload.interval", &raw.reload.interval);
        if reload_interval.is_zero() {
            self.problem("reload.interval", "must be greater than zero");
        }

        let policy_routes = self.policy_routes(raw.policy_routes, &policies);
        let mut raw_crl = raw.crl;
        let crl_tls = self.crl_tls(std::mem::take(&mut raw_crl.tls), watched);
        let mut crl = self.crl(raw_crl, trust.as_ref());
        crl.tls = crl_tls;
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

        let admin_api = listen
            .admin_api
            .and_then(|_| self.admin_api(raw.admin_api, &raw.trust.ca_bundle, &policies, watched));

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
                policy_routes,
                inventory,
                observe,
                admin_api,
            }),
            _ => Err(self.problems),
        }
    }
}
