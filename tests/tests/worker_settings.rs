//! Worker settings: out-of-range values are refused with a clear error, and
//! the retention of completed jobs (count, age, delete at once) is applied.

use std::time::Duration;

use quern_common::{Error, JobState, RedisConfig};
use quern_producer::{NewJob, Queue};
use quern_tests::config;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Retention, Worker, WorkerBuilder};

fn echo(cfg: &RedisConfig) -> WorkerBuilder {
    Worker::builder(cfg, "q")
        .concurrency(4)
        .idle_block(Duration::from_secs(1))
        .handler("echo", |_c: JobContext, n: u32| async move { Ok::<u32, JobError>(n) })
}

#[tokio::test]
async fn out_of_range_settings_are_refused_and_name_the_setting() {
    let cfg = config();
    let cases: Vec<(WorkerBuilder, &str)> = vec![
        (echo(&cfg).concurrency(0), "concurrency"),
        (echo(&cfg).concurrency(10_001), "concurrency"),
        (echo(&cfg).lease(Duration::from_millis(199)), "lease"),
        (echo(&cfg).reap_interval(Duration::from_millis(49)), "reap interval"),
        (echo(&cfg).idle_block(Duration::from_millis(9)), "idle block"),
        (Worker::builder(&cfg, "q"), "handler"),
    ];
    for (builder, word) in cases {
        let err = builder.build().await.unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{word}: {err}");
        assert!(err.to_string().contains(word), "{err} should name {word}");
    }
    // Settings are checked before connecting: no network wait for a typo.
    let nowhere = RedisConfig::new("redis://127.0.0.1:1").prefix("p");
    let started = std::time::Instant::now();
    let err = echo(&nowhere).concurrency(0).build().await.unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)) && started.elapsed() < Duration::from_millis(500));
    let worker = echo(&cfg).lease(Duration::from_millis(200)).concurrency(10_000).build().await;
    assert!(worker.is_ok(), "the limits themselves are accepted");
}

async fn run_jobs(cfg: &RedisConfig, retention: Retention, n: u32) -> (Queue, Vec<String>, RunningWorker) {
    let q = Queue::connect(cfg, "q").await.unwrap();
    let worker =
        RunningWorker::start(echo(cfg).retention(retention).reap_interval(Duration::from_millis(100))).await;
    let mut ids = Vec::new();
    // One at a time, so the completion order is the add order.
    for i in 0..n {
        let id = q.add("echo", &i).await.unwrap().id;
        wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(5)).await;
        ids.push(id);
    }
    (q, ids, worker)
}

#[tokio::test]
async fn a_count_limit_keeps_only_the_newest_completed_jobs() {
    let cfg = config();
    let (q, ids, worker) = run_jobs(&cfg, Retention { max_count: Some(3), max_age: None }, 8).await;
    let kept = q.job_ids(JobState::Completed, 0, 100).await.unwrap();
    assert_eq!(kept, [ids[7].as_str(), &ids[6], &ids[5]]);
    for id in &ids[..5] {
        assert!(q.job(id).await.unwrap().is_none(), "job {id} trimmed with its data");
    }
    assert_eq!(q.counts().await.unwrap().completed, 3);
    worker.stop().await;
}

#[tokio::test]
async fn delete_at_once_keeps_no_completed_job() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let worker = RunningWorker::start(echo(&cfg).retention(Retention::delete_at_once())).await;
    let jobs: Vec<NewJob> = (0..20).map(|i| NewJob::new("echo", &i).unwrap()).collect();
    let ids: Vec<String> = q.add_bulk(&jobs).await.unwrap().into_iter().map(|a| a.id).collect();
    quern_tests::eventually(Duration::from_secs(5), "all jobs to run and vanish", || {
        let q = q.clone();
        let last = ids.clone();
        async move {
            let c = q.counts().await.unwrap();
            let mut gone = c.waiting == 0 && c.active == 0;
            for id in &last {
                gone &= q.job(id).await.unwrap().is_none();
            }
            gone.then_some(())
        }
    })
    .await;
    assert_eq!(q.counts().await.unwrap().completed, 0);
    worker.stop().await;
}

#[tokio::test]
async fn an_age_limit_trims_completed_jobs_once_they_are_old() {
    let cfg = config();
    let retention = Retention { max_count: None, max_age: Some(Duration::from_secs(1)) };
    let (q, ids, worker) = run_jobs(&cfg, retention, 4).await;
    assert!(q.counts().await.unwrap().completed >= 1, "young jobs are kept");
    quern_tests::eventually(Duration::from_secs(5), "old completed jobs to be trimmed", || {
        let q = q.clone();
        async move { (q.counts().await.unwrap().completed == 0).then_some(()) }
    })
    .await;
    for id in &ids {
        assert!(q.job(id).await.unwrap().is_none());
    }
    worker.stop().await;
}

#[tokio::test]
async fn keep_all_keeps_every_completed_job() {
    let cfg = config();
    let (q, ids, worker) = run_jobs(&cfg, Retention::keep_all(), 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.counts().await.unwrap().completed, 6);
    assert_eq!(q.job(&ids[0]).await.unwrap().unwrap().result.as_deref(), Some("0"));
    worker.stop().await;
}
