//! Handlers that time out, panic, return errors or results that cannot be
//! stored, jobs with no handler and payloads that do not deserialize: each
//! becomes a failed attempt with a clear reason, and the worker keeps going.

use std::collections::HashMap;
use std::time::Duration;

use quern_common::{Backoff, JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};
use serde::Deserialize;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct Email {
    to: String,
}

/// A worker with the handlers these tests use, on queue `q`.
async fn start(cfg: &quern_common::RedisConfig) -> RunningWorker {
    let builder = Worker::builder(cfg, "q")
        .concurrency(4)
        .idle_block(Duration::from_secs(1))
        .handler("ok", |_ctx: JobContext, n: u32| async move { Ok::<u32, JobError>(n * 2) })
        .handler("email", |_ctx: JobContext, e: Email| async move { Ok::<String, JobError>(e.to) })
        .handler("slow", |_ctx: JobContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<(), JobError>(())
        })
        .handler("panic-first", |ctx: JobContext, _: ()| async move {
            if ctx.attempt() == 1 {
                panic!("kaboom on attempt {}", ctx.attempt());
            }
            Ok::<u32, JobError>(ctx.attempt())
        })
        .handler("panic-string", |_ctx: JobContext, who: String| async move {
            if !who.is_empty() {
                std::panic::panic_any(format!("formatted panic for {who}"));
            }
            Ok::<(), JobError>(())
        })
        .handler("io-error", |_ctx: JobContext, _: ()| async move {
            let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "upstream refused");
            Err::<(), JobError>(e.into())
        })
        .handler("unstorable", |_ctx: JobContext, _: ()| async move {
            // JSON object keys must be strings: this result cannot be serialized.
            let mut m = HashMap::new();
            m.insert((1, 2), "x");
            Ok::<HashMap<(i32, i32), &str>, JobError>(m)
        });
    RunningWorker::start(builder).await
}

fn once() -> JobOptions {
    JobOptions::new().attempts(1)
}

#[tokio::test]
async fn a_handler_over_its_timeout_fails_the_attempt_and_is_retried() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let opts = JobOptions::new().attempts(2).backoff(Backoff::None).timeout(Duration::from_millis(150));
    let id = q.add_with("slow", &5_000u64, opts).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["timeout", "timeout"], "{job:#?}");
    assert_eq!(job.last_error.as_deref(), Some("timed out after 150ms"));
    for a in &job.history {
        let ran = a.duration_ms().unwrap();
        assert!((150..2_000).contains(&ran), "an attempt is cut at its timeout, ran {ran} ms");
        assert_eq!(a.worker.as_deref(), Some(worker.id()));
    }
    // A job within its timeout is unaffected.
    let ok = q.add_with("slow", &10u64, JobOptions::new().timeout(Duration::from_secs(5))).await.unwrap().id;
    wait_for_state(&q, &ok, JobState::Completed, WAIT).await;
    assert!(!worker.is_finished());
    worker.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_with_the_panic_message() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let opts = JobOptions::new().attempts(3).backoff(Backoff::None);
    let id = q.add_with("panic-first", &(), opts).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(job.history.len(), 2, "{job:#?}");
    assert_eq!(job.history[0].outcome, "panic");
    assert_eq!(job.history[0].error.as_deref(), Some("handler panicked: kaboom on attempt 1"));
    assert_eq!(job.history[1].outcome, "completed");
    assert_eq!(job.result.as_deref(), Some("2"), "the second attempt's result");

    let id = q.add_with("panic-string", &"ada", once()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(job.last_error.as_deref(), Some("handler panicked: formatted panic for ada"));
    assert_eq!(q.counts().await.unwrap().failed, 1);
    assert!(!worker.is_finished(), "a panic does not take the worker down");
    let ok = q.add("ok", &21).await.unwrap().id;
    assert_eq!(wait_for_state(&q, &ok, JobState::Completed, WAIT).await.result.as_deref(), Some("42"));
    worker.stop().await;
}

