//! quern on a real Redis Cluster (3 primaries, from Debian's redis-server):
//! the URL of any node (or a list of seeds) finds the cluster; each queue
//! lives in one slot; scripts are loaded on every primary; pipelines that
//! span queues on several shards work; and a worker's blocking wait follows
//! a failover to the replica that took over its queue's slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::{JobState, RedisConfig};
use quern_producer::Queue;
use quern_tests::cluster::TestCluster;
use quern_tests::workers::{RunningWorker, counting, wait_for_state};
use quern_tests::{config_for, eventually, raw_connection};
use quern_worker::Worker;

/// Queue names whose slots fall on three different primaries of `cluster`.
fn queues_on_every_shard(cluster: &TestCluster) -> Vec<String> {
    cluster.names_on_every_shard("q")
}

#[tokio::test]
async fn the_url_of_any_node_or_a_list_of_seeds_runs_jobs_on_the_cluster() {
    let cluster = TestCluster::start(0);
    let mut urls: Vec<String> = cluster.ports().iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    urls.push(cluster.seeds_url());
    for url in urls {
        let cfg = config_for(&url);
        let conn = cfg.connect().await.unwrap();
        assert!(conn.is_cluster(), "{url} is detected as a cluster");
        for queue in queues_on_every_shard(&cluster) {
            let q = Queue::connect(&cfg, &queue).await.unwrap();
            let done = Arc::new(AtomicUsize::new(0));
            let worker = RunningWorker::start(counting(
                Worker::builder(&cfg, &queue).concurrency(4).idle_block(Duration::from_millis(200)),
                "job",
                done.clone(),
            ))
            .await;
            let ids: Vec<String> = {
                let mut ids = Vec::new();
                for i in 0..20 {
                    ids.push(q.add("job", &i).await.unwrap().id);
                }
                ids
            };
            for id in &ids {
                wait_for_state(&q, id, JobState::Completed, Duration::from_secs(10)).await;
            }
            assert_eq!(done.load(Ordering::SeqCst), 20, "{url} {queue}");
            worker.stop().await;
        }
    }
}

