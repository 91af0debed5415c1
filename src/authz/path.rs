//! The one request-path normalisation every way in shares (ext_authz, forward-auth, `certgate
//! check`): decode once, and refuse what an upstream could resolve to another path than the
//! one certgate matches permissions against. Pure; allocates only when the path is encoded.
//!
//! Why refuse instead of resolving: upstreams disagree. Tomcat, Jetty and Spring treat `..;/`
//! as `..`; some servers decode `%2F` to `/` before routing and some do not; a second
//! decoding turns `%252e` into `.`; Windows-style servers split at `\`. certgate cannot know
//! which upstream sits behind the proxy, so it judges only paths that every one of them reads
//! the same way.

use std::borrow::Cow;
use std::fmt;

/// How strictly a policy judges request paths (`policies.NAME.paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum PathMode {
    /// Refuse every ambiguous path: encoded `/` `\` `%` `;`, raw `;` `\`, NUL and other
    /// control characters, non-UTF-8, empty or dot segments (after decoding).
    #[default]
    Strict,
    /// Like `strict`, but encoded `/`, `\` and `;` (and `%` not followed by two hex digits)
    /// are accepted inside a segment and stay encoded in the matched path, so they never act
    /// as separators; a path that would have dot segments once those are decoded too is still
    /// refused. For APIs whose ids carry encoded slashes.
    Lenient,
}

impl PathMode {
    /// The configuration spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PathMode::Strict => "strict",
            PathMode::Lenient => "lenient",
        }
    }
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum PathRejection {
    /// Empty, or not starting with `/` (`*`, absolute-form).
    NotAbsolute,
    /// A raw byte no request target may carry here: control, space, non-ASCII, `#`.
    RawByte(u8),
    /// A raw `;` (path parameters: `..;/` is `..` to Java servers).
    PathParameter,
    /// A raw `\` (a separator to some servers).
    Backslash,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// An encoded byte that would change the path's structure once decoded (`/`, `\`, `;`,
    /// `%`, NUL or another control character).
    EncodedByte(u8),
    /// Not UTF-8 once decoded.
    NotUtf8,
    /// A `.` or `..` segment (after decoding).
    DotSegment,
    /// An empty segment (`//`), which some servers merge and others do not.
    EmptySegment,
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRejection::NotAbsolute => f.write_str("it does not start with '/'"),
            PathRejection::RawByte(b) => write!(f, "it contains the raw byte 0x{b:02x}"),
            PathRejection::PathParameter => f.write_str("it contains ';' (path parameters)"),
            PathRejection::Backslash => f.write_str("it contains '\\'"),
            PathRejection::BadPercentEncoding => {
                f.write_str("it has a '%' not followed by two hex digits")
            }
            PathRejection::EncodedByte(b) => write!(f, "it contains the encoded byte %{b:02X}"),
            PathRejection::NotUtf8 => f.write_str("it is not UTF-8 once decoded"),
            PathRejection::DotSegment => f.write_str("it has a '.' or '..' segment"),
            PathRejection::EmptySegment => f.write_str("it has an empty segment ('//')"),
        }
    }
}

/// The path permissions are matched against: the query string removed and percent-encoding
/// decoded once, or why the path is refused. In `Lenient` mode encoded `/`, `\`, `;` and `%`
/// stay encoded (uppercase hex) in the result.
pub(crate) fn normalize(raw: &str, mode: PathMode) -> Result<Cow<'_, str>, PathRejection> {
    let path = raw.split_once('?').map_or(raw, |(p, _)| p);
    if !path.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    for &b in path.as_bytes() {
        match b {
            b';' => return Err(PathRejection::PathParameter),
            b'\\' => return Err(PathRejection::Backslash),
            b'/' | b'%' | 0x80.. => {}
            b if is_plain(b) => {}
            b => return Err(PathRejection::RawByte(b)),
        }
    }
    let decoded: Cow<'_, str> = if path.contains('%') {
        Cow::Owned(decode(path, mode)?)
    } else {
        Cow::Borrowed(path)
    };
    check_segments(&decoded)?;
    if mode == PathMode::Lenient && decoded.contains('%') {
        // What an upstream that decodes the kept escapes too would see: no dot segments there
        // either (`/api/..%2Fadmin` is `/api/../admin` to it).
        let full = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy();
        if full
            .split(['/', '\\', ';'])
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(PathRejection::DotSegment);
        }
    }
    Ok(decoded)
}

