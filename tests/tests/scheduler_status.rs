//! "Did the 2 AM job run?": each schedule's last run outcome, overlap skips,
//! overdue detection, and the fan-out pattern (a scheduled job that enqueues
//! one job per item).

use std::time::Duration;

use quern_common::{Backoff, JobOptions, JobState};
use quern_producer::{NewJob, Queue};
use quern_scheduler::{Flag, OverlapPolicy, RunOutcome, Schedule, ScheduleStatus, Scheduler, Schedules};
use quern_tests::config;
use quern_tests::sched::{RunningScheduler, job_ids};
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

async fn status_of(schedules: &Schedules, name: &str) -> ScheduleStatus {
    schedules.status().await.unwrap().into_iter().find(|s| s.schedule.name == name).expect("listed")
}

async fn wait_status(
    schedules: &Schedules,
    name: &str,
    what: &str,
    check: impl Fn(&ScheduleStatus) -> bool,
) -> ScheduleStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_of(schedules, name).await;
        if check(&st) {
            return st;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: timed out waiting for {what}; last {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_run_outcomes_completed_failed_dead_are_reported_and_flagged() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    let every = "*/2 * * * * *";
    schedules.upsert(&Schedule::new("ok", every, "outcomes", "ok")).await.unwrap();
    schedules
        .upsert(
            &Schedule::new("flaky", every, "outcomes", "flaky")
                .options(JobOptions::new().attempts(3).backoff(Backoff::fixed(Duration::from_secs(30)))),
        )
        .await
        .unwrap();
    schedules
        .upsert(&Schedule::new("broken", every, "outcomes", "broken").options(JobOptions::new().attempts(1)))
        .await
        .unwrap();
    let worker = RunningWorker::start(
        Worker::builder(&cfg, "outcomes")
            .concurrency(4)
            .handler("ok", |_ctx: JobContext, _p: serde_json::Value| async move { Ok::<_, JobError>(()) })
            .handler("flaky", |_ctx: JobContext, _p: serde_json::Value| async move {
                Err::<(), _>(JobError::retryable("upstream timed out"))
            })
            .handler("broken", |_ctx: JobContext, _p: serde_json::Value| async move {
                Err::<(), _>(JobError::permanent("bad account"))
            }),
    )
    .await;
    let sched = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;

    let ok = wait_status(&schedules, "ok", "completed", |s| s.last_run == Some(RunOutcome::Completed)).await;
    assert!(!ok.flagged(), "{:?}", ok.flags);
    let flaky =
        wait_status(&schedules, "flaky", "failed", |s| matches!(s.last_run, Some(RunOutcome::Failed { .. })))
            .await;
    assert!(flaky.flags.contains(&Flag::LastRunFailed), "{:?}", flaky.flags);
    let Some(RunOutcome::Failed { error }) = &flaky.last_run else { unreachable!() };
    assert!(error.as_deref().unwrap_or("").contains("upstream timed out"), "{error:?}");
    let broken =
        wait_status(&schedules, "broken", "dead", |s| matches!(s.last_run, Some(RunOutcome::Dead { .. })))
            .await;
    assert!(broken.flags.contains(&Flag::LastRunDead), "{:?}", broken.flags);
    assert!(broken.last_job_id.as_deref().unwrap().starts_with("broken@"));
    sched.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_waits_for_the_previous_job() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules
        .upsert(&Schedule::new("single", "* * * * * *", "serial", "work").overlap(OverlapPolicy::Skip))
        .await
        .unwrap();
    let sched = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;
    // No worker: the first job stays waiting, so later ticks are skipped.
    let st = wait_status(&schedules, "single", "two overlap skips", |s| s.overlap_skips >= 2).await;
    assert_eq!(job_ids(&cfg, "serial").await.len(), 1);
    assert_eq!(st.last_run, Some(RunOutcome::Pending));
    assert_eq!(st.runs, 1);
    // Once it completes, the next tick is enqueued again.
    let worker = RunningWorker::start(
        Worker::builder(&cfg, "serial")
            .handler("work", |_ctx: JobContext, _p: serde_json::Value| async move { Ok::<_, JobError>(()) }),
    )
    .await;
    wait_status(&schedules, "single", "a second run", |s| s.runs >= 2).await;
    sched.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_schedule_nobody_runs_is_flagged_overdue() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules
        .upsert(&Schedule::new("orphan", "* * * * * *", "q", "j").misfire_grace(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(!status_of(&schedules, "orphan").await.flagged());
    // Overdue once the first tick is older than the grace plus 5 s of slack.
    tokio::time::sleep(Duration::from_millis(8000)).await;
    let st = status_of(&schedules, "orphan").await;
    assert!(matches!(st.flags.as_slice(), [Flag::Overdue { .. }]), "{:?}", st.flags);
    assert!(st.last_tick.is_none() && st.next_fire.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_a_scheduled_job_enqueues_one_job_per_item() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules
        .upsert(
            &Schedule::new("digest", "* * * * * *", "cron", "find-notifications")
                .payload(serde_json::json!({"users": ["ann", "bob", "cid", "dee", "eve"]})),
        )
        .await
        .unwrap();
    let notify = Queue::connect(&cfg, "notify").await.unwrap();
    let producer = notify.clone();
    // The scheduled job finds N items and enqueues one job per item. Ids derive
    // from the tick's job id, so a retried attempt does not enqueue twice.
    let finder = RunningWorker::start(Worker::builder(&cfg, "cron").handler(
        "find-notifications",
        move |ctx: JobContext, payload: serde_json::Value| {
            let producer = producer.clone();
            async move {
                let users = payload["users"].as_array().cloned().unwrap_or_default();
                let jobs = users
                    .iter()
                    .map(|u| {
                        let id = format!("{}#{}", ctx.id(), u.as_str().unwrap_or("?"));
                        NewJob::new("send", u).map(|j| j.options(JobOptions::new().job_id(id)))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(JobError::permanent)?;
                producer.add_bulk(&jobs).await.map_err(JobError::retryable)?;
                Ok::<_, JobError>(jobs.len())
            }
        },
    ))
    .await;
    let sender = RunningWorker::start(
        Worker::builder(&cfg, "notify")
            .concurrency(5)
            .handler("send", |_ctx: JobContext, _user: String| async move { Ok::<_, JobError>(()) }),
    )
    .await;
    let sched = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;
    let st = wait_status(&schedules, "digest", "a completed digest", |s| {
        s.last_run == Some(RunOutcome::Completed)
    })
    .await;
    let tick_id = st.last_job_id.unwrap();
    for user in ["ann", "bob", "cid", "dee", "eve"] {
        wait_for_state(&notify, &format!("{tick_id}#{user}"), JobState::Completed, Duration::from_secs(5))
            .await;
    }
    sched.stop().await;
    finder.stop().await;
    sender.stop().await;
}
