//! The dynamic metadata of every `CheckResponse` (README "Logs"): Envoy stores it under the
//! ext_authz filter's namespace (`envoy.filters.http.ext_authz`), where access logs
//! (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:principal)%`), RBAC and Lua read it.

use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

use crate::check::Outcome;
use crate::observe::IdentityIn;

/// Whether `outcome`'s answer carries dynamic metadata: always but on an allow under
/// `response.identity: headers_only`.
pub(crate) fn wanted(outcome: &Outcome) -> bool {
    outcome.decision.is_err() || outcome.config().observe.identity != IdentityIn::HeadersOnly
}

/// `decision`, `mode`, `policy`, `request_id`, and what is known of the identity: `principal`,
/// `principal_type` and `roles` (allow), `cn`, `serial`, and `reason` (deny).
pub(crate) fn of(outcome: &Outcome, request_id: &str) -> Struct {
    let mut fields = std::collections::HashMap::with_capacity(10);
    let mut put = |key: &str, value: &str| {
        fields.insert(
            key.to_owned(),
            Value {
                kind: Some(Kind::StringValue(value.to_owned())),
            },
        );
    };
    put("request_id", request_id);
    put("policy", &outcome.policy);
    put("mode", if outcome.shadow { "shadow" } else { "enforce" });
    match &outcome.decision {
        Ok(grant) => {
            put("decision", "allow");
            put("principal_type", &grant.principal_type);
            put("roles", &grant.roles.join(","));
        }
        Err(deny) => {
            put("decision", "deny");
            put("reason", deny.reason.as_str());
        }
    }
    if let Some(id) = outcome.identity() {
        if let Some(principal) = id.principal_id() {
            put("principal", principal);
        }
        if let Some(cn) = id.common_name() {
            put("cn", cn);
        }
        put("serial", &id.serial().to_string());
    }
    Struct { fields }
}