/// ASCII bytes a path segment may carry as themselves (RFC 3986 `pchar` without `;`):
/// unreserved, sub-delims, `:` and `@`. They are the same to every reader, raw or encoded.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn decode(path: &str, mode: PathMode) -> Result<String, PathRejection> {
    let bytes = path.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let decoded = match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => (hi * 16 + lo) as u8,
            // A lone '%' (`100%`) is kept as an escape, unless what follows could complete an
            // escape after one decoding (`%%41`).
            _ if mode == PathMode::Lenient
                && !bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_hexdigit() || *c == b'%') =>
            {
                out.extend_from_slice(b"%25");
                i += 1;
                continue;
            }
            _ => return Err(PathRejection::BadPercentEncoding),
        };
        match decoded {
            0..=0x1f | 0x7f => return Err(PathRejection::EncodedByte(decoded)),
            b'/' | b'\\' | b';' | b'%' if mode == PathMode::Strict => {
                return Err(PathRejection::EncodedByte(decoded));
            }
            b'%' if hex(i + 3).is_some() && hex(i + 4).is_some() => {
                // `%2541` is `%41` after one decoding and `A` after two.
                return Err(PathRejection::EncodedByte(b'%'));
            }
            // Non-ASCII: part of a UTF-8 sequence, checked as a whole below.
            b if b >= 0x80 || is_plain(b) => out.push(b),
            // Everything else (`/` `\` `;` `%` in lenient mode, space, `?`, `#`, …) stays
            // an escape, so the result reads the same when normalised again.
            b => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
        i += 3;
    }
    // A kept `%` followed by two hex digits in the result (`%25%41a` → `%25Aa`) is an escape
    // to an upstream that decodes twice.
    if out
        .windows(5)
        .any(|w| w.starts_with(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit())
    {
        return Err(PathRejection::EncodedByte(b'%'));
    }
    String::from_utf8(out).map_err(|_| PathRejection::NotUtf8)
}

