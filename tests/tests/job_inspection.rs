//! `Queue::job(id)` answers "did it run, when, how long, why did it fail?":
//! state, attempts, timestamps, last error, result and the attempt history,
//! at every stage of a job's life. Also listing jobs by state.

use quern_common::FailureKind;
use std::time::Duration;

use quern_common::{Backoff, JobOptions, JobState};
use quern_producer::{NewJob, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};

const LEASE: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Receipt {
    sent_to: String,
    attempt: u32,
}

#[tokio::test]
async fn a_waiting_job_shows_its_name_payload_options_and_creation_time() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let before = m.now_ms().await;
    let opts = JobOptions::new().job_id("welcome-ada").priority(3).attempts(7);
    q.add_with("welcome", &serde_json::json!({ "to": "ada" }), opts).await.unwrap();
    let after = m.now_ms().await;
    let job = q.job("welcome-ada").await.unwrap().expect("the job exists");
    assert_eq!((job.queue.as_str(), job.id.as_str(), job.name.as_str()), ("q", "welcome-ada", "welcome"));
    assert_eq!(job.payload, r#"{"to":"ada"}"#);
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!((job.priority, job.attempts_made, job.max_attempts, job.stalls), (3, 0, 7, 0));
    assert!((before..=after).contains(&job.created_at_ms), "created on Redis' clock");
    assert_eq!((job.started_at_ms, job.finished_at_ms), (None, None));
    assert_eq!((job.worker.as_deref(), job.last_error.as_deref(), job.result.as_deref()), (None, None, None));
    assert!(job.history.is_empty());

    let delayed = q.add_with("welcome", &1, JobOptions::new().delay(Duration::from_secs(60))).await.unwrap();
    assert_eq!(q.job(&delayed.id).await.unwrap().unwrap().state, JobState::Delayed);
    assert!(q.job("never-added").await.unwrap().is_none());
}

#[tokio::test]
async fn an_active_job_shows_its_worker_start_and_a_running_attempt() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let leased = m.fetch(1, LEASE, "host:1:abcd").await.jobs.remove(0);
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Active);
    assert_eq!(job.attempts_made, 1);
    assert_eq!(job.worker.as_deref(), Some("host:1:abcd"));
    let started = job.started_at_ms.expect("start time");
    assert!(started >= job.created_at_ms);
    assert_eq!(job.finished_at_ms, None);
    assert_eq!(job.history.len(), 1);
    let running = &job.history[0];
    assert_eq!((running.number, running.outcome.as_str()), (Some(1), "running"));
    assert_eq!((running.started_at_ms, running.finished_at_ms), (Some(started), None));
    assert_eq!(running.duration_ms(), None);
    m.complete(-1, &[(&id, &leased.token, "")]).await;
}

#[tokio::test]
async fn a_job_that_failed_then_succeeded_shows_every_attempt_and_its_result() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let builder =
        Worker::builder(&cfg, "q").concurrency(2).handler("send", |ctx: JobContext, to: String| async move {
            if ctx.attempt() < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(JobError::retryable(format!("smtp timeout #{}", ctx.attempt())));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Receipt { sent_to: to, attempt: ctx.attempt() })
        });
    let worker = RunningWorker::start(builder).await;
    let opts = JobOptions::new().attempts(5).backoff(Backoff::fixed(Duration::from_millis(10)));
    let id = q.add_with("send", &"ada@example.com", opts).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;

    assert_eq!((job.attempts_made, job.max_attempts), (3, 5));
    let receipt: Receipt = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(receipt, Receipt { sent_to: "ada@example.com".into(), attempt: 3 });
    assert_eq!(job.last_error.as_deref(), Some("smtp timeout #2"), "the last error stays visible");
    assert_eq!(job.worker.as_deref(), Some(worker.id()));
    let outcomes: Vec<(Option<u32>, &str)> =
        job.history.iter().map(|a| (a.number, a.outcome.as_str())).collect();
    assert_eq!(outcomes, [(Some(1), "error"), (Some(2), "error"), (Some(3), "completed")]);
    assert_eq!(job.history[1].error.as_deref(), Some("smtp timeout #2"));
    assert_eq!(job.history[2].error, None);
    // Timestamps line up: created <= each start <= its end <= next start; finished = last end.
    let mut clock = job.created_at_ms;
    for a in &job.history {
        let (st, fin) = (a.started_at_ms.unwrap(), a.finished_at_ms.unwrap());
        assert!(clock <= st && st <= fin, "{:#?}", job.history);
        assert_eq!(a.worker.as_deref(), Some(worker.id()));
        clock = fin;
    }
    assert!(job.history[0].duration_ms().unwrap() >= 20, "{:?}", job.history[0]);
    assert!(job.history[2].duration_ms().unwrap() >= 30, "{:?}", job.history[2]);
    assert_eq!(job.started_at_ms, job.history[2].started_at_ms);
    assert_eq!(job.finished_at_ms, job.history[2].finished_at_ms);
    worker.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_job_shows_why_and_when() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker =
        RunningWorker::start(Worker::builder(&cfg, "q").handler("charge", |_c: JobContext, _: ()| async {
            Err::<(), JobError>(JobError::permanent("card declined (code 51)"))
        }))
        .await;
    let id = q.add("charge", &()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(job.last_error.as_deref(), Some("card declined (code 51)"));
    assert_eq!(job.result, None);
    let fin = job.finished_at_ms.expect("time of the failure");
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].finished_at_ms, Some(fin));
    assert_eq!(job.history[0].outcome, "permanent");
    worker.stop().await;
}

