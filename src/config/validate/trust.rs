//! `trust`: the CA bundle and the certificate rules.

use super::Validator;
use crate::authz::{CertificateRules, ClientAuthEku};
use crate::cert::TrustBundle;
use crate::config::Watched;
use crate::config::raw::{RawEku, RawTrust};

impl Validator<'_> {
    /// The CA bundle and the rules of rows 3–5 (`trust`).
    pub(super) fn trust(
        &mut self,
        raw: &RawTrust,
        watched: &mut Watched,
    ) -> (Option<TrustBundle>, CertificateRules) {
        let trust = self
            .read_file("trust.ca_bundle", &raw.ca_bundle, watched)
            .and_then(|pem| {
                TrustBundle::from_pem(&pem)
                    .map_err(|e| self.problem("trust.ca_bundle", e.to_string()))
                    .ok()
            });
        let certificate_rules = CertificateRules {
            clock_skew_secs: self.duration("trust.clock_skew", &raw.clock_skew).as_secs() as i64,
            require_client_auth_eku: match &raw.require_client_auth_eku {
                RawEku::Bool(false) => ClientAuthEku::Off,
                RawEku::Bool(true) => ClientAuthEku::IfPresent,
                RawEku::Text(t) if t == "strict" => ClientAuthEku::Strict,
                RawEku::Text(t) => {
                    self.problem(
                        "trust.require_client_auth_eku",
                        format!("\"{t}\" is not true, false or strict"),
                    );
                    ClientAuthEku::Strict
                }
            },
        };
        if let (Some(now), Some(trust)) = (self.now, &trust) {
            self.no_expired_anchors(trust, now, certificate_rules.clock_skew_secs);
        }
        (trust, certificate_rules)
    }

    /// An expired CA validates nothing (checks deny its certificates `untrusted_issuer`); in
    /// the bundle it is a mistake to fix, so the configuration is refused (fail fast).
    fn no_expired_anchors(&mut self, trust: &TrustBundle, now: i64, skew: i64) {
        for ca in trust.expired(now, skew) {
            self.problem(
                "trust.ca_bundle",
                format!(
                    "CA #{} '{}' expired at {} and validates nothing: remove it from the bundle",
                    ca.position,
                    ca.subject,
                    crate::clock::rfc3339(ca.not_after)
                ),
            );
        }
    }
}
