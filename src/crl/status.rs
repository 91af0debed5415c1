//! What the CRLs say about a certificate, and why they may say nothing: the typed causes the
//! check's deny message, `/readyz` and `certgate crl inspect` all word the same way.

use std::fmt;

use super::Freshness;
use crate::cert::{CaKey, ChainFailure};
use crate::clock::{human, rfc3339};

/// What the CRLs say about one certificate (rows 7 and 7b), computed in memory from the
/// loaded CRLs at `now` (see [`super::RevocationSnapshot::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlStatus {
    /// No CRL source is configured for the certificate's issuer.
    NotConfigured,
    /// The issuer's CRL is usable and does not list the serial.
    NotListed,
    /// The issuer's usable CRL lists the serial.
    Revoked {
        /// RFC 5280 reason name (`key_compromise`, …).
        reason: &'static str,
        /// revocationDate, Unix seconds.
        revoked_at: i64,
    },
    /// No usable CRL (boxed: the cause is large, and only a deny or a warning pays for it).
    Unknown(Box<UnknownCause>),
}

/// Why no usable CRL speaks for a certificate.
///
/// `{}` is the deny message's wording, with the last refresh failure in full (source, error);
/// `{:#}` is the same sentence with only the `FailureClass` of that failure, for `/readyz`,
/// which never shows a URL or a transport error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownCause {
    /// The chain did not verify, so no CA key can say which CRL decides.
    ChainUnverified(ChainFailure),
    /// No CRL of this CA key was ever installed.
    NeverLoaded {
        /// The configured issuer name.
        issuer: String,
        /// The CA key whose CRL is missing.
        key: CaKey,
        /// The last failed refresh, if one was tried.
        last_error: Option<RefreshFailure>,
    },
    /// The CRL in force is too old to use.
    Stale {
        /// The configured issuer name.
        issuer: String,
        /// The CA key of the CRL in force.
        key: CaKey,
        /// How it is too old.
        staleness: Staleness,
        /// The last failed refresh, if the last one failed.
        last_error: Option<RefreshFailure>,
    },
}

impl fmt::Display for UnknownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The last failure is written with this formatter, so it follows its `{:#}` flag.
        match self {
            UnknownCause::ChainUnverified(failure) => {
                write!(f, "the chain is not verified: {failure}")
            }
            UnknownCause::NeverLoaded {
                issuer,
                key,
                last_error,
            } => {
                write!(
                    f,
                    "no CRL of issuer '{issuer}' has been loaded (CA key {key}; "
                )?;
                match last_error {
                    Some(e) => fmt::Display::fmt(e, f)?,
                    None => f.write_str("not fetched yet")?,
                }
                f.write_str(")")
            }
            UnknownCause::Stale {
                issuer,
                key,
                staleness,
                last_error,
            } => {
                write!(f, "the CRL of '{issuer}' (CA key {key}) is {staleness}")?;
                match last_error {
                    Some(e) => {
                        f.write_str("; last refresh: ")?;
                        fmt::Display::fmt(e, f)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why `/readyz` fails: the configured CA keys without a usable CRL.
///
/// Shown with each cause's public form, so it names each CA (name and key) and the kind of
/// failure; URLs and error texts stay in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub Vec<UnknownCause>);

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cause) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{cause:#}")?;
        }
        Ok(())
    }
}

/// How a CRL is too old to use at some moment: the one freshness judgement
/// (`Freshness::judge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Staleness {
    /// Issued longer ago than `max_age`.
    TooOld {
        /// thisUpdate, Unix seconds.
        this_update: i64,
        /// now − thisUpdate, seconds.
        age_secs: i64,
        /// The configured max_age, seconds.
        max_age_secs: i64,
    },
    /// Past its nextUpdate by more than the grace.
    PastNextUpdate {
        /// nextUpdate, Unix seconds.
        next_update: i64,
        /// now − nextUpdate, seconds.
        overdue_secs: i64,
        /// The configured grace, seconds.
        grace_secs: i64,
        /// now − thisUpdate, seconds.
        age_secs: i64,
    },
}

