//! Client certificates forwarded in request headers by a proxy that terminated mTLS: Envoy's
//! XFCC, URL-encoded PEM (nginx, ingress-nginx, AWS ALB), Traefik's base64 DER and RFC 9440
//! `Client-Cert`. Only turns a header value into certificate bytes; *whether* a header may
//! be trusted is decided by the caller from the configured sources, never here.

use std::borrow::Cow;

use base64::Engine as _;

use super::MalformedCertificate;
use super::decode::MAX_INPUT;

/// How a certificate is carried.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertEncoding {
    /// Envoy `source.certificate`, or a file: URL-encoded PEM, PEM or DER.
    #[default]
    Auto,
    /// Envoy `x-forwarded-client-cert`: the rightmost element's `Cert="…"` (URL-encoded PEM).
    Xfcc,
    /// URL-encoded PEM: nginx `$ssl_client_escaped_cert`, ingress-nginx `ssl-client-cert`.
    UrlEncodedPem,
    /// Base64 DER without armour, possibly URL-encoded (Traefik
    /// `X-Forwarded-Tls-Client-Cert`; with a chain, the first is the leaf).
    Base64Der,
    /// RFC 9440 `Client-Cert`: a structured-field byte sequence `:BASE64:`.
    Rfc9440,
    /// AWS ALB `X-Amzn-Mtls-Clientcert-Leaf`: URL-encoded PEM.
    AwsAlb,
}

impl CertEncoding {
    /// The configuration spelling (`format:`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CertEncoding::Auto => "auto",
            CertEncoding::Xfcc => "xfcc",
            CertEncoding::UrlEncodedPem => "url_encoded_pem",
            CertEncoding::Base64Der => "base64_der",
            CertEncoding::Rfc9440 => "rfc9440",
            CertEncoding::AwsAlb => "aws_alb",
        }
    }
}

/// The certificate bytes (PEM or DER, for [`super::decode_certificate`]) carried in `value`,
/// or `None` when the header says no certificate was presented.
pub(crate) fn extract(
    encoding: CertEncoding,
    value: &[u8],
) -> Result<Option<Cow<'_, [u8]>>, MalformedCertificate> {
    if value.len() > MAX_INPUT * 2 {
        return Err(MalformedCertificate::TooLarge(value.len()));
    }
    // Raw DER (a file, or Envoy's `source.certificate` read as bytes) is passed on untouched:
    // its last byte may be whitespace.
    if encoding == CertEncoding::Auto && value.first() == Some(&0x30) {
        return Ok(Some(Cow::Borrowed(value)));
    }
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    match encoding {
        CertEncoding::Auto | CertEncoding::UrlEncodedPem | CertEncoding::AwsAlb => {
            Ok(Some(Cow::Borrowed(value)))
        }
        CertEncoding::Xfcc => xfcc_cert(value).map(|c| c.map(Cow::Owned)),
        CertEncoding::Base64Der => {
            let text = percent_decode(value);
            // A chain is comma-separated, leaf first.
            let leaf = text.split(|b| *b == b',').next().unwrap_or_default();
            base64_der(leaf, "base64 DER").map(|der| Some(Cow::Owned(der)))
        }
        CertEncoding::Rfc9440 => {
            let inner = value
                .strip_prefix(b":")
                .and_then(|v| v.strip_suffix(b":"))
                .ok_or_else(|| bad("Client-Cert is not a :base64: byte sequence"))?;
            base64_der(inner, "Client-Cert").map(|der| Some(Cow::Owned(der)))
        }
    }
}

fn bad(message: &str) -> MalformedCertificate {
    MalformedCertificate::Encoding(message.to_owned())
}

fn percent_decode(value: &[u8]) -> Cow<'_, [u8]> {
    percent_encoding::percent_decode(value).into()
}

fn base64_der(text: &[u8], what: &str) -> Result<Vec<u8>, MalformedCertificate> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| bad(&format!("{what} is not valid base64: {e}")))
}

