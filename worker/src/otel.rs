//! Each attempt's span continues the trace its job was added in (feature
//! `otel`): the job's stored W3C `traceparent` becomes the span's remote parent.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use quern_common::moves::LeasedJob;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span one attempt of `job` runs in, a child of `trace_parent` if given.
pub(crate) fn attempt_span(queue: &str, job: &LeasedJob, trace_parent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "quern.attempt",
        otel.kind = "consumer",
        queue = queue,
        job.id = %job.id,
        job.name = %job.name,
        attempt = job.attempt,
    );
    if let Some(parent) = trace_parent.and_then(remote_parent)
        && let Err(e) = span.set_parent(parent)
    {
        tracing::debug!(job = %job.id, error = %e, "the attempt's span could not continue the job's trace");
    }
    span
}

/// The context of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    let mut parts = traceparent.split('-');
    let (_version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then(|| opentelemetry::Context::new().with_remote_span_context(sc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_becomes_a_remote_parent() {
        let cx = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(remote_parent("garbage").is_none());
        assert!(remote_parent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    }
}