/// "stale: …", to follow "is".
impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Staleness::TooOld {
                this_update,
                age_secs,
                max_age_secs,
            } => write!(
                f,
                "stale: issued {} ago (thisUpdate {}), max_age is {}",
                human(age_secs),
                rfc3339(this_update),
                human(max_age_secs)
            ),
            Staleness::PastNextUpdate {
                next_update,
                overdue_secs,
                grace_secs,
                age_secs,
            } => write!(
                f,
                "stale: past its nextUpdate {} by {} (grace {}), age {}",
                rfc3339(next_update),
                human(overdue_secs),
                human(grace_secs),
                human(age_secs)
            ),
        }
    }
}

impl Freshness {
    /// Whether a CRL of `this_update` and `next_update` (Unix seconds) is too old to use at
    /// `now`, and how.
    pub(crate) fn judge(&self, this_update: i64, next_update: i64, now: i64) -> Option<Staleness> {
        let age_secs = now.saturating_sub(this_update);
        if age_secs > self.max_age_secs {
            return Some(Staleness::TooOld {
                this_update,
                age_secs,
                max_age_secs: self.max_age_secs,
            });
        }
        if now > next_update.saturating_add(self.next_update_grace_secs) {
            return Some(Staleness::PastNextUpdate {
                next_update,
                overdue_secs: now - next_update,
                grace_secs: self.next_update_grace_secs,
                age_secs,
            });
        }
        None
    }
}

/// What kind of failure left a CA without a new CRL: the part of a failure `/readyz` shows
/// (URLs and transport errors stay in the logs and in [`RefreshFailure::detail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum FailureClass {
    /// The source could not be read (HTTP status, timeout, transport, size limit, file I/O).
    FetchFailed,
    /// Bytes were read but are not a usable CRL of this CA (encoding, profile, signature…).
    Invalid,
    /// The CRL read is too old to use (max_age or nextUpdate).
    Stale,
    /// The CRL read is older than one already installed for this CA key, before a restart
    /// included (the high-water mark).
    OlderThanSeen,
}

impl FailureClass {
    /// Words for `/readyz`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureClass::FetchFailed => "fetch failed",
            FailureClass::Invalid => "invalid CRL",
            FailureClass::Stale => "stale CRL",
            FailureClass::OlderThanSeen => "CRL older than one already seen",
        }
    }
}

/// The last failed refresh of a CA's CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// What kind of failure.
    pub(crate) class: FailureClass,
    /// The whole story (source, error): for logs and deny messages.
    pub(crate) detail: String,
}

/// The detail; `{:#}`: the class only.
impl fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(self.class.as_str())
        } else {
            f.write_str(&self.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESHNESS: Freshness = Freshness {
        max_age_secs: 3600,
        next_update_grace_secs: 600,
    };

    #[test]
    fn freshness_is_max_age_first_then_next_update_with_its_grace() {
        let judge = |this_update, next_update| FRESHNESS.judge(this_update, next_update, 10_000);
        assert_eq!(
            judge(10_000 - 3600, 20_000),
            None,
            "max_age itself is fresh"
        );
        assert!(matches!(
            judge(10_000 - 3601, 0),
            Some(Staleness::TooOld { age_secs: 3601, .. })
        ));
        assert_eq!(judge(9_000, 10_000 - 600), None, "within the grace");
        assert!(matches!(
            judge(9_000, 10_000 - 601),
            Some(Staleness::PastNextUpdate {
                overdue_secs: 601,
                ..
            })
        ));
    }

    #[test]
    fn the_public_form_names_the_failure_class_not_its_detail() {
        let cause = UnknownCause::NeverLoaded {
            issuer: "CN=ca".to_owned(),
            key: CaKey([1; 32]),
            last_error: Some(RefreshFailure {
                class: FailureClass::FetchFailed,
                detail: "http://crl.example/ca.crl: HTTP status 500".to_owned(),
            }),
        };
        let key = CaKey([1; 32]);
        assert_eq!(
            cause.to_string(),
            format!(
                "no CRL of issuer 'CN=ca' has been loaded (CA key {key}; \
                 http://crl.example/ca.crl: HTTP status 500)"
            )
        );
        assert_eq!(
            format!("{cause:#}"),
            format!("no CRL of issuer 'CN=ca' has been loaded (CA key {key}; fetch failed)")
        );
    }
}
