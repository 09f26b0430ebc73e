//! Jobs handed straight to a parked worker: one job added to a queue with
//! nothing waiting is leased by the add itself and put on the hand-off list
//! that parked workers block on. These tests pin down when that happens, and
//! that a handed-over job is never lost or charged a stall when its worker
//! never takes it (died, stopped, or busy).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::JobState;
use quern_producer::{JobOptions, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(10);

/// A worker on queue "q" whose "sleep" jobs sleep for their payload in ms.
fn sleeper(
    cfg: &quern_common::RedisConfig,
    slots: usize,
    done: Arc<AtomicUsize>,
) -> quern_worker::WorkerBuilder {
    Worker::builder(cfg, "q").concurrency(slots).idle_block(Duration::from_secs(20)).handler(
        "sleep",
        move |_ctx: JobContext, ms: u64| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        },
    )
}

#[tokio::test]
async fn one_job_added_while_a_worker_is_parked_is_leased_by_the_add_and_handed_over() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    m.park("w1", Duration::from_millis(500), Duration::from_secs(60)).await;

    let first = q.add("sleep", &"a\nb").await.unwrap().id;
    let job = q.job(&first).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Active, "{job:#?}");
    assert_eq!(job.worker, None, "nobody has claimed it yet");
    let handed = m.handoffs().await;
    assert_eq!(handed.len(), 1);
    assert_eq!((handed[0].id.as_str(), handed[0].attempt), (first.as_str(), 1));
    assert_eq!(handed[0].payload, "\"a\\nb\"", "the payload comes whole, newlines and all");
    assert_eq!(Some(handed[0].token.clone()), m.field(&first, "tk").await);

    // One hand-off pending at a time: the next add goes to waiting (and wakes).
    let second = q.add("sleep", &1u64).await.unwrap().id;
    assert_eq!(q.job(&second).await.unwrap().unwrap().state, JobState::Waiting);
    // With jobs waiting, a new add never jumps the queue, parked workers or not.
    m.park("w2", Duration::from_millis(500), Duration::from_secs(60)).await;
    let third = q.add("sleep", &1u64).await.unwrap().id;
    assert_eq!(m.wait_list().await, [second.clone(), third]);

    // Claiming records the worker and extends the lease; a wrong token is lost.
    let token = handed[0].token.clone();
    let lost = m.claim(Duration::from_secs(30), "w1", &[(&first, &token), (&second, "nope")]).await;
    assert_eq!(lost, [second]);
    assert_eq!(q.job(&first).await.unwrap().unwrap().worker.as_deref(), Some("w1"));
    let deadline = m.zset(m.keys().active()).await.into_iter().find(|(id, _)| *id == first).unwrap().1;
    assert!(deadline as u64 > m.now_ms().await + 20_000, "extended to the claimer's lease");
}

#[tokio::test]
async fn a_handed_over_job_keeps_its_payload_options_and_lease() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    // Payloads stored whole, in two pieces, and in many pieces; plain and full adds.
    let cases = [
        ("short", JobOptions::new()),
        (&"x".repeat(100)[..], JobOptions::new()),
        (&"é".repeat(150)[..], JobOptions::new().job_id("explicit").attempts(4)),
    ];
    for (text, options) in cases {
        m.park("w1", Duration::from_millis(500), Duration::from_secs(60)).await;
        let before = m.now_ms().await;
        let id = q.add_with("sleep", &text, options.clone()).await.unwrap().id;
        let handed = m.handoffs().await;
        assert_eq!(handed.len(), 1, "{text:.10}: handed over");
        let job = q.job(&id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempts_made), (JobState::Active, 1), "{job:#?}");
        assert_eq!(job.payload, serde_json::to_string(text).unwrap());
        assert_eq!(handed[0].payload, job.payload);
        assert_eq!(job.max_attempts, if id == "explicit" { 4 } else { 3 });
        assert_eq!(Some(handed[0].token.clone()), m.field(&id, "tk").await);
        assert!(job.started_at_ms.is_some_and(|t| t >= before), "{job:#?}");
        // Take it off the list, so the next add may hand over again.
        m.complete(-1, &[(&id, &handed[0].token, "")]).await;
        let _: () = redis::AsyncCommands::del(&mut m.conn(), m.keys().handoff()).await.unwrap();
    }
}

