//! A forwarded-certificate header value; the first byte picks the format (XFCC, URL-encoded
//! PEM, base64 DER, RFC 9440 `Client-Cert`, AWS ALB). What the header carries then goes
//! through the same identity parse as in a check.
#![no_main]

use certgate::cert::CertEncoding;
use libfuzzer_sys::fuzz_target;

const FORMATS: [CertEncoding; 5] = [
    CertEncoding::Xfcc,
    CertEncoding::UrlEncodedPem,
    CertEncoding::Base64Der,
    CertEncoding::Rfc9440,
    CertEncoding::AwsAlb,
];

fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let Some((&format, value)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(format) % FORMATS.len()];
    if let Ok(Some(cert)) = certgate::fuzzing::extract_forwarded(format, value) {
        let w = certgate_fuzz::world();
        let _ = certgate::cert::identify(&cert, &w.config.identity, &w.config.trust, w.now);
    }
});
