//! Cancelling jobs: a waiting or delayed job never runs, a running one loses
//! its lease and its result is refused; all land in the dead-letter list with
//! the reason, and can be retried from there.

use quern_common::FailureKind;
use std::time::Duration;

use quern_common::{Error, JobOptions, JobState, ScriptCode};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_waiting_or_delayed_job_is_dead_lettered_unrun() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let ids = [
        q.add("n", &1).await.unwrap().id,
        q.add_with("n", &2, JobOptions::new().priority(3)).await.unwrap().id,
        q.add_with("n", &3, JobOptions::new().delay(Duration::from_secs(3600))).await.unwrap().id,
    ];
    for id in &ids {
        q.cancel(id, "not needed any more").await.unwrap();
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempts_made), (JobState::Failed, 0), "{job:#?}");
        assert_eq!(job.last_error.as_deref(), Some("not needed any more"));
        assert_eq!(job.history.last().unwrap().outcome, "cancelled");
    }
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.failed), (0, 0, 3));
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty(), "nothing left to run");
    let cancelled = q.recent_events(3).await.unwrap();
    assert!(
        cancelled.iter().all(|e| e.kind == "cancelled" && e.field("error") == Some("not needed any more"))
    );

    // From the dead-letter list it can run after all.
    q.retry_dead_letter(&ids[0]).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [ids[0].clone()]);

    let err = q.cancel(&ids[1], "again").await.unwrap_err();
    assert!(matches!(&err, Error::Finished { state: JobState::Failed, .. }), "{err}");
    assert!(matches!(q.cancel("never", "x").await, Err(Error::JobNotFound { .. })));
}

#[tokio::test]
async fn a_running_job_loses_its_lease_and_its_result_is_refused() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("n", &1).await.unwrap().id;
    let leased = m.fetch(1, LEASE, "host:1:w").await.jobs.remove(0);
    q.cancel(&id, "runaway export").await.unwrap();

    assert_eq!(
        m.renew(LEASE, &[(&id, &leased.token)]).await,
        vec![id.clone()],
        "the renewal reports it lost"
    );
    assert_eq!(m.complete(-1, &[(&id, &leased.token, "late")]).await, [ScriptCode::LeaseLost]);
    assert_eq!(
        m.fail(&id, &leased.token, "late failure", FailureKind::Error, 0).await,
        ScriptCode::LeaseLost
    );
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!((job.last_error.as_deref(), job.result), (Some("runaway export"), None));
    let attempt = job.history.last().unwrap();
    assert_eq!(attempt.outcome, "cancelled");
    assert_eq!(attempt.number, Some(1));
    assert_eq!(
        (attempt.worker.as_deref(), attempt.token.as_deref()),
        (Some("host:1:w"), Some(leased.token.as_str()))
    );
    assert!(m.zset(m.keys().active()).await.is_empty(), "no lease left to expire");

    let done = q.add("n", &2).await.unwrap().id;
    let l = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    m.complete(-1, &[(&done, &l.token, "ok")]).await;
    assert!(matches!(
        q.cancel(&done, "too late").await,
        Err(Error::Finished { state: JobState::Completed, .. })
    ));
}

#[tokio::test]
async fn a_job_handed_to_a_parked_worker_and_not_yet_taken_leaves_the_hand_off_list() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    m.park("w1", Duration::from_millis(500), Duration::from_secs(60)).await;
    let id = q.add("n", &1).await.unwrap().id;
    assert_eq!(m.handoffs().await.len(), 1, "handed over");
    q.cancel(&id, "not needed").await.unwrap();
    assert!(m.handoffs().await.is_empty(), "no worker is to take it");
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Failed);
    // And the next add is handed over again.
    q.add("n", &2).await.unwrap();
    assert_eq!(m.handoffs().await.len(), 1);
}
