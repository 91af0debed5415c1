//! `policy_routes`: compiled once here (hosts parsed, regexes built), each entry's problems
//! reported with its index.

use std::collections::HashMap;
use std::sync::Arc;

use super::Validator;
use crate::authz::Policy;
use crate::authz::routes::{HostPattern, PathMatch, PolicyRoute, PolicyRoutes};
use crate::config::raw::RawRoute;

impl Validator<'_> {
    pub(super) fn policy_routes(
        &mut self,
        raw: Vec<RawRoute>,
        policies: &HashMap<String, Arc<Policy>>,
    ) -> PolicyRoutes {
        let mut routes = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("policy_routes[{i}]");
            let mut hosts = Vec::with_capacity(r.hosts.len());
            for (j, host) in r.hosts.iter().enumerate() {
                match HostPattern::parse(host) {
                    Some(h) => hosts.push(h),
                    None => self.problem(
                        format!("{key}.hosts[{j}]"),
                        format!(
                            "\"{host}\" is not a host name or a \"*.\" wildcard (no port, no scheme)"
                        ),
                    ),
                }
            }
            let path = match (r.path_prefix, r.path_regex) {
                (Some(_), Some(_)) => {
                    self.problem(&key, "give at most one of path_prefix and path_regex");
                    PathMatch::Any
                }
                (Some(prefix), None) if !prefix.starts_with('/') => {
                    self.problem(
                        format!("{key}.path_prefix"),
                        format!("\"{prefix}\" must start with '/'"),
                    );
                    PathMatch::Any
                }
                (Some(prefix), None) => PathMatch::Prefix(prefix),
                (None, Some(re)) => PathMatch::regex(&re).unwrap_or_else(|e| {
                    self.problem(format!("{key}.path_regex"), e.to_string());
                    PathMatch::Any
                }),
                (None, None) => PathMatch::Any,
            };
            let mut methods = Vec::with_capacity(r.methods.len());
            for (j, m) in r.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    self.problem(
                        format!("{key}.methods[{j}]"),
                        format!("\"{m}\" is not an HTTP method"),
                    );
                }
                methods.push(m.to_ascii_uppercase());
            }
            if !policies.contains_key(&r.policy) {
                self.problem(
                    format!("{key}.policy"),
                    format!("\"{}\" is not one of the policies", r.policy),
                );
            }
            routes.push(PolicyRoute {
                hosts,
                path,
                methods,
                policy: r.policy,
            });
        }
        PolicyRoutes(routes)
    }
}
