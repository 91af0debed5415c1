//! `policy_routes`: which policy a request gets when the proxy names none (Istio's CUSTOM
//! action cannot send context extensions). Built once at load (regexes compiled, hosts
//! lowercased); choosing a route allocates nothing.

/// One host a route admits: `admin.example.test` or `*.example.test` (one or more labels
/// before the suffix, never the bare suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// The whole name, lowercase.
    Exact(String),
    /// `.example.test` for `*.example.test`, lowercase.
    Suffix(String),
}

impl HostPattern {
    /// Parse a configured host; `None` when it is not a DNS name or `*.` wildcard.
    pub(crate) fn parse(text: &str) -> Option<HostPattern> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return None;
        }
        Some(if suffix {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// What part of the normalised path a route admits.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// Every path.
    Any,
    /// `/admin` admits `/admin` and `/admin/…`, never `/administrator`; a prefix ending in
    /// `/` admits what starts with it.
    Prefix(String),
    /// The whole path must match (anchored when compiled).
    Regex(regex::Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            }),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }

    /// Compile `pattern` to match whole paths only.
    pub(crate) fn regex(pattern: &str) -> Result<PathMatch, regex::Error> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(PathMatch::Regex)
    }
}

/// One entry of `policy_routes`.
#[derive(Debug, Clone)]
pub(crate) struct PolicyRoute {
    /// Hosts admitted; empty admits every host (and requests that name none).
    pub(crate) hosts: Vec<HostPattern>,
    pub(crate) path: PathMatch,
    /// Methods admitted, uppercase; empty admits every method.
    pub(crate) methods: Vec<String>,
    /// The policy it chooses (checked to exist at load).
    pub(crate) policy: String,
}

impl PolicyRoute {
    fn matches(&self, host: Option<&str>, method: &str, path: &str) -> bool {
        let host_ok =
            self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)));
        host_ok
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self.path.matches(path)
    }
}

/// The ordered routes; the first that matches chooses.
#[derive(Debug, Clone, Default)]
pub struct PolicyRoutes(pub(crate) Vec<PolicyRoute>);

impl PolicyRoutes {
    /// The index and policy of the first route admitting the request. `host` as the proxy
    /// sent it (a port is ignored), `path` normalised.
    pub(crate) fn choose(
        &self,
        host: Option<&str>,
        method: &str,
        path: &str,
    ) -> Option<(usize, &str)> {
        let host = host.map(strip_port).filter(|h| !h.is_empty());
        self.0
            .iter()
            .position(|r| r.matches(host, method, path))
            .map(|i| (i, self.0[i].policy.as_str()))
    }

    /// Route `i` in words (`hosts=… path_prefix=… methods=…`), for `certgate check`.
    pub(crate) fn describe(&self, i: usize) -> Option<String> {
        let r = self.0.get(i)?;
        let mut parts = Vec::new();
        if !r.hosts.is_empty() {
            let hosts: Vec<String> = r
                .hosts
                .iter()
                .map(|h| match h {
                    HostPattern::Exact(name) => name.clone(),
                    HostPattern::Suffix(suffix) => format!("*{suffix}"),
                })
                .collect();
            parts.push(format!("hosts={}", hosts.join(",")));
        }
        match &r.path {
            PathMatch::Any => {}
            PathMatch::Prefix(p) => parts.push(format!("path_prefix={p}")),
            PathMatch::Regex(re) => parts.push(format!("path_regex={}", re.as_str())),
        }
        if !r.methods.is_empty() {
            parts.push(format!("methods={}", r.methods.join(",")));
        }
        Some(parts.join(" "))
    }

    /// Whether no route is configured (the request path is not normalised for routing then).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `host:port` → `host`, `[::1]:8443` → `::1`, trailing dot dropped.
fn strip_port(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], path: PathMatch, methods: &[&str], policy: &str) -> PolicyRoute {
        PolicyRoute {
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).expect("test host"))
                .collect(),
            path,
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            policy: policy.into(),
        }
    }

    #[test]
    fn first_matching_route_chooses() {
        let routes = PolicyRoutes(vec![
            route(
                &["admin.example.test"],
                PathMatch::Prefix("/admin".into()),
                &[],
                "admin",
            ),
            route(
                &["*.example.test"],
                PathMatch::regex("/jobs/[0-9]+(/.*)?").expect("regex"),
                &["GET", "POST"],
                "workload",
            ),
            route(&[], PathMatch::Prefix("/public/".into()), &[], "open"),
        ]);
        let cases: &[(Option<&str>, &str, &str, Option<&str>)] = &[
            (Some("admin.example.test"), "GET", "/admin", Some("admin")),
            (
                Some("Admin.Example.Test:8443"),
                "GET",
                "/admin/x",
                Some("admin"),
            ),
            (
                Some("admin.example.test."),
                "GET",
                "/admin/x",
                Some("admin"),
            ),
            (Some("admin.example.test"), "GET", "/administrator", None),
            (Some("other.example.test"), "GET", "/admin/x", None),
            (
                Some("admin.example.test"),
                "GET",
                "/jobs/42",
                Some("workload"),
            ),
            (
                Some("a.b.example.test"),
                "POST",
                "/jobs/42/logs",
                Some("workload"),
            ),
            (Some("example.test"), "GET", "/jobs/42", None),
            (Some("evil-example.test"), "GET", "/jobs/42", None),
            (Some("x.example.test"), "DELETE", "/jobs/42", None),
            (Some("x.example.test"), "GET", "/jobs/42x", None),
            (Some("x.example.test"), "GET", "/pre/jobs/42", None),
            (None, "GET", "/jobs/42", None),
            (None, "GET", "/public/a", Some("open")),
            (Some("[::1]:443"), "GET", "/public/a", Some("open")),
            (None, "GET", "/public", None),
        ];
        for (host, method, path, want) in cases {
            assert_eq!(
                routes.choose(*host, method, path).map(|(_, p)| p),
                *want,
                "{host:?} {method} {path}"
            );
        }
    }

    #[test]
    fn host_patterns() {
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "a b",
            "exa*mple.test",
            "*.*.test",
            "a/b",
        ] {
            assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            HostPattern::parse("*.Example.TEST"),
            Some(HostPattern::Suffix(".example.test".into()))
        );
    }
}
