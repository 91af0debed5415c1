//! Client certificates: decode what a proxy forwards (URL-encoded PEM, PEM or DER), parse it
//! once into an [`Identity`], and verify its chain against the trust bundle.
//! Never decides anything: the outcome of each check is data for `authz` to judge.

mod decode;
mod forwarded;
mod identity;
mod reason;
mod serial;
mod verify;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

pub(crate) use decode::decode_certificate;
pub use forwarded::CertEncoding;
pub(crate) use forwarded::extract;
pub use identity::Identity;
use identity::IdentityParts;
pub(crate) use identity::SvidShape;
pub use reason::RevocationReason;
pub use reason::UnknownRevocationReason;
pub use serial::Serial;
pub use serial::SerialParseError;
pub use verify::{Anchor, TrustBundle};
pub use verify::{CaKey, ChainFailure};

/// Where the principal id is taken from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PrincipalIdSource {
    /// The custom extension `identity.principal_id_oid`.
    Oid,
    /// The first `spiffe://` URI SAN.
    Spiffe,
    /// The subject common name.
    Cn,
}

/// Where the principal type is taken from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PrincipalTypeSource {
    /// The custom extension `identity.principal_type_oid`.
    Oid,
    /// The subject organizational unit.
    Ou,
    /// The principal's record in the store.
    Store,
}

/// How identity fields are read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRules {
    /// Principal id sources, in order.
    pub(crate) principal_id_sources: Vec<PrincipalIdSource>,
    /// Dotted OID of the principal id extension.
    pub(crate) principal_id_oid: x509_parser::der_parser::oid::Oid<'static>,
    /// Principal type sources, in order (resolved by the decision, which knows the store).
    pub(crate) principal_type_sources: Vec<PrincipalTypeSource>,
    /// Dotted OID of the principal type extension.
    pub(crate) principal_type_oid: x509_parser::der_parser::oid::Oid<'static>,
}

/// Whether the extended key usage allows TLS client authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuthUsage {
    /// The EKU extension lists clientAuth (or anyExtendedKeyUsage).
    Allowed,
    /// No EKU extension: unrestricted (RFC 5280 4.2.1.12).
    Unrestricted,
    /// The EKU extension exists and does not include clientAuth.
    NotAllowed,
}

/// Why a forwarded value is not a usable certificate (decision table row 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedCertificate {
    /// Not PEM, URL-encoded PEM or DER.
    #[error("not a PEM or DER certificate: {0}")]
    Encoding(String),
    /// More than one certificate where one leaf was expected.
    #[error("expected one client certificate, found {0}")]
    TooMany(usize),
    /// DER that x509 parsing rejects.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// An identity field holds control characters (CR, LF, NUL…), which no header may carry.
    #[error("the {0} contains control characters")]
    ControlCharacters(&'static str),
    /// Input larger than any sane certificate.
    #[error("certificate input of {0} bytes exceeds the limit of {max} bytes", max = decode::MAX_INPUT)]
    TooLarge(usize),
}