fn check_segments(path: &str) -> Result<(), PathRejection> {
    // The first segment is the empty string before the leading '/'; a trailing '/' leaves
    // an empty last segment, which is a directory, not an ambiguity.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Err(PathRejection::DotSegment),
            "" if segments.peek().is_some() => return Err(PathRejection::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each raw path normalizes under `mode` to what its row says.
    fn assert_normalizes(mode: PathMode, cases: &[(&str, Result<&str, PathRejection>)]) {
        for (raw, want) in cases {
            let got = normalize(raw, mode);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                want.as_deref().map_err(|e| *e),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn strict_paths() {
        use PathRejection as R;
        let cases: &[(&str, Result<&str, PathRejection>)] = &[
            ("/api/jobs", Ok("/api/jobs")),
            ("/api/jobs?x=1/../..", Ok("/api/jobs")),
            ("/api/jobs/", Ok("/api/jobs/")),
            ("/", Ok("/")),
            (
                "/job.v1.JobService/ListJobs",
                Ok("/job.v1.JobService/ListJobs"),
            ),
            ("/api/%6Aobs", Ok("/api/jobs")),
            ("/files/caf%C3%A9", Ok("/files/café")),
            ("/api/v1.2/x", Ok("/api/v1.2/x")),
            ("/api/...", Ok("/api/...")),
            ("", Err(R::NotAbsolute)),
            ("*", Err(R::NotAbsolute)),
            ("http://h/api", Err(R::NotAbsolute)),
            ("/api/../admin", Err(R::DotSegment)),
            ("/api/./x", Err(R::DotSegment)),
            ("/api/..", Err(R::DotSegment)),
            ("/api/%2e%2e/admin", Err(R::DotSegment)),
            ("/api/%2E./admin", Err(R::DotSegment)),
            ("/api/..;/admin/users", Err(R::PathParameter)),
            ("/api/x;jsessionid=1", Err(R::PathParameter)),
            ("/api/..%2fadmin/users", Err(R::EncodedByte(b'/'))),
            ("/api/..%5cadmin", Err(R::EncodedByte(b'\\'))),
            ("/api/%252e%252e/admin", Err(R::EncodedByte(b'%'))),
            ("/api/%3b", Err(R::EncodedByte(b';'))),
            ("/api/%00", Err(R::EncodedByte(0))),
            ("/api/%0a", Err(R::EncodedByte(b'\n'))),
            ("/api/%", Err(R::BadPercentEncoding)),
            ("/api/%zz", Err(R::BadPercentEncoding)),
            ("/api/%ff", Err(R::NotUtf8)),
            ("/api\\..\\admin", Err(R::Backslash)),
            ("/api//admin", Err(R::EmptySegment)),
            ("//admin", Err(R::EmptySegment)),
            ("/api/a b", Err(R::RawByte(b' '))),
            ("/api/x#frag", Err(R::RawByte(b'#'))),
            ("/api/x|y", Err(R::RawByte(b'|'))),
            ("/files/caf\u{e9}", Ok("/files/caf\u{e9}")),
            ("/api/a%20b%3Fc%23d", Ok("/api/a%20b%3Fc%23d")),
            ("/api/a%3fc", Ok("/api/a%3Fc")),
            ("/api/%41:@!$&'()*+,=~", Ok("/api/A:@!$&'()*+,=~")),
        ];
        assert_normalizes(PathMode::Strict, cases);
    }

    #[test]
    fn lenient_keeps_reserved_escapes_but_not_dot_segments() {
        use PathRejection as R;
        let cases: &[(&str, Result<&str, PathRejection>)] = &[
            ("/files/a%2fb", Ok("/files/a%2Fb")),
            ("/files/a%5Cb%3bc", Ok("/files/a%5Cb%3Bc")),
            ("/files/100%", Ok("/files/100%25")),
            ("/files/100%25", Ok("/files/100%25")),
            ("/api/..%2fadmin", Err(R::DotSegment)),
            ("/api/%2e%2e%2fadmin", Err(R::DotSegment)),
            ("/api/%2e%2e%5cadmin", Err(R::DotSegment)),
            ("/api/..%3b/admin", Err(R::DotSegment)),
            ("/api/%2541", Err(R::EncodedByte(b'%'))),
            ("/api/%%41", Err(R::BadPercentEncoding)),
            ("/api/%25%41a", Err(R::EncodedByte(b'%'))),
            ("/api/100%a", Err(R::BadPercentEncoding)),
            ("/api/%252e%252e/admin", Err(R::EncodedByte(b'%'))),
            ("/api/..;/admin", Err(R::PathParameter)),
            ("/api/../admin", Err(R::DotSegment)),
            ("/api/%00", Err(R::EncodedByte(0))),
        ];
        assert_normalizes(PathMode::Lenient, cases);
    }

    #[test]
    fn unencoded_paths_are_not_copied() {
        assert!(matches!(
            normalize("/api/jobs?q=1", PathMode::Strict),
            Ok(Cow::Borrowed("/api/jobs"))
        ));
    }

    fn decode_once(text: &str) -> String {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// Resolve dot segments (RFC 3986 5.2.4), optionally treating `\` as `/` and cutting `;`
    /// parameters from each segment first (Tomcat, Jetty, Spring).
    fn resolve(text: &str, backslash: bool, strip_params: bool) -> String {
        let text = if backslash {
            text.replace('\\', "/")
        } else {
            text.to_owned()
        };
        let mut stack: Vec<&str> = Vec::new();
        for segment in text.split('/').skip(1) {
            let segment = if strip_params {
                segment.split(';').next().unwrap_or_default()
            } else {
                segment
            };
            match segment {
                "." => {}
                ".." => {
                    stack.pop();
                }
                s => stack.push(s),
            }
        }
        format!("/{}", stack.join("/"))
    }

    /// The ways common upstreams read a raw path: decoded once or twice, `\` as a separator
    /// or not, `;` parameters cut or not, then dot segments resolved.
    fn upstream_readings(raw: &str) -> Vec<String> {
        let path = raw.split_once('?').map_or(raw, |(p, _)| p);
        let once = decode_once(path);
        let twice = decode_once(&once);
        let mut out = Vec::new();
        for decoded in [once, twice] {
            for backslash in [false, true] {
                for strip_params in [false, true] {
                    out.push(resolve(&decoded, backslash, strip_params));
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// For any path built from separators, dots and their encodings: when certgate accepts
        /// it, every upstream reading is the path certgate matched (so a permission that
        /// allows certgate's path allows exactly what the upstream serves), and normalising is
        /// idempotent on what it returns.
        #[test]
        fn accepted_paths_read_the_same_everywhere(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "a", "api", "admin", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\",
                    ";", "%3b", "%25", "%252e", "%00", "%41", "?", "x=1", "%", "%C3%A9", "%ff", "//",
                    "%3F", "%20", "%23", "\u{e9}", "4", "%%",
                ]),
                1..10,
            ),
        ) {
            let raw = format!("/{}", parts.concat());
            if let Ok(matched) = normalize(&raw, PathMode::Strict) {
                // Escapes certgate keeps (`%3F`, `%20`) are one character to it and to them.
                let as_read = decode_once(&matched);
                for reading in upstream_readings(&raw) {
                    proptest::prop_assert_eq!(&reading, &as_read, "raw {} matched {}", raw, matched);
                }
                let again = normalize(&matched, PathMode::Strict);
                proptest::prop_assert_eq!(again.as_deref().ok(), Some(matched.as_ref()));
            }
            if let Ok(matched) = normalize(&raw, PathMode::Lenient) {
                // Kept escapes are not separators to certgate; an upstream that decodes them
                // once reads the same segments, only with those escapes decoded: no dot
                // segment for it to resolve.
                let path = raw.split_once('?').map_or(raw.as_str(), |(p, _)| p);
                let once = decode_once(path);
                for backslash in [false, true] {
                    proptest::prop_assert_eq!(
                        resolve(&once, backslash, false),
                        decode_once(&matched).replace('\\', if backslash { "/" } else { "\\" }),
                        "raw {} matched {}", raw, matched
                    );
                }
                let again = normalize(&matched, PathMode::Lenient);
                proptest::prop_assert_eq!(again.as_deref().ok(), Some(matched.as_ref()));
            }
        }
    }
}
