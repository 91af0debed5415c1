//! Small X.509 issuing on rcgen: the dev CA, server and client certificates of `bootstrap`, and
//! test certificates with a knob for every property the authorization decision reads.
//! Keys are ECDSA P-256; time is always a parameter, the clock is never read here.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime, UtcOffset};

/// Organization (O) written into every CA subject.
pub(crate) const CA_ORGANIZATION: &str = "certgate dev";

/// Why a certificate could not be generated.
#[derive(thiserror::Error, Debug)]
pub enum PkiError {
    /// A validity bound cannot be encoded in X.509 (UTC year outside 0..=9999).
    #[error("validity time {0} cannot be encoded in a certificate")]
    UnrepresentableTime(OffsetDateTime),
    /// A custom extension OID is malformed (fewer than two arcs, or bad first arcs).
    #[error("invalid extension OID {0:?}")]
    InvalidOid(Vec<u64>),
    /// rcgen failed: key generation, signing, or a SAN that is not ASCII (IA5String).
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Extended key usage written into a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eku {
    /// id-kp-clientAuth only.
    #[default]
    ClientAuth,
    /// id-kp-serverAuth only.
    ServerAuth,
    /// id-kp-serverAuth and id-kp-clientAuth.
    ServerAndClient,
    /// No EKU extension at all.
    None,
    /// id-kp-codeSigning only: a certificate for the wrong usage.
    CodeSigning,
}

impl Eku {
    fn purposes(self) -> Vec<ExtendedKeyUsagePurpose> {
        use ExtendedKeyUsagePurpose as P;
        match self {
            Eku::ClientAuth => vec![P::ClientAuth],
            Eku::ServerAuth => vec![P::ServerAuth],
            Eku::ServerAndClient => vec![P::ServerAuth, P::ClientAuth],
            Eku::None => Vec::new(),
            Eku::CodeSigning => vec![P::CodeSigning],
        }
    }
}

/// Everything a leaf certificate may vary in; build with [`CertSpec::client`] or
/// [`CertSpec::server`] and override fields with struct update syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Subject CN; `None` leaves it out.
    pub common_name: Option<String>,
    /// Subject OU (certgate reads it as the principal type); `None` leaves it out.
    pub organizational_unit: Option<String>,
    /// DNS subject alternative names (ASCII).
    pub dns_sans: Vec<String>,
    /// URI subject alternative names (ASCII), e.g. `spiffe://example.com/ns/x/sa/y`.
    pub uri_sans: Vec<String>,
    /// notBefore; truncated to whole seconds. Not checked against `not_after`, so tests can
    /// build inverted validity.
    pub not_before: OffsetDateTime,
    /// notAfter; truncated to whole seconds.
    pub not_after: OffsetDateTime,
    /// Extended key usage.
    pub eku: Eku,
    /// Serial number; `None` draws a random one in `2^62..2^63` (always 16 hex digits).
    pub serial: Option<u64>,
    /// Non-critical extensions `(OID arcs, value)`, the value DER-encoded as a UTF8String.
    pub custom_extensions: Vec<(Vec<u64>, String)>,
}

impl CertSpec {
    /// Client certificate: subject CN `cn`, clientAuth, valid `now..now + lifetime`.
    pub fn client(cn: &str, now: OffsetDateTime, lifetime: Duration) -> Self {
        Self {
            common_name: Some(cn.to_owned()),
            organizational_unit: None,
            dns_sans: Vec::new(),
            uri_sans: Vec::new(),
            not_before: now,
            not_after: now.saturating_add(lifetime),
            eku: Eku::ClientAuth,
            serial: None,
            custom_extensions: Vec::new(),
        }
    }

    /// Server certificate: DNS SANs `dns` (the first is also the CN), serverAuth, valid
    /// `now..now + lifetime`.
    pub fn server(dns: &[&str], now: OffsetDateTime, lifetime: Duration) -> Self {
        Self {
            common_name: dns.first().map(|d| (*d).to_owned()),
            dns_sans: dns.iter().map(|d| (*d).to_owned()).collect(),
            eku: Eku::ServerAuth,
            ..Self::client("", now, lifetime)
        }
    }
}