/// Parse one certificate (as forwarded by a proxy) into an [`Identity`] and verify its chain.
///
/// `now` is Unix seconds; the chain is checked at `now` clamped into the leaf's own validity
/// window, so an expired-but-trusted leaf reports as trusted here and as expired in the
/// validity check, in the order of the README's decision table.
pub fn identify(
    input: &[u8],
    rules: &IdentityRules,
    trust: &TrustBundle,
    now: i64,
) -> Result<Identity, MalformedCertificate> {
    let der = decode_certificate(input)?;
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|e| MalformedCertificate::Parse(parse_problem(&e)))?;
    if !rest.is_empty() {
        return Err(MalformedCertificate::Parse(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let chain = trust.verify(&der, now.clamp(not_before, not_after.max(not_before)));
    let common_name = first_str(cert.subject().iter_common_name());
    let uris = uri_sans(&cert);
    let svid = SvidShape {
        uri_sans: u8::try_from(uris.len()).unwrap_or(u8::MAX),
        // A malformed or repeated basicConstraints cannot vouch for a leaf.
        ca: cert
            .basic_constraints()
            .map_or(true, |bc| bc.is_some_and(|bc| bc.value.ca)),
    };
    let spiffe_id = uris.into_iter().find(|u| u.starts_with("spiffe://"));
    let principal_id = rules.principal_id_sources.iter().find_map(|source| {
        let id = match source {
            PrincipalIdSource::Oid => extension_string(&cert, &rules.principal_id_oid),
            PrincipalIdSource::Spiffe => spiffe_id.clone(),
            PrincipalIdSource::Cn => common_name.clone(),
        };
        id.map(|id| (*source, id))
    });
    let client_auth = match cert.extended_key_usage() {
        Ok(None) => ClientAuthUsage::Unrestricted,
        Ok(Some(eku)) if eku.value.client_auth || eku.value.any => ClientAuthUsage::Allowed,
        // A malformed or duplicated EKU extension cannot grant anything.
        Ok(Some(_)) | Err(_) => ClientAuthUsage::NotAllowed,
    };
    let type_from_oid = extension_string(&cert, &rules.principal_type_oid);
    let organizational_unit = first_str(cert.subject().iter_organizational_unit());
    // These values become upstream headers and log fields: a CA that copies user input into
    // a certificate must not be able to smuggle a CR/LF (header injection) through us.
    for (field, value) in [
        (
            "principal id",
            principal_id.as_ref().map(|(_, id)| id.as_str()),
        ),
        ("principal type extension", type_from_oid.as_deref()),
        ("subject OU", organizational_unit.as_deref()),
        ("subject CN", common_name.as_deref()),
        ("SPIFFE id", spiffe_id.as_deref()),
    ] {
        if value.is_some_and(|v| v.chars().any(char::is_control)) {
            return Err(MalformedCertificate::ControlCharacters(field));
        }
    }
    Identity::pack(IdentityParts {
        principal_id,
        type_from_oid,
        organizational_unit,
        common_name,
        spiffe_id,
        serial: Serial::from_der_content(cert.raw_serial()),
        sha256: Sha256::digest(&der).into(),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        not_before,
        not_after,
        client_auth,
        svid,
        chain,
    })
}

/// x509-parser's errors in words ("NomError(Eof)" means the DER ended early).
fn parse_problem(e: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    match e {
        x509_parser::nom::Err::Incomplete(_) => "truncated DER".into(),
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => match e {
            x509_parser::error::X509Error::NomError(x509_parser::nom::error::ErrorKind::Eof) => {
                "truncated DER".into()
            }
            other => format!("invalid DER ({other})"),
        },
    }
}

/// Result of [`identify`], shared by every request that presents the same certificate.
pub(crate) type CachedIdentity = Arc<Result<Identity, MalformedCertificate>>;

fn first_str<'a>(
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    attrs
        .next()
        .and_then(|a| a.as_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The string inside a custom extension: a DER UTF8String, PrintableString or IA5String.
fn extension_string(
    cert: &X509Certificate<'_>,
    oid: &x509_parser::der_parser::oid::Oid<'static>,
) -> Option<String> {
    let ext = cert.iter_extensions().find(|e| &e.oid == oid)?;
    let value = decode::der_string(ext.value)?;
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CertSpec};
    use proptest::prelude::*;

    const NOW: i64 = 1_790_000_000;

    /// The rules the certificate and decision tests read identities with.
    pub(crate) fn rules() -> IdentityRules {
        IdentityRules {
            principal_id_sources: vec![
                PrincipalIdSource::Oid,
                PrincipalIdSource::Spiffe,
                PrincipalIdSource::Cn,
            ],
            principal_id_oid: "1.3.6.1.4.1.59999.1.1".parse().expect("oid"),
            principal_type_sources: vec![
                PrincipalTypeSource::Oid,
                PrincipalTypeSource::Ou,
                PrincipalTypeSource::Store,
            ],
            principal_type_oid: "1.3.6.1.4.1.59999.1.2".parse().expect("oid"),
        }
    }

    fn fixture() -> (TrustBundle, String) {
        let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
        let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
        let spec = CertSpec {
            uri_sans: vec![
                "https://not-spiffe".into(),
                "spiffe://example.com/w/1".into(),
            ],
            organizational_unit: Some("worker".into()),
            ..CertSpec::client("w1", now, time::Duration::days(1))
        };
        let leaf = ca.issue(&spec).expect("leaf");
        (
            TrustBundle::from_pem(ca.cert_pem().as_bytes()).expect("bundle"),
            leaf.cert_pem,
        )
    }

    #[test]
    fn identity_sources_in_order() {
        let (trust, pem) = fixture();
        let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
        assert_eq!(
            id.principal_id(),
            Some("spiffe://example.com/w/1"),
            "no OID: SPIFFE"
        );
        assert_eq!(id.spiffe_id(), Some("spiffe://example.com/w/1"));
        assert_eq!(id.organizational_unit(), Some("worker"));
        let cn_first = IdentityRules {
            principal_id_sources: vec![PrincipalIdSource::Cn],
            ..rules()
        };
        let id = identify(pem.as_bytes(), &cn_first, &trust, NOW).expect("parses");
        assert_eq!(id.principal_id(), Some("w1"));
        assert_eq!(id.common_name(), Some("w1"));
        assert_eq!(id.serial().to_string().len() % 2, 0);
        assert_eq!(id.sha256_hex().len(), 64);
    }

    #[test]
    fn packed_fields_read_back() {
        let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
        let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
        let trust = TrustBundle::from_pem(ca.cert_pem().as_bytes()).expect("bundle");
        let spec = CertSpec {
            organizational_unit: Some("worker".into()),
            uri_sans: vec!["spiffe://example.com/w/1".into()],
            serial: Some(0xdead_beef),
            custom_extensions: vec![
                (vec![1, 3, 6, 1, 4, 1, 59999, 1, 1], "w1@example.com".into()),
                (vec![1, 3, 6, 1, 4, 1, 59999, 1, 2], "service".into()),
            ],
            ..CertSpec::client("w1.example.com", now, time::Duration::days(1))
        };
        let pem = ca.issue(&spec).expect("leaf").cert_pem;
        let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
        assert_eq!(id.principal_id(), Some("w1@example.com"), "OID first");
        assert_eq!(id.type_from_oid(), Some("service"));
        assert_eq!(id.organizational_unit(), Some("worker"));
        assert_eq!(id.common_name(), Some("w1.example.com"));
        assert_eq!(id.spiffe_id(), Some("spiffe://example.com/w/1"));
        assert_eq!(id.serial().to_string(), "deadbeef");
        assert_eq!(id.issuer(), "O=certgate dev, CN=ca");
        assert_eq!(id.subject(), "OU=worker, CN=w1.example.com");
        assert_eq!(id.lifetime_secs(), 86_400);
        assert_eq!(
            id.chain().map(|a| a.subject.as_str()),
            Ok("O=certgate dev, CN=ca")
        );
        let der = decode_certificate(pem.as_bytes()).expect("decodes");
        assert_eq!(id.sha256_hex(), hex::encode(Sha256::digest(&der)));

        let bare = CertSpec {
            common_name: None,
            ..CertSpec::client("", now, time::Duration::days(1))
        };
        let pem = ca.issue(&bare).expect("leaf").cert_pem;
        let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
        let absent = [
            id.principal_id(),
            id.type_from_oid(),
            id.organizational_unit(),
            id.common_name(),
            id.spiffe_id(),
        ];
        assert_eq!(absent, [None; 5]);
        assert_eq!(id.subject(), "");
        let other = CertAuthority::new("other", now, now + time::Duration::days(10)).expect("CA");
        let pem = other.issue(&spec).expect("leaf").cert_pem;
        let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
        assert!(id.chain().is_err());
        assert_eq!(id.principal_id(), Some("w1@example.com"));
        // No CA verified it, so its issuer is its own text, not a CA's subject.
        assert_eq!(id.issuer(), "O=certgate dev, CN=other");
        assert_eq!(id.subject(), "OU=worker, CN=w1.example.com");
    }

    #[test]
    fn the_verifying_ca_is_the_one_whose_key_signed_the_leaf() {
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("time");
        let (from, to) = (at(NOW - 86_400), at(NOW + 365 * 86_400));
        // A rollover: two CAs of one name, the new one first in the bundle.
        let old = CertAuthority::new("ca", from, to).expect("CA");
        let new = CertAuthority::new("ca", from, to).expect("CA");
        let renewed = old
            .reissued("ca", from, at(NOW + 730 * 86_400))
            .expect("CA");
        let pem = format!("{}{}{}", new.cert_pem(), old.cert_pem(), renewed.cert_pem());
        let trust = TrustBundle::from_pem(pem.as_bytes()).expect("bundle");
        let cas = trust.cas();
        assert_eq!(cas[0].subject, cas[1].subject, "one name");
        assert_ne!(cas[0].key, cas[1].key, "two keys");
        assert_eq!(cas[1].key, cas[2].key, "a re-issued CA keeps its key");
        let spec = CertSpec::client("w1", at(NOW), time::Duration::days(1));
        for (ca, want) in [(&old, &cas[1]), (&new, &cas[0])] {
            let pem = ca.issue(&spec).expect("leaf").cert_pem;
            let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
            let anchor = id.chain().expect("trusted");
            assert_eq!(anchor.key, want.key);
            assert_eq!(anchor.subject, "O=certgate dev, CN=ca");
        }
        assert!(cas[0].key.to_string().starts_with("sha256:"));
        assert_eq!(CaKey::from_hex(&cas[0].key.hex()), Some(cas[0].key));
    }

    #[test]
    fn an_expired_or_not_yet_valid_ca_vouches_for_nothing() {
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("time");
        let spec = CertSpec::client("w1", at(NOW - 3600), time::Duration::days(1));
        // (CA validity, skew, expected failure)
        let cases = [
            ((NOW - 10 * 86_400, NOW - 86_400), 60, Some("expired at")),
            ((NOW - 10 * 86_400, NOW - 30), 60, None),
            ((NOW - 10 * 86_400, NOW - 90), 60, Some("expired at")),
            (
                (NOW + 86_400, NOW + 10 * 86_400),
                60,
                Some("not valid before"),
            ),
            ((NOW + 30, NOW + 10 * 86_400), 60, None),
        ];
        for ((nb, na), skew, want) in cases {
            let ca = CertAuthority::new("old ca", at(nb), at(na)).expect("CA");
            let trust = TrustBundle::from_pem(ca.cert_pem().as_bytes()).expect("bundle");
            let pem = ca.issue(&spec).expect("leaf").cert_pem;
            let id = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("parses");
            assert!(
                id.chain().is_ok(),
                "webpki does not judge anchors' validity"
            );
            let got = id.chain_at(NOW, skew).map_err(|e| e.to_string());
            match want {
                None => assert!(got.is_ok(), "{nb}..{na}: {got:?}"),
                Some(fragment) => {
                    let message = got.expect_err("refused");
                    assert!(
                        message.contains(fragment) && message.contains("CN=old ca"),
                        "{message}"
                    );
                }
            }
            assert_eq!(
                trust.expired(NOW, skew).count(),
                usize::from(want == Some("expired at"))
            );
        }
    }

    #[test]
    fn url_encoded_pem_and_der_give_the_same_identity() {
        let (trust, pem) = fixture();
        let encoded =
            percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let der = decode_certificate(pem.as_bytes()).expect("decodes");
        let a = identify(pem.as_bytes(), &rules(), &trust, NOW).expect("pem");
        let b = identify(encoded.as_bytes(), &rules(), &trust, NOW).expect("url-encoded");
        let c = identify(&der, &rules(), &trust, NOW).expect("der");
        assert_eq!((a.sha256_hex(), a.serial()), (b.sha256_hex(), b.serial()));
        assert_eq!(a.sha256_hex(), c.sha256_hex());
    }

    #[test]
    fn a_chain_is_not_one_certificate() {
        let (_, pem) = fixture();
        let chain = format!("{pem}{pem}");
        assert_eq!(
            decode_certificate(chain.as_bytes()),
            Err(MalformedCertificate::TooMany(2))
        );
    }

    #[test]
    fn truncated_pem_is_malformed() {
        let (trust, pem) = fixture();
        for cut in [10, pem.len() / 2, pem.len() - 30] {
            assert!(
                identify(&pem.as_bytes()[..cut], &rules(), &trust, NOW).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
        let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
        let trust = TrustBundle::from_pem(ca.cert_pem().as_bytes()).expect("bundle");
        let injected = [
            CertSpec::client("w1\r\nx-client-roles: admin", now, time::Duration::days(1)),
            CertSpec {
                organizational_unit: Some("worker\n".into()),
                ..CertSpec::client("w1", now, time::Duration::days(1))
            },
            CertSpec {
                custom_extensions: vec![(vec![1, 3, 6, 1, 4, 1, 59999, 1, 1], "a\0b".into())],
                ..CertSpec::client("w1", now, time::Duration::days(1))
            },
        ];
        for spec in injected {
            let pem = ca.issue(&spec).expect("leaf").cert_pem;
            let result = identify(pem.as_bytes(), &rules(), &trust, NOW);
            assert!(
                matches!(result, Err(MalformedCertificate::ControlCharacters(_))),
                "{spec:?}: {result:?}"
            );
        }
    }

    /// Whether `input` identifies as a certificate whose chain verifies against `trust`.
    fn trusted(input: &[u8], trust: &TrustBundle) -> bool {
        identify(input, &rules(), trust, NOW).is_ok_and(|identity| identity.chain().is_ok())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_never_trusted(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (trust, _) = fixture();
            prop_assert!(!trusted(&bytes, &trust));
        }

        /// Every byte of a certificate is signed or is the signature: no change to it may
        /// verify.
        #[test]
        fn a_changed_certificate_is_never_trusted(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=u8::MAX), 1..8)
        ) {
            let (trust, pem) = fixture();
            let der = decode_certificate(pem.as_bytes()).expect("decodes");
            prop_assert!(trusted(&der, &trust), "the certificate as issued is trusted");
            let mut changed = der.clone();
            for (at, mask) in flips {
                let i = at.index(changed.len());
                changed[i] ^= mask;
            }
            prop_assume!(changed != der);
            prop_assert!(!trusted(&changed, &trust));
        }
    }
}
