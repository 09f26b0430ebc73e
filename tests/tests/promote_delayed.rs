//! Promoting delayed jobs: one by id or all of them, waiting now, behind the
//! jobs already waiting at their priority, and idle workers woken for them.

use quern_common::FailureKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::{Error, JobState};
use quern_producer::{JobOptions, NewJob, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, counting};
use quern_worker::Worker;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_promoted_job_waits_behind_those_already_waiting() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let first = q.add("n", &1).await.unwrap().id;
    let later = q.add_with("n", &2, JobOptions::new().delay(HOUR)).await.unwrap().id;
    let urgent = q.add_with("n", &3, JobOptions::new().delay(HOUR).priority(1)).await.unwrap().id;

    q.promote(&later).await.unwrap();
    q.promote(&urgent).await.unwrap();
    assert_eq!(q.job(&later).await.unwrap().unwrap().state, JobState::Waiting);
    assert_eq!(m.wait_list().await, vec![first.clone(), later.clone()]);
    let order = m.fetch(3, HOUR, "w").await.ids();
    assert_eq!(order, vec![first.clone(), later.clone(), urgent.clone()], "priority 1 after priority 0");

    let err = q.promote(&first).await.unwrap_err();
    assert!(matches!(&err, Error::NotDelayed { state: JobState::Active, .. }), "{err}");
    assert!(matches!(q.promote("never").await, Err(Error::JobNotFound { .. })));
}

#[tokio::test]
async fn a_retry_waiting_out_its_backoff_runs_now_with_its_attempts_kept() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("n", &1).await.unwrap().id;
    let leased = m.fetch(1, HOUR, "w").await.jobs.remove(0);
    m.fail(&id, &leased.token, "downstream 503", FailureKind::Error, HOUR.as_millis() as i64).await;
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Delayed);

    q.promote(&id).await.unwrap();
    let again = m.fetch(1, HOUR, "w").await.jobs.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 2), "the second attempt, now");
}

#[tokio::test]
async fn promote_all_moves_every_delayed_job_in_bounded_calls() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let jobs: Vec<NewJob> =
        (0..1_200).map(|i| NewJob::new("n", &i).unwrap().options(JobOptions::new().delay(HOUR))).collect();
    q.add_bulk(&jobs).await.unwrap();
    assert_eq!(q.promote_all().await.unwrap(), 1_200, "more than one call's worth");
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (1_200, 0));
    assert_eq!(q.promote_all().await.unwrap(), 0);
}

#[tokio::test]
async fn an_idle_worker_runs_a_promoted_job_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    // A long idle block: the worker must be woken, not find it on its own.
    let builder = Worker::builder(&cfg, "q").idle_block(Duration::from_secs(30));
    let w = RunningWorker::start(counting(builder, "n", done.clone())).await;
    let id = q.add_with("n", &1, JobOptions::new().delay(HOUR)).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.promote(&id).await.unwrap();
    quern_tests::eventually(Duration::from_secs(10), "the promoted job to run", || async {
        (done.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    w.stop().await;
}