#[tokio::test]
async fn nothing_is_handed_over_on_a_paused_queue_in_a_batch_or_when_delayed() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    m.park("w1", Duration::from_millis(500), Duration::from_secs(60)).await;
    let delayed =
        q.add_with("sleep", &1u64, JobOptions::new().delay(Duration::from_secs(60))).await.unwrap().id;
    assert_eq!(q.job(&delayed).await.unwrap().unwrap().state, JobState::Delayed);
    let jobs: Vec<_> = (0..2).map(|_| quern_producer::NewJob::new("sleep", &1u64).unwrap()).collect();
    q.add_bulk(&jobs).await.unwrap();
    assert_eq!(m.wait_list().await.len(), 2, "a batch goes to waiting, its workers are woken");
    m.fetch(10, Duration::from_secs(30), "w9").await;
    q.pause().await.unwrap();
    assert!(m.parked().await.is_empty(), "pausing clears the parkings");
    let paused = q.add("sleep", &1u64).await.unwrap().id;
    assert_eq!(q.job(&paused).await.unwrap().unwrap().state, JobState::Waiting);
    assert!(m.handoffs().await.is_empty());
}

#[tokio::test]
async fn a_handed_over_job_nobody_claims_goes_back_to_waiting_without_a_stall() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    // A worker that parked and died: its parking holds a little while.
    m.park("ghost", Duration::from_millis(100), Duration::from_millis(200)).await;
    let id = q.add("sleep", &1u64).await.unwrap().id;
    assert_eq!(m.handoffs().await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reaped = m.reap(0, 100, 0).await;
    assert_eq!(reaped.recovered, std::slice::from_ref(&id), "back to waiting, even with no stalls allowed");
    assert!(reaped.dead.is_empty());
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.stalls, job.attempts_made), (JobState::Waiting, 0, 0), "{job:#?}");
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["stalled"]);
    assert!(m.handoffs().await.is_empty(), "its record left the hand-off list");
    assert!(m.parked().await.is_empty(), "the lapsed parking was cleared");
    assert_eq!(m.wait_list().await, [id]);
}

#[tokio::test]
async fn a_live_worker_takes_a_job_handed_over_to_a_dead_workers_parking() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    m.park("ghost", Duration::from_secs(4), Duration::from_secs(60)).await;
    let id = q.add("sleep", &1u64).await.unwrap().id;
    assert_eq!(m.handoffs().await.len(), 1, "handed to the list, not to one worker");

    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(sleeper(&cfg, 2, done.clone())).await;
    let job = wait_for_state(&q, &id, JobState::Completed, WAIT).await;
    assert_eq!(job.worker.as_deref(), Some(worker.id()), "{job:#?}");
    assert_eq!((job.stalls, job.attempts_made), (0, 1));
    worker.stop().await;
}

#[tokio::test]
async fn a_stopping_worker_returns_the_jobs_handed_over_that_nobody_took() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(sleeper(&cfg, 1, done.clone())).await;
    quern_tests::eventually(WAIT, "the idle worker to park", || {
        let m = m.clone();
        async move { (m.parked().await.len() == 1).then_some(()) }
    })
    .await;

    // The only slot takes the first job; the second is handed over too (the
    // worker is still parked) but stays on the list while the slot is busy.
    let busy = q.add("sleep", &400u64).await.unwrap().id;
    wait_for_state(&q, &busy, JobState::Active, WAIT).await;
    // The add made it active; wait until the worker took it off the list, or
    // the next add would not be handed over (one hand-off pending at a time).
    quern_tests::eventually(WAIT, "the worker to take the first hand-off", || {
        let m = m.clone();
        async move { m.handoffs().await.is_empty().then_some(()) }
    })
    .await;
    let waiting = q.add("sleep", &0u64).await.unwrap().id;
    assert_eq!(m.handoffs().await.len(), 1);
    worker.stop().await;

    assert_eq!(done.load(Ordering::SeqCst), 1, "the running job finished, the handed-over one never ran");
    let job = q.job(&waiting).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made, job.stalls), (JobState::Waiting, 0, 0), "{job:#?}");
    assert!(m.handoffs().await.is_empty());
    assert!(m.parked().await.is_empty(), "the stopped worker unparked");
    assert_eq!(q.counts().await.unwrap().active, 0);
    assert_eq!(m.wait_list().await, [waiting]);
}
