//! The feature `otel`: a job added inside a traced span carries the trace
//! (a W3C traceparent in its options), and the worker runs each attempt in a
//! span continuing it, so a request's trace shows its background work.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn an_attempt_continues_the_trace_its_job_was_added_in() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The test's runtime has one thread, where the worker's tasks run too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let cfg = config();
    let q = Queue::connect(&cfg, "traced").await.unwrap();
    let request = tracing::info_span!("http.request");
    let traced = q.add("x", &()).instrument(request.clone()).await.unwrap().id;
    let parent = request.context().span().span_context().clone();
    assert!(parent.is_valid());
    let untraced = q.add("x", &()).await.unwrap().id;

    let mover = Mover::new(&cfg, "traced").await;
    let stored = mover.field(&traced, "o").await.expect("options stored");
    assert!(stored.contains(&format!("00-{}-{}-01", parent.trace_id(), parent.span_id())), "{stored}");
    assert_eq!(mover.field(&untraced, "o").await, None, "outside a trace: nothing stored");

    let builder = Worker::builder(&cfg, "traced")
        .idle_block(Duration::from_secs(1))
        .handler("x", |_ctx: JobContext, _: ()| async move { Ok::<(), JobError>(()) });
    let worker = RunningWorker::start(builder).await;
    wait_for_state(&q, &traced, JobState::Completed, Duration::from_secs(10)).await;
    wait_for_state(&q, &untraced, JobState::Completed, Duration::from_secs(10)).await;
    worker.stop().await;
    drop(request);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "quern.attempt").collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let continued = attempts
        .iter()
        .find(|s| s.span_context.trace_id() == parent.trace_id())
        .unwrap_or_else(|| panic!("no attempt in the request's trace: {attempts:#?}"));
    assert_eq!(continued.parent_span_id, parent.span_id(), "a child of the span that added the job");
    let other = attempts.iter().find(|s| s.span_context.trace_id() != parent.trace_id()).unwrap();
    assert_eq!(
        other.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "a job added outside a trace starts its own"
    );
}
