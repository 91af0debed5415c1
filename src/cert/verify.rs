//! Chain verification against the configured trust bundle with rustls-webpki. Only the chain
//! (signatures, CA constraints, CA validity) is judged here; the leaf's own validity window
//! and key usage are judged by `authz`, so each failure gets its own reason code.
//!
//! A verified chain names the [`Anchor`] that vouched for it, identified by its key
//! ([`CaKey`]), never by its name: two CAs of one name (a rollover) are two anchors, and
//! revocation state follows the key. webpki does not judge a trust anchor's own validity
//! window; [`Anchor::unusable_at`] does.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use crate::clock::rfc3339;

/// Why a certificate's chain does not lead to the trust bundle (decision table row 3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainFailure {
    /// No CA in the bundle issued it.
    #[error("issuer '{issuer}' is not in the trust bundle")]
    UnknownIssuer {
        /// The issuer DN the certificate names.
        issuer: String,
    },
    /// A CA of that name exists but the signature does not verify with its key.
    #[error("signature does not verify against the CA '{issuer}'")]
    BadSignature {
        /// The issuer DN the certificate names.
        issuer: String,
    },
    /// The CA that verified the chain is past its notAfter (± clock skew): an expired CA
    /// vouches for nothing, as `openssl verify` agrees.
    #[error("the CA '{ca}' of the trust bundle expired at {}", rfc3339(*not_after))]
    CaExpired {
        /// The CA's subject DN.
        ca: String,
        /// Its notAfter, Unix seconds.
        not_after: i64,
    },
    /// The CA that verified the chain is not valid yet (± clock skew).
    #[error("the CA '{ca}' of the trust bundle is not valid before {}", rfc3339(*not_before))]
    CaNotYetValid {
        /// The CA's subject DN.
        ca: String,
        /// Its notBefore, Unix seconds.
        not_before: i64,
    },
    /// The verifier cannot read the certificate at all.
    #[error("chain verification failed: {0}")]
    Undecodable(webpki::Error),
    /// Any other verdict of the verifier on the chain (CA constraints, unsupported
    /// algorithm…).
    #[error("chain verification failed: {0:?}")]
    Rejected(webpki::Error),
    /// The verifier named a trust anchor the bundle does not hold (never expected: the
    /// verifier only gets the bundle's anchors).
    #[error("chain verification failed: the verifying trust anchor is not in the bundle")]
    AnchorNotInBundle,
}

/// SHA-256 of a CA's SubjectPublicKeyInfo (DER): the identity of a CA for revocation.
///
/// The key, not the name, is what a CRL's signature proves, and it stays the same when a CA
/// certificate is re-issued with the same key (new validity), so both copies share one CRL
/// state; a CA of the same name with another key (a rollover, or a look-alike) is another
/// `CaKey`. Operators get the same value from
/// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaKey(pub [u8; 32]);

impl CaKey {
    /// The full digest, lowercase hex.
    pub(crate) fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse [`Self::hex`] back.
    pub(crate) fn from_hex(text: &str) -> Option<CaKey> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).ok()?;
        Some(CaKey(key))
    }
}

/// `sha256:` and the first 16 hex digits: enough to tell keys apart in messages.
impl std::fmt::Display for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}…", hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaKey({})", self.hex())
    }
}

/// One CA certificate of the trust bundle, as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// 1-based position in the bundle file.
    pub(crate) position: usize,
    /// Subject DN (RFC 4514 text, as `Identity::issuer` is).
    pub subject: String,
    /// Subject Name, DER.
    pub(crate) subject_der: Vec<u8>,
    pub(crate) key: CaKey,
    /// SHA-256 of the CA certificate's DER (`sha256:` entries of `allowed_issuers`).
    pub(crate) cert_sha256: [u8; 32],
    /// notBefore, Unix seconds.
    pub(crate) not_before: i64,
    /// notAfter, Unix seconds.
    pub(crate) not_after: i64,
}

