//! OpenTelemetry traces (README "Traces"): off unless `tracing.enabled`; then every check is
//! a span exported over OTLP gRPC, a child of the caller's span when the caller sent W3C
//! `traceparent` or B3. Off, nothing here runs on the hot path but a flag read.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once at start).
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `tracing:` section. What it leaves unset comes from the standard `OTEL_*` variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingSettings {
    /// Export spans at all.
    pub enabled: bool,
    /// OTLP gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: Option<String>,
    /// Fraction of new traces sampled (a caller's sampling decision is followed).
    pub sample_ratio: Option<f64>,
}

/// Flushes the spans still buffered when the process exits.
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// The tracing layer that exports spans, when `settings` enable it. Must run inside the
/// Tokio runtime (the gRPC exporter's connection lives there).
pub fn layer<S>(
    settings: &TracingSettings,
) -> anyhow::Result<Option<(impl tracing_subscriber::Layer<S>, Exporting)>>
where
    S: tracing::Subscriber + for<'s> tracing_subscriber::registry::LookupSpan<'s>,
{
    if !settings.enabled {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &settings.endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("certgate");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(resource);
    if let Some(ratio) = settings.sample_ratio {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider.build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("certgate"));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, Exporting(provider))))
}

/// A child span of the current check for work worth seeing in a trace (certificate parse,
/// CRL lookup, store lookup); disabled, and free, when not exporting.
pub(crate) fn child_span(name: &'static str) -> tracing::Span {
    if enabled() {
        tracing::info_span!("step", otel.name = name)
    } else {
        tracing::Span::none()
    }
}

/// [`child_span`], entered until dropped (synchronous work only).
pub(crate) fn child(name: &'static str) -> tracing::span::EnteredSpan {
    child_span(name).entered()
}

/// The caller's trace context as sent, W3C first, then B3 (single and multi header).
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
    b3: Option<&'a str>,
    b3_trace_id: Option<&'a str>,
    b3_span_id: Option<&'a str>,
    b3_sampled: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    /// Read the propagation headers with `get` (lowercase names).
    pub fn from_headers(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Incoming {
            traceparent: get("traceparent"),
            tracestate: get("tracestate"),
            b3: get("b3"),
            b3_trace_id: get("x-b3-traceid"),
            b3_span_id: get("x-b3-spanid"),
            b3_sampled: get("x-b3-sampled"),
        }
    }

    /// `self`, or `other` when `self` carries no context (gRPC metadata before the
    /// CheckRequest's copy of the downstream headers).
    pub(crate) fn or(self, other: Incoming<'a>) -> Incoming<'a> {
        if self.traceparent.is_some() || self.b3.is_some() || self.b3_trace_id.is_some() {
            self
        } else {
            other
        }
    }

    /// The remote parent span, if the headers name a valid one.
    fn parent(&self) -> Option<SpanContext> {
        if self.traceparent.is_some() {
            let context = TraceContextPropagator::new().extract(self);
            let span = context.span().span_context().clone();
            return span.is_valid().then_some(span);
        }
        let (trace, span, sampled) = match self.b3 {
            Some(single) => {
                let mut parts = single.split('-');
                (parts.next(), parts.next(), parts.next())
            }
            None => (self.b3_trace_id, self.b3_span_id, self.b3_sampled),
        };
        let trace = TraceId::from_hex(&format!("{:0>32}", trace?)).ok()?;
        let span = SpanId::from_hex(span?).ok()?;
        let flags = match sampled {
            Some("1" | "d" | "true") => TraceFlags::SAMPLED,
            _ => TraceFlags::default(),
        };
        let context = SpanContext::new(trace, span, flags, true, TraceState::default());
        context.is_valid().then_some(context)
    }

    /// The trace id the caller sent, as 32 lowercase hex digits.
    fn trace_id(&self) -> Option<String> {
        self.parent().map(|p| p.trace_id().to_string())
    }
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Make `span` a child of the caller's span (only when exporting).
pub(crate) fn adopt(span: &tracing::Span, incoming: &super::Trace<'_>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = incoming.read().parent() {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// The trace this check belongs to: its own span's when exporting, else the caller's.
pub(crate) fn trace_id(span: &tracing::Span, incoming: &super::Trace<'_>) -> Option<String> {
    if enabled() {
        let context = span.context();
        let own = context.span().span_context().trace_id();
        if own != TraceId::INVALID {
            return Some(own.to_string());
        }
    }
    incoming.read().trace_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming<'a>(headers: &'a [(&'a str, &'a str)]) -> Incoming<'a> {
        Incoming::from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    }

    #[test]
    fn w3c_then_b3_single_then_b3_multi() {
        let w3c = [(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )];
        assert_eq!(
            incoming(&w3c).trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let single = [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")];
        let parent = incoming(&single).parent().unwrap();
        assert_eq!(
            parent.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(parent.is_sampled());
        let multi = [
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ];
        let parent = incoming(&multi).parent().unwrap();
        assert_eq!(
            parent.trace_id().to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(!parent.is_sampled());
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for headers in [
            [(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            [("traceparent", "garbage")],
            [("b3", "not-hex")],
            [("x-b3-traceid", "zz")],
        ] {
            assert!(incoming(&headers).parent().is_none(), "{headers:?}");
        }
    }
}