#[tokio::test]
async fn every_key_of_a_queue_lives_in_the_slot_of_its_name() {
    let cluster = TestCluster::start(0);
    let cfg = config_for(&cluster.url());
    let queue = "emails";
    let q = Queue::connect(&cfg, queue).await.unwrap();
    let delayed = quern_common::JobOptions::new().delay(Duration::from_secs(60));
    q.add("a", &1).await.unwrap();
    q.add_with("b", &2, delayed).await.unwrap();
    q.add_with("c", &3, quern_common::JobOptions::new().priority(3)).await.unwrap();
    let primary = cluster.primary_of(queue);
    let keys = TestCluster::cli(primary, &["KEYS", &format!("{}:*", cfg.prefix)]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(keys.len() >= 6, "job hashes, lists and sets of the queue: {keys:?}");
    let slot = TestCluster::cli(primary, &["CLUSTER", "KEYSLOT", queue]);
    for key in keys {
        if key == quern_common::QueueKeys::registry(&cfg.prefix) {
            continue;
        }
        assert_eq!(TestCluster::cli(primary, &["CLUSTER", "KEYSLOT", key]), slot, "{key}");
    }
}

#[tokio::test]
async fn a_pipeline_over_queues_on_several_shards_gets_every_reply_in_order() {
    let cluster = TestCluster::start(0);
    let cfg = config_for(&cluster.url());
    let queues = queues_on_every_shard(&cluster);
    let mut conn = raw_connection(&cfg).await;
    let mut pipe = redis::pipe();
    for (i, q) in queues.iter().enumerate() {
        pipe.set(format!("{}:{{{q}}}:probe", cfg.prefix), i).get(format!("{}:{{{q}}}:probe", cfg.prefix));
    }
    pipe.cmd("TIME");
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.unwrap();
    assert_eq!(replies.len(), queues.len() * 2 + 1);
    for i in 0..queues.len() {
        let got: i64 = redis::from_redis_value(replies[2 * i + 1].clone()).unwrap();
        assert_eq!(got, i as i64, "reply {i} back in its place");
    }
}

#[tokio::test]
async fn a_primary_without_the_library_gets_it_on_the_first_call() {
    let cluster = TestCluster::start(0);
    let cfg = config_for(&cluster.url());
    let queue = queues_on_every_shard(&cluster).remove(1);
    let q = Queue::connect(&cfg, &queue).await.unwrap();
    q.add("a", &1).await.unwrap();
    // As if the node were added later, or restarted without persistence.
    TestCluster::cli(cluster.primary_of(&queue), &["FUNCTION", "FLUSH"]);
    assert_eq!(q.counts().await.unwrap().waiting, 1, "the call loads the library and runs");
    let loaded = TestCluster::cli(cluster.primary_of(&queue), &["FUNCTION", "LIST"]);
    assert!(loaded.contains(quern_common::scripts::library_name()), "{loaded}");
}

#[tokio::test]
async fn a_worker_and_a_producer_carry_on_after_their_primary_is_killed_and_its_replica_takes_over() {
    let mut cluster = TestCluster::start(1);
    let cfg = config_for(&cluster.url()).response_timeout(Duration::from_secs(1));
    let queue = "orders";
    let q = Queue::connect(&cfg, queue).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(counting(
        Worker::builder(&cfg, queue)
            .concurrency(4)
            .idle_block(Duration::from_millis(500))
            .lease(Duration::from_secs(2)),
        "job",
        done.clone(),
    ))
    .await;
    let before = q.add("job", &0).await.unwrap().id;
    wait_for_state(&q, &before, JobState::Completed, Duration::from_secs(10)).await;

    let primary = cluster.primary_of(queue);
    cluster.kill(primary);
    // Adds are refused while the slot has no primary; they go through again
    // once the replica is promoted (node timeout 1 s).
    let after = eventually(Duration::from_secs(30), "an add accepted after the failover", || {
        let q = q.clone();
        async move { q.add("job", &1).await.ok().map(|a| a.id) }
    })
    .await;
    assert_ne!(cluster.primary_of(queue), primary, "a replica took the slot over");
    // The worker's blocking wait found the new primary by itself.
    wait_for_state(&q, &after, JobState::Completed, Duration::from_secs(30)).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_scheduler_enqueues_ticks_for_queues_on_every_shard() {
    use quern_scheduler::{Schedule, Scheduler, Schedules};
    let cluster = TestCluster::start(0);
    let cfg: RedisConfig = config_for(&cluster.url());
    let queues = queues_on_every_shard(&cluster);
    let schedules = Schedules::connect(&cfg).await.unwrap();
    for q in &queues {
        let s = Schedule::new(format!("every-second-{q}"), "* * * * * *", q.as_str(), "tick");
        schedules.upsert(&s).await.unwrap();
    }
    let running = quern_tests::sched::RunningScheduler::start(Scheduler::builder(&cfg)).await;
    for q in &queues {
        let queue = Queue::connect(&cfg, q).await.unwrap();
        eventually(Duration::from_secs(10), "a tick enqueued", || {
            let queue = queue.clone();
            async move { (queue.counts().await.ok()?.waiting > 0).then_some(()) }
        })
        .await;
    }
    running.stop().await;
}

#[tokio::test]
async fn replica_acknowledgements_wait_for_the_replica_of_the_queues_own_shard() {
    let mut cluster = TestCluster::start(1);
    let cfg = config_for(&cluster.url()).response_timeout(Duration::from_secs(2));
    let queues = queues_on_every_shard(&cluster);
    let (ours, other) = (&queues[0], &queues[1]);
    let acked =
        |queue: &str| Queue::builder(&cfg, queue).replica_acks(1, Duration::from_millis(300)).connect();
    let q = acked(ours).await.unwrap();
    q.add("job", &0).await.unwrap();
    // Another shard without a replica does not hold back this queue's adds.
    for port in cluster.replicas_of(cluster.primary_of(other)) {
        cluster.kill(port);
    }
    q.add("job", &1).await.expect("acknowledged by the replica of the queue's shard");
    let w = Worker::builder(&cfg, ours.as_str()).replica_acks(1, Duration::from_millis(300));
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(counting(w, "job", done.clone())).await;
    eventually(Duration::from_secs(10), "both jobs acknowledged by the worker", || async {
        (q.counts().await.ok()?.completed == 2).then_some(())
    })
    .await;
    worker.stop().await;
    // The queue's own replica gone: its adds are applied but not acknowledged.
    for port in cluster.replicas_of(cluster.primary_of(ours)) {
        cluster.kill(port);
    }
    let err = q.add("job", &2).await.unwrap_err();
    assert!(matches!(err, quern_common::Error::NotReplicated { .. }) && err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_dead_first_seed_does_not_keep_a_worker_from_its_queue() {
    let mut cluster = TestCluster::start(1);
    let queue = "reports";
    let replica = cluster.replicas_of(cluster.primary_of(queue))[0];
    cluster.kill(replica);
    // The dead node first, then every node.
    let url = cluster.seeds_url().replacen("redis://", &format!("redis://127.0.0.1:{replica},"), 1);
    let cfg = config_for(&url).connect_timeout(Duration::from_millis(500));
    let q = Queue::connect(&cfg, queue).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(counting(
        Worker::builder(&cfg, queue).idle_block(Duration::from_millis(300)),
        "job",
        done.clone(),
    ))
    .await;
    let id = q.add("job", &1).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(10)).await;
    let node = cfg.node_of_key(q.keys().wait()).await.unwrap();
    assert_eq!(node, format!("127.0.0.1:{}", cluster.primary_of(queue)));
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_and_a_producer_follow_their_queue_to_another_primary_after_a_resharding() {
    let cluster = TestCluster::start(0);
    let cfg = config_for(&cluster.url());
    let queue = "moving";
    let q = Queue::connect(&cfg, queue).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(counting(
        Worker::builder(&cfg, queue).concurrency(4).idle_block(Duration::from_millis(300)),
        "job",
        done.clone(),
    ))
    .await;
    for i in 0..10 {
        q.add("job", &i).await.unwrap();
    }
    eventually(Duration::from_secs(10), "10 jobs run", || async {
        (done.load(Ordering::SeqCst) == 10).then_some(())
    })
    .await;
    let from = cluster.primary_of(queue);
    let to =
        cluster.names_on_every_shard("q").iter().map(|n| cluster.primary_of(n)).find(|p| *p != from).unwrap();
    cluster.move_slot(queue, to);
    assert_eq!(cluster.primary_of(queue), to);
    // The first calls after the move meet MOVED inside their pipelines.
    for i in 10..20 {
        q.add("job", &i).await.expect("an add follows the slot to its new primary");
    }
    eventually(Duration::from_secs(15), "20 jobs run", || async {
        (done.load(Ordering::SeqCst) == 20).then_some(())
    })
    .await;
    assert_eq!(q.counts().await.unwrap().completed, 20);
    worker.stop().await;
}
