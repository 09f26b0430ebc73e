//! Progress a handler records: visible on the job and as events while it
//! runs, kept after it finishes, and only ever from the lease holder.

use quern_common::FailureKind;
use std::sync::Arc;
use std::time::Duration;

use quern_common::{JobState, ScriptCode};
use quern_producer::Queue;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{config, eventually};
use quern_worker::{JobContext, JobError, Worker};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

const WAIT: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn recorded_progress_shows_on_the_job_and_in_the_events() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let go_on = Arc::new(Notify::new());
    let gate = go_on.clone();
    let w =
        RunningWorker::start(Worker::builder(&cfg, "q").handler("steps", move |ctx: JobContext, of: u32| {
            let gate = gate.clone();
            async move {
                ctx.progress(&json!({"done": 1, "of": of})).await?;
                gate.notified().await;
                for done in 2..=of {
                    ctx.progress(&json!({"done": done, "of": of})).await?;
                }
                Ok::<(), JobError>(())
            }
        }))
        .await;
    let id = q.add("steps", &3).await.unwrap().id;
    let running = eventually(WAIT, "the first step recorded", || async {
        q.job(&id).await.unwrap().filter(|j| j.progress.is_some())
    })
    .await;
    assert_eq!(running.state, JobState::Active);
    assert_eq!(running.progress.as_deref(), Some(r#"{"done":1,"of":3}"#));

    go_on.notify_one();
    let done = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(done.progress.as_deref(), Some(r#"{"done":3,"of":3}"#), "the last step stays");
    let steps: Vec<String> = q
        .recent_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "progress" && e.field("id") == Some(&id))
        .map(|e| e.field("progress").unwrap().to_owned())
        .collect();
    assert_eq!(steps, [r#"{"done":1,"of":3}"#, r#"{"done":2,"of":3}"#, r#"{"done":3,"of":3}"#]);
    w.stop().await;
}

#[tokio::test]
async fn only_the_lease_holder_records_and_a_new_attempt_starts_without() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("n", &1).await.unwrap().id;
    let first = m.fetch(1, LEASE, "w1").await.jobs.remove(0);
    assert_eq!(m.progress(&id, &first.token, "50").await, ScriptCode::Ok);
    assert_eq!(q.job(&id).await.unwrap().unwrap().progress.as_deref(), Some("50"));

    // The attempt fails; until the next one starts, the job shows how far it came.
    m.fail(&id, &first.token, "boom", FailureKind::Error, 0).await;
    assert_eq!(q.job(&id).await.unwrap().unwrap().progress.as_deref(), Some("50"));
    // The next attempt has not recorded anything yet; the old one cannot.
    let second = m.fetch(1, LEASE, "w2").await.jobs.remove(0);
    assert_eq!(q.job(&id).await.unwrap().unwrap().progress, None);
    assert_eq!(m.progress(&id, &first.token, "99").await, ScriptCode::LeaseLost);
    assert_eq!(m.progress(&id, &second.token, "10").await, ScriptCode::Ok);
    assert_eq!(q.job(&id).await.unwrap().unwrap().progress.as_deref(), Some("10"));
    assert_eq!(m.progress("never", &second.token, "1").await, ScriptCode::NotFound);
}

#[tokio::test]
async fn oversize_progress_is_refused_and_the_job_goes_on() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let w =
        RunningWorker::start(Worker::builder(&cfg, "q").handler("big", move |ctx: JobContext, _n: u32| {
            let tx = tx.clone();
            async move {
                let refused = ctx.progress(&"x".repeat(quern_worker::MAX_PROGRESS_BYTES)).await;
                tx.send(refused.map_err(|e| e.to_string())).unwrap();
                Ok::<(), JobError>(())
            }
        }))
        .await;
    let id = q.add("big", &1).await.unwrap().id;
    let refused = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert!(refused.as_ref().is_err_and(|e| e.contains("at most 4096")), "{refused:?}");
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(job.progress, None);
    w.stop().await;
}
