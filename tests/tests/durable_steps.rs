//! Durable steps and sleeps in a running worker: a retry resumes at the
//! failed step, a dead-lettered job keeps its finished steps, a sleep holds
//! no worker slot, divergence follows the worker's policy, limits fail the
//! job clearly, and a retry from a step reruns it and those after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_common::steps::StepOutcome;
use quern_common::{Backoff, Error, EventKind, JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{RedisConfig, config};
use quern_worker::{Divergence, JobContext, JobError, StepRetry, Worker};

const WAIT: Duration = Duration::from_secs(15);

/// How many times each step ran (its side effect), by step name.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<HashMap<String, u32>>>);

impl Ledger {
    /// Count a run of `step`; returns its runs so far.
    fn count(&self, step: &str) -> u32 {
        let mut runs = self.0.lock().unwrap();
        let n = runs.entry(step.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn runs(&self, step: &str) -> u32 {
        self.0.lock().unwrap().get(step).copied().unwrap_or(0)
    }
}

/// A three-step job whose step `fail_at` fails (permanently or not) while
/// `failing` is up; the flag goes down after the first failure.
fn three_steps(
    cfg: &RedisConfig,
    queue: &str,
    ledger: &Ledger,
    fail_at: u32,
    permanent: bool,
    failing: Arc<AtomicBool>,
) -> quern_worker::WorkerBuilder {
    let ledger = ledger.clone();
    Worker::builder(cfg, queue).handler("flow", move |ctx: JobContext, _: serde_json::Value| {
        let (ledger, failing) = (ledger.clone(), failing.clone());
        async move {
            let mut total = 0;
            for i in 1..=3u32 {
                let name = format!("step-{i}");
                total += ctx
                    .step(&name, || {
                        let (ledger, failing, name) = (ledger.clone(), failing.clone(), name.clone());
                        async move {
                            ledger.count(&name);
                            if i == fail_at && failing.swap(false, Ordering::SeqCst) {
                                let message = format!("{name} failed");
                                return Err(if permanent {
                                    JobError::permanent(message)
                                } else {
                                    JobError::retryable(message)
                                });
                            }
                            Ok(i * 10)
                        }
                    })
                    .await?;
            }
            Ok::<u32, JobError>(total)
        }
    })
}

fn quick_retries() -> JobOptions {
    JobOptions::new().attempts(3).backoff(Backoff::fixed(Duration::from_millis(10)))
}

#[tokio::test]
async fn a_retry_resumes_at_the_failed_step_and_finished_steps_do_not_run_again() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-retry").await.unwrap();
    let ledger = Ledger::default();
    let w = RunningWorker::start(three_steps(
        &cfg,
        "steps-retry",
        &ledger,
        2,
        false,
        Arc::new(AtomicBool::new(true)),
    ))
    .await;
    let id = q.add_with("flow", &(), quick_retries()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!((ledger.runs("step-1"), ledger.runs("step-2"), ledger.runs("step-3")), (1, 2, 1));
    assert_eq!(job.result.as_deref(), Some("60"), "step 1's stored result came back");
    assert_eq!(job.attempts_made, 2);
    let attempts: Vec<(String, u32)> = job.steps.iter().map(|s| (s.key(), s.attempt)).collect();
    assert_eq!(attempts, [("step-1#1".into(), 1), ("step-2#1".into(), 2), ("step-3#1".into(), 2)]);
    w.stop().await;
}

#[tokio::test]
async fn a_permanent_step_failure_dead_letters_the_job_and_a_retry_resumes_after_the_finished_steps() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-dead").await.unwrap();
    let ledger = Ledger::default();
    let w = RunningWorker::start(three_steps(
        &cfg,
        "steps-dead",
        &ledger,
        2,
        true,
        Arc::new(AtomicBool::new(true)),
    ))
    .await;
    let id = q.add_with("flow", &(), quick_retries()).await.unwrap().id;
    let dead = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    assert_eq!(dead.last_error.as_deref(), Some("step-2 failed"));
    let timeline: Vec<(String, StepOutcome)> =
        dead.steps.iter().map(|s| (s.key(), s.outcome.clone())).collect();
    assert_eq!(timeline, [("step-1#1".into(), StepOutcome::Ok), ("step-2#1".into(), StepOutcome::Failed)]);
    assert_eq!(dead.steps[1].value, "step-2 failed");
    let json = serde_json::to_value(&dead).unwrap();
    assert_eq!(json["steps"][0]["result_bytes"], 2, "the JSON shows a result's size: {json}");
    assert_eq!(json["steps"][1]["error"], "step-2 failed");

    q.retry_dead_letter(&id).await.unwrap();
    let done = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!((ledger.runs("step-1"), ledger.runs("step-2"), ledger.runs("step-3")), (1, 2, 1));
    assert!(done.steps.iter().all(|s| s.outcome == StepOutcome::Ok), "{:#?}", done.steps);
    w.stop().await;
}

#[tokio::test]
async fn a_retry_from_a_step_reruns_it_and_the_steps_after_it() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-from").await.unwrap();
    let ledger = Ledger::default();
    let w = RunningWorker::start(three_steps(
        &cfg,
        "steps-from",
        &ledger,
        3,
        true,
        Arc::new(AtomicBool::new(true)),
    ))
    .await;
    let id = q.add("flow", &()).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    match q.retry_dead_letter_from_step(&id, "no-such-step").await {
        Err(Error::UnknownStep { step, stored, .. }) => {
            assert_eq!(step, "no-such-step#1");
            assert_eq!(stored, "step-1#1, step-2#1, step-3#1");
        }
        other => panic!("expected UnknownStep, got {other:?}"),
    }
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Failed, "nothing moved");
    q.retry_dead_letter_from_step(&id, "step-2").await.unwrap();
    wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!((ledger.runs("step-1"), ledger.runs("step-2"), ledger.runs("step-3")), (1, 2, 2));
    w.stop().await;
}

