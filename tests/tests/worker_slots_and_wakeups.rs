//! The worker runtime's use of its slots and of Redis: never more than C jobs
//! at once, all C busy when work is there, idle workers woken at once by new
//! work (no waiting for the idle block, no polling).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quern_common::{JobState, RedisConfig};
use quern_producer::{NewJob, Queue};
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{TestRedis, config, config_for, raw_connection};
use quern_worker::{JobContext, JobError, Worker};

/// Longer than any test here waits: a job that runs was woken, not polled for.
const IDLE_BLOCK: Duration = Duration::from_secs(20);

/// Counts jobs running at once and the most seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    done: AtomicUsize,
}

fn sleeper(cfg: &RedisConfig, slots: usize, gauge: Arc<Gauge>) -> quern_worker::WorkerBuilder {
    Worker::builder(cfg, "q").concurrency(slots).idle_block(IDLE_BLOCK).handler(
        "sleep",
        move |_ctx: JobContext, ms: u64| {
            let g = gauge.clone();
            async move {
                let running = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                g.done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        },
    )
}

async fn all_done(gauge: &Gauge, n: usize, limit: Duration) {
    quern_tests::eventually(limit, &format!("{n} jobs to finish"), || {
        let done = gauge.done.load(Ordering::SeqCst);
        async move { (done >= n).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_worker_runs_exactly_its_concurrency_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let jobs: Vec<NewJob> = (0..12).map(|_| NewJob::new("sleep", &100u64).unwrap()).collect();
    q.add_bulk(&jobs).await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let started = Instant::now();
    let worker = RunningWorker::start(sleeper(&cfg, 3, gauge.clone())).await;
    all_done(&gauge, 12, Duration::from_secs(10)).await;
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3, "never more than 3, and 3 when work was there");
    assert!(started.elapsed() >= Duration::from_millis(400), "12 jobs of 100 ms on 3 slots");
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed, c.waiting, c.active), (12, 0, 0));
    worker.stop().await;
}

#[tokio::test]
async fn a_free_slot_takes_new_work_while_another_job_runs() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let worker = RunningWorker::start(sleeper(&cfg, 2, gauge.clone())).await;
    let long = q.add("sleep", &1_500u64).await.unwrap().id;
    wait_for_state(&q, &long, JobState::Active, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = q.add("sleep", &10u64).await.unwrap().id;
    let job = wait_for_state(&q, &short, JobState::Completed, Duration::from_secs(1)).await;
    assert!(job.started_at_ms.unwrap() - job.created_at_ms < 300, "{job:#?}");
    assert_eq!(q.job(&long).await.unwrap().unwrap().state, JobState::Active, "ran beside the long job");
    worker.stop().await;
}

#[tokio::test]
async fn an_idle_worker_starts_a_new_job_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let worker = RunningWorker::start(sleeper(&cfg, 4, gauge.clone())).await;
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let id = q.add("sleep", &0u64).await.unwrap().id;
        let job = wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(2)).await;
        let latency = job.started_at_ms.unwrap() - job.created_at_ms;
        assert!(latency < 200, "round {round}: started {latency} ms after the add");
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_burst_reaches_every_idle_single_slot_worker() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(RunningWorker::start(sleeper(&cfg, 1, gauge.clone())).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(q.add("sleep", &30u64).await.unwrap().id);
    }
    // 30 jobs of 30 ms on three slots: about 300 ms when all three work.
    all_done(&gauge, 30, Duration::from_secs(5)).await;
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3, "all three workers ran jobs at the same time");
    let mut per_worker = std::collections::HashMap::new();
    for id in &ids {
        let job = wait_for_state(&q, id, JobState::Completed, Duration::from_secs(1)).await;
        *per_worker.entry(job.worker.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_worker.len(), 3, "{per_worker:?}");
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test]
async fn an_idle_worker_does_not_poll_redis() {
    let server = TestRedis::start();
    let cfg = config_for(&server.url());
    let gauge = Arc::new(Gauge::default());
    let worker = RunningWorker::start(sleeper(&cfg, 8, gauge).reap_interval(Duration::from_secs(30))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = raw_connection(&cfg).await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let (scripts, blpop) = (quern_tests::script_calls(&info), quern_tests::command_calls(&info, "blpop"));
    assert!(scripts <= 1, "an idle worker ran {scripts} scripts in 2 s:\n{info}");
    assert!(blpop <= 1, "an idle worker blocks instead of polling, {blpop} BLPOPs in 2 s:\n{info}");
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_fetches_a_job_for_every_free_slot_in_one_call() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = quern_tests::moves::Mover::new(&cfg, "q").await;
    q.pause().await.unwrap();
    let jobs: Vec<NewJob> = (0..25).map(|_| NewJob::new("sleep", &200u64).unwrap()).collect();
    q.add_bulk(&jobs).await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let worker = RunningWorker::start(sleeper(&cfg, 10, gauge.clone())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.resume().await.unwrap();
    all_done(&gauge, 25, Duration::from_secs(10)).await;
    let fetches: Vec<usize> = m
        .event_entries()
        .await
        .into_iter()
        .filter(|e| e["ev"] == "active")
        .map(|e| e["ids"].split(',').count())
        .collect();
    assert_eq!(fetches[0], 10, "the first call filled all ten slots: {fetches:?}");
    assert_eq!(fetches.iter().sum::<usize>(), 25);
    assert!(fetches.len() <= 15, "slots freed together are refilled together: {fetches:?}");
    worker.stop().await;
}

#[tokio::test]
async fn a_job_added_as_an_idle_worker_stops_runs_or_goes_back_never_stays_leased() {
    // An idle worker is parked, so the job added at the moment it stops may be
    // handed to its wait. The worker must then hand it back (or run it, if it
    // came before the stop), or unpark and return it if its wait had ended, and
    // stop at once rather than after its 20 s idle block.
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let gauge = Arc::new(Gauge::default());
    let mut left_waiting = 0;
    for round in 0..20u64 {
        let worker = RunningWorker::start(sleeper(&cfg, 4, gauge.clone())).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stopping = Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_micros(round * 100)).await;
            worker.stop().await;
        };
        let (added, ()) = tokio::join!(q.add("sleep", &0u64), stop);
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "round {round}: stopping took {:?}",
            stopping.elapsed()
        );
        let counts = q.counts().await.unwrap();
        assert_eq!(counts.active, 0, "round {round}: a job was left leased: {counts:?}");
        let job = q.job(&added.unwrap().id).await.unwrap().unwrap();
        match job.state {
            JobState::Completed => {}
            JobState::Waiting => {
                assert_eq!(job.attempts_made, 0, "round {round}: handing back used an attempt: {job:#?}");
                left_waiting += 1;
            }
            other => panic!("round {round}: the job is {other}: {job:#?}"),
        }
    }
    eprintln!("{left_waiting} of 20 jobs were left waiting by the stopping worker");
}
