//! Named policies and role permissions: what a validated principal may do. Built by `config`,
//! read by the decision; patterns are parsed once at load, matching allocates nothing.

use std::collections::{HashMap, HashSet};

/// One named policy (decision table rows 6, 10, 11, 12).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name, as used in `context_extensions["policy"]`.
    pub(crate) name: String,
    /// Longest certificate lifetime accepted (notAfter − notBefore), in seconds.
    pub(crate) max_lifetime_secs: Option<i64>,
    /// "Expires soon" window: certificates with less left than this are logged.
    pub(crate) expiry_warning_secs: i64,
    /// Whether the principal must have a record in the store.
    pub(crate) require_enrolment: bool,
    /// Principal types admitted; `None` admits every type.
    pub(crate) allowed_principal_types: Option<HashSet<String>>,
    /// CNs admitted; `None` means the policy has no allowlist.
    pub(crate) cn_allowlist: Option<HashSet<String>>,
    /// Role → what it grants.
    pub(crate) permissions: HashMap<String, Vec<Permission>>,
    /// How CRLs are applied (rows 7 and 7b).
    pub(crate) revocation: RevocationPolicy,
    /// How strictly request paths are judged before permissions are matched.
    pub(crate) paths: super::path::PathMode,
    /// Keys of the CAs whose certificates this policy accepts; `None` accepts the bundle.
    pub(crate) allowed_issuers: Option<Vec<crate::cert::CaKey>>,
    /// X509-SVID rules and roles by SPIFFE id, when configured.
    pub(crate) spiffe: Option<super::spiffe::SpiffeRules>,
}

/// How a policy applies CRLs (decision table rows 7 and 7b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum RevocationPolicy {
    /// Fail-secure default: where the certificate's issuer has CRL sources configured, a
    /// usable CRL is required (503 `revocation_status_unknown` without one). Issuers without
    /// CRL sources are not checked.
    #[default]
    Required,
    /// Like `required`, and a certificate whose issuer has no CRL sources configured at all
    /// is denied too (503 `revocation_status_unknown`).
    Strict,
    /// A listed serial is denied; without a usable CRL the request goes on (logged).
    Optional,
    /// CRLs are not consulted.
    Off,
}

/// A permission: an optional HTTP method and a path pattern where `*` matches any run of
/// characters (including `/`). gRPC methods are paths: `/job.v1.JobService/ListJobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    method: Option<String>,
    segments: Vec<String>,
    source: String,
}

/// A permission string that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PermissionError(String);

impl Permission {
    /// Parse `"PATH"`, `"* PATH"` or `"METHOD PATH"`; the path must start with `/` or be `*`.
    pub(crate) fn parse(text: &str) -> Result<Self, PermissionError> {
        let mut parts = text.split_whitespace();
        let (method, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(path), None, _) => (None, path),
            (Some(method), Some(path), None) => (Some(method), path),
            _ => {
                return Err(PermissionError(format!(
                    "'{text}' is not \"PATH\" or \"METHOD PATH\""
                )));
            }
        };
        if !(path.starts_with('/') || path.starts_with('*')) {
            return Err(PermissionError(format!(
                "path '{path}' must start with '/' or '*'"
            )));
        }
        let method = match method {
            None | Some("*") => None,
            Some(m) if m.bytes().all(|b| b.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(m) => return Err(PermissionError(format!("'{m}' is not an HTTP method"))),
        };
        Ok(Permission {
            method,
            segments: path.split('*').map(str::to_owned).collect(),
            source: text.to_owned(),
        })
    }

    /// Whether this permission grants `method` on `path` (query string already removed).
    pub(crate) fn grants(&self, method: &str, path: &str) -> bool {
        if let Some(m) = &self.method
            && !m.eq_ignore_ascii_case(method)
        {
            return false;
        }
        glob_match(&self.segments, path)
    }
}

/// `segments` is the pattern split at `*`: the first must be a prefix, the last a suffix,
/// and the middle ones must appear in order. Leftmost matching is correct for `*`-only globs.
fn glob_match(segments: &[String], text: &str) -> bool {
    let [first, middle @ .., last] = segments else {
        return segments.first().is_some_and(|s| s == text);
    };
    if middle.is_empty() && first.len() + last.len() > text.len() {
        return false;
    }
    let Some(mut rest) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    for segment in middle {
        match rest.find(segment.as_str()) {
            Some(at) => rest = &rest[at + segment.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_patterns() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("*", "GET", "/anything/at/all", true),
            (
                "/job.v1.JobService/*",
                "POST",
                "/job.v1.JobService/ListJobs",
                true,
            ),
            (
                "/job.v1.JobService/*",
                "POST",
                "/job.v1.Other/ListJobs",
                false,
            ),
            (
                "/job.v1.JobService/ListJobs",
                "POST",
                "/job.v1.JobService/ListJobs",
                true,
            ),
            (
                "/job.v1.JobService/ListJobs",
                "POST",
                "/job.v1.JobService/ListJobsX",
                false,
            ),
            ("GET /api/jobs/*", "GET", "/api/jobs/42", true),
            ("GET /api/jobs/*", "get", "/api/jobs/42", true),
            ("GET /api/jobs/*", "DELETE", "/api/jobs/42", false),
            ("* /api/*/logs", "DELETE", "/api/jobs/42/logs", true),
            ("* /api/*/logs", "DELETE", "/api/jobs/42/logs/x", false),
            ("/a*b*c", "GET", "/abc", true),
            ("/a*b*c", "GET", "/axxbyyc", true),
            ("/a*b*c", "GET", "/axxcyyb", false),
            ("/ab*ba", "GET", "/aba", false),
            ("/api/*", "GET", "/api", false),
        ];
        for (pattern, method, path, want) in cases {
            let p = Permission::parse(pattern).expect("test patterns are valid");
            assert_eq!(
                p.grants(method, path),
                *want,
                "{pattern} vs {method} {path}"
            );
        }
    }

    #[test]
    fn bad_permissions() {
        for bad in ["", "GET", "GET /a extra", "api/x", "G3T /x"] {
            assert!(
                Permission::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
