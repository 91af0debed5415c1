//! `policies.NAME.spiffe`: the X509-SVID rules for mesh workloads (SPIRE, Istio) and roles by
//! SPIFFE id pattern, so workloads need no enrolment one by one.
//!
//! Which reason each rule gives: a certificate that is not a well-formed X509-SVID (not
//! exactly one URI SAN, not a `spiffe://` id, a malformed id, the CA flag set) is
//! `malformed_certificate`; a well-formed SVID of a trust domain the policy does not trust is
//! `untrusted_issuer`, like a certificate of a CA the policy does not accept.

use super::{Deny, Policy, ReasonCode};
use crate::cert::Identity;

/// The SPIFFE settings of one policy.
#[derive(Debug, Clone)]
pub(crate) struct SpiffeRules {
    /// Trust domains accepted, lowercase (never empty).
    pub(crate) trust_domains: Vec<String>,
    /// Roles by id pattern; the first matching pattern gives the roles.
    pub(crate) id_roles: Vec<IdRoles>,
}

/// `spiffe.id_roles[]`: roles for the SPIFFE ids a pattern matches.
#[derive(Debug, Clone)]
pub(crate) struct IdRoles {
    /// `*` matches within one path segment (never `/`); anchored at both ends.
    pattern: regex::Regex,
    pub(crate) roles: Vec<String>,
}

impl IdRoles {
    /// Compile `pattern` (`spiffe://prod.example/ns/*/sa/batch-*`).
    pub(crate) fn new(pattern: &str, roles: Vec<String>) -> Result<IdRoles, String> {
        if !pattern.starts_with("spiffe://") {
            return Err(format!("pattern '{pattern}' does not start with spiffe://"));
        }
        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
        let pattern =
            regex::Regex::new(&format!("^{}$", body.join("[^/]*"))).map_err(|e| e.to_string())?;
        Ok(IdRoles { pattern, roles })
    }
}

/// Whether `text` is a trust domain name as SPIFFE allows it: lowercase letters, digits,
/// `.`, `-`, `_`.
pub(crate) fn is_trust_domain(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// The trust domain of a well-formed SPIFFE id, or why it is not one (SPIFFE-ID §2).
fn trust_domain(id: &str) -> Result<&str, &'static str> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or("it is not a spiffe:// URI")?;
    let (domain, path) = rest.split_once('/').map_or((rest, ""), |(d, p)| (d, p));
    if !is_trust_domain(domain) {
        return Err("its trust domain is empty or has characters other than a-z 0-9 . - _");
    }
    if id.ends_with('/') {
        return Err("it ends with '/'");
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if !path.is_empty() && !path.split('/').all(segment_ok) {
        return Err("its path has an empty, dot or non-[A-Za-z0-9._-] segment");
    }
    Ok(domain)
}

/// The X509-SVID rules of a policy with `spiffe` configured.
pub(crate) fn check_svid(id: &Identity, policy: &Policy) -> Result<(), Deny> {
    let Some(rules) = &policy.spiffe else {
        return Ok(());
    };
    let malformed = |why: String| {
        Deny::new(
            ReasonCode::MalformedCertificate,
            format!(
                "not an X509-SVID, as policy '{}' requires: {why}",
                policy.name
            ),
        )
    };
    let svid = id.svid();
    if svid.uri_sans != 1 {
        return Err(malformed(format!(
            "it has {} URI SANs, an SVID exactly one",
            svid.uri_sans
        )));
    }
    let Some(spiffe_id) = id.spiffe_id() else {
        return Err(malformed("its URI SAN is not a spiffe:// id".into()));
    };
    let domain = trust_domain(spiffe_id)
        .map_err(|why| malformed(format!("'{spiffe_id}' is not a SPIFFE id: {why}")))?;
    if svid.ca {
        return Err(malformed(
            "it is a CA certificate (basicConstraints cA)".into(),
        ));
    }
    if !rules.trust_domains.iter().any(|d| d == domain) {
        return Err(Deny::new(
            ReasonCode::UntrustedIssuer,
            format!(
                "trust domain '{domain}' of '{spiffe_id}' is not trusted by policy '{}' (spiffe.trust_domains: {})",
                policy.name,
                rules.trust_domains.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The roles the policy's `spiffe.id_roles` give `id`, if a pattern matches its SPIFFE id.
pub(crate) fn roles<'a>(id: &Identity, policy: &'a Policy) -> Option<&'a [String]> {
    let spiffe_id = id.spiffe_id()?;
    policy
        .spiffe
        .as_ref()?
        .id_roles
        .iter()
        .find(|r| r.pattern.is_match(spiffe_id))
        .map(|r| r.roles.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            trust_domain("spiffe://prod.example/ns/a/sa/b"),
            Ok("prod.example")
        );
        assert_eq!(trust_domain("spiffe://prod.example"), Ok("prod.example"));
        for bad in [
            "https://prod.example/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://Prod.example/x",
            "spiffe://prod.example:443/x",
            "spiffe://user@prod.example/x",
            "spiffe://prod.example/x/",
            "spiffe://prod.example//x",
            "spiffe://prod.example/x/../y",
            "spiffe://prod.example/x?y=1",
        ] {
            assert!(trust_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn id_patterns_stay_within_a_segment() {
        let p = IdRoles::new("spiffe://prod.example/ns/*/sa/batch-*", vec![]).expect("pattern");
        for (id, want) in [
            ("spiffe://prod.example/ns/jobs/sa/batch-1", true),
            ("spiffe://prod.example/ns/jobs/sa/batch-", true),
            ("spiffe://prod.example/ns/a/b/sa/batch-1", false),
            ("spiffe://prod.example/ns/jobs/sa/batch-1/x", false),
            ("spiffe://prod.example/ns/jobs/sa/web", false),
            ("spiffe://prod.examplexns/jobs/sa/batch-1", false),
        ] {
            assert_eq!(p.pattern.is_match(id), want, "{id}");
        }
        assert!(IdRoles::new("prod.example/*", vec![]).is_err());
    }
}