#[tokio::test]
async fn history_keeps_the_latest_25_entries() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add_with("job", &(), JobOptions::new().attempts(100)).await.unwrap().id;
    for _ in 0..30 {
        let j = m.fetch(1, LEASE, "w").await.jobs.remove(0);
        m.fail(&id, &j.token, &format!("failure {}", j.attempt), FailureKind::Error, 0).await;
    }
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.attempts_made, 30);
    assert_eq!(job.history.len(), 25);
    assert_eq!(job.history[0].number, Some(6), "the oldest entries are dropped first");
    assert_eq!(job.history[24].error.as_deref(), Some("failure 30"));
    assert_eq!(job.last_error.as_deref(), Some("failure 30"));
}

#[tokio::test]
async fn jobs_are_listed_by_state_in_run_order_or_newest_first() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let plain: Vec<String> = q
        .add_bulk(&(0..5).map(|i| NewJob::new("job", &i).unwrap()).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    let prio = q.add_with("job", &(), JobOptions::new().priority(1)).await.unwrap().id;
    let far = q.add_with("job", &(), JobOptions::new().delay(Duration::from_secs(90))).await.unwrap().id;
    let near = q.add_with("job", &(), JobOptions::new().delay(Duration::from_secs(30))).await.unwrap().id;

    // Waiting: priority 0 in FIFO order, then the prioritized ones, paged.
    let waiting = q.job_ids(JobState::Waiting, 0, 10).await.unwrap();
    let mut expected = plain.clone();
    expected.push(prio.clone());
    assert_eq!(waiting, expected);
    assert_eq!(q.job_ids(JobState::Waiting, 3, 2).await.unwrap(), expected[3..5]);
    assert_eq!(q.job_ids(JobState::Waiting, 4, 2).await.unwrap(), expected[4..6], "a page across both");
    assert_eq!(q.job_ids(JobState::Waiting, 5, 5).await.unwrap(), expected[5..]);
    assert!(q.job_ids(JobState::Waiting, 0, 0).await.unwrap().is_empty());
    assert_eq!(q.job_ids(JobState::Delayed, 0, 10).await.unwrap(), [near, far], "soonest first");

    let f = m.fetch(3, LEASE, "w").await;
    assert_eq!(q.job_ids(JobState::Active, 0, 10).await.unwrap().len(), 3);
    for j in &f.jobs {
        m.complete(-1, &[(&j.id, &j.token, "")]).await;
    }
    assert_eq!(
        q.job_ids(JobState::Completed, 0, 10).await.unwrap(),
        [&plain[2], &plain[1], &plain[0]].map(String::as_str)
    );
    assert_eq!(q.job_ids(JobState::Completed, 1, 1).await.unwrap(), [plain[1].as_str()]);
    let f = m.fetch(2, LEASE, "w").await;
    for j in &f.jobs {
        m.fail(&j.id, &j.token, "x", FailureKind::Error, -1).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        q.job_ids(JobState::Failed, 0, 10).await.unwrap(),
        [plain[4].as_str(), &plain[3]],
        "newest first"
    );
}

#[tokio::test]
async fn a_handler_sees_its_job_id_name_attempt_and_lease_token() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let builder = Worker::builder(&cfg, "q").handler("whoami", |ctx: JobContext, _: ()| async move {
        if ctx.attempt() == 1 {
            return Err(JobError::retryable("once more"));
        }
        Ok::<_, JobError>(serde_json::json!({
            "queue": ctx.queue(), "id": ctx.id(), "name": ctx.name(), "token": ctx.token(),
            "attempt": ctx.attempt(), "max": ctx.max_attempts(), "lost": ctx.is_lease_lost(),
        }))
    });
    let worker = RunningWorker::start(builder).await;
    let opts = JobOptions::new().job_id("who-1").attempts(4).backoff(Backoff::None);
    q.add_with("whoami", &(), opts).await.unwrap();
    let job = wait_for_state(&q, "who-1", JobState::Completed, WAIT).await;
    let seen: serde_json::Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    let token = m.field("who-1", "tk").await.unwrap();
    assert_eq!(
        seen,
        serde_json::json!({
            "queue": "q", "id": "who-1", "name": "whoami", "token": token,
            "attempt": 2, "max": 4, "lost": false,
        })
    );
    worker.stop().await;
}
