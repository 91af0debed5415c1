//! Turning CRL bytes into something usable: decode (DER or PEM), parse to the RFC 5280
//! profile, verify the signature against a CA of the trust bundle, and index the entries.
//!
//! rustls-webpki does the strict profile parse (v2, nextUpdate present, no delta or indirect
//! CRLs, no unknown critical extensions) and streams the entries, so a 1M-entry CRL is never
//! held as a million parsed objects; its signature algorithms (ring) check the signature.
//! x509-parser reads only the header fields webpki keeps private (thisUpdate, the issuer as
//! text), and asn1-rs splits the outer SEQUENCE to get the signed bytes.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, FromDer as _, Tag};
use x509_parser::prelude::X509Certificate;
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Name;

use super::index::{IndexError, RevocationIndex, RevocationIndexBuilder, Revoked};
use crate::cert::{RevocationReason, Serial};

/// Why bytes are not a usable CRL. Every variant means "do not use it"; none replaces a CRL
/// already in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Larger than `crl.max_size`.
    #[error("CRL of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes received (at least).
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// Neither DER nor a PEM `X509 CRL` block.
    #[error("not a DER or PEM CRL: {0}")]
    Encoding(String),
    /// DER that the RFC 5280 CRL profile rejects (truncated, garbage, delta CRL, v1, …).
    #[error("malformed CRL: {0}")]
    Malformed(String),
    /// No CA of the trust bundle has the CRL's issuer name.
    #[error("CRL issuer '{issuer}' is not a CA of the trust bundle")]
    UnknownIssuer {
        /// The CRL's issuer DN.
        issuer: String,
    },
    /// The CRL is for another issuer than the source is configured for.
    #[error("CRL issuer is '{found}', but this source is configured for '{expected}'")]
    WrongIssuer {
        /// Configured issuer DN.
        expected: String,
        /// The CRL's issuer DN.
        found: String,
    },
    /// The signature does not verify with the key of any CA of that name.
    #[error("CRL signature does not verify against the CA '{issuer}': {detail}")]
    BadSignature {
        /// The CRL's issuer DN.
        issuer: String,
        /// Verifier's reason.
        detail: String,
    },
    /// The CA's key usage does not allow signing CRLs.
    #[error("CA '{issuer}' has a key usage without cRLSign")]
    NotCrlSigner {
        /// The CA's DN.
        issuer: String,
    },
    /// thisUpdate/nextUpdate make no sense at the time of loading.
    #[error("CRL of '{issuer}' is not usable: {detail}")]
    BadTimes {
        /// The CRL's issuer DN.
        issuer: String,
        /// thisUpdate in the future, nextUpdate before thisUpdate, …
        detail: String,
    },
    /// Too many entries or serial bytes to index.
    #[error("{0}")]
    Index(#[from] IndexError),
}

impl CrlError {
    /// A short stable label for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CrlError::TooLarge { .. } => "too_large",
            CrlError::Encoding(_) | CrlError::Malformed(_) => "malformed",
            CrlError::UnknownIssuer { .. } => "unknown_issuer",
            CrlError::WrongIssuer { .. } => "wrong_issuer",
            CrlError::BadSignature { .. } => "bad_signature",
            CrlError::NotCrlSigner { .. } => "not_crl_signer",
            CrlError::BadTimes { .. } => "bad_times",
            CrlError::Index(_) => "too_large",
        }
    }
}

