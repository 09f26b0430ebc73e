//! Deleting a queue: every job in every state and every key of the queue go,
//! in calls of bounded size; a queue in use is refused unless forced.

use quern_common::FailureKind;
use std::time::Duration;

use quern_common::{Error, JobOptions, JobState, RateLimit};
use quern_producer::{NewJob, Queue, known_queues};
use quern_tests::config;
use quern_tests::moves::Mover;

const LEASE: Duration = Duration::from_secs(30);

async fn keys_of(cfg: &quern_common::RedisConfig, queue: &str) -> Vec<String> {
    // KEYS (not SCAN): on a cluster it visits every node.
    let mut conn = quern_tests::raw_connection(cfg).await;
    let pattern = format!("{}:{{{queue}}}:*", cfg.prefix);
    redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn every_job_in_every_state_and_every_key_goes_and_other_queues_stay() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let other = Queue::connect(&cfg, "other").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let kept = other.add("n", &0).await.unwrap().id;

    let bulk: Vec<NewJob> = (0..1_500).map(|i| NewJob::new("n", &i).unwrap()).collect();
    q.add_bulk(&bulk).await.unwrap();
    let done = m.fetch(2, LEASE, "w").await.jobs;
    m.complete(-1, &[(&done[0].id, &done[0].token, "ok")]).await;
    m.fail(&done[1].id, &done[1].token, "boom", FailureKind::Error, -1).await;
    q.add_with("n", &1, JobOptions::new().priority(4)).await.unwrap();
    q.add_with("n", &2, JobOptions::new().delay(Duration::from_secs(3600))).await.unwrap();
    // Jobs with idempotency and concurrency keys, more keys than one call
    // deletes; one key outlives its job.
    let day = Duration::from_secs(24 * 3600);
    let keyed: Vec<NewJob> = (0..1_100)
        .map(|i| {
            let options =
                JobOptions::new().idempotency_key(format!("pay-{i}"), day).concurrency_key("merchant");
            NewJob::new("n", &i).unwrap().options(options)
        })
        .collect();
    q.add_bulk(&keyed).await.unwrap();
    let gone = q.add_with("n", &3, JobOptions::new().idempotency_key("gone", day)).await.unwrap().id;
    q.remove(&gone).await.unwrap();
    q.set_rate_limit(Some(RateLimit::new(5, Duration::from_secs(60)).unwrap())).await.unwrap();
    q.pause().await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.completed, c.failed), (2_599, 1, 1, 1));
    assert!(!keys_of(&cfg, "q").await.is_empty());

    assert_eq!(q.obliterate(false).await.unwrap(), 2_602, "more than one call's worth");
    assert_eq!(keys_of(&cfg, "q").await, Vec::<String>::new(), "no key of the queue is left");
    let names = known_queues(&mut q.connection(), &cfg.prefix).await.unwrap();
    assert_eq!(names, vec!["other".to_owned()]);
    assert_eq!(other.job(&kept).await.unwrap().unwrap().state, JobState::Waiting, "other queues stay");
}

#[tokio::test]
async fn a_queue_with_running_jobs_is_refused_unless_forced() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("n", &1).await.unwrap().id;
    q.add("n", &2).await.unwrap();
    let running = m.fetch(1, LEASE, "w").await.jobs.remove(0);

    let err = q.obliterate(false).await.unwrap_err();
    assert!(matches!(err, Error::QueueInUse { running: 1, workers: 0, .. }), "{err}");
    assert_eq!(q.counts().await.unwrap().waiting, 1, "nothing deleted");

    assert_eq!(q.obliterate(true).await.unwrap(), 2);
    assert!(keys_of(&cfg, "q").await.is_empty());
    let late = m.complete(-1, &[(&id, &running.token, "late")]).await;
    assert_ne!(late, [quern_common::ScriptCode::Ok], "the running job's result is refused");
    assert!(q.job(&id).await.unwrap().is_none());
}
