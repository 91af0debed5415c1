//! Chain verification against the configured trust bundle with rustls-webpki. Only the chain
//! (signatures, CA constraints, CA validity) is judged here; the leaf's own validity window
//! and key usage are judged by `authz`, so each failure gets its own reason code.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

/// Why a certificate's chain does not lead to the trust bundle (SPEC row 3).
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
    /// Any other verifier verdict (CA expired, CA constraints, unsupported algorithm…).
    #[error("chain verification failed: {0}")]
    Other(String),
}

/// A trust bundle file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustBundleError {
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
}

impl TrustBundle {
    /// Every certificate in the PEM text becomes a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TrustBundleError> {
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
        Ok(TrustBundle { anchors, ca_ders })
    }

    /// Number of CAs in the bundle.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the bundle is empty (never true for a bundle built by [`Self::from_pem`]).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The CA certificates, DER, in file order (for CRL signature checks).
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_ders
    }

    /// Verify that `leaf_der` chains to a CA of the bundle at `at` (Unix seconds).
    pub fn verify(&self, leaf_der: &[u8], at: i64) -> Result<(), ChainFailure> {
        let der = CertificateDer::from(leaf_der);
        let leaf = EndEntityCert::try_from(&der).map_err(|e| ChainFailure::Other(e.to_string()))?;
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
        .map(|_| ())
        .map_err(|e| {
            let issuer = || issuer_of(leaf_der);
            match e {
                webpki::Error::UnknownIssuer => ChainFailure::UnknownIssuer { issuer: issuer() },
                webpki::Error::InvalidSignatureForPublicKey => {
                    ChainFailure::BadSignature { issuer: issuer() }
                }
                other => ChainFailure::Other(format!("{other:?}")),
            }
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
