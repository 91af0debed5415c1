//! A CRL that passed every check, and how long it stays usable.

use super::{CrlError, CrlIssuer, Freshness, ParsedCrl, RevocationIndex, Staleness, decode_crl};
use crate::cert::{CaKey, TrustBundle};

/// A CRL that passed every check, indexed.
#[derive(Debug)]
pub struct VerifiedCrl {
    /// Issuer DN.
    pub(crate) issuer: String,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: i64,
    /// SHA-256 of the DER, hex.
    pub(crate) sha256: String,
    /// The key of the CA that verified it: the state it goes to.
    pub(crate) verified_by: CaKey,
    /// Where it was loaded from.
    pub(crate) source: String,
    /// The revoked serials.
    pub index: RevocationIndex,
}

impl VerifiedCrl {
    /// Decode, parse, check the issuer is `expected_issuer` (DER Name), verify the signature
    /// against the trust bundle, check the times at `now` (± `skew` seconds) and index.
    pub fn load(
        input: &[u8],
        trust: &TrustBundle,
        expected: &CrlIssuer,
        now: i64,
        skew: i64,
        source: &str,
    ) -> Result<VerifiedCrl, CrlError> {
        let der = decode_crl(input)?;
        let parsed = ParsedCrl::parse(&der)?;
        if parsed.issuer_der() != expected.subject_der.as_slice() {
            return Err(CrlError::WrongIssuer {
                expected: expected.name.clone(),
                found: parsed.issuer.clone(),
            });
        }
        let by = parsed.verify_signature(trust.ca_certificates())?;
        let verified_by =
            trust
                .cas()
                .get(by)
                .map(|ca| ca.key)
                .ok_or_else(|| CrlError::UnknownIssuer {
                    issuer: parsed.issuer.clone(),
                })?;
        parsed.check_times(now, skew)?;
        let index = parsed.index()?;
        let crl = VerifiedCrl {
            issuer: expected.name.clone(),
            this_update: parsed.this_update,
            next_update: parsed.next_update,
            sha256: parsed.sha256(),
            verified_by,
            source: source.to_owned(),
            index,
        };
        Ok(crl)
    }

    /// How this CRL is too old to use at `now`, if it is.
    pub(crate) fn unusable(&self, freshness: &Freshness, now: i64) -> Option<Staleness> {
        freshness.judge(self.this_update, self.next_update, now)
    }
}
