//! Matching a DN written in the configuration against a CA subject.

/// Whether a DN written in the configuration names the CA subject `ca` (as certgate prints
/// it): the same attributes and values in either order (openssl and RFC 4514 list them in
/// opposite orders), attribute types case-insensitive, spaces around `=` and `,` ignored.
pub(super) fn dn_matches(configured: &str, ca: &str) -> bool {
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