/// A certificate issued by a [`CertAuthority`], with its freshly generated private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    #[cfg(test)]
    pub(crate) cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The serial number written into the certificate.
    pub serial: u64,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial", &format_args!("{:x}", self.serial))
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// A certificate authority: its key, its certificate and the rcgen issuer that signs with them.
#[derive(Debug)]
pub struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl CertAuthority {
    /// Self-signed root CA with subject `CN=cn, O=certgate dev`, valid `not_before..not_after`.
    pub fn new(
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let key = new_key()?;
        let params = ca_params(cn, not_before, not_after, &key)?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    /// Another self-signed CA certificate with this CA's key: subject `CN=cn, O=certgate dev`,
    /// valid `not_before..not_after` (a CA re-issued with new validity when `cn` is the same;
    /// two names on one key when it is not).
    #[cfg(test)]
    pub(crate) fn reissued(
        &self,
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let key = KeyPair::try_from(self.issuer.key().serialize_der().as_slice())?;
        let params = ca_params(cn, not_before, not_after, &key)?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    /// Intermediate CA signed by this one, subject `CN=cn, O=certgate dev`.
    #[cfg(test)]
    pub(crate) fn intermediate(
        &self,
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut params = ca_params(cn, not_before, not_after, &key)?;
        params.use_authority_key_identifier_extension = true;
        Ok(Self {
            issuer: CertifiedIssuer::signed_by(params, key, &self.issuer)?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    #[cfg(test)]
    pub(crate) fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// The CA private key, PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issue a leaf (basicConstraints CA:false, keyUsage digitalSignature) described by `spec`.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
        self.issue_with_key(spec, &new_key()?)
    }

    /// A fresh ECDSA P-256 key pair, for [`Self::issue_with_key`].
    pub fn new_leaf_key() -> Result<KeyPair, PkiError> {
        new_key()
    }

    /// Like [`Self::issue`], with a key pair the caller supplies: generating many test
    /// certificates is about twice as fast when they share one key. Give each a
    /// `spec.serial`: without one, the serial is derived from the key, so it repeats.
    pub fn issue_with_key(&self, spec: &CertSpec, key: &KeyPair) -> Result<IssuedCert, PkiError> {
        let serial = spec.serial.unwrap_or_else(|| random_serial(key));
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(ou) = &spec.organizational_unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou.as_str());
        }
        if let Some(cn) = &spec.common_name {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        let dns = spec
            .dns_sans
            .iter()
            .map(|d| Ok(SanType::DnsName(d.as_str().try_into()?)));
        let uri = spec
            .uri_sans
            .iter()
            .map(|u| Ok(SanType::URI(u.as_str().try_into()?)));
        params.subject_alt_names = dns.chain(uri).collect::<Result<_, rcgen::Error>>()?;
        params.not_before = x509_time(spec.not_before)?;
        params.not_after = x509_time(spec.not_after)?;
        params.serial_number = Some(SerialNumber::from(serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = spec.eku.purposes();
        params.use_authority_key_identifier_extension = true;
        for (oid, value) in &spec.custom_extensions {
            if !valid_oid(oid) {
                return Err(PkiError::InvalidOid(oid.clone()));
            }
            let content = der_utf8_string(value);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(oid, content));
        }
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            #[cfg(test)]
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }
}

mod crl;

pub use crl::{CrlSpec, IssuedCrl};

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

fn ca_params(
    cn: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key: &KeyPair,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = x509_time(not_before)?;
    params.not_after = x509_time(not_after)?;
    params.serial_number = Some(SerialNumber::from(random_serial(key)));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Serial in `2^62..2^63` from the hash of a freshly generated (random) public key: positive,
/// no DER sign byte, always 16 hex digits.
fn random_serial(key: &KeyPair) -> u64 {
    let digest = Sha256::digest(key.public_key_raw());
    let bits = digest
        .iter()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (bits >> 2) | (1 << 62)
}

/// UTC, whole seconds, year within 0..=9999: what rcgen can encode without panicking.
fn x509_time(t: OffsetDateTime) -> Result<OffsetDateTime, PkiError> {
    t.checked_to_offset(UtcOffset::UTC)
        .and_then(|t| t.replace_nanosecond(0).ok())
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or(PkiError::UnrepresentableTime(t))
}

/// The rules yasna asserts when writing an OID.
fn valid_oid(oid: &[u64]) -> bool {
    match oid {
        [0 | 1, second, ..] => *second < 40,
        [2, second, ..] => *second < u64::MAX - 80,
        _ => false,
    }
}

/// DER UTF8String: tag 0x0C, definite length (long form from 128 bytes), the UTF-8 bytes.
fn der_utf8_string(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = vec![0x0c];
    match u8::try_from(bytes.len()) {
        Ok(len) if len < 0x80 => out.push(len),
        _ => {
            let len = bytes.len().to_be_bytes();
            let skip = len.iter().take_while(|b| **b == 0).count();
            // At most size_of::<usize>() (≤ 16) length octets, so the count fits in 7 bits.
            out.push(0x80 | (len.len() - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
    }
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests;
