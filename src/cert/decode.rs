//! Turn what a proxy forwards into DER: URL-encoded PEM (Envoy `source.certificate`, XFCC,
//! nginx `$ssl_client_escaped_cert`), plain PEM, or raw DER. Bounded, never panics.

use std::borrow::Cow;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::MalformedCertificate;

/// Largest forwarded certificate accepted, in bytes (real client certificates are 1–4 KiB).
pub(crate) const MAX_INPUT: usize = 64 * 1024;

/// Decode exactly one certificate to DER.
pub(crate) fn decode_certificate(input: &[u8]) -> Result<Vec<u8>, MalformedCertificate> {
    if input.len() > MAX_INPUT {
        return Err(MalformedCertificate::TooLarge(input.len()));
    }
    // Raw DER first, untouched: its bytes may be '%' or whitespace.
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    // Base64 and PEM armour never contain '%', so a '%' means URL encoding.
    let text: Cow<'_, [u8]> = if input.contains(&b'%') {
        percent_encoding::percent_decode(input)
            .collect::<Vec<u8>>()
            .into()
    } else {
        input.into()
    };
    let trimmed = text.trim_ascii();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Err(MalformedCertificate::Encoding(
            "expected PEM (-----BEGIN CERTIFICATE-----) or DER".into(),
        ));
    }
    let mut certs = Vec::with_capacity(1);
    for item in CertificateDer::pem_slice_iter(trimmed) {
        certs.push(item.map_err(|e| MalformedCertificate::Encoding(pem_problem(&e)))?);
    }
    match certs.len() {
        0 => Err(MalformedCertificate::Encoding(
            "PEM holds no CERTIFICATE block".into(),
        )),
        1 => Ok(certs.remove(0).as_ref().to_vec()),
        n => Err(MalformedCertificate::TooMany(n)),
    }
}

/// PEM errors in words (the library prints markers as byte arrays).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "PEM block has no '{}' line (truncated?)",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { .. } => "PEM block has a malformed BEGIN line".into(),
        Error::Base64Decode(_) => "PEM block is not valid base64".into(),
        other => format!("bad PEM: {other}"),
    }
}

/// The text of a DER UTF8String, PrintableString or IA5String; `None` for anything else.
pub(crate) fn der_string(der: &[u8]) -> Option<&str> {
    let (&tag, rest) = der.split_first()?;
    if !matches!(tag, 0x0c | 0x13 | 0x16) {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    std::str::from_utf8(body.get(..len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_strings() {
        assert_eq!(der_string(&[0x0c, 3, b'a', b'b', b'c']), Some("abc"));
        assert_eq!(der_string(&[0x13, 1, b'x']), Some("x"));
        assert_eq!(
            der_string(&[0x04, 1, b'x']),
            None,
            "OCTET STRING is not text"
        );
        assert_eq!(der_string(&[0x0c, 5, b'a']), None, "length beyond input");
        let mut long = vec![0x0c, 0x81, 200];
        long.extend(std::iter::repeat_n(b'z', 200));
        assert_eq!(der_string(&long).map(str::len), Some(200));
        assert_eq!(
            der_string(&[0x0c, 0x80]),
            None,
            "indefinite length is not DER"
        );
    }

    #[test]
    fn rejects_what_is_not_a_certificate() {
        for input in [
            &b"hello"[..],
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n",
            b"%ZZ%",
        ] {
            assert!(decode_certificate(input).is_err(), "{input:?}");
        }
        let huge = vec![b'A'; MAX_INPUT + 1];
        assert_eq!(
            decode_certificate(&huge),
            Err(MalformedCertificate::TooLarge(MAX_INPUT + 1))
        );
    }
}
