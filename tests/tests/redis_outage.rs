//! Redis outages: while Redis is down the producer fails fast with a clear,
//! retryable error (a web handler never hangs) and works again by itself when
//! Redis is back; workers retry with capped backoff, never exit, and resume on
//! their own; a connection that goes silent cannot stop a worker blocked in
//! its wait for work.

use std::path::Path;
use std::time::{Duration, Instant};

use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::blackhole::Blackhole;
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings};
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{Persistence, TestRedis, config_for, eventually};
use quern_worker::{JobContext, JobError, Worker};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_fails_fast_while_redis_is_down_and_recovers_by_itself() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500));
    // The documented bound: a connect attempt or a call, plus scheduling slack.
    let bound = cfg.connect_timeout * 2 + cfg.response_timeout + Duration::from_millis(500);
    let q = Queue::connect(&cfg, "outage").await.unwrap();
    let before = q.add("chaos", &1).await.unwrap().id;

    server.kill();
    // 50 web handlers add at once: every one gets an error, quickly.
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..50 {
        let q = q.clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            (q.add("chaos", &i).await, t.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for c in calls {
        let (result, took) = c.await.unwrap();
        let err = result.expect_err("an add cannot succeed while Redis is down");
        assert!(err.is_retryable() && err.is_connection_error(), "{err}");
        assert!(err.to_string().contains("Redis"), "the message says what failed: {err}");
        slowest = slowest.max(took);
    }
    // Later calls fail just as fast (no build-up behind a dead connection).
    for _ in 0..3 {
        let t = Instant::now();
        let err = q.counts().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        slowest = slowest.max(t.elapsed());
    }
    println!(
        "redis outage: 50 concurrent adds and 3 reads failed, slowest after {slowest:?} (bound {bound:?})"
    );
    assert!(slowest < bound, "a call took {slowest:?} to fail while Redis was down");
    assert!(started.elapsed() < bound * 4);

    tokio::task::block_in_place(|| server.restart());
    let t = Instant::now();
    let after = eventually(Duration::from_secs(10), "the handle to work again", || async {
        q.add("chaos", &2).await.ok().map(|a| a.id)
    })
    .await;
    println!("redis outage: the producer handle worked again {:?} after Redis was back", t.elapsed());
    assert_ne!(before, after);
    assert!(q.job(&before).await.unwrap().is_some(), "AOF kept the job added before the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_retries_with_capped_backoff_and_resumes_when_redis_returns() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let mut s = WorkerSettings::new(server.url(), "outage", dir.path().join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.lease = Duration::from_millis(1000);
    s.redis_timeout = Duration::from_millis(500);
    let q = Queue::connect(&cfg, "outage").await.unwrap();
    let mut worker = WorkerProcess::start(binary(), &s, &dir.path().join("w.log")).await.unwrap();
    let first = q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.unwrap().id;
    wait_for_state(&q, &first, JobState::Completed, Duration::from_secs(5)).await;
    // One job is running when Redis dies.
    let running = q.add("chaos", &ChaosJob { sleep_ms: 300, fail_attempts: 0 }).await.unwrap().id;
    wait_for_state(&q, &running, JobState::Active, Duration::from_secs(5)).await;

    // Down for 7 s: long enough for the retry delay to reach its cap.
    let down = Duration::from_secs(7);
    tokio::task::block_in_place(|| {
        server.kill();
        std::thread::sleep(down);
        server.restart();
    });
    let back = Instant::now();
    assert!(worker.wait_exit(Duration::from_millis(1)).await.is_err(), "the worker must not exit");
    // (The producer handle sat idle through the outage: its first call may
    // still meet the dead socket, fail fast and reconnect; a retry goes through.)
    let after = eventually(Duration::from_secs(5), "an add after the restart", || async {
        q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.ok().map(|a| a.id)
    })
    .await;
    wait_for_state(&q, &after, JobState::Completed, Duration::from_secs(10)).await;
    let resumed = back.elapsed();
    let job = wait_for_state(&q, &running, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!(job.attempts_made, 1, "{job:#?}");

    // The log shows the retries, each delay at most the 5 s cap, the last ones at it.
    let log = worker.log();
    let delays: Vec<Duration> = log
        .lines()
        .filter(|l| l.contains("round trip to Redis failed"))
        .filter_map(|l| l.split("retry_in=").nth(1))
        .filter_map(|rest| parse_debug_duration(rest.split_whitespace().next().unwrap_or("")))
        .collect();
    println!(
        "redis outage: worker resumed {resumed:?} after Redis returned ({down:?} down); retry delays: {delays:?}"
    );
    assert!(delays.len() >= 3, "the worker retried several times; log:\n{log}");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)), "uncapped retry delay: {delays:?}");
    assert!(delays.windows(2).any(|w| w[1] > w[0]), "the delay grows: {delays:?}");
    assert!(resumed < Duration::from_secs(5) + Duration::from_secs(3), "resumed only after {resumed:?}");
    worker.signal("TERM").unwrap();
    assert!(worker.wait_exit(Duration::from_secs(10)).await.unwrap().success());
}

/// `50ms`, `1.6s`, `5s` as printed by `Debug` for `Duration`.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let text = text.trim_end_matches(',');
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| Duration::from_secs_f64(v / 1000.0));
    }
    text.strip_suffix('s')?.parse::<f64>().ok().map(Duration::from_secs_f64)
}

#[tokio::test]
async fn an_idle_worker_whose_blocking_connection_goes_silent_still_picks_up_work() {
    let server = TestRedis::start();
    let relay = Blackhole::start(server.addr()).await.unwrap();
    let direct = config_for(&server.url()).response_timeout(Duration::from_millis(500));
    let mut through_relay = direct.clone();
    through_relay.url = relay.url();
    let idle_block = Duration::from_secs(1);
    let q = Queue::connect(&direct, "silent").await.unwrap();
    let worker = RunningWorker::start(
        Worker::builder(&through_relay, "silent")
            .idle_block(idle_block)
            .reap_interval(Duration::from_millis(250))
            .handler("job", |_c: JobContext, _: ()| async { Ok::<(), JobError>(()) }),
    )
    .await;
    let warm = q.add("job", &()).await.unwrap().id;
    wait_for_state(&q, &warm, JobState::Completed, Duration::from_secs(5)).await;
    // Let the worker settle into its blocking wait, then silence every connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = relay.cut();
    assert!(cut >= 2, "the blocking connection and the main one went through the relay");
    let t = Instant::now();
    let id = q.add("job", &()).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(10)).await;
    let took = t.elapsed();
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    println!("redis outage: attempts of the job added in the silence: {outcomes:?}");
    assert_eq!(job.attempts_made, 1, "a stall uses no attempt: {job:#?}");
    // The wake-up was lost in the silence, and so was the reply of the fetch
    // pipelined behind it, which leased the job for twice the response timeout
    // only. The blocking wait still ends within the idle block plus the
    // response timeout, the worker reconnects, and the reaper (every 250 ms)
    // hands the job back once that short lease has expired.
    let wake_lease = direct.response_timeout * 2;
    let bound = idle_block + direct.response_timeout + wake_lease + Duration::from_secs(2);
    println!(
        "redis outage: idle worker behind a silenced connection ran a new job after {took:?} (bound {bound:?})"
    );
    assert!(took < bound, "took {took:?}");
    assert!(relay.connections() > cut, "new connections were opened");
    assert!(!worker.is_finished());
    worker.stop().await;
}
