//! What a check leaves behind for the people operating certgate (README "Logs", "Traces"):
//! its request id, one decision-log event, its trace span, and the Envoy dynamic metadata
//! that describes it. The decision itself never depends on any of it.

pub(crate) mod decision_log;
pub mod otel;
pub(crate) mod request_id;
pub mod span_fields;

use std::collections::HashSet;

pub(crate) use decision_log::DecisionLog;
pub use otel::TracingSettings;

/// The `log:`, `tracing:`, `response.identity` and `policies.*.enforce` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveSettings {
    /// Which checks get a decision-log event.
    pub(crate) decisions: DecisionLog,
    /// OpenTelemetry export (read once at start).
    pub tracing: TracingSettings,
    /// Where Envoy gets the identity of an allowed request.
    pub(crate) identity: IdentityIn,
    /// Policies whose denies are logged and counted but not enforced (`enforce: false`).
    pub(crate) shadow_policies: HashSet<String>,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        ObserveSettings {
            decisions: DecisionLog::Deny,
            tracing: TracingSettings::default(),
            identity: IdentityIn::HeadersAndMetadata,
            shadow_policies: HashSet::new(),
        }
    }
}

/// `response.identity`: how an ext_authz allow carries the identity to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IdentityIn {
    /// Request headers for the upstream, and dynamic metadata.
    #[default]
    HeadersAndMetadata,
    /// Dynamic metadata only: Envoy applies no header mutation (client-sent copies of the
    /// identity headers are still removed).
    MetadataOnly,
    /// Request headers only: an allow carries no dynamic metadata, which Envoy would otherwise
    /// decode and merge on every request (denies and shadow answers keep theirs).
    HeadersOnly,
}

/// The way a check came in (`transport` in the decision log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Envoy ext_authz gRPC.
    Grpc,
    /// HTTP forward-auth.
    ForwardAuth,
    /// A call into the library (`certgate check`, embedding code).
    Module,
}

impl Transport {
    /// The name logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::ForwardAuth => "forward-auth",
            Transport::Module => "module",
        }
    }
}

/// What the adapter knows about the request besides what the decision needs.
#[derive(Debug, Clone)]
pub struct RequestMeta<'a> {
    /// See [`request_id::request_id`].
    pub request_id: &'a str,
    /// `Host` / `:authority` as the proxy saw it.
    pub host: &'a str,
    /// How the check came in.
    pub transport: Transport,
    /// The caller's trace context: W3C `traceparent`/`tracestate` or B3.
    pub trace: Trace<'a>,
}

/// The caller's trace context, read from its headers only when the check asks for it (its
/// span is exported, or its decision logged): a check that does neither, most allows, skips
/// the header lookups (~3k instructions of an ext_authz check).
#[derive(Clone, Copy, Default)]
pub struct Trace<'a>(Option<&'a (dyn Fn() -> otel::Incoming<'a> + Sync)>);

impl<'a> Trace<'a> {
    /// The context `read` finds, when it is asked for.
    pub fn from_fn(read: &'a (dyn Fn() -> otel::Incoming<'a> + Sync)) -> Self {
        Trace(Some(read))
    }

    /// The context, read now (none when there is no reader).
    pub(crate) fn read(&self) -> otel::Incoming<'a> {
        self.0.map(|read| read()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Trace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Trace(from headers)"
        } else {
            "Trace(none)"
        })
    }
}

impl<'a> RequestMeta<'a> {
    /// A library call with a fresh request id holder.
    pub fn module(request_id: &'a str) -> Self {
        RequestMeta {
            request_id,
            host: "",
            transport: Transport::Module,
            trace: Trace::default(),
        }
    }
}
