//! Entry points for the coverage-guided fuzz targets in `fuzz/`, compiled only with the
//! `fuzzing` feature (which only `fuzz/Cargo.toml` turns on).
//!
//! The parsers that read outside input are `pub(crate)`: nothing but a fuzz target needs them
//! one by one, and making their modules public would turn internals into API. Each function
//! here runs one of them the way the service does and hands back a result the target throws
//! away; a target looks for panics, hangs and runaway memory, and for the few invariants
//! asserted here. Certificates, the `CheckRequest` translation and the configuration are
//! fuzzed through the public API (`cert::identify`, `server::ext_authz`, `Config::from_yaml`)
//! and need nothing from this module.

use crate::authz::path::{self, PathMode};
use crate::cert::{self, CertEncoding, MalformedCertificate, Serial, TrustBundle};
use crate::crl::{CrlError, ParsedCrl, decode_crl};

/// The certificate bytes in a forwarded-certificate header value of format `encoding`, as
/// `Checker` reads them before decoding (`None`: the header says no certificate).
pub fn extract_forwarded(
    encoding: CertEncoding,
    value: &[u8],
) -> Result<Option<Vec<u8>>, MalformedCertificate> {
    cert::extract(encoding, value).map(|bytes| bytes.map(std::borrow::Cow::into_owned))
}

/// Normalise a request path in `strict` or `lenient` mode and assert what every accepted path
/// must satisfy: absolute, no query string, no `.`/`..` or empty segment (a trailing `/`
/// aside), and the same answer when normalised again in `lenient` mode (the escapes it keeps
/// are kept, not decoded a second time).
pub fn normalize_path(raw: &str, lenient: bool) -> Option<String> {
    let mode = if lenient {
        PathMode::Lenient
    } else {
        PathMode::Strict
    };
    let normal = path::normalize(raw, mode).ok()?.into_owned();
    assert!(normal.starts_with('/'), "{raw:?} → {normal:?}");
    assert!(!normal.contains('?'), "{raw:?} → {normal:?}");
    let mut segments = normal.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        assert!(segment != "." && segment != "..", "{raw:?} → {normal:?}");
        assert!(
            !segment.is_empty() || segments.peek().is_none(),
            "{raw:?} → {normal:?}"
        );
    }
    if lenient && normal.is_ascii() {
        assert_eq!(
            path::normalize(&normal, mode).as_deref(),
            Ok(normal.as_str()),
            "lenient normalisation of {raw:?} is not stable"
        );
    }
    Some(normal)
}

/// CRL bytes through every step a fetched CRL takes: decode (DER or PEM), the RFC 5280
/// profile parse, the signature against the CAs of a trust bundle, the times, and the index
/// (looked up for one listed serial, compared with a scan of the entries).
#[derive(Debug)]
pub struct CrlTarget {
    trust: TrustBundle,
}

impl CrlTarget {
    /// The CAs of `ca_pem` verify the CRLs.
    pub fn new(ca_pem: &[u8]) -> Result<Self, String> {
        let trust = TrustBundle::from_pem(ca_pem).map_err(|e| e.to_string())?;
        Ok(CrlTarget { trust })
    }

    /// Run `input` through every step at `now`; the first step that refuses it ends the run.
    /// The index is built even when the signature does not verify, so that entries the
    /// fuzzer makes up reach it.
    pub fn run(&self, input: &[u8], now: i64) -> Result<usize, CrlError> {
        let der = decode_crl(input)?;
        let parsed = ParsedCrl::parse(&der)?;
        let _ = parsed.sha256();
        let verified = parsed.verify_signature(self.trust.ca_certificates());
        let times = parsed.check_times(now, 60);
        let index = parsed.index()?;
        assert_eq!(index.len(), parsed.count_entries());
        let probe = Serial::from_der_content(&der[der.len().saturating_sub(8)..]);
        assert_eq!(
            index.get(&probe),
            parsed.find(&probe)?,
            "index and scan disagree"
        );
        verified?;
        times?;
        Ok(index.len())
    }
}

/// DynamoDB items, one per line in DynamoDB's JSON, read as a replica reads principals,
/// certificates and audit records (each decoded item must survive a rewrite unchanged),
/// and the records that decode verified as a chain. Returns how many records decoded.
pub fn store_items(input: &[u8]) -> usize {
    crate::store::dynamodb::fuzz::decode_items(input)
}

/// Seeds for [`store_items`]: `(table, lines)` with items as certgate writes them.
pub fn store_item_seeds() -> Vec<(&'static str, Vec<u8>)> {
    crate::store::dynamodb::fuzz::seed_items()
}
