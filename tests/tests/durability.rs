//! Durability: with Redis AOF `appendfsync always`, every job whose `add`
//! returned survives Redis being killed with `kill -9` in the middle of a
//! stream of adds, and so does every state move a worker was told about.
//! The same procedure on a server without persistence loses them, which shows
//! the check can fail.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_common::{JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::workers::RunningWorker;
use quern_tests::{Persistence, TestRedis, config_for, eventually};
use quern_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    n: u32,
    note: String,
}

/// Eight tasks add jobs as fast as they can; Redis is killed with `kill -9`
/// once `kill_after` adds were acknowledged, then restarted. Returns the
/// acknowledged (id, payload) pairs and the queue handle's config.
async fn add_through_a_crash(
    server: &mut TestRedis,
    kill_after: usize,
) -> (Vec<(String, Order)>, quern_tests::RedisConfig) {
    let cfg = config_for(&server.url());
    let q = Queue::connect(&cfg, "orders").await.unwrap();
    let acknowledged: Arc<Mutex<Vec<(String, Order)>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let (q, acked) = (q.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..1000u32 {
                let order = Order { n: t * 1000 + i, note: format!("order {i} of task {t}") };
                match q.add("order", &order).await {
                    Ok(added) => acked.lock().unwrap().push((added.id, order)),
                    // Redis is gone: stop; what was acknowledged must survive.
                    Err(e) => {
                        assert!(e.is_retryable(), "{e}");
                        return;
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(30), "enough acknowledged adds", || async {
        (acknowledged.lock().unwrap().len() >= kill_after).then_some(())
    })
    .await;
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    server.restart();
    let acked = acknowledged.lock().unwrap().clone();
    (acked, cfg)
}

#[tokio::test]
async fn every_acknowledged_add_survives_kill_9_with_aof_always() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let (acked, cfg) = add_through_a_crash(&mut server, 1500).await;
    let q = Queue::connect(&cfg, "orders").await.unwrap();
    let mut missing = Vec::new();
    for (id, order) in &acked {
        match q.job(id).await.unwrap() {
            Some(job) => {
                assert_eq!(job.state, JobState::Waiting);
                assert_eq!(serde_json::from_str::<Order>(&job.payload).unwrap(), *order);
            }
            None => missing.push(id.clone()),
        }
    }
    let counts = q.counts().await.unwrap();
    println!(
        "durability: {} adds acknowledged before kill -9, {} missing after restart; {} jobs waiting \
         (adds applied but not acknowledged may be there too)",
        acked.len(),
        missing.len(),
        counts.waiting
    );
    assert!(missing.is_empty(), "acknowledged adds lost: {missing:?}");
    assert!(counts.waiting >= acked.len() as u64);
}

#[tokio::test]
async fn without_persistence_the_same_crash_loses_the_adds() {
    let mut server = TestRedis::start_with(Persistence::None);
    let (acked, cfg) = add_through_a_crash(&mut server, 200).await;
    let q = Queue::connect(&cfg, "orders").await.unwrap();
    let mut found = 0;
    for (id, _) in &acked {
        found += usize::from(q.job(id).await.unwrap().is_some());
    }
    assert!(acked.len() >= 200);
    assert_eq!(found, 0, "a server without persistence starts empty");
}

#[tokio::test]
async fn completed_and_dead_lettered_states_survive_kill_9_and_the_rest_finishes_once() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url());
    let q = Queue::connect(&cfg, "moves").await.unwrap();
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let builder = |runs: Arc<Mutex<Vec<u32>>>| {
        Worker::builder(&cfg, "moves")
            .concurrency(4)
            .lease(Duration::from_secs(1))
            .reap_interval(Duration::from_millis(200))
            .idle_block(Duration::from_millis(500))
            .handler("work", move |_ctx: JobContext, n: u32| {
                let runs = runs.clone();
                async move {
                    runs.lock().unwrap().push(n);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if n.is_multiple_of(10) {
                        return Err(JobError::permanent(format!("job {n} is poison")));
                    }
                    Ok(n)
                }
            })
    };
    let mut ids = Vec::new();
    for n in 0..400u32 {
        ids.push(q.add_with("work", &n, JobOptions::new().attempts(1)).await.unwrap().id);
    }
    let worker = RunningWorker::start(builder(runs.clone())).await;
    eventually(Duration::from_secs(20), "some jobs done", || async {
        let c = q.counts().await.unwrap();
        (c.completed + c.failed >= 100).then_some(())
    })
    .await;
    // Snapshot what Redis told the worker, then crash Redis under it.
    let mut before = Vec::new();
    for id in &ids {
        if let Some(job) = q.job(id).await.unwrap()
            && matches!(job.state, JobState::Completed | JobState::Failed)
        {
            before.push((id.clone(), job.state));
        }
    }
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();

    // The worker carries on by itself; everything finishes, each job once.
    eventually(Duration::from_secs(30), "every job done", || async {
        let c = q.counts().await.ok()?;
        (c.completed + c.failed == 400).then_some(())
    })
    .await;
    for (id, state) in &before {
        assert_eq!(q.job(id).await.unwrap().unwrap().state, *state, "job {id} changed state after the crash");
    }
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed, c.failed), (360, 40));
    let runs = runs.lock().unwrap().clone();
    let distinct: HashSet<u32> = runs.iter().copied().collect();
    assert_eq!(distinct.len(), 400);
    // A job runs twice only if its lease ran out during the crash: a stalled entry says so.
    let mut reruns = 0;
    for (n, id) in ids.iter().enumerate() {
        let times = runs.iter().filter(|r| **r == n as u32).count();
        if times > 1 {
            reruns += times - 1;
            let job = q.job(id).await.unwrap().unwrap();
            let lost = job.history.iter().filter(|a| a.outcome == "stalled").count();
            assert!(lost >= times - 1, "job {id} ran {times} times with {lost} lost leases: {job:#?}");
        }
    }
    println!(
        "durability: {} jobs done before the crash kept their state; {reruns} re-runs after lost leases",
        before.len()
    );
    worker.stop().await;
}
