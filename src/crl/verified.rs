//! A CRL that passed every check, and how long it stays usable.

use super::{CrlError, CrlIssuer, Freshness, ParsedCrl, RevocationIndex, decode_crl};
use crate::cert::{CaKey, TrustBundle};
use crate::clock::{human, rfc3339};

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

    /// Why this CRL cannot be used at `now`, if it cannot ("stale: …", to follow "is").
    pub(crate) fn unusable(&self, freshness: &Freshness, now: i64) -> Option<String> {
        let age = now.saturating_sub(self.this_update);
        if age > freshness.max_age_secs {
            return Some(format!(
                "stale: issued {} ago (thisUpdate {}), max_age is {}",
                human(age),
                rfc3339(self.this_update),
                human(freshness.max_age_secs)
            ));
        }
        if now
            > self
                .next_update
                .saturating_add(freshness.next_update_grace_secs)
        {
            return Some(format!(
                "stale: past its nextUpdate {} by {} (grace {}), age {}",
                rfc3339(self.next_update),
                human(now - self.next_update),
                human(freshness.next_update_grace_secs),
                human(age)
            ));
        }
        None
    }
}