#[tokio::test]
async fn a_job_name_without_a_handler_is_dead_lettered_at_once_with_the_known_names() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let id = q.add_with("resize-image", &1, JobOptions::new().attempts(5)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(job.attempts_made, 1, "not retried: another attempt cannot find a handler either");
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, "permanent");
    let err = job.last_error.unwrap();
    assert!(err.contains("no handler for job name \"resize-image\""), "{err}");
    assert!(
        err.contains("email") && err.contains("ok") && err.contains("slow"),
        "lists the handled names: {err}"
    );
    assert_eq!(q.dead_letters(0, 10).await.unwrap()[0].id(), id);
    let ok = q.add("ok", &1).await.unwrap().id;
    wait_for_state(&q, &ok, JobState::Completed, WAIT).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_payload_that_does_not_deserialize_is_dead_lettered_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let four = JobOptions::new().attempts(4);
    let missing_field =
        q.add_with("email", &serde_json::json!({ "from": "x" }), four.clone()).await.unwrap().id;
    let wrong_type = q.add_json("ok", r#""twelve""#, four).await.unwrap().id;
    for (id, expected) in [(&missing_field, "missing field `to`"), (&wrong_type, "invalid type")] {
        let job = wait_for_state(&q, id, JobState::Failed, WAIT).await;
        assert_eq!(job.attempts_made, 1);
        assert_eq!(job.history[0].outcome, "permanent");
        let err = job.last_error.unwrap();
        assert!(err.contains("payload does not match the handler"), "{err}");
        assert!(err.contains(expected), "names the problem: {err}");
    }
    let good = q.add("email", &serde_json::json!({ "to": "ada@example.com" })).await.unwrap().id;
    let job = wait_for_state(&q, &good, JobState::Completed, WAIT).await;
    assert_eq!(job.result.as_deref(), Some(r#""ada@example.com""#));
    worker.stop().await;
}

#[tokio::test]
async fn handler_errors_keep_their_message_and_retryable_ones_use_every_attempt() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let id =
        q.add_with("io-error", &(), JobOptions::new().attempts(3).backoff(Backoff::None)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(job.attempts_made, 3);
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["error", "error", "error"]);
    assert_eq!(job.last_error.as_deref(), Some("upstream refused"));
    let numbers: Vec<Option<u32>> = job.history.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    worker.stop().await;
}

#[tokio::test]
async fn a_result_that_cannot_be_stored_fails_the_job_permanently() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let id = q.add_with("unstorable", &(), JobOptions::new().attempts(3)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(job.attempts_made, 1);
    let err = job.last_error.unwrap();
    assert!(err.contains("result does not serialize"), "{err}");
    worker.stop().await;
}

#[tokio::test]
async fn one_worker_survives_every_kind_of_failure_mixed_with_good_jobs() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg).await;
    let short = JobOptions::new().attempts(1).timeout(Duration::from_millis(50));
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for i in 0..5u32 {
        bad.push(q.add_with("slow", &10_000u64, short.clone()).await.unwrap().id);
        bad.push(q.add_with("panic-string", &"x", once()).await.unwrap().id);
        bad.push(q.add_with("nobody-handles-this", &i, once()).await.unwrap().id);
        bad.push(q.add_json("ok", "[1, 2]", once()).await.unwrap().id);
        good.push(q.add("ok", &i).await.unwrap().id);
    }
    for id in &good {
        wait_for_state(&q, id, JobState::Completed, WAIT).await;
    }
    for id in &bad {
        let job = wait_for_state(&q, id, JobState::Failed, WAIT).await;
        assert!(job.last_error.as_deref().is_some_and(|e| !e.is_empty()), "{job:#?}");
    }
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed, c.failed, c.active, c.waiting), (5, 20, 0, 0));
    assert!(!worker.is_finished());
    worker.stop().await;
}
