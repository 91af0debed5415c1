//! The decision log (README "Logs"): one event per logged check, target `certgate::decision`,
//! every field its own key. Denies are always logged; allows per `log.decisions`. Nothing is
//! formatted for a check that is not logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::RequestMeta;
use crate::check::{CheckInput, Outcome};

/// `log.decisions`: which allows are logged besides every deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecisionLog {
    /// Denies only (shadow denies included).
    Deny,
    /// Every check.
    All,
    /// Denies, and one allow in every N.
    Sample(u32),
}

impl DecisionLog {
    /// Parse `deny`, `all` or `sample(N)` with N in 1..=1,000,000.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("\"{text}\" is not one of deny, all, sample(N)");
        match text.trim() {
            "deny" => Ok(DecisionLog::Deny),
            "all" => Ok(DecisionLog::All),
            other => {
                let n = other
                    .strip_prefix("sample(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .ok_or_else(invalid)?
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| invalid())?;
                if (1..=1_000_000).contains(&n) {
                    Ok(DecisionLog::Sample(n))
                } else {
                    Err(format!("sample({n}): N must be in 1..=1000000"))
                }
            }
        }
    }

    /// Whether this check is logged; `denied` includes shadow denies.
    fn wants(self, denied: bool) -> bool {
        static ALLOWS: AtomicU64 = AtomicU64::new(0);
        match self {
            _ if denied => true,
            DecisionLog::Deny => false,
            DecisionLog::All => true,
            DecisionLog::Sample(n) => ALLOWS
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(n)),
        }
    }
}

/// Whether `log.decisions` asks for `outcome` to be logged (asked once per check: sampling
/// counts the calls), so an unlogged check does not even enter its span.
pub(crate) fn wanted(outcome: &Outcome) -> bool {
    outcome
        .config()
        .observe
        .decisions
        .wants(outcome.decision.is_err())
        && tracing::enabled!(target: "certgate::decision", tracing::Level::INFO)
}

/// Log `outcome`, which is [`wanted`].
pub(crate) fn record(
    span: &tracing::Span,
    outcome: &Outcome,
    input: &CheckInput<'_>,
    meta: &RequestMeta<'_>,
    latency: Duration,
) {
    let denied = outcome.decision.is_err();
    let id = outcome.identity();
    let deny = outcome.decision.as_ref().err();
    let grant = outcome.decision.as_ref().ok();
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    tracing::info!(
        target: "certgate::decision",
        time,
        request_id = meta.request_id,
        trace_id = super::otel::trace_id(span, &meta.trace),
        decision = if denied { "deny" } else { "allow" },
        mode = if outcome.shadow { "shadow" } else { "enforce" },
        reason = deny.map(|d| d.reason.as_str()),
        detail = deny.map(|d| d.message.as_str()),
        status = deny.map_or(200, |d| d.reason.http_status()),
        policy = %outcome.policy,
        principal = outcome.principal(),
        principal_type = grant.map(|g| g.principal_type.as_str()),
        roles = grant.map(|g| g.roles.join(",")),
        cn = id.and_then(|id| id.common_name()),
        serial = id.map(|id| id.serial().to_string()),
        issuer = id.map(|id| id.issuer()),
        sha256 = id.map(|id| id.sha256_hex()),
        spiffe_id = id.and_then(|id| id.spiffe_id()),
        method = input.method,
        host = meta.host,
        path = input.path,
        transport = meta.transport.as_str(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        caches = if outcome.identity_cached { "identity" } else { "" },
        "decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_values_say_why() {
        assert_eq!(DecisionLog::parse("deny"), Ok(DecisionLog::Deny));
        assert_eq!(DecisionLog::parse("all"), Ok(DecisionLog::All));
        assert_eq!(
            DecisionLog::parse("sample(100)"),
            Ok(DecisionLog::Sample(100))
        );
        for bad in ["allow", "sample()", "sample(0)", "sample(x)", "sample(5"] {
            assert!(DecisionLog::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn denies_are_always_wanted_and_sampling_keeps_one_allow_in_n() {
        assert!(DecisionLog::Deny.wants(true));
        assert!(!DecisionLog::Deny.wants(false));
        assert!(DecisionLog::All.wants(false));
        let kept = (0..1000)
            .filter(|_| DecisionLog::Sample(10).wants(false))
            .count();
        assert_eq!(kept, 100);
    }
}
