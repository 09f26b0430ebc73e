//! The current span's OpenTelemetry trace context as a W3C `traceparent`
//! (feature `otel`), stored with each added job so its attempts continue it.

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `00-<trace id>-<span id>-<flags>` of the current span, if it belongs to
/// an OpenTelemetry trace.
pub(crate) fn current_trace_parent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}
