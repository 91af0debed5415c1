//! `policies.NAME.allowed_issuers` and `policies.NAME.spiffe`: resolved against the trust
//! bundle at load, so a check compares CA keys and nothing else.

use x509_cert::der::Decode;
use x509_cert::name::RdnSequence;

use super::Validator;
use crate::authz::spiffe::{IdRoles, SpiffeRules, is_trust_domain};
use crate::cert::{CaKey, TrustBundle};
use crate::config::raw::RawSpiffe;

impl Validator<'_> {
    /// Each entry is an RFC 4514 DN (every CA of the bundle with that subject: a rollover
    /// keeps both) or `sha256:` and the hex SHA-256 of one CA certificate's DER. An entry
    /// that names no CA of the bundle is a problem: it would silently accept nothing.
    pub(super) fn allowed_issuers(
        &mut self,
        key: &str,
        entries: &[String],
        trust: Option<&TrustBundle>,
    ) -> Vec<CaKey> {
        let mut keys = Vec::new();
        if entries.is_empty() {
            self.problem(key, "must list at least one CA (or leave the key out)");
        }
        for (i, entry) in entries.iter().enumerate() {
            let ekey = format!("{key}[{i}]");
            let found: Vec<CaKey> = if let Some(hex_digest) = entry.strip_prefix("sha256:") {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(hex_digest.trim(), &mut digest).is_err() {
                    self.problem(
                        &ekey,
                        "sha256: must be followed by 64 hex digits (the SHA-256 of the CA certificate's DER)",
                    );
                    continue;
                }
                let Some(trust) = trust else { continue };
                trust
                    .cas()
                    .iter()
                    .filter(|ca| ca.cert_sha256 == digest)
                    .map(|ca| ca.key)
                    .collect()
            } else {
                let wanted = match entry
                    .parse::<RdnSequence>()
                    .or_else(|_| without_spaces_after_commas(entry).parse())
                {
                    Ok(name) if !name.0.is_empty() => name,
                    Ok(_) | Err(_) => {
                        self.problem(
                            &ekey,
                            format!(
                                "\"{entry}\" is neither an RFC 4514 DN (e.g. CN=Partner CA,O=Example) nor sha256:<hex>"
                            ),
                        );
                        continue;
                    }
                };
                let Some(trust) = trust else { continue };
                trust
                    .cas()
                    .iter()
                    .filter(|ca| {
                        RdnSequence::from_der(&ca.subject_der)
                            .is_ok_and(|subject| same_name(&wanted, &subject))
                    })
                    .map(|ca| ca.key)
                    .collect()
            };
            if found.is_empty() {
                let known: Vec<String> = trust
                    .map(|t| {
                        t.cas()
                            .iter()
                            .map(|ca| format!("'{}'", ca.subject))
                            .collect()
                    })
                    .unwrap_or_default();
                self.problem(
                    &ekey,
                    format!(
                        "\"{entry}\" matches no CA of the trust bundle (the bundle has: {})",
                        known.join(", ")
                    ),
                );
            }
            keys.extend(found);
        }
        keys
    }

    pub(super) fn spiffe(&mut self, key: &str, raw: RawSpiffe) -> SpiffeRules {
        if raw.trust_domains.is_empty() {
            self.problem(
                format!("{key}.trust_domains"),
                "must list at least one trust domain",
            );
        }
        for (i, domain) in raw.trust_domains.iter().enumerate() {
            if !is_trust_domain(domain) {
                self.problem(
                    format!("{key}.trust_domains[{i}]"),
                    format!(
                        "\"{domain}\" is not a trust domain (lowercase a-z 0-9 . - _, no scheme)"
                    ),
                );
            }
        }
        let mut id_roles = Vec::with_capacity(raw.id_roles.len());
        for (i, r) in raw.id_roles.into_iter().enumerate() {
            match IdRoles::new(&r.pattern, r.roles) {
                Ok(rule) => id_roles.push(rule),
                Err(e) => self.problem(format!("{key}.id_roles[{i}].pattern"), e),
            }
        }
        SpiffeRules {
            trust_domains: raw.trust_domains,
            id_roles,
        }
    }
}

/// `CN=x, O=y` (how certgate and `openssl -nameopt oneline` print names) as RFC 4514 writes
/// it, `CN=x,O=y`: a space after an unescaped comma dropped, nothing else touched.
fn without_spaces_after_commas(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let (mut escaped, mut after_comma) = (false, false);
    for c in dn.chars() {
        if after_comma && c == ' ' {
            continue;
        }
        after_comma = !escaped && c == ',';
        escaped = !escaped && c == '\\';
        out.push(c);
    }
    out
}

/// The same attributes with the same values, in this order or the reverse one (RFC 4514
/// lists the most specific RDN first, openssl's one-line form last). Values are compared by
/// content, whatever string type the CA was encoded with (PrintableString or UTF8String).
fn same_name(a: &RdnSequence, b: &RdnSequence) -> bool {
    let flat = |n: &RdnSequence| -> Vec<(String, Vec<u8>)> {
        n.0.iter()
            .flat_map(|rdn| rdn.0.iter())
            .map(|atv| (atv.oid.to_string(), atv.value.value().to_vec()))
            .collect()
    };
    let (a, b) = (flat(a), flat(b));
    a == b || a.iter().eq(b.iter().rev())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spaces_after_commas() {
        for (given, want) in [
            ("CN=a, O=b", "CN=a,O=b"),
            ("CN=a,  O=b", "CN=a,O=b"),
            ("CN=a\\, b, O=c", "CN=a\\, b,O=c"),
            ("CN=a b", "CN=a b"),
        ] {
            assert_eq!(super::without_spaces_after_commas(given), want, "{given}");
        }
    }
}
