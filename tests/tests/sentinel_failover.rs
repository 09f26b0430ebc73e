//! Redis Sentinel: producers, workers and the scheduler find the master
//! through `redis+sentinel://` and follow it across a failover, forced
//! (`SENTINEL FAILOVER`) or after a `kill -9` of the master. The kill tests
//! measure how long adds were refused and how many acknowledged adds the
//! failover lost, without and with replica acknowledgements (printed with
//! `--nocapture`; the README quotes them).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quern_common::{Error, JobOptions, JobState, RedisConfig};
use quern_producer::Queue;
use quern_scheduler::{Schedule, Scheduler, Schedules};
use quern_tests::sched::RunningScheduler;
use quern_tests::sentinel::{MASTER_NAME, SentinelSet};
use quern_tests::workers::RunningWorker;
use quern_tests::{config_for, eventually};
use quern_worker::{JobContext, JobError, Worker, WorkerBuilder};
use tokio::task::block_in_place;

fn sentinel_config(set: &SentinelSet) -> RedisConfig {
    config_for(&set.url()).connect_timeout(Duration::from_secs(1)).response_timeout(Duration::from_secs(2))
}

/// A worker whose handler records when each job ran.
fn recording_worker(cfg: &RedisConfig, runs: Arc<Mutex<Vec<Instant>>>) -> WorkerBuilder {
    Worker::builder(cfg, "failover")
        .concurrency(8)
        .lease(Duration::from_secs(3))
        .reap_interval(Duration::from_millis(500))
        .idle_block(Duration::from_secs(1))
        .handler("job", move |_ctx: JobContext, _n: u64| {
            let runs = runs.clone();
            async move {
                runs.lock().unwrap().push(Instant::now());
                Ok::<(), JobError>(())
            }
        })
}

/// What a producer adding a stream of jobs saw.
#[derive(Default)]
struct AddLog {
    /// Ids whose add returned `Ok`, with when.
    acked: Vec<(String, Instant)>,
    /// When adds were refused.
    refused: Vec<Instant>,
    /// Errors that were not retryable.
    fatal: Vec<String>,
}

impl AddLog {
    /// From the first refused add to the first add accepted after it.
    fn refusal_window(&self) -> Option<Duration> {
        let first = *self.refused.first()?;
        let back = self.acked.iter().map(|(_, t)| *t).find(|t| *t > first)?;
        Some(back - first)
    }
}

