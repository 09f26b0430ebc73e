//! Durable steps and sleeps through faults, with real worker processes
//! (`chaos_worker`'s `workflow` jobs, whose every step appends a line to a
//! ledger file before doing its work) on a private `redis-server` with
//! `appendfsync always`: a worker killed with `kill -9` in the middle of a
//! workflow, and Redis killed and restarted while a workflow sleeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use quern_common::steps::StepOutcome;
use quern_common::{JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::chaos::{StepRun, WorkerProcess, WorkerSettings, WorkflowJob, read_step_runs};
use quern_tests::workers::wait_for_state;
use quern_tests::{Persistence, TestRedis, config_for, eventually};

const QUEUE: &str = "flows";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

/// How many times each step ran, by step name.
fn runs_by_step(runs: &[StepRun]) -> BTreeMap<String, Vec<StepRun>> {
    let mut by: BTreeMap<String, Vec<StepRun>> = BTreeMap::new();
    for run in runs {
        by.entry(run.step.clone()).or_default().push(run.clone());
    }
    by
}

#[tokio::test]
async fn a_workflow_whose_worker_is_killed_mid_step_finishes_elsewhere_and_no_finished_step_runs_again() {
    let server = TestRedis::start_with(Persistence::AofAlways);
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let cfg = config_for(&server.url());
    let mut settings = WorkerSettings::new(server.url(), QUEUE, &ledger);
    settings.prefix = Some(cfg.prefix.clone());
    let first = WorkerProcess::start(binary(), &settings, &dir.path().join("first.log")).await.unwrap();
    let first_pid = first.pid();

    let q = Queue::connect(&cfg, QUEUE).await.unwrap();
    let job = WorkflowJob { steps: 5, step_ms: 300, sleep_after: 0, sleep_ms: 0 };
    let id = q.add("workflow", &job).await.unwrap().id;
    // Kill the worker while step 3 runs: steps 1 and 2 are stored by then.
    eventually(Duration::from_secs(20), "step 3 to start", || async {
        read_step_runs(&ledger).unwrap().iter().any(|r| r.step == "step-3").then_some(())
    })
    .await;
    first.kill9().await.unwrap();
    let second = WorkerProcess::start(binary(), &settings, &dir.path().join("second.log")).await.unwrap();

    let done = wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(30)).await;
    let runs = read_step_runs(&ledger).unwrap();
    let by_step = runs_by_step(&runs);
    assert_eq!(by_step.keys().collect::<Vec<_>>(), ["step-1", "step-2", "step-3", "step-4", "step-5"]);
    for (step, runs) in &by_step {
        match step.as_str() {
            // Finished before the kill: stored, never run again.
            "step-1" | "step-2" => assert_eq!(runs.len(), 1, "{step} ran again: {runs:?}"),
            // Killed mid-run (its result never stored): run again, once, by the second worker.
            "step-3" => {
                assert_eq!(runs.len(), 2, "{runs:?}");
                assert_eq!(runs[0].pid, first_pid);
                assert_eq!(runs[1].pid, second.pid());
                assert_ne!(runs[0].token, runs[1].token);
            }
            _ => assert_eq!(runs.len(), 1, "{step}: {runs:?}"),
        }
    }
    let timeline: Vec<String> = done.steps.iter().map(|s| s.key()).collect();
    assert_eq!(timeline, ["step-1#1", "step-2#1", "step-3#1", "step-4#1", "step-5#1"]);
    // A stall gives its attempt back: the recovered run is attempt 1 again.
    assert!(done.steps.iter().all(|s| s.attempt == 1), "{:#?}", done.steps);
    assert!(done.steps.iter().all(|s| s.outcome == StepOutcome::Ok));
    assert_eq!(done.result.as_deref(), Some("5"));
    drop(second);
}

#[tokio::test]
async fn a_sleeping_workflow_wakes_after_a_redis_restart_and_runs_on_after_its_sleep() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let cfg = config_for(&server.url());
    let mut settings = WorkerSettings::new(server.url(), QUEUE, &ledger);
    settings.prefix = Some(cfg.prefix.clone());
    let first = WorkerProcess::start(binary(), &settings, &dir.path().join("first.log")).await.unwrap();
    let q = Queue::connect(&cfg, QUEUE).await.unwrap();
    let job = WorkflowJob { steps: 3, step_ms: 10, sleep_after: 1, sleep_ms: 2500 };
    let id = q.add_with("workflow", &job, JobOptions::new().attempts(1)).await.unwrap().id;

    let asleep = wait_for_state(&q, &id, JobState::Delayed, Duration::from_secs(10)).await;
    assert_eq!(asleep.attempts_made, 0, "a sleep spends no attempt");
    assert!(asleep.steps.iter().any(|s| s.is_sleep()), "{:#?}", asleep.steps);
    first.kill9().await.unwrap();
    server.kill();
    server.restart();
    eventually(Duration::from_secs(10), "the queue to answer again", || async { q.counts().await.ok() })
        .await;
    let second = WorkerProcess::start(binary(), &settings, &dir.path().join("second.log")).await.unwrap();

    let done = wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(30)).await;
    let by_step = runs_by_step(&read_step_runs(&ledger).unwrap());
    for step in ["step-1", "step-2", "step-3"] {
        assert_eq!(by_step.get(step).map(Vec::len), Some(1), "{step}: {by_step:?}");
    }
    assert_eq!(by_step["step-2"][0].pid, second.pid(), "the steps after the sleep ran on the new worker");
    let keys: Vec<String> = done.steps.iter().map(|s| s.key()).collect();
    assert_eq!(keys, ["step-1#1", "~sleep#1", "step-2#1", "step-3#1"]);
    let wake = done.steps[1].wake_at_ms().unwrap();
    assert!(done.steps[2].started_at_ms >= wake, "step 2 ran after the wake time");
    assert_eq!(done.attempts_made, 1, "one attempt in all, though it ran twice");
}
