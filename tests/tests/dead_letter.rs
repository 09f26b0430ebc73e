//! The dead-letter list with a real worker: jobs land there after their last
//! attempt or on a permanent error, keep their history, run again when
//! retried from it, and are gone when purged.

use quern_common::FailureKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use quern_common::{Backoff, JobOptions, JobState, RedisConfig};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(10);

/// Handlers: `broken` fails retryably while `healed` is false; `reject`
/// always fails permanently. `runs` counts every attempt.
struct Harness {
    healed: Arc<AtomicBool>,
    runs: Arc<AtomicU32>,
    worker: RunningWorker,
}

async fn start(cfg: &RedisConfig) -> Harness {
    let healed = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU32::new(0));
    let (h, r, r2) = (healed.clone(), runs.clone(), runs.clone());
    let builder = Worker::builder(cfg, "q")
        .concurrency(4)
        .idle_block(Duration::from_secs(1))
        .handler("broken", move |ctx: JobContext, _: ()| {
            let (healed, runs) = (h.clone(), r.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if healed.load(Ordering::SeqCst) {
                    Ok(format!("fixed on attempt {}", ctx.attempt()))
                } else {
                    Err(JobError::retryable(format!("still broken (attempt {})", ctx.attempt())))
                }
            }
        })
        .handler("reject", move |_ctx: JobContext, why: String| {
            let runs = r2.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<(), JobError>(JobError::permanent(why))
            }
        });
    Harness { healed, runs, worker: RunningWorker::start(builder).await }
}

fn quick(attempts: u32) -> JobOptions {
    JobOptions::new().attempts(attempts).backoff(Backoff::fixed(Duration::from_millis(20)))
}

#[tokio::test]
async fn a_job_is_dead_lettered_after_its_last_attempt_with_every_attempt_recorded() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let h = start(&cfg).await;
    let id = q.add_with("broken", &(), quick(3)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 3, "exactly its three attempts ran");
    assert_eq!((job.attempts_made, job.max_attempts), (3, 3));
    assert_eq!(job.last_error.as_deref(), Some("still broken (attempt 3)"));
    let errors: Vec<&str> = job.history.iter().map(|a| a.error.as_deref().unwrap()).collect();
    assert_eq!(errors, ["still broken (attempt 1)", "still broken (attempt 2)", "still broken (attempt 3)"]);
    assert!(job.history.iter().all(|a| a.outcome == "error" && a.worker.as_deref() == Some(h.worker.id())));
    assert!(job.finished_at_ms.unwrap() >= job.history[2].finished_at_ms.unwrap());
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.delayed, c.waiting, c.active), (1, 0, 0, 0));
    let listed = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job(), Some(&job), "the list shows the job as job(id) does");
    h.worker.stop().await;
}

#[tokio::test]
async fn a_permanent_error_dead_letters_at_once_whatever_attempts_remain() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let h = start(&cfg).await;
    let id = q.add_with("reject", &"422: no such customer", quick(10)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    assert_eq!(job.attempts_made, 1);
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, "permanent");
    assert_eq!(job.last_error.as_deref(), Some("422: no such customer"));
    assert_eq!(q.counts().await.unwrap().failed, 1);
    h.worker.stop().await;
}

#[tokio::test]
async fn a_job_retried_from_the_dead_letter_list_runs_again_with_a_fresh_budget() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let h = start(&cfg).await;
    let id = q.add_with("broken", &(), quick(2)).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 2);

    // Still broken: a retry from the list gets two attempts again, then returns to it.
    q.retry_dead_letter(&id).await.unwrap();
    quern_tests::eventually(WAIT, "two more attempts", || {
        let runs = h.runs.load(Ordering::SeqCst);
        async move { (runs == 4).then_some(()) }
    })
    .await;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["error", "error", "retried", "error", "error"]);
    assert_eq!(job.history[4].number, Some(2), "attempts counted afresh after the retry");

    h.healed.store(true, Ordering::SeqCst);
    q.retry_dead_letter(&id).await.unwrap();
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(job.result.as_deref(), Some(r#""fixed on attempt 1""#));
    assert_eq!(job.history.last().unwrap().outcome, "completed");
    assert_eq!(job.history.len(), 7);
    assert_eq!(h.runs.load(Ordering::SeqCst), 5);
    assert_eq!(q.counts().await.unwrap().failed, 0);
    h.worker.stop().await;
}

#[tokio::test]
async fn retry_all_runs_every_dead_job_again_and_purge_deletes_them() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let h = start(&cfg).await;
    let mut broken = Vec::new();
    let mut rejected = Vec::new();
    for i in 0..6 {
        broken.push(q.add_with("broken", &(), quick(1)).await.unwrap().id);
        rejected.push(q.add_with("reject", &format!("bad input {i}"), quick(1)).await.unwrap().id);
    }
    for id in broken.iter().chain(&rejected) {
        wait_for_state(&q, id, JobState::Failed, WAIT).await;
    }
    assert_eq!(q.counts().await.unwrap().failed, 12);

    h.healed.store(true, Ordering::SeqCst);
    assert_eq!(q.retry_all_dead_letters().await.unwrap(), 12);
    for id in &broken {
        wait_for_state(&q, id, JobState::Completed, WAIT).await;
    }
    for id in &rejected {
        let job = wait_for_state(&q, id, JobState::Failed, WAIT).await;
        assert_eq!(job.history.len(), 3, "permanent, retried, permanent: {job:#?}");
    }
    assert_eq!(h.runs.load(Ordering::SeqCst), 24);

    q.purge_dead_letter(&rejected[0]).await.unwrap();
    assert!(q.job(&rejected[0]).await.unwrap().is_none());
    assert_eq!(q.purge_dead_letters().await.unwrap(), 5);
    for id in &rejected {
        assert!(q.job(id).await.unwrap().is_none(), "{id} purged");
    }
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.completed), (0, 6));
    // Purged jobs never run again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 24);
    h.worker.stop().await;
}

#[tokio::test]
async fn dead_letters_stay_until_acted_on_and_a_large_list_drains_in_batches() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = quern_tests::moves::Mover::new(&cfg, "q").await;
    // 1,200 dead jobs (more than one script batch of 500), made directly.
    let jobs: Vec<_> = (0..1200).map(|_| quern_producer::NewJob::new("reject", &"x").unwrap()).collect();
    q.add_bulk(&jobs).await.unwrap();
    loop {
        let f = m.fetch(500, Duration::from_secs(30), "w").await;
        if f.jobs.is_empty() {
            break;
        }
        for j in f.jobs {
            m.fail(&j.id, &j.token, "x", FailureKind::Permanent, -1).await;
        }
    }
    assert_eq!(q.counts().await.unwrap().failed, 1200);
    assert_eq!(q.retry_all_dead_letters().await.unwrap(), 1200);
    assert_eq!(q.counts().await.unwrap().waiting, 1200);
    let leased = m.fetch(1000, Duration::from_secs(30), "w").await.jobs;
    let more = m.fetch(1000, Duration::from_secs(30), "w").await.jobs;
    for j in leased.iter().chain(&more) {
        m.fail(&j.id, &j.token, "x", FailureKind::Permanent, -1).await;
    }
    assert_eq!(q.purge_dead_letters().await.unwrap(), 1200);
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.waiting), (0, 0));
}
