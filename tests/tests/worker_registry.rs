//! The queue's list of live workers: each worker registers when it starts and
//! with every reaper pass, says so while it stops, and leaves when it is done;
//! one killed drops off within three reaper passes.

use std::time::Duration;

use quern_common::JobOptions;
use quern_producer::{Queue, WorkerInfo};
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings};
use quern_tests::workers::RunningWorker;
use quern_tests::{config, eventually};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(10);

fn sleeper(cfg: &quern_common::RedisConfig, slots: usize) -> quern_worker::WorkerBuilder {
    Worker::builder(cfg, "q").concurrency(slots).reap_interval(Duration::from_millis(200)).handler(
        "sleep",
        |_ctx: JobContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<(), JobError>(())
        },
    )
}

async fn listed(q: &Queue, what: &str, ok: impl Fn(&[WorkerInfo]) -> bool) -> Vec<WorkerInfo> {
    eventually(WAIT, what, || async {
        let workers = q.workers().await.unwrap();
        ok(&workers).then_some(workers)
    })
    .await
}

#[tokio::test]
async fn live_workers_are_listed_with_what_they_report_and_leave_when_stopped() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    assert!(q.workers().await.unwrap().is_empty());
    let a = RunningWorker::start(sleeper(&cfg, 3)).await;
    let b = RunningWorker::start(sleeper(&cfg, 5)).await;
    let workers = listed(&q, "both workers listed", |w| w.len() == 2).await;
    let mut slots: Vec<u64> = workers.iter().map(|w| w.concurrency).collect();
    slots.sort_unstable();
    assert_eq!(slots, [3, 5]);
    for w in &workers {
        assert!([a.id(), b.id()].contains(&w.id.as_str()), "{w:?}");
        assert_eq!(w.pid(), Some(std::process::id()));
        assert!(!w.host().is_empty() && !w.stopping && !w.version.is_empty(), "{w:?}");
        assert!(w.first_seen_ms <= w.last_seen_ms);
    }

    for _ in 0..2 {
        q.add_with("sleep", &1_500u64, JobOptions::new()).await.unwrap();
    }
    listed(&q, "the running jobs reported", |w| w.iter().map(|w| w.running).sum::<u64>() == 2).await;

    let gone = a.id().to_owned();
    a.stop().await;
    let left = q.workers().await.unwrap();
    assert!(left.iter().all(|w| w.id != gone), "a stopped worker leaves the list at once: {left:?}");
    b.stop().await;
    assert!(q.workers().await.unwrap().is_empty());
}

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

#[tokio::test]
async fn a_stopping_worker_says_so_and_a_killed_one_drops_off() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let mut s = WorkerSettings::new(cfg.url.clone(), "q", dir.path().join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.reap_interval = Duration::from_millis(200);
    s.redis_timeout = Duration::from_millis(500);
    s.grace = Duration::from_secs(2);

    let mut stopping = WorkerProcess::start(binary(), &s, &dir.path().join("a.log")).await.unwrap();
    q.add("chaos", &ChaosJob { sleep_ms: 60_000, fail_attempts: 0 }).await.unwrap();
    listed(&q, "the worker running its job", |w| w.len() == 1 && w[0].running == 1).await;
    stopping.signal("TERM").unwrap();
    let w = listed(&q, "the worker listed as stopping", |w| w.len() == 1 && w[0].stopping).await;
    assert_eq!(w[0].id, stopping.worker_id());
    assert!(stopping.wait_exit(WAIT).await.unwrap().success());
    assert!(q.workers().await.unwrap().is_empty(), "gone once it exited");

    let killed = WorkerProcess::start(binary(), &s, &dir.path().join("b.log")).await.unwrap();
    listed(&q, "the second worker listed", |w| w.len() == 1).await;
    killed.kill9().await.unwrap();
    // Three passes of 200 ms plus the response timeout, then it is not live.
    listed(&q, "the killed worker to drop off", |w| w.is_empty()).await;
}