/// Add a job every 5 ms, each with an id of its own; a refused add is tried
/// again (same id: idempotent) until accepted, as a careful caller would.
fn start_producer(queue: Queue, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<AddLog> {
    tokio::spawn(async move {
        let mut log = AddLog::default();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("j{n}");
            loop {
                match queue.add_with("job", &n, JobOptions::new().job_id(&id)).await {
                    Ok(_) => {
                        log.acked.push((id.clone(), Instant::now()));
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        log.refused.push(Instant::now());
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        log.fatal.push(e.to_string());
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log
    })
}

/// Wait until nothing is waiting or running, then sort the acknowledged
/// ids: (completed, lost: no job hash at all, other states).
async fn settle(queue: &Queue, log: &AddLog) -> (usize, Vec<String>, Vec<String>) {
    eventually(Duration::from_secs(30), "the queue to drain", || async {
        let c = queue.counts().await.ok()?;
        (c.waiting == 0 && c.active == 0 && c.delayed == 0).then_some(())
    })
    .await;
    let (mut completed, mut lost, mut other) = (0, Vec::new(), Vec::new());
    for (id, _) in &log.acked {
        match queue.job(id).await.unwrap() {
            Some(job) if job.state == JobState::Completed => completed += 1,
            Some(job) => other.push(format!("{id}: {}", job.state)),
            None => lost.push(id.clone()),
        }
    }
    (completed, lost, other)
}

/// The longest pause between two job runs after `from`.
fn longest_gap(runs: &Mutex<Vec<Instant>>, from: Instant) -> Duration {
    let mut runs: Vec<Instant> = runs.lock().unwrap().iter().copied().filter(|t| *t >= from).collect();
    runs.sort();
    let mut gap = runs.first().map_or(Duration::ZERO, |t| *t - from);
    for w in runs.windows(2) {
        gap = gap.max(w[1] - w[0]);
    }
    gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_and_a_worker_find_the_master_through_the_sentinels() {
    let set = block_in_place(SentinelSet::start);
    let cfg = sentinel_config(&set);
    let queue = Queue::connect(&cfg, "failover").await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = RunningWorker::start(recording_worker(&cfg, runs.clone())).await;
    for n in 0..20u64 {
        queue.add("job", &n).await.unwrap();
    }
    let done = eventually(Duration::from_secs(10), "20 jobs to run", || async {
        let c = queue.counts().await.ok()?;
        (c.completed == 20).then_some(c.completed)
    })
    .await;
    assert_eq!(done, 20);
    // The jobs are on the master the sentinels name, and on its replica.
    let master = redis::Client::open(SentinelSet::server_url(set.master_port())).unwrap();
    let mut conn = master.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", cfg.prefix)).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_urls_fail_with_clear_errors_and_masked_passwords() {
    let set = block_in_place(SentinelSet::start);
    let ports = set.sentinel_ports();
    // A master name the sentinels do not know.
    let url = format!("redis+sentinel://user:s3cret@127.0.0.1:{}/no-such-master", ports[0]);
    let err = Queue::connect(&config_for(&url), "q").await.unwrap_err();
    assert!(matches!(err, Error::UnknownSentinelMaster { .. }), "{err}");
    assert!(err.to_string().contains("no-such-master") && !err.to_string().contains("s3cret"), "{err}");
    assert!(!err.is_retryable());
    // No sentinel answers (ports nobody listens on).
    let dead = format!("redis+sentinel://user:s3cret@127.0.0.1:1,127.0.0.1:2/{MASTER_NAME}");
    let err = Queue::connect(&config_for(&dead), "q").await.unwrap_err();
    assert!(err.to_string().contains("no sentinel reachable"), "{err}");
    assert!(!err.to_string().contains("s3cret") && err.is_retryable(), "{err}");
    let err = RedisConfig::new(&dead).connect_dedicated("q", Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains("no sentinel reachable"), "{err}");
    // Malformed URLs.
    for bad in ["redis+sentinel://user:s3cret@127.0.0.1:26379", "redis+sentinel://127.0.0.1:x/m"] {
        let err = Queue::connect(&config_for(bad), "q").await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    // Replica acknowledgements the connection cannot honour are refused.
    let err = Queue::builder(&sentinel_config(&set), "q")
        .replica_acks(1, Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_the_work_goes_on_by_itself() {
    let set = block_in_place(SentinelSet::start);
    let cfg = sentinel_config(&set);
    let queue = Queue::connect(&cfg, "failover").await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = RunningWorker::start(recording_worker(&cfg, runs.clone())).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = start_producer(queue.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let old = set.master_port();
    let failover_at = Instant::now();
    block_in_place(|| set.failover());
    let new = block_in_place(|| set.wait_for_new_master(old, Duration::from_secs(30)));
    let promoted_after = failover_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let log = producer.await.unwrap();
    assert!(log.fatal.is_empty(), "adds failed for good: {:?}", log.fatal);
    let (completed, lost, other) = settle(&queue, &log).await;
    eprintln!(
        "SENTINEL FAILOVER: new master after {promoted_after:?}; {} adds acknowledged, {} refused; refusal window {:?}; \
         {completed} completed, {} acknowledged adds lost; longest pause between runs {:?}",
        log.acked.len(),
        log.refused.len(),
        log.refusal_window(),
        lost.len(),
        longest_gap(&runs, failover_at)
    );
    assert!(other.is_empty(), "acknowledged jobs neither completed nor lost: {other:?}");
    assert_eq!(completed + lost.len(), log.acked.len());
    // Work goes on: what was added once the new master was in place (and
    // the handles had time to notice) is on the new master and ran there.
    let settled = failover_at + promoted_after + Duration::from_millis(1500);
    let late: Vec<&String> = log.acked.iter().filter(|(_, t)| *t > settled).map(|(id, _)| id).collect();
    assert!(!late.is_empty(), "adds went through after the failover");
    assert!(late.iter().all(|id| !lost.contains(id)), "an add after the failover was lost");
    let mut on_new = redis::Client::open(SentinelSet::server_url(new))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for id in &late {
        let exists: bool =
            redis::cmd("EXISTS").arg(queue.keys().job(id)).query_async(&mut on_new).await.unwrap();
        assert!(exists, "job {id}, added after the failover, is on the new master");
    }
    assert_ne!(old, new);
    assert!(!worker.is_finished());
    worker.stop().await;
}

/// `kill -9` of the master under a running producer and worker, with two
/// replicas (so that the new master still has one); returns what was seen.
async fn kill_the_master(replica_acks: bool) {
    let mut set = block_in_place(|| SentinelSet::start_with_replicas(2));
    let cfg = sentinel_config(&set);
    let mut builder = Queue::builder(&cfg, "failover");
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut worker = recording_worker(&cfg, runs.clone());
    if replica_acks {
        builder = builder.replica_acks(1, Duration::from_millis(500));
        worker = worker.replica_acks(1, Duration::from_millis(500));
    }
    let queue = builder.connect().await.unwrap();
    let worker = RunningWorker::start(worker).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = start_producer(queue.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed_at = Instant::now();
    let old = block_in_place(|| set.kill_master());
    let new = block_in_place(|| set.wait_for_new_master(old, Duration::from_secs(30)));
    let promoted_after = killed_at.elapsed();
    // Adds go through again within a bound.
    let added_before = Arc::new(AtomicUsize::new(0));
    let probe = queue.clone();
    let resumed = eventually(Duration::from_secs(30), "an add to go through after the promotion", || {
        let probe = probe.clone();
        let counter = added_before.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            probe.add_with("job", &0u64, JobOptions::new().job_id("probe")).await.ok().map(|_| Instant::now())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let log = producer.await.unwrap();
    assert!(log.fatal.is_empty(), "adds failed for good: {:?}", log.fatal);
    let (completed, lost, other) = settle(&queue, &log).await;
    let window = log.refusal_window();
    eprintln!(
        "KILL -9 of the master (replica acks: {replica_acks}): new master 127.0.0.1:{new} named {promoted_after:?} after the kill; \
         adds refused for {window:?} (first refused to first accepted); {} adds acknowledged, {completed} completed, \
         {} acknowledged adds lost; longest pause between job runs {:?}; adds resumed {:?} after the kill",
        log.acked.len(),
        lost.len(),
        longest_gap(&runs, killed_at),
        resumed - killed_at,
    );
    assert!(other.is_empty(), "acknowledged jobs neither completed nor lost: {other:?}");
    assert_eq!(completed + lost.len(), log.acked.len());
    assert!(resumed - killed_at < Duration::from_secs(30));
    if let Some(window) = window {
        assert!(window < Duration::from_secs(30), "adds refused for {window:?}");
    }
    if replica_acks {
        assert!(lost.is_empty(), "with replica acknowledgements no acknowledged add is lost: {lost:?}");
    }
    assert!(!worker.is_finished());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_master_is_killed_the_work_resumes_once_a_replica_is_promoted() {
    kill_the_master(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_no_acknowledged_add_is_lost_when_the_master_is_killed() {
    kill_the_master(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_through_the_sentinels_enqueues_after_a_failover() {
    let set = block_in_place(SentinelSet::start);
    let cfg = sentinel_config(&set);
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("pulse", "* * * * * *", "ticks", "beat")).await.unwrap();
    let s = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = set.master_port();
    block_in_place(|| set.failover());
    block_in_place(|| set.wait_for_new_master(old, Duration::from_secs(30)));
    let queue = Queue::connect(&cfg, "ticks").await.unwrap();
    let before = eventually(Duration::from_secs(10), "the new master to answer", || async {
        queue.counts().await.ok().map(|c| c.waiting)
    })
    .await;
    let after = eventually(Duration::from_secs(15), "ticks enqueued on the new master", || async {
        let waiting = queue.counts().await.ok()?.waiting;
        (waiting >= before + 2).then_some(waiting)
    })
    .await;
    assert!(after >= before + 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_urls_password_logs_in_to_the_master_and_the_sentinels_are_asked_without_one() {
    // The data servers require a password; the sentinels have none (they
    // know the master's, `sentinel auth-pass`, to watch it).
    let set = block_in_place(|| SentinelSet::start_with_password("m4ster-pw"));
    let with_password =
        |pw: &str| set.url().replacen("redis+sentinel://", &format!("redis+sentinel://:{pw}@"), 1);
    let cfg = config_for(&with_password("m4ster-pw"))
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2));
    let queue = Queue::connect(&cfg, "failover").await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = RunningWorker::start(recording_worker(&cfg, runs.clone())).await;
    queue.add("job", &1u64).await.unwrap();
    eventually(Duration::from_secs(10), "the job to run", || async {
        (queue.counts().await.ok()?.completed == 1).then_some(())
    })
    .await;
    // And on the new master after a failover.
    let old = set.master_port();
    block_in_place(|| set.failover());
    block_in_place(|| set.wait_for_new_master(old, Duration::from_secs(30)));
    eventually(Duration::from_secs(20), "a job added and run on the new master", || async {
        queue.add_with("job", &2u64, JobOptions::new().job_id("after")).await.ok()?;
        (queue.counts().await.ok()?.completed == 2).then_some(())
    })
    .await;
    worker.stop().await;
    // A wrong password: refused by the master, named as such, masked.
    let wrong = config_for(&with_password("wr0ng-pw")).connect_timeout(Duration::from_secs(1));
    let err = Queue::connect(&wrong, "failover").await.unwrap_err();
    assert_eq!(err.kind(), quern_common::ErrorKind::Denied, "{err}");
    assert!(!err.to_string().contains("wr0ng-pw"), "{err}");
}