/// The DER of one CRL from DER or PEM input (exactly one `X509 CRL` block). DER input is
/// borrowed, not copied: a 1M-entry CRL is 40 MB.
pub(crate) fn decode_crl(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CrlError> {
    if input.first() == Some(&0x30) {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let mut blocks = CertificateRevocationListDer::pem_slice_iter(input);
    match (blocks.next(), blocks.next()) {
        (Some(Ok(der)), None) => Ok(std::borrow::Cow::Owned(der.as_ref().to_vec())),
        (Some(Ok(_)), Some(_)) => Err(CrlError::Encoding(
            "more than one X509 CRL block in the PEM".into(),
        )),
        (Some(Err(e)), _) => Err(CrlError::Encoding(format!("bad PEM: {e}"))),
        (None, _) => Err(CrlError::Encoding(
            "no X509 CRL PEM block and not DER (a DER CRL starts with 0x30)".into(),
        )),
    }
}

/// A CRL that parsed to the RFC 5280 profile; not yet verified.
pub(crate) struct ParsedCrl<'a> {
    der: &'a [u8],
    crl: webpki::BorrowedCertRevocationList<'a>,
    issuer_der: &'a [u8],
    /// Issuer DN as text (x509-parser's rendering, as `Identity::issuer` is).
    pub(crate) issuer: String,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: i64,
    tbs: &'a [u8],
    signature_alg: &'a [u8],
    signature: &'a [u8],
}

impl std::fmt::Debug for ParsedCrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCrl")
            .field("issuer", &self.issuer)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("bytes", &self.der.len())
            .finish()
    }
}

fn malformed(what: impl std::fmt::Display) -> CrlError {
    CrlError::Malformed(what.to_string())
}

impl<'a> ParsedCrl<'a> {
    /// Parse DER (see [`decode_crl`] for PEM).
    pub(crate) fn parse(der: &'a [u8]) -> Result<Self, CrlError> {
        // The strict profile parse first: whatever it accepts is well-formed DER, so the
        // header reads below cannot be fooled by trailing data or bad lengths.
        let crl = webpki::BorrowedCertRevocationList::from_der(der)
            .map_err(|e| malformed(format!("{e:?}")))?;

        let (rest, outer) = Any::from_der(der).map_err(malformed)?;
        if !rest.is_empty() || outer.tag() != Tag::Sequence {
            return Err(malformed("not one SEQUENCE"));
        }
        let (after_tbs, tbs_any) = Any::from_der(outer.data).map_err(malformed)?;
        let tbs = &outer.data[..outer.data.len() - after_tbs.len()];
        let (after_alg, alg) = Any::from_der(after_tbs).map_err(malformed)?;
        let (rest, sig) = Any::from_der(after_alg).map_err(malformed)?;
        if !rest.is_empty() || alg.tag() != Tag::Sequence || sig.tag() != Tag::BitString {
            return Err(malformed(
                "CertificateList is not tbs, algorithm, signature",
            ));
        }
        let signature = match sig.data.split_first() {
            Some((0, bits)) => bits,
            _ => return Err(malformed("signature BIT STRING has unused bits")),
        };

        // TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, …
        let (mut fields, first) = Any::from_der(tbs_any.data).map_err(malformed)?;
        if first.tag() != Tag::Integer {
            return Err(malformed("no CRL version (only v2 CRLs are supported)"));
        }
        (fields, _) = Any::from_der(fields).map_err(malformed)?;
        let (fields, name) = X509Name::from_der(fields).map_err(malformed)?;
        let (fields, this_update) = ASN1Time::from_der(fields).map_err(malformed)?;
        let (_, next_update) = ASN1Time::from_der(fields).map_err(malformed)?;
        Ok(ParsedCrl {
            der,
            crl,
            issuer_der: name.as_raw(),
            issuer: name.to_string(),
            this_update: this_update.timestamp(),
            next_update: next_update.timestamp(),
            tbs,
            signature_alg: alg.data,
            signature,
        })
    }

    /// The issuer Name, DER.
    pub(crate) fn issuer_der(&self) -> &[u8] {
        self.issuer_der
    }

