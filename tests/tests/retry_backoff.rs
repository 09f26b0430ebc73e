//! The retry schedule, with real workers and short delays: exponential growth,
//! the cap, jitter bounds, fixed and no backoff. The delay a worker chose is
//! read from the `retrying` events; the wait actually observed is read from the
//! attempt history (Redis timestamps), and must never be shorter.

use std::time::Duration;

use quern_common::{Attempt, Backoff, JobInfo, JobOptions, JobState, RedisConfig};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

/// Scheduling slack allowed on top of a delay (timers, a busy 2-core machine).
const SLACK_MS: u64 = 250;
const WAIT: Duration = Duration::from_secs(15);

async fn start(cfg: &RedisConfig, concurrency: usize) -> RunningWorker {
    let builder = Worker::builder(cfg, "q")
        .concurrency(concurrency)
        // Long idle blocks: retries must be picked up by the delayed-job timer,
        // not by the idle wake-up.
        .idle_block(Duration::from_secs(5))
        .handler("always-fails", |ctx: JobContext, _: ()| async move {
            Err::<(), JobError>(JobError::retryable(format!("attempt {} failed", ctx.attempt())))
        })
        .handler("fails-until", |ctx: JobContext, ok_at: u32| async move {
            if ctx.attempt() < ok_at {
                return Err(JobError::retryable("not yet"));
            }
            Ok::<u32, JobError>(ctx.attempt())
        });
    RunningWorker::start(builder).await
}

/// The retry delays the worker asked for, job `id`, in order.
async fn chosen_delays(m: &Mover, id: &str) -> Vec<u64> {
    m.event_entries()
        .await
        .into_iter()
        .filter(|e| {
            e.get("ev").map(String::as_str) == Some("retrying") && e.get("id").map(String::as_str) == Some(id)
        })
        .map(|e| e["delay"].parse().expect("delay is a number"))
        .collect()
}

/// Time between the end of each failed attempt and the start of the next.
fn observed_waits(history: &[Attempt]) -> Vec<u64> {
    history.windows(2).map(|w| w[1].started_at_ms.unwrap() - w[0].finished_at_ms.unwrap()).collect()
}

fn check_waits(job: &JobInfo, delays: &[u64]) {
    let waits = observed_waits(&job.history);
    assert_eq!(waits.len(), delays.len(), "{job:#?}");
    for (wait, delay) in waits.iter().zip(delays) {
        assert!(wait >= delay, "retried after {wait} ms, before its delay of {delay} ms");
        assert!(*wait <= delay + SLACK_MS, "retried after {wait} ms, long after its delay of {delay} ms");
    }
}

#[tokio::test]
async fn exponential_backoff_doubles_from_its_base_and_stops_at_the_cap() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let worker = start(&cfg, 2).await;
    let backoff = Backoff::Exponential {
        base: Duration::from_millis(100),
        max: Duration::from_millis(500),
        jitter: 0.0,
    };
    let id =
        q.add_with("always-fails", &(), JobOptions::new().attempts(5).backoff(backoff)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Failed, WAIT).await;
    let delays = chosen_delays(&m, &id).await;
    // 100, 200, 400, then 800 capped to 500; the fifth attempt is the last.
    assert_eq!(delays, [100, 200, 400, 500]);
    check_waits(&job, &delays);
    assert_eq!(job.attempts_made, 5);
    assert_eq!(job.last_error.as_deref(), Some("attempt 5 failed"));
    worker.stop().await;
}

#[tokio::test]
async fn jitter_shortens_each_delay_by_at_most_its_fraction_even_at_the_cap() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let worker = start(&cfg, 40).await;
    // Full delays 200 then min(400, 300) = 300; jitter cuts up to half.
    let backoff = Backoff::Exponential {
        base: Duration::from_millis(200),
        max: Duration::from_millis(300),
        jitter: 0.5,
    };
    let opts = JobOptions::new().attempts(3).backoff(backoff);
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(q.add_with("always-fails", &(), opts.clone()).await.unwrap().id);
    }
    let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
    for id in &ids {
        let job = wait_for_state(&q, id, JobState::Failed, WAIT).await;
        let delays = chosen_delays(&m, id).await;
        assert_eq!(delays.len(), 2);
        assert!((100..=200).contains(&delays[0]), "first delay {} outside 100..=200 ms", delays[0]);
        assert!((150..=300).contains(&delays[1]), "capped delay {} outside 150..=300 ms", delays[1]);
        check_waits(&job, &delays);
        firsts.push(delays[0]);
        seconds.push(delays[1]);
    }
    let spread = |v: &[u64]| v.iter().max().unwrap() - v.iter().min().unwrap();
    assert!(spread(&firsts) >= 20, "jitter spreads retries: {firsts:?}");
    assert!(spread(&seconds) >= 20, "jitter spreads retries: {seconds:?}");
    worker.stop().await;
}

#[tokio::test]
async fn fixed_backoff_waits_the_same_time_before_every_retry() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let worker = start(&cfg, 2).await;
    let opts = JobOptions::new().attempts(4).backoff(Backoff::fixed(Duration::from_millis(120)));
    let id = q.add_with("fails-until", &4u32, opts).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    let delays = chosen_delays(&m, &id).await;
    assert_eq!(delays, [120, 120, 120]);
    check_waits(&job, &delays);
    assert_eq!(job.result.as_deref(), Some("4"), "succeeds on its last attempt");
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["error", "error", "error", "completed"]);
    worker.stop().await;
}

#[tokio::test]
async fn no_backoff_retries_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let worker = start(&cfg, 2).await;
    let opts = JobOptions::new().attempts(3).backoff(Backoff::None);
    let id = q.add_with("fails-until", &3u32, opts).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(chosen_delays(&m, &id).await, [0, 0]);
    check_waits(&job, &[0, 0]);
    worker.stop().await;
}

#[tokio::test]
async fn the_default_backoff_is_one_second_less_up_to_a_quarter() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let worker = start(&cfg, 2).await;
    let id = q.add("always-fails", &()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Delayed, WAIT).await;
    assert_eq!(job.attempts_made, 1);
    assert_eq!(job.max_attempts, 3);
    let delays = chosen_delays(&m, &id).await;
    assert_eq!(delays.len(), 1);
    assert!((750..=1000).contains(&delays[0]), "default first delay {} ms", delays[0]);
    let due = m.zset(m.keys().delayed()).await[0].1 as u64;
    let failed_at = job.history[0].finished_at_ms.unwrap();
    assert_eq!(due - failed_at, delays[0], "due time is Redis time of the failure plus the delay");
    worker.stop().await;
}

#[tokio::test]
async fn a_job_retried_into_the_future_waits_while_other_work_runs() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start(&cfg, 1).await;
    let opts = JobOptions::new().attempts(2).backoff(Backoff::fixed(Duration::from_millis(600)));
    let slow_retry = q.add_with("fails-until", &2u32, opts).await.unwrap().id;
    let mut quick = Vec::new();
    for _ in 0..5 {
        quick.push(q.add("fails-until", &1u32).await.unwrap().id);
    }
    for id in &quick {
        let job = wait_for_state(&q, id, JobState::Completed, WAIT).await;
        let retried = q.job(&slow_retry).await.unwrap().unwrap();
        assert_ne!(retried.state, JobState::Completed, "quick job {id} waited behind a delayed retry");
        assert!(job.finished_at_ms.is_some());
    }
    let job = wait_for_state(&q, &slow_retry, JobState::Completed, WAIT).await;
    check_waits(&job, &[600]);
    worker.stop().await;
}
