//! `log:`, `tracing:`, `response.identity` and `policies.*.enforce`.

use std::collections::HashMap;

use super::Validator;
use crate::config::raw::{RawLog, RawPolicy, RawTracing};
use crate::observe::{DecisionLog, IdentityIn, ObserveSettings, TracingSettings};

impl Validator<'_> {
    pub(super) fn observe(
        &mut self,
        log: &RawLog,
        tracing: &RawTracing,
        identity: IdentityIn,
        policies: &HashMap<String, RawPolicy>,
    ) -> ObserveSettings {
        let decisions = DecisionLog::parse(&log.decisions).unwrap_or_else(|why| {
            self.problem("log.decisions", why);
            DecisionLog::Deny
        });
        if let Some(ratio) = tracing.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            self.problem(
                "tracing.sample_ratio",
                format!("{ratio} is outside 0.0..=1.0"),
            );
        }
        if let Some(endpoint) = &tracing.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            self.problem(
                "tracing.endpoint",
                format!("\"{endpoint}\" is not an http:// or https:// URL"),
            );
        }
        ObserveSettings {
            decisions,
            tracing: TracingSettings {
                enabled: tracing.enabled,
                endpoint: tracing.endpoint.clone(),
                sample_ratio: tracing.sample_ratio,
            },
            identity,
            shadow_policies: policies
                .iter()
                .filter(|(_, p)| !p.enforce)
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }
}
