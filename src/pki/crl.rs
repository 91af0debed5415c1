//! Signing CRLs with a [`CertAuthority`].

use rcgen::SerialNumber;
use time::{Duration, OffsetDateTime};

use super::{CertAuthority, PkiError, x509_time};

/// A CRL to sign with [`CertAuthority::crl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSpec {
    /// thisUpdate; truncated to whole seconds.
    pub this_update: OffsetDateTime,
    /// nextUpdate; must be after `this_update`.
    pub next_update: OffsetDateTime,
    /// cRLNumber.
    pub number: u64,
    /// Revoked serials with their reason; each revoked one hour before `this_update`.
    pub revoked: Vec<(u64, Option<rcgen::RevocationReason>)>,
}

impl CrlSpec {
    /// An empty CRL valid `this_update..this_update + validity`, number 1.
    pub fn new(this_update: OffsetDateTime, validity: Duration) -> Self {
        CrlSpec {
            this_update,
            next_update: this_update.saturating_add(validity),
            number: 1,
            revoked: Vec::new(),
        }
    }
}

/// A signed CRL.
#[derive(Debug, Clone)]
pub struct IssuedCrl {
    /// DER.
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`).
    pub pem: String,
}

impl CertAuthority {
    /// Sign a CRL listing `spec.revoked` with this CA's key.
    pub fn crl(&self, spec: &CrlSpec) -> Result<IssuedCrl, PkiError> {
        let this_update = x509_time(spec.this_update)?;
        let revoked_at = x509_time(this_update.saturating_sub(Duration::hours(1)))?;
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update: x509_time(spec.next_update)?,
            crl_number: SerialNumber::from(spec.number),
            issuing_distribution_point: None,
            revoked_certs: spec
                .revoked
                .iter()
                .map(|(serial, reason)| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: revoked_at,
                    reason_code: *reason,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        Ok(IssuedCrl {
            der: crl.der().to_vec(),
            pem: crl.pem()?,
        })
    }
}
