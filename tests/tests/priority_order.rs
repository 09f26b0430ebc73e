//! Lower priority numbers run first; jobs of one priority run in the order
//! they were added, whichever way they became waiting.

use quern_common::FailureKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_common::options::MAX_PRIORITY;
use quern_common::{Backoff, JobOptions, JobState};
use quern_producer::{NewJob, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

const LEASE: Duration = Duration::from_secs(30);

/// Fetch one job at a time until the queue is empty; the payloads in order.
async fn drain_one_by_one(m: &Mover) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let f = m.fetch(1, LEASE, "w").await;
        let Some(job) = f.jobs.into_iter().next() else { return order };
        order.push(serde_json::from_str::<String>(&job.payload).unwrap());
    }
}

#[tokio::test]
async fn lower_numbers_first_and_fifo_within_a_priority() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    // Added in a scrambled order of priorities.
    let plan: [(u32, &str); 10] = [
        (5, "p5-a"),
        (0, "p0-a"),
        (1, "p1-a"),
        (5, "p5-b"),
        (MAX_PRIORITY, "max-a"),
        (0, "p0-b"),
        (1, "p1-b"),
        (MAX_PRIORITY, "max-b"),
        (5, "p5-c"),
        (MAX_PRIORITY - 1, "max-1"),
    ];
    for (prio, name) in plan {
        q.add_with("job", &name, JobOptions::new().priority(prio)).await.unwrap();
    }
    let order = drain_one_by_one(&m).await;
    assert_eq!(order, ["p0-a", "p0-b", "p1-a", "p1-b", "p5-a", "p5-b", "p5-c", "max-1", "max-a", "max-b"]);
}

#[tokio::test]
async fn a_batch_fetch_takes_jobs_in_priority_order_too() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let jobs: Vec<NewJob> = (0..30u32)
        .map(|i| {
            let prio = [3, 0, 7][i as usize % 3];
            NewJob::new("job", &format!("{prio}-{i:02}")).unwrap().options(JobOptions::new().priority(prio))
        })
        .collect();
    q.add_bulk(&jobs).await.unwrap();
    let mut got = Vec::new();
    for k in [4, 7, 100] {
        let f = m.fetch(k, LEASE, "w").await;
        got.extend(f.jobs.into_iter().map(|j| serde_json::from_str::<String>(&j.payload).unwrap()));
    }
    let mut expected = Vec::new();
    for prio in [0, 3, 7] {
        expected.extend(
            (0..30u32).filter(|i| [3, 0, 7][*i as usize % 3] == prio).map(|i| format!("{prio}-{i:02}")),
        );
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn fifo_holds_for_many_jobs_of_one_priority() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let jobs: Vec<NewJob> = (0..1500u32)
        .map(|i| NewJob::new("job", &format!("{i:05}")).unwrap().options(JobOptions::new().priority(2)))
        .collect();
    q.add_bulk(&jobs).await.unwrap();
    let mut got = Vec::new();
    loop {
        let f = m.fetch(400, LEASE, "w").await;
        if f.jobs.is_empty() {
            break;
        }
        got.extend(f.jobs.into_iter().map(|j| serde_json::from_str::<String>(&j.payload).unwrap()));
    }
    let expected: Vec<String> = (0..1500u32).map(|i| format!("{i:05}")).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn promoted_delayed_jobs_take_their_place_by_priority() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let soon = JobOptions::new().delay(Duration::from_millis(30));
    q.add_with("job", &"delayed-p1", soon.clone().priority(1)).await.unwrap();
    q.add_with("job", &"delayed-p0", soon).await.unwrap();
    q.add_with("job", &"p2", JobOptions::new().priority(2)).await.unwrap();
    q.add_with("job", &"p1", JobOptions::new().priority(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(first.payload, r#""delayed-p0""#, "promoted into priority 0");
    let order = drain_one_by_one(&m).await;
    assert_eq!(order, ["p1", "delayed-p1", "p2"], "a promoted job joins the back of its priority");
}

#[tokio::test]
async fn a_worker_with_one_slot_runs_jobs_in_priority_order() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.pause().await.unwrap();
    let mut last = String::new();
    for (i, prio) in [4u32, 2, 9, 0, 2, 4, 0, 9].into_iter().enumerate() {
        last =
            q.add_with("record", &format!("{prio}-{i}"), JobOptions::new().priority(prio)).await.unwrap().id;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let worker = RunningWorker::start(Worker::builder(&cfg, "q").concurrency(1).handler(
        "record",
        move |_ctx: JobContext, tag: String| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(tag);
                Ok::<(), JobError>(())
            }
        },
    ))
    .await;
    q.resume().await.unwrap();
    quern_tests::eventually(Duration::from_secs(10), "all jobs to run", || {
        let n = seen.lock().unwrap().len();
        async move { (n == 8).then_some(()) }
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), ["0-3", "0-6", "2-1", "2-4", "4-0", "4-5", "9-2", "9-7"]);
    wait_for_state(&q, &last, JobState::Completed, Duration::from_secs(5)).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_retried_job_keeps_its_priority() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let opts = JobOptions::new().priority(6).backoff(Backoff::None);
    let id = q.add_with("job", &"retried", opts).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    q.add_with("job", &"p7", JobOptions::new().priority(7)).await.unwrap();
    q.add_with("job", &"p6", JobOptions::new().priority(6)).await.unwrap();
    m.fail(&id, &job.token, "x", FailureKind::Error, 0).await;
    assert_eq!(drain_one_by_one(&m).await, ["p6", "retried", "p7"]);
    assert_eq!(q.job(&id).await.unwrap().unwrap().priority, 6);
}

#[tokio::test]
async fn fifo_within_a_priority_survives_the_sequence_wrapping_once_the_jobs_drain() {
    use redis::AsyncCommands;
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    // As if 2^32 - 3 prioritized jobs had been added before: "a" and "b" would
    // get sequence numbers on both sides of the wrap, unless it restarted.
    let _: () = m.conn().hset(m.keys().meta(), "pseq", 4_294_967_293u64).await.unwrap();
    q.add_with("job", &"old", JobOptions::new().priority(1)).await.unwrap();
    assert_eq!(drain_one_by_one(&m).await, ["old"]);
    for name in ["a", "b", "c"] {
        q.add_with("job", &name, JobOptions::new().priority(1)).await.unwrap();
    }
    assert_eq!(drain_one_by_one(&m).await, ["a", "b", "c"], "the sequence restarted when the jobs drained");
}