/// The certificate of the rightmost XFCC element: the one the nearest proxy (the trusted one)
/// added. Elements are separated by `,` and pairs by `;` outside double quotes; a quoted
/// value may contain `\"`.
fn xfcc_cert(value: &[u8]) -> Result<Option<Vec<u8>>, MalformedCertificate> {
    let text = std::str::from_utf8(value).map_err(|_| bad("XFCC is not UTF-8"))?;
    let elements = split_unquoted(text, ',')?;
    let last = elements.last().copied().unwrap_or_default();
    for pair in split_unquoted(last, ';')? {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(bad("XFCC pair without '='"));
        };
        if !key.trim().eq_ignore_ascii_case("cert") {
            continue;
        }
        let raw = raw.trim();
        let unquoted = match raw.strip_prefix('"') {
            Some(rest) => rest
                .strip_suffix('"')
                .ok_or_else(|| bad("XFCC value has an unterminated quote"))?
                .replace("\\\"", "\""),
            None => raw.to_owned(),
        };
        let pem: Vec<u8> = percent_encoding::percent_decode(unquoted.as_bytes()).collect();
        return Ok((!pem.is_empty()).then_some(pem));
    }
    Ok(None)
}

/// Split at `sep` where it is not inside a double-quoted string.
fn split_unquoted(text: &str, sep: char) -> Result<Vec<&str>, MalformedCertificate> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return Err(bad("XFCC has an unterminated quote"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::decode_certificate;
    use crate::pki::{CertAuthority, CertSpec};

    fn cert(encoding: CertEncoding, value: &str) -> Result<Option<Vec<u8>>, MalformedCertificate> {
        extract(encoding, value.as_bytes()).map(|c| c.map(Cow::into_owned))
    }

    #[test]
    fn xfcc_takes_the_rightmost_element() {
        let v = r#"By=spiffe://a;Cert="FORGED";URI=x,By=spiffe://gw;Hash=ab;Cert="-----BEGIN%20CERTIFICATE-----%0AREAL";Subject="CN=w,OU=a;b""#;
        assert_eq!(
            cert(CertEncoding::Xfcc, v).expect("parses"),
            Some(b"-----BEGIN CERTIFICATE-----\nREAL".to_vec())
        );
    }

    #[test]
    fn xfcc_quotes_escapes_and_absence() {
        let v = r#"Subject="CN=a\"b,c;d";Cert=%41%42"#;
        assert_eq!(
            cert(CertEncoding::Xfcc, v).expect("parses"),
            Some(b"AB".to_vec())
        );
        assert_eq!(
            cert(CertEncoding::Xfcc, "By=spiffe://x;Hash=ab").expect("parses"),
            None
        );
        assert_eq!(
            cert(CertEncoding::Xfcc, "Cert=\"x\",By=y").expect("parses"),
            None,
            "rightmost has no cert"
        );
        for bad in [r#"Cert="unterminated"#, "Cert", "Subject=\"a,Cert=x"] {
            assert!(cert(CertEncoding::Xfcc, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64_forms() {
        assert_eq!(
            cert(CertEncoding::Base64Der, "MIIB,AAAA").expect("ok"),
            Some(vec![0x30, 0x82, 0x01])
        );
        assert_eq!(
            cert(CertEncoding::Base64Der, "MII%42").expect("url-encoded"),
            Some(vec![0x30, 0x82, 0x01])
        );
        assert!(cert(CertEncoding::Base64Der, "not base64!").is_err());
        assert_eq!(
            cert(CertEncoding::Rfc9440, ":MIIB:").expect("ok"),
            Some(vec![0x30, 0x82, 0x01])
        );
        assert!(
            cert(CertEncoding::Rfc9440, "MIIB").is_err(),
            "missing colons"
        );
        assert!(cert(CertEncoding::Rfc9440, ":M=I=:").is_err());
    }

    #[test]
    fn empty_means_absent_and_huge_is_refused() {
        assert_eq!(cert(CertEncoding::UrlEncodedPem, "  ").expect("ok"), None);
        let huge = "A".repeat(MAX_INPUT * 2 + 1);
        assert!(matches!(
            cert(CertEncoding::Xfcc, &huge),
            Err(MalformedCertificate::TooLarge(_))
        ));
    }

    /// A leaf issued to `cn` by a fresh CA: its DER, PEM, and the CA's DER (a chain's second
    /// certificate).
    fn issued(cn: &str) -> (Vec<u8>, String, Vec<u8>) {
        let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
        let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
        let leaf = ca
            .issue(&CertSpec::client(cn, now, time::Duration::days(1)))
            .expect("leaf");
        (leaf.cert_der, leaf.cert_pem, ca.cert_der())
    }

    fn url_encoded(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn base64(der: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    /// The leaf as the proxy of each format writes it. `subject` is a value Envoy quotes
    /// (escaping `"`); `variant` picks among the spellings a format allows.
    fn header(
        encoding: CertEncoding,
        (der, pem, ca_der): &(Vec<u8>, String, Vec<u8>),
        subject: &str,
        variant: u8,
    ) -> Vec<u8> {
        let text = match encoding {
            CertEncoding::Xfcc => {
                let subject = format!("Subject=\"{}\"", subject.replace('"', "\\\""));
                let cert = format!("Cert=\"{}\"", url_encoded(pem));
                // An element added by a farther proxy, with a certificate that is not ours.
                let farther = format!("By=spiffe://edge;Cert=\"{}\";{subject}", base64(ca_der));
                let ours = if variant.is_multiple_of(2) {
                    format!("By=spiffe://gw;Hash=ab;{cert};{subject};URI=spiffe://w")
                } else {
                    format!("{subject};DNS=w.example.com;{cert}")
                };
                if variant.is_multiple_of(3) {
                    ours
                } else {
                    format!("{farther},{ours}")
                }
            }
            CertEncoding::UrlEncodedPem | CertEncoding::AwsAlb => url_encoded(pem),
            CertEncoding::Base64Der => {
                let chain = format!("{},{}", base64(der), base64(ca_der));
                match variant % 3 {
                    0 => base64(der),
                    1 => chain,
                    _ => url_encoded(&chain),
                }
            }
            CertEncoding::Rfc9440 => format!(":{}:", base64(der)),
            CertEncoding::Auto => match variant % 3 {
                0 => return der.clone(),
                1 => pem.clone(),
                _ => url_encoded(pem),
            },
        };
        text.into_bytes()
    }

    proptest::proptest! {
        /// Whatever certificate a header carries, the proxy's spelling of it extracts to the
        /// same DER.
        #[test]
        fn every_format_round_trips_the_certificate(
            cn in "[a-z0-9.@-]{1,32}",
            subject in "[ -\\[\\]-~]{0,40}",
            variant in proptest::prelude::any::<u8>(),
            padding in " {0,2}",
        ) {
            let cert = issued(&cn);
            for encoding in [
                CertEncoding::Auto,
                CertEncoding::Xfcc,
                CertEncoding::UrlEncodedPem,
                CertEncoding::Base64Der,
                CertEncoding::Rfc9440,
                CertEncoding::AwsAlb,
            ] {
                let raw = header(encoding, &cert, &subject, variant);
                // Proxies pad text; raw DER is binary and comes as it is.
                let value = if raw.first() == Some(&0x30) {
                    raw
                } else {
                    [padding.as_bytes(), &raw, padding.as_bytes()].concat()
                };
                let der = match extract(encoding, &value) {
                    Ok(Some(bytes)) => decode_certificate(&bytes).map_err(|e| e.to_string()),
                    other => Err(format!("{other:?}")),
                };
                proptest::prop_assert_eq!(
                    der,
                    Ok(cert.0.clone()),
                    "{:?}: {}",
                    encoding,
                    String::from_utf8_lossy(&value)
                );
            }
        }

        /// Paired with the round trip above: no header value panics.
        #[test]
        fn any_header_value_is_handled(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            for e in [CertEncoding::Xfcc, CertEncoding::Base64Der, CertEncoding::Rfc9440, CertEncoding::UrlEncodedPem] {
                let _ = extract(e, &bytes);
            }
        }
    }
}
