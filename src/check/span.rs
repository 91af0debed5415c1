//! The `check` span of one check, opened only when something is recorded in it.
//!
//! Opening a span costs ~3,500 instructions (the subscriber's slot, the JSON log layer's
//! formatted fields, entering, closing), a tenth of a cached ext_authz check. Most checks are
//! allows that record nothing: no decision log line (only denies by default), no warning, no
//! exported trace. So the span opens eagerly only when spans are exported (OpenTelemetry,
//! where every check is a span and its children need a parent); otherwise it opens at the
//! first line a check logs, and that line and every later one of the check is inside it,
//! with the request id, as README "Logs" promises. Code that logs during a check logs
//! through [`CheckSpan::in_scope`].

use std::sync::OnceLock;
use std::time::Instant;

use crate::observe::{self, RequestMeta};

/// One check's `check` span, opened on first use.
pub(crate) struct CheckSpan<'m, 'r> {
    meta: &'m RequestMeta<'r>,
    span: OnceLock<tracing::Span>,
    /// When the check started.
    pub(crate) started: Instant,
}

impl<'m, 'r> CheckSpan<'m, 'r> {
    /// The span of a check with `meta`, starting now; open already when spans are exported.
    pub(crate) fn start(meta: &'m RequestMeta<'r>) -> Self {
        let check = CheckSpan {
            meta,
            span: OnceLock::new(),
            started: Instant::now(),
        };
        if observe::otel::enabled() {
            check.open();
        }
        check
    }

    /// The span, opened now if it is not yet.
    pub(crate) fn open(&self) -> &tracing::Span {
        self.span.get_or_init(|| {
            let span = tracing::info_span!(
                "check",
                otel.name = "Check",
                request_id = self.meta.request_id,
                decision = tracing::field::Empty,
                reason = tracing::field::Empty,
                policy = tracing::field::Empty,
                principal = tracing::field::Empty,
                mode = tracing::field::Empty,
            );
            observe::otel::adopt(&span, &self.meta.trace);
            span
        })
    }

    /// The span if it is open.
    pub(crate) fn opened(&self) -> Option<&tracing::Span> {
        self.span.get()
    }

    /// Run `f` (which logs) inside the span, opening it.
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.open().in_scope(f)
    }

    /// The span to run the check's work in: the open one, else none (a later line opens it).
    pub(crate) fn current(&self) -> tracing::Span {
        self.opened().cloned().unwrap_or_else(tracing::Span::none)
    }
}
