//! Delayed jobs: never fetched before they are due (Redis time), promoted when
//! due, and an idle worker picks them up on time without polling.

use std::time::Duration;

use quern_common::{JobOptions, JobState, RedisConfig};
use quern_producer::{NewJob, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

const LEASE: Duration = Duration::from_secs(30);
/// How late an idle worker may start a due job (timers on a busy machine).
const LATE_MS: u64 = 300;

fn delay(ms: u64) -> JobOptions {
    JobOptions::new().delay(Duration::from_millis(ms))
}

async fn start_idle_worker(cfg: &RedisConfig) -> RunningWorker {
    // A long idle block: a job that starts on time was woken by the delayed
    // timer or a wake-up marker, not by the block running out.
    let builder = Worker::builder(cfg, "q")
        .concurrency(2)
        .idle_block(Duration::from_secs(10))
        .handler("job", |_ctx: JobContext, _: ()| async move { Ok::<(), JobError>(()) });
    RunningWorker::start(builder).await
}

#[tokio::test]
async fn a_delayed_job_is_not_fetched_before_it_is_due_then_is_promoted() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add_with("job", &(), delay(300)).await.unwrap().id;
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Delayed);
    let due = m.zset(m.keys().delayed()).await[0].1 as u64;
    assert_eq!(due, job.created_at_ms + 300, "due = Redis time of the add + delay");
    assert!(m.wait_list().await.is_empty());

    let early = m.fetch(5, LEASE, "w").await;
    assert!(early.jobs.is_empty());
    assert!(early.next_delayed_ms.is_some_and(|ms| ms > 0 && ms <= 300), "{:?}", early.next_delayed_ms);
    let c = q.counts().await.unwrap();
    assert_eq!((c.delayed, c.waiting), (1, 0));

    tokio::time::sleep(Duration::from_millis(early.next_delayed_ms.unwrap() + 5)).await;
    let late = m.fetch(5, LEASE, "w").await;
    assert_eq!(late.ids(), [id.as_str()]);
    let started: u64 = m.field(&id, "st").await.unwrap().parse().unwrap();
    assert!(started >= due);
    assert!(m.zset(m.keys().delayed()).await.is_empty());
}

#[tokio::test]
async fn due_jobs_are_promoted_in_due_order_and_not_yet_due_ones_stay() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    // Due times 300 ms apart, so that slow adds on a loaded machine cannot
    // swap them; each is due at most 700 ms after the last add.
    let c = q.add_with("job", &"c", delay(700)).await.unwrap().id;
    let a = q.add_with("job", &"a", delay(100)).await.unwrap().id;
    let later = q.add_with("job", &"later", delay(60_000)).await.unwrap().id;
    let b = q.add_with("job", &"b", delay(400)).await.unwrap().id;
    let due_order = m.zset_ids(m.keys().delayed()).await;
    assert_eq!(due_order, [a.as_str(), b.as_str(), c.as_str(), later.as_str()], "added out of due order");
    tokio::time::sleep(Duration::from_millis(750)).await;
    // Fetching nothing still promotes what is due.
    let f = m.fetch(0, LEASE, "w").await;
    assert!(f.jobs.is_empty());
    assert_eq!(m.wait_list().await, [a.as_str(), b.as_str(), c.as_str()]);
    assert_eq!(q.job(&a).await.unwrap().unwrap().state, JobState::Waiting);
    assert_eq!(m.zset_ids(m.keys().delayed()).await, [later.as_str()]);
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [a, b, c]);
}

#[tokio::test]
async fn a_paused_queue_promotes_due_jobs_but_hands_none_out() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add_with("job", &(), delay(20)).await.unwrap().id;
    q.pause().await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let f = m.fetch(5, LEASE, "w").await;
    assert!(f.paused && f.jobs.is_empty());
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Waiting);
    q.resume().await.unwrap();
    assert_eq!(m.fetch(5, LEASE, "w").await.ids(), [id]);
}

#[tokio::test]
async fn an_idle_worker_runs_a_delayed_job_when_it_is_due() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start_idle_worker(&cfg).await;
    // Let the worker find the queue empty and block.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = q.add_with("job", &(), delay(400)).await.unwrap().id;
    let job = wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(5)).await;
    let started = job.started_at_ms.unwrap();
    let due = job.created_at_ms + 400;
    assert!(started >= due, "started {} ms early", due - started);
    assert!(started <= due + LATE_MS, "started {} ms late", started - due);
    worker.stop().await;
}

#[tokio::test]
async fn a_sooner_delayed_job_added_later_shortens_the_wait() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start_idle_worker(&cfg).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let far = q.add_with("job", &(), delay(5_000)).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let near = q.add_with("job", &(), delay(200)).await.unwrap().id;
    let job = wait_for_state(&q, &near, JobState::Completed, Duration::from_secs(3)).await;
    let due = job.created_at_ms + 200;
    let started = job.started_at_ms.unwrap();
    assert!(started >= due && started <= due + LATE_MS, "started {started}, due {due}");
    assert_eq!(q.job(&far).await.unwrap().unwrap().state, JobState::Delayed);
    worker.stop().await;
}

#[tokio::test]
async fn many_delayed_jobs_added_in_bulk_all_run_once_due() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = start_idle_worker(&cfg).await;
    let jobs: Vec<NewJob> =
        (0..200u64).map(|i| NewJob::new("job", &()).unwrap().options(delay(100 + (i % 5) * 50))).collect();
    let added = q.add_bulk(&jobs).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!(c.delayed + c.waiting + c.active + c.completed, 200, "{c:?}");
    assert!(c.delayed > 150, "still delayed right after the add: {c:?}");
    for (i, a) in added.iter().enumerate() {
        let job = wait_for_state(&q, &a.id, JobState::Completed, Duration::from_secs(10)).await;
        let due = job.created_at_ms + 100 + (i as u64 % 5) * 50;
        assert!(job.started_at_ms.unwrap() >= due, "job {} ran before it was due", a.id);
    }
    worker.stop().await;
}