    /// SHA-256 of the DER, lowercase hex.
    pub(crate) fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.der))
    }

    /// Verify the signature with the CAs of `cas` whose subject is the CRL's issuer; returns
    /// the index in `cas` of the CA whose key verified it.
    ///
    /// Same name, different key (a look-alike CA) fails here: only the signature tells.
    pub(crate) fn verify_signature(&self, cas: &[CertificateDer<'_>]) -> Result<usize, CrlError> {
        let mut named = 0;
        let mut last_detail = String::new();
        for (i, ca_der) in cas.iter().enumerate() {
            let Ok((_, ca)) = X509Certificate::from_der(ca_der) else {
                continue;
            };
            if ca.subject().as_raw() != self.issuer_der {
                continue;
            }
            named += 1;
            if let Ok(Some(ku)) = ca.key_usage()
                && !ku.value.crl_sign()
            {
                last_detail = format!("CA #{} has no cRLSign key usage", i + 1);
                continue;
            }
            let Ok(ee) = webpki::EndEntityCert::try_from(ca_der) else {
                continue;
            };
            let mut matched_alg = false;
            for alg in webpki::ALL_VERIFICATION_ALGS {
                if alg.signature_alg_id().as_ref() != self.signature_alg {
                    continue;
                }
                matched_alg = true;
                match ee.verify_signature(*alg, self.tbs, self.signature) {
                    Ok(()) => return Ok(i),
                    Err(e) => last_detail = format!("{e:?}"),
                }
            }
            if !matched_alg {
                last_detail = "unsupported signature algorithm".into();
            }
        }
        if named == 0 {
            return Err(CrlError::UnknownIssuer {
                issuer: self.issuer.clone(),
            });
        }
        if last_detail.contains("cRLSign") {
            return Err(CrlError::NotCrlSigner {
                issuer: self.issuer.clone(),
            });
        }
        Err(CrlError::BadSignature {
            issuer: self.issuer.clone(),
            detail: last_detail,
        })
    }

    /// Check thisUpdate/nextUpdate against `now` (Unix seconds) with `skew` seconds of
    /// tolerance for a CRL published a moment "in the future".
    pub(crate) fn check_times(&self, now: i64, skew: i64) -> Result<(), CrlError> {
        let bad = |detail: String| CrlError::BadTimes {
            issuer: self.issuer.clone(),
            detail,
        };
        if self.next_update <= self.this_update {
            return Err(bad(format!(
                "nextUpdate {} is not after thisUpdate {}",
                crate::clock::rfc3339(self.next_update),
                crate::clock::rfc3339(self.this_update)
            )));
        }
        if self.this_update > now.saturating_add(skew) {
            return Err(bad(format!(
                "thisUpdate {} is in the future",
                crate::clock::rfc3339(self.this_update)
            )));
        }
        Ok(())
    }

    /// Iterate the entries into an index. Any malformed entry fails the whole CRL: a CRL is
    /// used entirely or not at all.
    pub(crate) fn index(&self) -> Result<RevocationIndex, CrlError> {
        // About 40 bytes of DER per entry; reserve from the size instead of growing.
        let estimate = self.der.len() / 40;
        let mut builder = RevocationIndexBuilder::with_capacity(estimate, estimate * 16);
        for entry in &self.crl {
            let entry = entry.map_err(|e| malformed(format!("revoked entry: {e:?}")))?;
            builder.push(
                entry.serial_number,
                Revoked {
                    reason: entry
                        .reason_code
                        .map_or(RevocationReason::Unspecified, Into::into),
                    revoked_at: unix_secs(entry.revocation_date),
                },
            )?;
        }
        Ok(builder.build())
    }

    /// Number of entries, counted without indexing (malformed entries count too).
    pub(crate) fn count_entries(&self) -> usize {
        (&self.crl).into_iter().count()
    }

    /// Whether `serial` is listed; scans the entries.
    pub(crate) fn find(&self, serial: &Serial) -> Result<Option<Revoked>, CrlError> {
        for entry in &self.crl {
            let entry = entry.map_err(|e| malformed(format!("revoked entry: {e:?}")))?;
            if Serial::canonical(entry.serial_number) == serial.as_bytes() {
                return Ok(Some(Revoked {
                    reason: entry
                        .reason_code
                        .map_or(RevocationReason::Unspecified, Into::into),
                    revoked_at: unix_secs(entry.revocation_date),
                }));
            }
        }
        Ok(None)
    }
}

