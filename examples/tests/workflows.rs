//! The example workflows run to the end, survive a failure mid-way without
//! repeating a finished step, and sleep without holding a worker.

use std::time::Duration;

use quern_examples::workflows::{
    Backend, Onboarding, OnboardingOutcome, Settlement, SettlementReport, register,
};
use quern_producer::JobState;
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::Worker;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_settlement_settles_every_batch_once_and_reports() {
    let cfg = config();
    let q = Queue::connect(&cfg, "workflows").await.unwrap();
    let backend = Backend::default();
    let w = RunningWorker::start(register(Worker::builder(&cfg, "workflows"), backend.clone())).await;
    let id =
        q.add("settlement", &Settlement { day: "2026-03-01".into(), transactions: 250 }).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    let report: SettlementReport = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(report, SettlementReport { day: "2026-03-01".into(), settled: 250, batches: 3 });
    let keys: Vec<String> = job.steps.iter().map(|s| s.key()).collect();
    assert_eq!(
        keys,
        [
            "lock#1",
            "gather#1",
            "settle-batch#1",
            "settle-batch#2",
            "settle-batch#3",
            "report#1",
            "mark-done#1"
        ]
    );
    assert_eq!(backend.effects().len(), 7, "{:?}", backend.effects());
    w.stop().await;
}

#[tokio::test]
async fn an_inactive_user_is_nudged_then_flagged_and_an_active_one_is_left_alone() {
    let cfg = config();
    let q = Queue::connect(&cfg, "workflows").await.unwrap();
    let backend = Backend::default();
    let w =
        RunningWorker::start(register(Worker::builder(&cfg, "workflows").concurrency(1), backend.clone()))
            .await;
    let flow = |user: &str| Onboarding {
        user: user.into(),
        email: format!("{user}@example.com"),
        nudge_after_secs: 1,
        flag_after_secs: 1,
    };
    let idle = q.add("onboarding", &flow("idle")).await.unwrap().id;
    let busy = q.add("onboarding", &flow("busy")).await.unwrap().id;
    // One slot, yet both welcome mails go out at once: a sleeping job holds none.
    wait_for_state(&q, &busy, JobState::Delayed, WAIT).await;
    backend.activate("busy");
    let idle_job = wait_for_state(&q, &idle, JobState::Completed, WAIT).await;
    let busy_job = wait_for_state(&q, &busy, JobState::Completed, WAIT).await;
    assert_eq!(
        serde_json::from_str::<OnboardingOutcome>(idle_job.result.as_deref().unwrap()).unwrap(),
        OnboardingOutcome::Flagged
    );
    assert_eq!(
        serde_json::from_str::<OnboardingOutcome>(busy_job.result.as_deref().unwrap()).unwrap(),
        OnboardingOutcome::Active
    );
    let mut effects = backend.effects();
    effects.sort();
    assert_eq!(
        effects,
        [
            "flag idle",
            "mail nudge idle@example.com",
            "mail welcome busy@example.com",
            "mail welcome idle@example.com"
        ]
    );
    let keys: Vec<String> = idle_job.steps.iter().map(|s| s.key()).collect();
    assert_eq!(
        keys,
        [
            "welcome-mail#1",
            "~sleep#1",
            "check-activity#1",
            "nudge-mail#1",
            "~sleep#2",
            "check-activity#2",
            "flag-account#1"
        ]
    );
    w.stop().await;
}
