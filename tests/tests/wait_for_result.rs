//! Waiting for a job's outcome (`Queue::wait_for`): its typed result, or how
//! it failed, without missing an end that came first and without hanging on
//! a job that is gone.

use std::time::Duration;

use quern_common::{Backoff, Error, JobOptions, RedisConfig};
use quern_producer::{JobOutcome, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::RunningWorker;
use quern_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(60);
/// Far shorter than [`LONG`]: a wait that ends within it did not run out.
const PROMPTLY: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    total: u32,
}

async fn worker(cfg: &RedisConfig) -> RunningWorker {
    let builder = Worker::builder(cfg, "q")
        .concurrency(2)
        .idle_block(Duration::from_secs(1))
        .handler("sum", |_ctx: JobContext, numbers: Vec<u32>| async move {
            Ok::<_, JobError>(Receipt { total: numbers.iter().sum() })
        })
        .handler("slow", |_ctx: JobContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, JobError>(ms)
        })
        .handler("reject", |_ctx: JobContext, why: String| async move {
            Err::<(), JobError>(JobError::permanent(why))
        });
    RunningWorker::start(builder).await
}

/// `wait_for` bounded by [`PROMPTLY`]: panics if the wait hung.
async fn wait_promptly<T: serde::de::DeserializeOwned>(q: &Queue, id: &str) -> JobOutcome<T> {
    tokio::time::timeout(PROMPTLY, q.wait_for::<T>(id, LONG))
        .await
        .expect("the wait ended long before its timeout")
        .unwrap()
}

#[tokio::test]
async fn a_completed_job_answers_its_typed_result() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let w = worker(&cfg).await;
    let id = q.add("slow", &300u64).await.unwrap().id;
    assert_eq!(wait_promptly::<u64>(&q, &id).await, JobOutcome::Completed(300));
    let id = q.add("sum", &[1u32, 2, 3]).await.unwrap().id;
    // The job may well complete before the wait starts: it is read first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_promptly::<Receipt>(&q, &id).await, JobOutcome::Completed(Receipt { total: 6 }));
    let err = q.wait_for::<String>(&id, LONG).await.unwrap_err();
    assert!(matches!(err, Error::ResultMismatch { .. }), "{err}");
    w.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_job_answers_its_last_error() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let w = worker(&cfg).await;
    let opts = JobOptions::new().attempts(2).backoff(Backoff::fixed(Duration::from_millis(10)));
    let id = q.add_with("reject", "card declined", opts).await.unwrap().id;
    assert_eq!(
        wait_promptly::<()>(&q, &id).await,
        JobOutcome::DeadLettered { error: "card declined".into() }
    );
    w.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_answers_cancelled_with_the_reason() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let id = q.add("sum", &[1u32]).await.unwrap().id;
    let waiter = {
        let (q, id) = (q.clone(), id.clone());
        tokio::spawn(async move { wait_promptly::<Receipt>(&q, &id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.cancel(&id, "customer left").await.unwrap();
    assert_eq!(waiter.await.unwrap(), JobOutcome::Cancelled { reason: "customer left".into() });
}

#[tokio::test]
async fn a_job_removed_during_the_wait_or_never_added_answers_removed() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let id = q.add("sum", &[1u32]).await.unwrap().id;
    let waiter = {
        let (q, id) = (q.clone(), id.clone());
        tokio::spawn(async move { wait_promptly::<Receipt>(&q, &id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.remove(&id).await.unwrap();
    assert_eq!(waiter.await.unwrap(), JobOutcome::Removed);
    assert_eq!(wait_promptly::<Receipt>(&q, "no-such-job").await, JobOutcome::Removed);
}

#[tokio::test]
async fn a_job_completed_and_trimmed_at_once_answers_removed_not_a_hang() {
    let cfg = config();
    let (q, m) = (Queue::connect(&cfg, "q").await.unwrap(), Mover::new(&cfg, "q").await);
    let id = q.add("sum", &[1u32]).await.unwrap().id;
    let waiter = {
        let (q, id) = (q.clone(), id.clone());
        tokio::spawn(async move { wait_promptly::<Receipt>(&q, &id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = m.fetch(1, LONG, "w").await.jobs.pop().unwrap();
    m.complete(0, &[(&job.id, &job.token, r#"{"total":1}"#)]).await;
    assert_eq!(waiter.await.unwrap(), JobOutcome::Removed);
}

#[tokio::test]
async fn a_job_still_waiting_when_time_is_up_answers_timed_out() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let id = q.add("sum", &[1u32]).await.unwrap().id;
    let outcome = q.wait_for::<Receipt>(&id, Duration::from_millis(300)).await.unwrap();
    assert_eq!(outcome, JobOutcome::TimedOut);
    assert!(q.job(&id).await.unwrap().is_some(), "the job is untouched");
}

#[tokio::test]
async fn a_wait_on_a_busy_queue_sees_its_job_among_many_events() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let id = q.add("slow", &500u64).await.unwrap().id;
    let waiter = {
        let (q, id) = (q.clone(), id.clone());
        tokio::spawn(async move { wait_promptly::<u64>(&q, &id).await })
    };
    for _ in 0..20 {
        q.add("sum", &[1u32]).await.unwrap();
    }
    let w = worker(&cfg).await;
    assert_eq!(waiter.await.unwrap(), JobOutcome::Completed(500));
    w.stop().await;
}
