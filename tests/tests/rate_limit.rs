//! A queue's rate limit: at most `max` jobs start per window, across all its
//! workers; workers waiting for a used-up window fetch again when it closes,
//! and a limited queue hands nothing straight to a parked worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quern_common::{JobState, RateLimit, RedisConfig};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, counting};
use quern_worker::{Worker, WorkerBuilder};

const LEASE: Duration = Duration::from_secs(30);

fn limit(max: u32, per: Duration) -> Option<RateLimit> {
    Some(RateLimit::new(max, per).unwrap())
}

/// A worker on `queue` whose "count" jobs add one to `done`. Its idle block
/// is long: a worker that waited for it, not for the window to close, would
/// make the tests below time out.
fn counter(cfg: &RedisConfig, queue: &str, slots: usize, done: Arc<AtomicUsize>) -> WorkerBuilder {
    let builder = Worker::builder(cfg, queue).concurrency(slots).idle_block(Duration::from_secs(30));
    counting(builder, "count", done)
}

async fn add(q: &Queue, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(q.add("count", &i).await.unwrap().id);
    }
    ids
}

async fn until(done: &AtomicUsize, n: usize, limit: Duration) {
    quern_tests::eventually(limit, "the jobs to complete", || async {
        (done.load(Ordering::SeqCst) >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_limited_fetch_takes_what_the_window_has_left_and_says_when_it_closes() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    add(&q, 10).await;
    assert_eq!(q.rate_limit().await.unwrap(), None);
    q.set_rate_limit(limit(3, Duration::from_millis(800))).await.unwrap();
    assert_eq!(q.rate_limit().await.unwrap(), limit(3, Duration::from_millis(800)));

    let first = m.fetch(10, LEASE, "w1").await;
    assert_eq!(first.jobs.len(), 3, "the window allows 3");
    assert!(
        first.next_delayed_ms.is_some_and(|ms| (1..=800).contains(&ms)),
        "fetch again when the window closes: {first:?}"
    );
    let used = m.fetch(10, LEASE, "w2").await;
    assert!(used.jobs.is_empty(), "a used-up window, for every worker");
    assert!(used.next_delayed_ms.is_some_and(|ms| (1..=800).contains(&ms)), "{used:?}");

    tokio::time::sleep(Duration::from_millis(used.next_delayed_ms.unwrap() + 20)).await;
    assert_eq!(m.fetch(2, LEASE, "w1").await.jobs.len(), 2, "a new window; the batch is the smaller");
    let rest_of_window = m.fetch(10, LEASE, "w1").await;
    assert_eq!(rest_of_window.jobs.len(), 1);
    assert!(rest_of_window.next_delayed_ms.is_some_and(|ms| ms > 0));

    // Setting a limit opens a fresh window; removing it lifts the limit at once.
    q.set_rate_limit(limit(2, Duration::from_secs(3600))).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w1").await.jobs.len(), 2);
    q.set_rate_limit(None).await.unwrap();
    assert_eq!(q.rate_limit().await.unwrap(), None);
    let unlimited = m.fetch(10, LEASE, "w1").await;
    assert_eq!(unlimited.jobs.len(), 2, "the last two");
    assert_eq!(unlimited.next_delayed_ms, None);
}

#[tokio::test]
async fn a_limited_queue_hands_nothing_over_and_its_workers_do_not_park() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    m.park("w1", Duration::from_millis(500), Duration::from_secs(60)).await;
    q.set_rate_limit(limit(10, Duration::from_secs(1))).await.unwrap();
    assert!(m.parked().await.is_empty(), "setting a limit clears the parkings");

    let short = m.fetch_parking(4, LEASE, "w1", "500 w1", Duration::from_secs(60)).await;
    assert!(short.jobs.is_empty());
    assert!(m.parked().await.is_empty(), "a short fetch of a limited queue does not park");
    let id = q.add("count", &1).await.unwrap().id;
    assert!(m.handoffs().await.is_empty(), "not handed over: it starts through a fetch, where it counts");
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Waiting);

    q.set_rate_limit(None).await.unwrap();
    assert_eq!(m.fetch_parking(4, LEASE, "w1", "500 w1", Duration::from_secs(60)).await.jobs.len(), 1);
    assert_eq!(m.parked().await, vec!["500 w1".to_owned()], "unlimited, a short fetch parks again");
}

#[tokio::test]
async fn workers_together_start_at_most_max_jobs_per_window() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let per = Duration::from_millis(400);
    q.set_rate_limit(limit(4, per)).await.unwrap();
    let ids = add(&q, 16).await;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let a = RunningWorker::start(counter(&cfg, "q", 8, done.clone())).await;
    let b = RunningWorker::start(counter(&cfg, "q", 8, done.clone())).await;
    // Four windows at least; each ends a wait of the workers, not their idle block.
    until(&done, 16, Duration::from_secs(15)).await;
    println!("16 jobs at 4 per {per:?} took {:?}", started.elapsed());
    a.stop().await;
    b.stop().await;

    let mut starts = Vec::new();
    for id in &ids {
        starts.push(q.job(id).await.unwrap().unwrap().started_at_ms.unwrap());
    }
    starts.sort_unstable();
    let per_ms = per.as_millis() as u64;
    assert!(starts[15] - starts[0] >= 3 * per_ms, "16 starts need 4 windows: {starts:?}");
    // A window opens with its first start, so two may follow closely: at most
    // 2 * max starts in any span of one window.
    for (i, t) in starts.iter().enumerate() {
        let within = starts[i..].iter().take_while(|&&u| u < t + per_ms).count();
        assert!(within <= 8, "{within} starts within {per:?} from {t}: {starts:?}");
    }
}

#[tokio::test]
async fn removing_the_limit_lets_waiting_workers_go_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    // Idle first: the worker is parked when the limit comes, and wakes for the adds.
    let w = RunningWorker::start(counter(&cfg, "q", 4, done.clone())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.set_rate_limit(limit(1, Duration::from_secs(3600))).await.unwrap();
    add(&q, 5).await;
    until(&done, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(done.load(Ordering::SeqCst), 1, "one start per hour");
    assert_eq!(q.counts().await.unwrap().waiting, 4);

    q.set_rate_limit(None).await.unwrap();
    until(&done, 5, Duration::from_secs(10)).await;
    w.stop().await;
}