#[tokio::test]
async fn a_step_with_its_own_retries_runs_again_inside_the_attempt() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-own-retry").await.unwrap();
    let ledger = Ledger::default();
    let l = ledger.clone();
    let w = RunningWorker::start(Worker::builder(&cfg, "steps-own-retry").handler(
        "flow",
        move |ctx: JobContext, _: serde_json::Value| {
            let l = l.clone();
            async move {
                let retry = StepRetry::new(3, Backoff::fixed(Duration::from_millis(5)));
                ctx.step_with("flaky", retry, || {
                    let l = l.clone();
                    async move {
                        l.count("flaky");
                        if l.runs("flaky") < 3 { Err(JobError::retryable("not yet")) } else { Ok(()) }
                    }
                })
                .await
            }
        },
    ))
    .await;
    let id = q.add("flow", &()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(ledger.runs("flaky"), 3);
    assert_eq!(job.attempts_made, 1, "one attempt of the job");
    w.stop().await;
}

#[tokio::test]
async fn a_sleeping_job_holds_no_worker_slot_and_continues_after_its_sleep() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-sleep").await.unwrap();
    let ledger = Ledger::default();
    let l = ledger.clone();
    let w = RunningWorker::start(Worker::builder(&cfg, "steps-sleep").concurrency(1).handler(
        "flow",
        move |ctx: JobContext, sleep_ms: u64| {
            let l = l.clone();
            async move {
                let before = ctx.step("before", || async { Ok(l.count("before")) });
                before.await?;
                if sleep_ms > 0 {
                    ctx.sleep(Duration::from_millis(sleep_ms)).await?;
                }
                ctx.step("after", || async { Ok(l.count("after")) }).await?;
                Ok::<(), JobError>(())
            }
        },
    ))
    .await;
    let sleeper = q.add("flow", &1500u64).await.unwrap().id;
    let asleep = wait_for_state(&q, &sleeper, JobState::Delayed, WAIT).await;
    assert_eq!(asleep.attempts_made, 0, "the sleep gave its attempt back");
    let sleep = asleep.steps.iter().find(|s| s.is_sleep()).expect("the sleep is in the timeline");
    assert_eq!(sleep.outcome, StepOutcome::Sleep);
    // The only slot is free: another job runs while the first one sleeps.
    let other = q.add("flow", &0u64).await.unwrap().id;
    wait_for_state(&q, &other, JobState::Completed, WAIT).await;
    assert_eq!(q.job(&sleeper).await.unwrap().unwrap().state, JobState::Delayed, "still asleep");

    let done = wait_for_state(&q, &sleeper, JobState::Completed, WAIT).await;
    assert_eq!((ledger.runs("before"), ledger.runs("after")), (2, 2), "one each per job");
    assert_eq!(done.attempts_made, 1);
    let keys: Vec<String> = done.steps.iter().map(|s| s.key()).collect();
    assert_eq!(keys, ["before#1", "~sleep#1", "after#1"]);
    assert!(done.steps[2].started_at_ms >= sleep.wake_at_ms().unwrap());
    let events = q.recent_events(100).await.unwrap();
    let of_sleeper: Vec<(EventKind, Option<&str>)> = events
        .iter()
        .filter(|e| {
            e.field("id") == Some(sleeper.as_str()) && matches!(e.kind, EventKind::Step | EventKind::Sleeping)
        })
        .map(|e| (e.kind.clone(), e.field("step")))
        .collect();
    assert_eq!(
        of_sleeper,
        [
            (EventKind::Step, Some("before#1")),
            (EventKind::Sleeping, Some("~sleep#1")),
            (EventKind::Step, Some("after#1"))
        ]
    );
    w.stop().await;
}

