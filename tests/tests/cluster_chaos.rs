//! The chaos test on a Redis Cluster: real worker processes and a producer
//! on three queues, one per shard, while a worker is killed (`kill -9`), then
//! the primary that owns the first queue's slot, then another worker; the
//! cluster promotes that primary's replica by itself and the work goes on.
//! Then the audit of every job and every handler execution.
//!
//! Set-up: a cluster of 3 primaries with a replica each (`TestCluster::start(1)`,
//! `cluster-node-timeout 1000`); three queues whose slots fall on the three
//! shards; two `chaos_worker` processes per queue (8 slots, 2 s lease, 250 ms
//! reaper); 3 × 480 jobs with explicit ids, added 4 at a time every 50 ms
//! while the chaos runs, planned as in the standalone chaos test (`ChaosJob::random`). Every
//! process is given the seed list of all nodes (`TestCluster::seeds_url`).
//!
//! Replica acknowledgements: the producer and the workers run with
//! `replica_acks(1, 500 ms)`. Redis replicates asynchronously, so without them
//! an add or a completion the killed primary acknowledged but had not yet
//! passed on would be lost with it, and the audit could only count the loss.
//! With them an acknowledged add is on the replica that takes over, so the
//! audit is strict: every job added is there at the end, completed or
//! dead-lettered as planned. A call whose `WAIT` falls short is retried with
//! the same ids (idempotent). The new primary has no replica until the killed
//! node is started again and syncs from it as its replica (as an operator's
//! supervisor would restart it), so adds to that shard are refused
//! (`NotReplicated`, though applied) meanwhile: the test restarts the node as
//! soon as the promotion is seen, and reports that window apart.
//!
//! Failover: by the cluster itself (`cluster-node-timeout` 1 s, replica
//! validity factor 0), not by a `CLUSTER FAILOVER TAKEOVER` sent by the test:
//! the point is that nothing outside the cluster and quern has to act. On
//! this machine the promotion comes 2 to 3 s after the kill (node timeout,
//! failure agreement, the replica's election delay), well within the limits
//! below, so automatic failover costs no flakiness.
//!
//! Audit: as the standalone chaos test (`quern_tests::chaos::audit_queue`: every
//! job completed or dead-lettered per plan, none missing, no token ran twice,
//! every execution's token has one outcome, attempts re-run only after a
//! lost lease, completion on the planned attempt); every worker ends with a
//! clean SIGTERM exit. Prints when the replica was promoted, how long adds
//! were refused on the killed shard's queue and on the others, and the
//! longest pause between job starts on each. Set `QUERN_CHAOS_SEED` to replay
//! a run's plan and chaos order.

use std::path::Path;
use std::time::{Duration, Instant};

use quern_common::Error;
use quern_producer::{NewJob, Queue};
use quern_tests::chaos::{
    Audit, ChaosJob, Fleet, WorkerSettings, add_until_accepted, audit_queue, new_job, read_ledger,
};
use quern_tests::cluster::TestCluster;
use quern_tests::config_for;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::block_in_place;

const JOBS_PER_QUEUE: usize = 480;
const BATCH: usize = 4;
const WORKERS_PER_QUEUE: usize = 2;
const ATTEMPTS: u32 = 3;
const ACK_TIMEOUT: Duration = Duration::from_millis(500);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

/// What one queue's producer saw.
struct Added {
    /// Each refused add, with when.
    refused: Vec<(Instant, Error)>,
    /// The longest time a batch took from its first try to its acceptance
    /// (refusals, and the cluster client's own retries while the cluster
    /// was down, included).
    longest_add: Duration,
}

impl Added {
    /// From the first to the last refusal of the kind `kind` picks out,
    /// plus one retry pause: how long adds of that kind were refused.
    fn window(&self, kind: impl Fn(&Error) -> bool) -> Option<Duration> {
        let times: Vec<Instant> = self.refused.iter().filter(|(_, e)| kind(e)).map(|(t, _)| *t).collect();
        Some(*times.last()? - *times.first()? + Duration::from_millis(100))
    }
}