impl Anchor {
    fn parse(position: usize, der: &[u8]) -> Result<Anchor, TrustBundleError> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| {
            TrustBundleError::BadAnchor {
                index: position,
                detail: e.to_string(),
            }
        })?;
        Ok(Anchor {
            position,
            subject: cert.subject().to_string(),
            subject_der: cert.subject().as_raw().to_vec(),
            key: CaKey(Sha256::digest(cert.public_key().raw).into()),
            cert_sha256: Sha256::digest(der).into(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Why this CA cannot vouch for a certificate at `now` (Unix seconds, ± `skew`), if it
    /// cannot: expired or not yet valid.
    pub(crate) fn unusable_at(&self, now: i64, skew: i64) -> Option<ChainFailure> {
        if now.saturating_sub(skew) > self.not_after {
            return Some(ChainFailure::CaExpired {
                ca: self.subject.clone(),
                not_after: self.not_after,
            });
        }
        if now.saturating_add(skew) < self.not_before {
            return Some(ChainFailure::CaNotYetValid {
                ca: self.subject.clone(),
                not_before: self.not_before,
            });
        }
        None
    }
}

/// A trust bundle file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TrustBundleError {
    /// The PEM could not be read.
    #[error("bad PEM in trust bundle: {0}")]
    Pem(String),
    /// The bundle holds no certificate.
    #[error("trust bundle holds no CERTIFICATE")]
    Empty,
    /// A certificate in it cannot be a trust anchor.
    #[error("certificate #{index} of the trust bundle is not a usable CA: {detail}")]
    BadAnchor {
        /// 1-based position in the file.
        index: usize,
        /// Verifier's reason.
        detail: String,
    },
}

/// The CAs client certificates must chain to.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    anchors: Vec<TrustAnchor<'static>>,
    ca_ders: Vec<CertificateDer<'static>>,
    cas: Vec<Arc<Anchor>>,
}

impl TrustBundle {
    /// Every certificate in the PEM text becomes a trust anchor.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, TrustBundleError> {
        let ca_ders = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustBundleError::Pem(e.to_string()))?;
        if ca_ders.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        let anchors = ca_ders
            .iter()
            .enumerate()
            .map(|(i, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| TrustBundleError::BadAnchor {
                        index: i + 1,
                        detail: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cas = ca_ders
            .iter()
            .enumerate()
            .map(|(i, der)| Anchor::parse(i + 1, der).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustBundle {
            anchors,
            ca_ders,
            cas,
        })
    }

    /// The CAs, in file order (the same order as `ca_certificates`).
    pub fn cas(&self) -> &[Arc<Anchor>] {
        &self.cas
    }

    /// The CAs past their notAfter at `now` (± `skew`).
    pub(crate) fn expired(&self, now: i64, skew: i64) -> impl Iterator<Item = &Anchor> {
        self.cas
            .iter()
            .map(|a| a.as_ref())
            .filter(move |a| now.saturating_sub(skew) > a.not_after)
    }

    /// Number of CAs in the bundle.
    pub(crate) fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the bundle is empty (never true for a bundle built by [`Self::from_pem`]).
    pub(crate) fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The CA certificates, DER, in file order (for CRL signature checks).
    pub(crate) fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_ders
    }

    /// Verify that `leaf_der` chains to a CA of the bundle at `at` (Unix seconds); the CA
    /// whose key verified it. Its own validity is not judged here (see [`Anchor::unusable_at`]).
    pub(crate) fn verify(&self, leaf_der: &[u8], at: i64) -> Result<Arc<Anchor>, ChainFailure> {
        let der = CertificateDer::from(leaf_der);
        let leaf = EndEntityCert::try_from(&der).map_err(ChainFailure::Undecodable)?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            time,
            AnyUsage,
            None,
            None,
        )
        .map_err(|e| {
            let issuer = || issuer_of(leaf_der);
            match e {
                webpki::Error::UnknownIssuer => ChainFailure::UnknownIssuer { issuer: issuer() },
                webpki::Error::InvalidSignatureForPublicKey => {
                    ChainFailure::BadSignature { issuer: issuer() }
                }
                other => ChainFailure::Rejected(other),
            }
        })
        .and_then(|path| {
            // webpki hands back a reference into `self.anchors`: its position is the CA's.
            let at = self
                .anchors
                .iter()
                .position(|a| std::ptr::eq(a, path.anchor()));
            at.and_then(|i| self.cas.get(i))
                .cloned()
                .ok_or(ChainFailure::AnchorNotInBundle)
        })
    }
}

/// Key usage is judged by `authz` (row 5, which can be switched off), so the verifier accepts
/// any EKU along the path.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn issuer_of(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der)
        .map(|(_, c)| c.issuer().to_string())
        .unwrap_or_else(|_| "<unparsable>".into())
}
