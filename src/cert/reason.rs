//! RFC 5280 CRLReason, shared by CRL entries, the store's revocations and the CLI, by its
//! snake_case name (the strings stored in `revocation_reason`).

use std::fmt;
use std::str::FromStr;

/// RFC 5280 CRLReason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason code in the entry, or `unspecified`.
    Unspecified,
    /// The key was compromised.
    KeyCompromise,
    /// The CA was compromised.
    CaCompromise,
    /// The subject's affiliation changed.
    AffiliationChanged,
    /// Replaced by another certificate.
    Superseded,
    /// No longer needed.
    CessationOfOperation,
    /// On hold (may be released by a later CRL).
    CertificateHold,
    /// Released from hold (only in delta CRLs).
    RemoveFromCrl,
    /// A privilege was withdrawn.
    PrivilegeWithdrawn,
    /// An attribute authority was compromised.
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, in the order of their codes.
    pub const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The snake_case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key_compromise",
            RevocationReason::CaCompromise => "ca_compromise",
            RevocationReason::AffiliationChanged => "affiliation_changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation_of_operation",
            RevocationReason::CertificateHold => "certificate_hold",
            RevocationReason::RemoveFromCrl => "remove_from_crl",
            RevocationReason::PrivilegeWithdrawn => "privilege_withdrawn",
            RevocationReason::AaCompromise => "aa_compromise",
        }
    }

    /// Whether a certificate can be revoked for this reason: `remove_from_crl` only
    /// releases a hold in a delta CRL.
    pub(crate) fn revokes(self) -> bool {
        self != RevocationReason::RemoveFromCrl
    }

    /// The RFC 5280 code.
    pub(crate) fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The reason of an RFC 5280 code; `unspecified` for 7 (unused) and unknown codes.
    pub(crate) fn from_code(code: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.code() == code)
            .unwrap_or(RevocationReason::Unspecified)
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a revocation reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 5280 revocation reason")]
pub struct UnknownRevocationReason(String);

impl FromStr for RevocationReason {
    type Err = UnknownRevocationReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| UnknownRevocationReason(text.to_owned()))
    }
}

impl From<webpki::RevocationReason> for RevocationReason {
    fn from(r: webpki::RevocationReason) -> Self {
        use webpki::RevocationReason as W;
        match r {
            W::Unspecified => RevocationReason::Unspecified,
            W::KeyCompromise => RevocationReason::KeyCompromise,
            W::CaCompromise => RevocationReason::CaCompromise,
            W::AffiliationChanged => RevocationReason::AffiliationChanged,
            W::Superseded => RevocationReason::Superseded,
            W::CessationOfOperation => RevocationReason::CessationOfOperation,
            W::CertificateHold => RevocationReason::CertificateHold,
            W::RemoveFromCrl => RevocationReason::RemoveFromCrl,
            W::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
            W::AaCompromise => RevocationReason::AaCompromise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [0u8, 1, 2, 3, 4, 5, 6, 8, 9, 10] {
            assert_eq!(RevocationReason::from_code(code).code(), code);
        }
        assert_eq!(
            RevocationReason::from_code(7),
            RevocationReason::Unspecified
        );
    }

    #[test]
    fn names_round_trip_and_are_the_stored_strings() {
        for reason in RevocationReason::ALL {
            assert_eq!(reason.to_string().parse(), Ok(reason));
        }
        // Written into DynamoDB items by the runbook and into the embedded store by the CLI.
        let stored = [
            "unspecified",
            "key_compromise",
            "ca_compromise",
            "affiliation_changed",
            "superseded",
            "cessation_of_operation",
            "certificate_hold",
            "privilege_withdrawn",
            "aa_compromise",
        ];
        let revoking: Vec<_> = RevocationReason::ALL
            .into_iter()
            .filter(|r| r.revokes())
            .map(RevocationReason::as_str)
            .collect();
        assert_eq!(revoking, stored);
        assert!("stolen".parse::<RevocationReason>().is_err());
        assert!("KeyCompromise".parse::<RevocationReason>().is_err());
    }
}
