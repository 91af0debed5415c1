//! `policies.<name>`: one policy.

use std::collections::{HashMap, HashSet};

use super::Validator;
use crate::authz::{Permission, Policy};
use crate::cert::TrustBundle;
use crate::config::Watched;
use crate::config::raw::RawPolicy;

impl Validator<'_> {
    pub(super) fn policy(
        &mut self,
        name: &str,
        rp: RawPolicy,
        watched: &mut Watched,
        trust: Option<&TrustBundle>,
    ) -> Policy {
        let key = format!("policies.{name}");
        let (max_lifetime_secs, expiry_warning_secs) =
            self.expiry(&key, rp.max_lifetime, rp.expiry_warning);
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
        let allowed_issuers = rp.allowed_issuers.map(|entries| {
            self.allowed_issuers(&format!("{key}.allowed_issuers"), &entries, trust)
        });
        let spiffe = rp
            .spiffe
            .map(|raw| self.spiffe(&format!("{key}.spiffe"), raw));
        Policy {
            name: name.to_owned(),
            max_lifetime_secs,
            expiry_warning_secs,
            require_enrolment: rp.require_enrolment,
            allowed_principal_types: rp.allowed_principal_types.map(|t| t.into_iter().collect()),
            cn_allowlist: allowlist,
            permissions,
            revocation: rp.revocation,
            paths: rp.paths,
            allowed_issuers,
            spiffe,
        }
    }
}
