//! Graceful shutdown of a real worker process: on SIGTERM (or SIGINT) it stops
//! fetching, lets running jobs finish within the grace period, hands the rest
//! back to `waiting` without using up an attempt, and exits 0.

use std::path::Path;
use std::time::{Duration, Instant};

use quern_common::{JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings, read_ledger};
use quern_tests::moves::Mover;
use quern_tests::{RedisConfig, config, eventually};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

fn settings(cfg: &RedisConfig, dir: &Path, queue: &str) -> WorkerSettings {
    let mut s = WorkerSettings::new(cfg.url.clone(), queue, dir.join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.concurrency = 4;
    s.grace = Duration::from_millis(1500);
    s
}

/// Wait until the worker runs `n` jobs: `n` active and none of them still on
/// the hand-off list (an add hands a job to a parked worker as `active`
/// before the worker has taken it; a stopping worker gives such a job back).
async fn wait_active(q: &Queue, n: u64) {
    let handoff = q.keys().handoff().to_owned();
    eventually(Duration::from_secs(5), "jobs to be running", || {
        let handoff = handoff.clone();
        async move {
            let pending: u64 =
                redis::cmd("LLEN").arg(&handoff).query_async(&mut q.connection()).await.unwrap();
            (q.counts().await.unwrap().active == n && pending == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_finishes_short_jobs_hands_long_ones_back_without_an_attempt_and_exits_0() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&cfg, dir.path(), "term");
    let q = Queue::connect(&cfg, "term").await.unwrap();
    let mut worker = WorkerProcess::start(binary(), &s, &dir.path().join("w.log")).await.unwrap();
    let opts = || JobOptions::new().attempts(2);
    let mut short = Vec::new();
    let mut long = Vec::new();
    for _ in 0..2 {
        short.push(
            q.add_with("chaos", &ChaosJob { sleep_ms: 800, fail_attempts: 0 }, opts()).await.unwrap().id,
        );
        long.push(
            q.add_with("chaos", &ChaosJob { sleep_ms: 60_000, fail_attempts: 0 }, opts()).await.unwrap().id,
        );
    }
    wait_active(&q, 4).await;

    let signalled = Instant::now();
    worker.signal("TERM").unwrap();
    // Work added after the signal is not fetched any more, nor handed over:
    // the worker unparks at once (see the test below).
    let m = Mover::new(&cfg, "term").await;
    unparked(&m).await;
    let late = q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.unwrap().id;
    let status = worker.wait_exit(Duration::from_secs(10)).await.unwrap();
    let took = signalled.elapsed();
    println!("graceful shutdown: exit {status} {took:?} after SIGTERM (grace {:?})", s.grace);
    assert!(status.success(), "exit status {status}; log:\n{}", worker.log());
    assert!(worker.said_stopped().await);
    assert!(took >= s.grace - Duration::from_millis(200), "it waited for the grace period: {took:?}");
    assert!(took < s.grace + Duration::from_secs(2), "it stopped soon after the grace period: {took:?}");

    for id in &short {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed, "a job finishing within the grace completes: {job:#?}");
        assert_eq!(job.attempts_made, 1);
    }
    for id in &long {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Waiting, "{job:#?}");
        assert_eq!(job.attempts_made, 0, "handing back does not use up an attempt: {job:#?}");
        assert_eq!(job.stalls, 0, "a released job is not a stall: {job:#?}");
        let released = job.history.last().unwrap();
        assert_eq!(released.outcome, "released");
        assert_eq!(released.worker.as_deref(), Some(worker.worker_id()));
        assert_eq!(m.field(id, "tk").await.as_deref(), Some(""), "the lease is released");
    }
    assert!(m.zset(m.keys().active()).await.is_empty(), "no lease is left to expire");
    assert_eq!(q.job(&late).await.unwrap().unwrap().state, JobState::Waiting);
    // Released jobs go to the front: the next worker starts them first, as attempt 1.
    let waiting = m.wait_list().await;
    assert_eq!(waiting.last(), Some(&late), "{waiting:?}");

    let next = WorkerProcess::start(binary(), &s, &dir.path().join("next.log")).await.unwrap();
    eventually(Duration::from_secs(5), "the released jobs to run again", || async {
        let runs = read_ledger(&s.ledger).unwrap();
        let again: Vec<_> = runs.iter().filter(|e| long.contains(&e.job_id) && e.pid == next.pid()).collect();
        (again.len() == 2).then_some(again.iter().all(|e| e.attempt == 1)).filter(|ok| *ok)
    })
    .await;
    next.kill9().await.unwrap();
}

async fn unparked(m: &Mover) {
    eventually(Duration::from_secs(1), "the stopping worker to unpark", || async {
        m.parked().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stopping_worker_unparks_at_once_so_adds_hand_it_nothing() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&cfg, dir.path(), "busy");
    s.concurrency = 1;
    s.grace = Duration::from_secs(5);
    // The parking of an idle worker holds for the idle block (and a little).
    s.idle_block = Duration::from_secs(10);
    let q = Queue::connect(&cfg, "busy").await.unwrap();
    let m = Mover::new(&cfg, "busy").await;
    let mut worker = WorkerProcess::start(binary(), &s, &dir.path().join("w.log")).await.unwrap();
    eventually(Duration::from_secs(5), "the idle worker to park", || async {
        (m.parked().await.len() == 1).then_some(())
    })
    .await;
    // Handed over, the long job takes the only slot; the worker stays parked.
    let long = q.add("chaos", &ChaosJob { sleep_ms: 60_000, fail_attempts: 0 }).await.unwrap().id;
    eventually(Duration::from_secs(5), "the worker to take the hand-off", || async {
        m.handoffs().await.is_empty().then_some(())
    })
    .await;
    assert_eq!(m.parked().await.len(), 1);

    let signalled = Instant::now();
    worker.signal("TERM").unwrap();
    unparked(&m).await;
    let late = q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.unwrap().id;
    assert!(m.handoffs().await.is_empty(), "nothing is handed to the stopping worker");
    let job = q.job(&late).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made), (JobState::Waiting, 0), "{job:#?}");
    assert!(signalled.elapsed() < s.grace, "all while the long job still runs");

    let status = worker.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", worker.log());
    assert_eq!(q.job(&long).await.unwrap().unwrap().state, JobState::Waiting);
    assert_eq!(m.wait_list().await, vec![long, late], "the released job goes in front");
}

#[tokio::test]
async fn sigint_with_jobs_that_finish_in_time_releases_nothing() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&cfg, dir.path(), "int");
    let q = Queue::connect(&cfg, "int").await.unwrap();
    let mut worker = WorkerProcess::start(binary(), &s, &dir.path().join("w.log")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(q.add("chaos", &ChaosJob { sleep_ms: 500, fail_attempts: 0 }).await.unwrap().id);
    }
    wait_active(&q, 4).await;
    let signalled = Instant::now();
    worker.signal("INT").unwrap();
    let status = worker.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", worker.log());
    assert!(worker.said_stopped().await);
    assert!(
        signalled.elapsed() < s.grace,
        "it exits as soon as the jobs are done: {:?}",
        signalled.elapsed()
    );
    for id in &ids {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        assert!(job.history.iter().all(|a| a.outcome != "released"), "{job:#?}");
    }
}

#[tokio::test]
async fn an_idle_worker_exits_0_at_once_on_sigterm() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&cfg, dir.path(), "idle");
    s.idle_block = Duration::from_secs(5);
    let mut worker = WorkerProcess::start(binary(), &s, &dir.path().join("w.log")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    worker.signal("TERM").unwrap();
    let status = worker.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", worker.log());
    // Not stuck in its blocking wait for new work.
    assert!(signalled.elapsed() < Duration::from_secs(1), "took {:?}", signalled.elapsed());
}