fn unix_secs(t: rustls_pki_types::UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CrlSpec};
    use proptest::prelude::*;
    use time::{Duration, OffsetDateTime};

    const NOW: i64 = 1_790_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).expect("time")
    }

    fn ca(cn: &str) -> CertAuthority {
        CertAuthority::new(cn, now() - Duration::days(1), now() + Duration::days(365)).expect("CA")
    }

    fn spec(serials: &[u64]) -> CrlSpec {
        CrlSpec {
            revoked: serials
                .iter()
                .map(|s| (*s, Some(rcgen::RevocationReason::KeyCompromise)))
                .collect(),
            ..CrlSpec::new(now() - Duration::hours(1), Duration::days(1))
        }
    }

    fn bundle(cas: &[&CertAuthority]) -> Vec<CertificateDer<'static>> {
        cas.iter()
            .map(|c| CertificateDer::from(c.cert_der()))
            .collect()
    }

    #[test]
    fn der_and_pem_parse_to_the_same_crl() {
        let ca = ca("root");
        let crl = ca.crl(&spec(&[0x1234, 0xabcdef])).expect("crl");
        let from_pem = decode_crl(crl.pem.as_bytes()).expect("pem");
        assert_eq!(*from_pem, *crl.der);
        assert_eq!(*decode_crl(&crl.der).expect("der"), *crl.der);
        let parsed = ParsedCrl::parse(&crl.der).expect("parses");
        assert_eq!(parsed.this_update, NOW - 3600);
        assert_eq!(parsed.next_update, NOW - 3600 + 86_400);
        assert!(parsed.issuer.contains("CN=root"), "{}", parsed.issuer);
        assert_eq!(parsed.count_entries(), 2);
        let index = parsed.index().expect("index");
        assert_eq!(index.len(), 2);
        let serial = |text: &str| text.parse::<Serial>().expect("hex");
        let hit = index.get(&serial("1234")).expect("listed");
        assert_eq!(hit.reason, RevocationReason::KeyCompromise);
        assert_eq!(hit.revoked_at, NOW - 7200);
        assert!(index.get(&serial("1235")).is_none());
        assert!(parsed.find(&serial("1234")).expect("scan").is_some());
        assert!(parsed.find(&serial("1235")).expect("scan").is_none());
    }

    #[test]
    fn an_empty_crl_is_valid() {
        let ca = ca("root");
        let crl = ca.crl(&spec(&[])).expect("crl");
        let parsed = ParsedCrl::parse(&crl.der).expect("parses");
        assert!(parsed.index().expect("index").is_empty());
        assert_eq!(parsed.verify_signature(&bundle(&[&ca])), Ok(0));
    }

    #[test]
    fn signature_verifies_only_against_the_issuing_key() {
        let root = ca("root");
        let other = ca("other");
        let lookalike = ca("root"); // same name, different key
        let crl = root.crl(&spec(&[1])).expect("crl");
        let parsed = ParsedCrl::parse(&crl.der).expect("parses");
        assert_eq!(parsed.verify_signature(&bundle(&[&other, &root])), Ok(1));
        assert!(matches!(
            parsed.verify_signature(&bundle(&[&other])),
            Err(CrlError::UnknownIssuer { .. })
        ));
        assert!(matches!(
            parsed.verify_signature(&bundle(&[&lookalike])),
            Err(CrlError::BadSignature { .. })
        ));
        // A rolled-over CA with the same name: the right key among several is found.
        assert_eq!(
            parsed.verify_signature(&bundle(&[&lookalike, &root])),
            Ok(1)
        );
        // A CRL made by the look-alike does not verify against the real CA.
        let forged = lookalike.crl(&spec(&[])).expect("crl");
        let forged = ParsedCrl::parse(&forged.der).expect("parses");
        assert!(matches!(
            forged.verify_signature(&bundle(&[&root])),
            Err(CrlError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_tampered_crl_fails_the_signature() {
        let root = ca("root");
        let mut der = root.crl(&spec(&[0x42])).expect("crl").der;
        // The serial 0x42 is inside the signed part: change it to 0x43.
        let at = der
            .windows(3)
            .position(|w| w == [0x02, 0x01, 0x42])
            .expect("serial in DER");
        der[at + 2] = 0x43;
        let parsed = ParsedCrl::parse(&der).expect("still parses");
        assert!(matches!(
            parsed.verify_signature(&bundle(&[&root])),
            Err(CrlError::BadSignature { .. })
        ));
    }

    #[test]
    fn times_are_checked() {
        let root = ca("root");
        let ok = root.crl(&spec(&[])).expect("crl");
        let parsed = ParsedCrl::parse(&ok.der).expect("parses");
        assert_eq!(parsed.check_times(NOW, 60), Ok(()));
        assert!(matches!(
            parsed.check_times(NOW - 7200, 60),
            Err(CrlError::BadTimes { .. })
        ));
        assert_eq!(
            parsed.check_times(NOW - 3600 - 30, 60),
            Ok(()),
            "within the skew"
        );
    }

    #[test]
    fn garbage_truncated_and_wrong_pem_are_rejected() {
        let root = ca("root");
        let crl = root.crl(&spec(&[1, 2, 3])).expect("crl");
        for cut in [0, 1, 2, 10, crl.der.len() / 2, crl.der.len() - 1] {
            let r = ParsedCrl::parse(&crl.der[..cut]);
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut trailing = crl.der.clone();
        trailing.push(0);
        assert!(ParsedCrl::parse(&trailing).is_err());
        assert!(matches!(
            decode_crl(b"<html>not found</html>"),
            Err(CrlError::Encoding(_))
        ));
        assert!(matches!(decode_crl(b""), Err(CrlError::Encoding(_))));
        let two = format!("{}{}", crl.pem, crl.pem);
        assert!(matches!(
            decode_crl(two.as_bytes()),
            Err(CrlError::Encoding(_))
        ));
        let cert_pem = root.cert_pem();
        assert!(decode_crl(cert_pem.as_bytes()).is_err(), "a certificate");
        assert!(
            ParsedCrl::parse(&root.cert_der()).is_err(),
            "certificate DER"
        );
    }

    /// Whether `bytes` (PEM or DER) parse as a CRL whose signature verifies against `cas`.
    fn verifies(bytes: &[u8], cas: &[CertificateDer<'_>]) -> bool {
        decode_crl(bytes).is_ok_and(|der| {
            ParsedCrl::parse(&der).is_ok_and(|crl| crl.verify_signature(cas).is_ok())
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(!verifies(&bytes, &bundle(&[&ca("root")])));
        }

        /// Every byte of a CRL is signed or is the signature: no change to it may verify.
        #[test]
        fn a_changed_crl_never_verifies(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=u8::MAX), 1..8)
        ) {
            let root = ca("root");
            let cas = bundle(&[&root]);
            let der = root.crl(&spec(&[1, 0x0102, 0x01_0203])).expect("crl").der;
            prop_assert!(verifies(&der, &cas), "the CRL as signed verifies");
            let mut changed = der.clone();
            for (at, mask) in flips {
                let i = at.index(changed.len());
                changed[i] ^= mask;
            }
            prop_assume!(changed != der);
            // What parses must also index and be judged on its times without panicking.
            if let Ok(parsed) = ParsedCrl::parse(&changed) {
                let _ = parsed.index();
                let _ = parsed.check_times(NOW, 60);
            }
            prop_assert!(!verifies(&changed, &cas));
        }
    }
}