/// A job that stores step `original` (or `renamed`, once `deployed` is up),
/// sleeps 300 ms, then runs step `last`.
fn renaming(
    cfg: &RedisConfig,
    queue: &str,
    policy: Divergence,
    ledger: &Ledger,
    deployed: Arc<AtomicBool>,
) -> quern_worker::WorkerBuilder {
    let l = ledger.clone();
    Worker::builder(cfg, queue).step_divergence(policy).handler(
        "flow",
        move |ctx: JobContext, _: serde_json::Value| {
            let (l, deployed) = (l.clone(), deployed.clone());
            async move {
                let name = if deployed.load(Ordering::SeqCst) { "renamed" } else { "original" };
                ctx.step(name, || async { Ok(l.count(name)) }).await?;
                ctx.sleep(Duration::from_millis(300)).await?;
                ctx.step("last", || async { Ok(l.count("last")) }).await?;
                Ok::<(), JobError>(())
            }
        },
    )
}

#[tokio::test]
async fn changed_steps_dead_letter_the_job_under_the_dead_letter_policy() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-diverge-dead").await.unwrap();
    let (ledger, deployed) = (Ledger::default(), Arc::new(AtomicBool::new(false)));
    let w = RunningWorker::start(renaming(
        &cfg,
        "steps-diverge-dead",
        Divergence::DeadLetter,
        &ledger,
        deployed.clone(),
    ))
    .await;
    let id = q.add_with("flow", &(), quick_retries()).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Delayed, WAIT).await;
    deployed.store(true, Ordering::SeqCst);
    let dead = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    let error = dead.last_error.unwrap();
    assert!(
        error.starts_with("steps changed:") && error.contains("renamed#1") && error.contains("original#1"),
        "{error}"
    );
    assert_eq!((ledger.runs("original"), ledger.runs("renamed"), ledger.runs("last")), (1, 0, 0));
    w.stop().await;
}

#[tokio::test]
async fn changed_steps_run_on_with_a_warning_under_the_default_policy() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-diverge-warn").await.unwrap();
    let (ledger, deployed) = (Ledger::default(), Arc::new(AtomicBool::new(false)));
    let w = RunningWorker::start(renaming(
        &cfg,
        "steps-diverge-warn",
        Divergence::default(),
        &ledger,
        deployed.clone(),
    ))
    .await;
    let id = q.add("flow", &()).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Delayed, WAIT).await;
    deployed.store(true, Ordering::SeqCst);
    let done = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!((ledger.runs("original"), ledger.runs("renamed"), ledger.runs("last")), (1, 1, 1));
    let keys: Vec<String> = done.steps.iter().map(|s| s.key()).collect();
    assert_eq!(keys, ["original#1", "~sleep#1", "renamed#1", "last#1"], "the old step stays in the timeline");
    w.stop().await;
}

#[tokio::test]
async fn a_job_over_its_step_limits_fails_for_good_with_a_clear_error() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-limits").await.unwrap();
    let w = RunningWorker::start(Worker::builder(&cfg, "steps-limits").step_limits(2, 200).handler(
        "flow",
        |ctx: JobContext, result_bytes: usize| async move {
            for i in 0..3 {
                ctx.step("s", || async { Ok("x".repeat(result_bytes)) }).await?;
                let _ = i;
            }
            Ok::<(), JobError>(())
        },
    ))
    .await;
    let too_many = q.add_with("flow", &1usize, quick_retries()).await.unwrap().id;
    let too_big = q.add_with("flow", &500usize, quick_retries()).await.unwrap().id;
    let many = wait_for_state(&q, &too_many, JobState::Failed, WAIT).await;
    let error = many.last_error.unwrap();
    assert!(error.starts_with("step limit:") && error.contains("2 durable steps"), "{error}");
    assert_eq!(many.steps.len(), 2, "the steps within the limit are kept");
    assert_eq!(many.attempts_made, 1, "a limit is permanent: no retry");
    let big = wait_for_state(&q, &too_big, JobState::Failed, WAIT).await;
    let error = big.last_error.unwrap();
    assert!(error.starts_with("step limit:") && error.contains("at most 200"), "{error}");
    assert!(big.steps.is_empty());
    w.stop().await;
}