fn not_replicated(e: &Error) -> bool {
    matches!(e, Error::NotReplicated { .. })
}

/// The longest pause between attempt starts (Redis time) from `from_ms` on.
fn longest_pause(starts: &mut [u64], from_ms: u64) -> u64 {
    starts.sort_unstable();
    let later: Vec<u64> = starts.iter().copied().filter(|t| *t >= from_ms).collect();
    let mut pause = later.first().map_or(0, |t| t - from_ms);
    for w in later.windows(2) {
        pause = pause.max(w[1] - w[0]);
    }
    pause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_survives_a_primary_killed_mid_run_and_its_replica_promoted() {
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(quern_tests::chaos::seed());
    let mut cluster = block_in_place(|| TestCluster::start(1));
    let url = cluster.seeds_url();
    let cfg = config_for(&url).response_timeout(Duration::from_secs(2));
    let queues = block_in_place(|| cluster.names_on_every_shard("chaos"));
    let victim = queues[0].clone();
    let plans: Vec<Vec<(String, ChaosJob)>> = queues
        .iter()
        .map(|q| (0..JOBS_PER_QUEUE).map(|n| (format!("{q}-{n:04}"), ChaosJob::random(&mut rng))).collect())
        .collect();

    let mut fleets = Vec::new();
    for q in &queues {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = WorkerSettings::new(url.clone(), q.clone(), dir.path().join("ledger"));
        settings.prefix = Some(cfg.prefix.clone());
        settings.lease = Duration::from_secs(2);
        settings.max_stalls = 5;
        settings.redis_timeout = Duration::from_secs(2);
        settings.replica_acks = Some((1, ACK_TIMEOUT));
        let mut fleet = Fleet::new(binary(), dir, settings);
        for _ in 0..WORKERS_PER_QUEUE {
            fleet.start_one().await;
        }
        fleets.push(fleet);
    }

    // One producer per queue, a small batch every 50 ms through the chaos
    // (small, so that the refusals show when each queue could not add).
    let mut handles = Vec::new();
    let mut producers = Vec::new();
    for (q, plan) in queues.iter().zip(&plans) {
        let queue = Queue::builder(&cfg, q.as_str()).replica_acks(1, ACK_TIMEOUT).connect().await.unwrap();
        handles.push(queue.clone());
        let jobs: Vec<Vec<NewJob>> = plan
            .chunks(BATCH)
            .map(|batch| batch.iter().map(|(id, p)| new_job(id, *p, ATTEMPTS)).collect())
            .collect();
        producers.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            let mut longest_add = Duration::ZERO;
            for batch in jobs {
                let began = Instant::now();
                refused.extend(add_until_accepted(&queue, &batch, Duration::from_secs(15)).await);
                longest_add = longest_add.max(began.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Added { refused, longest_add }
        }));
    }

    // A worker dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let f = rng.random_range(0..fleets.len());
    let i = rng.random_range(0..fleets[f].running.len());
    let id = fleets[f].kill9(i, &cfg).await;
    println!("cluster chaos: kill -9 worker {id} of {}", queues[f]);
    fleets[f].start_one().await;

    // The primary of the victim queue's slot dies; its replica takes over.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let old = block_in_place(|| cluster.primary_of(&victim));
    let killed_ms = quern_tests::chaos::redis_now_ms(&cfg).await;
    let killed_at = Instant::now();
    block_in_place(|| cluster.kill(old));
    println!("cluster chaos: kill -9 primary 127.0.0.1:{old} (slot of {victim})");
    let new = block_in_place(|| {
        loop {
            match cluster.try_primary_of(&victim) {
                Some(p) if p != old => return p,
                _ => {
                    assert!(killed_at.elapsed() < Duration::from_secs(30), "no replica promoted within 30 s");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    });
    let promoted_after = killed_at.elapsed();
    println!("cluster chaos: replica 127.0.0.1:{new} promoted {promoted_after:?} after the kill");
    // The killed node comes back, as the new primary's replica.
    block_in_place(|| {
        cluster.restart(old);
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster.wait_for_replicas(1, Duration::from_secs(30));
    });
    let rejoined_after = killed_at.elapsed();
    println!("cluster chaos: 127.0.0.1:{old} back as a replica, synced {rejoined_after:?} after the kill");

    // Another worker dies, on the queue whose primary changed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let i = rng.random_range(0..fleets[0].running.len());
    let id = fleets[0].kill9(i, &cfg).await;
    println!("cluster chaos: kill -9 worker {id} of {victim}");
    fleets[0].start_one().await;

    let mut added = Vec::new();
    for p in producers {
        added.push(p.await.unwrap());
    }
    // Drain every queue.
    for (q, queue) in queues.iter().zip(&handles) {
        let drained = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                if let Ok(c) = queue.counts().await
                    && c.completed + c.failed == JOBS_PER_QUEUE as u64
                    && c.waiting + c.delayed + c.active == 0
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if drained.is_err() {
            let logs: String = fleets.iter().map(Fleet::logs).collect();
            panic!("queue {q} did not drain: {:?}\n{logs}", queue.counts().await);
        }
    }
    for fleet in &mut fleets {
        fleet.stop_all().await;
    }

    // ---- The audit, queue by queue. ----
    let mut total = Audit::default();
    for (n, q) in queues.iter().enumerate() {
        let ledger = read_ledger(&fleets[n].settings.ledger).unwrap();
        let (audit, jobs) = audit_queue(&cfg, &handles[n], &plans[n], &ledger, ATTEMPTS).await;
        let mut starts: Vec<u64> =
            jobs.values().flat_map(|j| &j.history).filter_map(|a| a.started_at_ms).collect();
        let pause = longest_pause(&mut starts, killed_ms);
        let a = &added[n];
        println!(
            "cluster chaos: {q}{}: {} jobs, {} completed, {} dead-lettered ({} for stalling); {} executions, \
             {} duplicates, {} recoveries by the reaper; adds refused {} times: no primary or cluster down \
             for {:?}, not acknowledged by a replica for {:?}; longest add (first try to accepted) {:?}; \
             longest pause between job starts after the kill {pause} ms; acknowledged adds lost: 0 \
             (every job found)",
            if *q == victim { " (its primary killed)" } else { "" },
            JOBS_PER_QUEUE,
            audit.completed,
            audit.dead,
            audit.dead_for_stalls,
            ledger.len(),
            audit.duplicates,
            audit.stalled,
            a.refused.len(),
            a.window(|e| !not_replicated(e)),
            a.window(not_replicated),
            a.longest_add,
        );
        total.completed += audit.completed;
        total.dead += audit.dead;
        if *q != victim {
            // Its replica acknowledges; a `WAIT` that waited on the killed
            // shard (or every shard) would refuse adds here for seconds. Two
            // refusals allow for a replica slowed down on a loaded machine.
            let unacknowledged = a.refused.iter().filter(|(_, e)| not_replicated(e)).count();
            assert!(
                unacknowledged <= 2,
                "{q}, a shard that kept its replica, refused {unacknowledged} adds for want of acknowledgement"
            );
        }
    }
    assert_eq!(total.completed + total.dead, JOBS_PER_QUEUE * queues.len());
    println!(
        "cluster chaos: {} jobs in {:?}; replica promoted {promoted_after:?} after the kill, old primary \
         back as a replica after {rejoined_after:?}; worker lines 'lease lost': {}, 'not replicated' or \
         'replica' warnings: {}",
        JOBS_PER_QUEUE * queues.len(),
        began.elapsed(),
        fleets.iter().map(|f| f.count_in_logs("lease lost")).sum::<usize>(),
        fleets.iter().map(|f| f.count_in_logs("replica")).sum::<usize>(),
    );
    assert!(began.elapsed() < Duration::from_secs(120), "the cluster chaos test must stay under 2 minutes");
}
