//! The chaos test: real worker processes, `kill -9`, a Redis restart and a
//! SIGTERM while 3,000 jobs run, then an audit of every job and every
//! handler execution.
//!
//! Set-up: a private `redis-server` with `appendfsync always`; 3 `chaos_worker`
//! processes (8 slots, 1 s lease, 250 ms reaper); 3,000 jobs with explicit ids
//! added in batches while the chaos runs. Each job sleeps (mostly a few ms,
//! some 120 ms, a few 1.5 s) and fails a planned number of attempts (most
//! none, some 1 or 2, some every attempt: those must end dead-lettered).
//!
//! Chaos: a random worker is killed with `kill -9` and replaced, six times;
//! Redis is killed and restarted once; one worker gets SIGTERM; one worker is
//! frozen (SIGSTOP) for twice its lease, then thawed: its late results must be
//! refused. A fourth worker talks to Redis through a relay ([`Blackhole`]) that
//! silences its connections once mid-run (a network partition): it must find
//! its way back, and its leases that ran out meanwhile are fenced off.
//!
//! Audit (every job, every ledger line):
//! - every job is `completed` or `failed` and in the dead-letter list, as its
//!   plan says (a job may also be dead-lettered for stalling too often, which
//!   its error must say); none is missing; none is in the completed list twice;
//! - every execution's token has exactly one recorded outcome: the completing
//!   token (the job's final token), or an entry of the job's history carrying
//!   that token (`error`, `stalled`, `released`, ...);
//! - a job runs the same attempt number more than once ("duplicate") only when
//!   all runs of that attempt but at most one lost their lease: their token's
//!   outcome is `stalled` (the reaper took the lease back: worker killed or
//!   frozen, Redis restarted, renewal too late) or `released` (handed back at
//!   shutdown);
//! - no token ever ran twice (fencing);
//! - the completing run is attempt `fail_attempts + 1`: stalls, releases and
//!   Redis restarts never used up an attempt;
//! - the SIGTERM'd worker exited 0, printed `stopped`, and left no stalled lease.
//!
//! Prints executions, duplicates, recoveries and recovery times. Set
//! `QUERN_CHAOS_SEED` to replay a run's job plan and chaos order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quern_common::{Backoff, JobInfo, JobOptions, JobState};
use quern_producer::{NewJob, Queue};
use quern_tests::blackhole::Blackhole;
use quern_tests::chaos::{ChaosJob, Execution, WorkerProcess, WorkerSettings, read_ledger, repeated_tokens};
use quern_tests::{Persistence, RedisConfig, TestRedis, config_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;

const JOBS: usize = 3000;
const BATCH: usize = 300;
const WORKERS: usize = 3;
const ATTEMPTS: u32 = 3;
const QUEUE: &str = "chaos";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

fn job_id(n: usize) -> String {
    format!("c{n:05}")
}

/// The plan of job `n`.
fn plan(rng: &mut StdRng) -> ChaosJob {
    let sleep_ms = match rng.random_range(0..100) {
        0..50 => rng.random_range(0..6),
        50..85 => 30,
        85..98 => 120,
        _ => 1500,
    };
    let fail_attempts = match rng.random_range(0..100) {
        0..70 => 0,
        70..85 => 1,
        85..95 => 2,
        _ => 99, // always fails: dead-lettered after its last attempt
    };
    ChaosJob { sleep_ms, fail_attempts }
}

async fn redis_now_ms(cfg: &RedisConfig) -> u64 {
    let mut conn = quern_tests::raw_connection(cfg).await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    s * 1000 + us / 1000
}

/// Add jobs `from..to`, retrying a batch until Redis accepts it (ids are
/// explicit, so a batch sent twice adds each job once).
async fn add_batch(queue: &Queue, plans: &[ChaosJob], from: usize, to: usize, failures: &AtomicUsize) {
    let jobs: Vec<NewJob> = (from..to)
        .map(|n| {
            NewJob::new("chaos", &plans[n]).unwrap().options(
                JobOptions::new()
                    .job_id(job_id(n))
                    .attempts(ATTEMPTS)
                    .backoff(Backoff::fixed(Duration::from_millis(50))),
            )
        })
        .collect();
    loop {
        let started = Instant::now();
        match queue.add_bulk(&jobs).await {
            Ok(added) => {
                assert_eq!(added.len(), jobs.len());
                return;
            }
            Err(e) => {
                // Redis is down: the producer must say so quickly, not hang.
                assert!(e.is_retryable(), "an outage must give a retryable error, got {e}");
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "add_bulk took {:?} to fail",
                    started.elapsed()
                );
                failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Fleet {
    dir: tempfile::TempDir,
    settings: WorkerSettings,
    running: Vec<WorkerProcess>,
    started: usize,
    /// Worker id -> Redis time of its kill -9.
    killed: HashMap<String, u64>,
}

impl Fleet {
    async fn start_one(&mut self) {
        let w = self.start_with(&self.settings.clone()).await;
        self.running.push(w);
    }

    async fn start_with(&mut self, settings: &WorkerSettings) -> WorkerProcess {
        self.started += 1;
        let log = self.dir.path().join(format!("worker-{}.log", self.started));
        WorkerProcess::start(binary(), settings, &log).await.expect("start a chaos worker")
    }

    /// Log lines of every worker that contain `text`.
    fn count_in_logs(&self, text: &str) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().matches(text).count())
            .sum()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                out.push_str(&format!("--- {}\n{}\n", path.display(), quern_tests::chaos::tail(&path)));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_survives_kills_a_redis_restart_and_a_sigterm() {
    let began = Instant::now();
    let seed: u64 =
        std::env::var("QUERN_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    println!("chaos: seed {seed} (QUERN_CHAOS_SEED={seed} replays the plan)");
    let mut rng = StdRng::seed_from_u64(seed);
    let plans: Arc<Vec<ChaosJob>> = Arc::new((0..JOBS).map(|_| plan(&mut rng)).collect());

    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = WorkerSettings::new(server.url(), QUEUE, dir.path().join("ledger"));
    settings.prefix = Some(cfg.prefix.clone());
    settings.concurrency = 8;
    settings.max_stalls = 5;
    let ledger_path = settings.ledger.clone();
    let mut fleet = Fleet { dir, settings, running: Vec::new(), started: 0, killed: HashMap::new() };
    for _ in 0..WORKERS {
        fleet.start_one().await;
    }
    // The partitioned one: not among the workers picked for kills and signals.
    let relay = Blackhole::start(server.addr()).await.unwrap();
    let mut via_relay = fleet.settings.clone();
    via_relay.redis_url = relay.url();
    let mut partitioned = fleet.start_with(&via_relay).await;

    // The producer adds a batch every second, through the chaos.
    let queue = Queue::connect(&cfg, QUEUE).await.unwrap();
    let add_failures = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (queue, plans, failures) = (queue.clone(), plans.clone(), add_failures.clone());
        tokio::spawn(async move {
            for from in (0..JOBS).step_by(BATCH) {
                add_batch(&queue, &plans, from, (from + BATCH).min(JOBS), &failures).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    };

    // The chaos schedule.
    // The SIGTERM'd worker and the Redis time of the signal.
    let mut sigtermed: Option<(String, u64)> = None;
    let mut restart_gap = Duration::ZERO;
    let mut frozen_workers = 0;
    for step in 0..10 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        match step {
            2 => {
                // Far enough from the last kill that its recovery is measured on its own.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                // Redis dies (kill -9) and comes back from its AOF.
                let t = Instant::now();
                tokio::task::block_in_place(|| {
                    server.kill();
                    std::thread::sleep(Duration::from_millis(500));
                    server.restart();
                });
                restart_gap = t.elapsed();
                println!("chaos: Redis killed and restarted ({restart_gap:?} down)");
            }
            3 => {
                let cut = relay.cut();
                println!("chaos: {cut} connections of worker {} silenced", partitioned.worker_id());
            }
            8 => {
                // A long pause (GC, a suspended VM): its leases run out and its
                // jobs run elsewhere; when it wakes up, its writes are fenced off.
                let w = &fleet.running[rng.random_range(0..fleet.running.len())];
                w.signal("STOP").unwrap();
                tokio::time::sleep(fleet.settings.lease * 2).await;
                w.signal("CONT").unwrap();
                frozen_workers += 1;
                println!("chaos: worker {} frozen for {:?}", w.worker_id(), fleet.settings.lease * 2);
            }
            6 => {
                let i = rng.random_range(0..fleet.running.len());
                let mut w = fleet.running.remove(i);
                let at = redis_now_ms(&cfg).await;
                w.signal("TERM").unwrap();
                let status = w.wait_exit(fleet.settings.grace + Duration::from_secs(10)).await.unwrap();
                assert!(status.success(), "SIGTERM must give exit 0, got {status}; log:\n{}", w.log());
                assert!(w.said_stopped().await, "the worker must print 'stopped'; log:\n{}", w.log());
                println!("chaos: worker {} stopped by SIGTERM, exit 0", w.worker_id());
                sigtermed = Some((w.worker_id().to_owned(), at));
                fleet.start_one().await;
            }
            _ => {
                let i = rng.random_range(0..fleet.running.len());
                let w = fleet.running.remove(i);
                let id = w.worker_id().to_owned();
                w.kill9().await.unwrap();
                fleet.killed.insert(id.clone(), redis_now_ms(&cfg).await);
                println!("chaos: kill -9 worker {id}");
                fleet.start_one().await;
            }
        }
    }
    producer.await.unwrap();
    assert_eq!(frozen_workers, 1);

    // Wait for the queue to drain.
    let drained = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if let Ok(c) = queue.counts().await
                && c.completed + c.failed == JOBS as u64
                && c.waiting + c.delayed + c.active == 0
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let counts = match drained {
        Ok(c) => c,
        Err(_) => panic!("the queue did not drain: {:?}\n{}", queue.counts().await, fleet.logs()),
    };
    let reconnected = relay.connections() - relay.silenced() as u64;
    assert!(reconnected > 0, "the partitioned worker opened new connections");
    partitioned.signal("TERM").unwrap();
    assert!(partitioned.wait_exit(Duration::from_secs(10)).await.unwrap().success());
    for mut w in std::mem::take(&mut fleet.running) {
        w.signal("TERM").unwrap();
        let status = w.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert!(status.success(), "worker {} exited with {status}", w.worker_id());
    }

    // ---- The audit. ----
    let mut conn = quern_tests::raw_connection(&cfg).await;
    let keys = queue.keys().clone();
    let completed_list: Vec<String> = conn.lrange(keys.completed(), 0, -1).await.unwrap();
    let dead_letters: Vec<String> = conn.zrange(keys.dead_letter(), 0, -1).await.unwrap();
    let mut seen = HashSet::new();
    for id in &completed_list {
        assert!(seen.insert(id.clone()), "job {id} is in the completed list twice");
    }
    let dead: HashSet<&String> = dead_letters.iter().collect();
    assert_eq!(dead.len(), dead_letters.len());

    let ledger = read_ledger(&ledger_path).unwrap();
    let by_job = quern_tests::chaos::executions_by_job(&ledger);
    assert_eq!(repeated_tokens(&ledger), Vec::new(), "a lease token ran twice: fencing failed");

    let mut jobs: BTreeMap<String, JobInfo> = BTreeMap::new();
    for n in 0..JOBS {
        let id = job_id(n);
        let job = queue.job(&id).await.unwrap().unwrap_or_else(|| panic!("job {id} is missing"));
        jobs.insert(id, job);
    }
    assert_eq!(
        ledger.iter().filter(|e| !jobs.contains_key(&e.job_id)).count(),
        0,
        "unknown job in the ledger"
    );

    let mut stats = Stats::default();
    for (n, (id, job)) in jobs.iter().enumerate() {
        let plan = plans[n];
        let runs: &[Execution] = by_job.get(id).map(Vec::as_slice).unwrap_or(&[]);
        stats.audit_job(id, job, plan, runs, &completed_list, &dead);
        if let Some((worker, at)) = &sigtermed {
            // The SIGTERM'd worker finished or handed back every job it held:
            // none of its leases was left to expire after the signal.
            let left = job.history.iter().find(|a| {
                a.outcome == "stalled"
                    && a.worker.as_ref() == Some(worker)
                    && a.finished_at_ms.unwrap_or(0) > *at
            });
            assert!(left.is_none(), "the SIGTERM'd worker left a lease to expire: {job:#?}");
        }
    }
    assert_eq!(stats.completed + stats.dead, JOBS);
    assert_eq!(stats.completed, completed_list.len(), "completed list and completed jobs differ");
    assert_eq!(stats.completed as u64, counts.completed);

    // Recovery time: from each kill -9 to the reaper's stalled entries for that worker's jobs.
    let mut recovery: Vec<u64> = Vec::new();
    for job in jobs.values() {
        for a in job.history.iter().filter(|a| a.outcome == "stalled") {
            let fin = a.finished_at_ms.unwrap_or(0);
            if let Some(at) = a.worker.as_ref().and_then(|w| fleet.killed.get(w))
                && fin >= *at
            {
                recovery.push(fin - at);
            }
        }
    }
    recovery.sort_unstable();
    let partitioned_stalls: usize = jobs
        .values()
        .flat_map(|j| &j.history)
        .filter(|a| a.outcome == "stalled" && a.worker.as_deref() == Some(partitioned.worker_id()))
        .count();
    let lease_plus_reap = (fleet.settings.lease + fleet.settings.reap_interval).as_millis() as u64;
    let max_recovery = recovery.last().copied().unwrap_or(0);
    println!(
        "chaos: {JOBS} jobs in {:?}: {} completed, {} dead-lettered ({} of them for stalling); \
         {} executions, {} duplicates (same attempt run again after a lost lease), \
         {} recoveries by the reaper ({} after a kill -9), {} releases at shutdown",
        began.elapsed(),
        stats.completed,
        stats.dead,
        stats.dead_for_stalls,
        ledger.len(),
        stats.duplicates,
        stats.stalled,
        recovery.len(),
        stats.released,
    );
    println!(
        "chaos: recovery after kill -9: median {} ms, max {max_recovery} ms (bound: lease + reap interval = \
         {lease_plus_reap} ms); Redis down {restart_gap:?}; producer calls refused while down: {}; \
         'lease lost' warnings in worker logs (late writes refused or renewals denied): {}; \
         leases of the partitioned worker that ran out: {partitioned_stalls}",
        recovery.get(recovery.len() / 2).copied().unwrap_or(0),
        add_failures.load(Ordering::Relaxed),
        fleet.count_in_logs("lease lost"),
    );
    assert!(!recovery.is_empty(), "the kills must have interrupted some jobs");
    assert!(
        max_recovery <= lease_plus_reap + 500,
        "a killed worker's job took {max_recovery} ms to recover (lease + reap interval: {lease_plus_reap} ms)"
    );
    assert!(began.elapsed() < Duration::from_secs(170), "the chaos test must stay under 3 minutes");
}

#[derive(Default)]
struct Stats {
    completed: usize,
    dead: usize,
    dead_for_stalls: usize,
    duplicates: usize,
    stalled: usize,
    released: usize,
}

impl Stats {
    fn audit_job(
        &mut self,
        id: &str,
        job: &JobInfo,
        plan: ChaosJob,
        runs: &[Execution],
        completed_list: &[String],
        dead: &HashSet<&String>,
    ) {
        let ctx = || format!("job {id} (plan {plan:?}), runs {runs:?}, job {job:#?}");
        assert!(
            job.history.len() < 25,
            "history may have been truncated; the audit needs all of it: {}",
            ctx()
        );
        self.stalled += job.history.iter().filter(|a| a.outcome == "stalled").count();
        self.released += job.history.iter().filter(|a| a.outcome == "released").count();
        let stalled_out = job.last_error.as_deref().is_some_and(|e| e.starts_with("stalled "));
        match job.state {
            JobState::Completed => {
                self.completed += 1;
                assert!(
                    plan.fail_attempts < ATTEMPTS,
                    "a job planned to fail every attempt completed: {}",
                    ctx()
                );
                assert!(
                    completed_list.iter().any(|c| c == id) && !dead.contains(&id.to_owned()),
                    "{}",
                    ctx()
                );
            }
            JobState::Failed => {
                self.dead += 1;
                assert!(
                    dead.contains(&id.to_owned()),
                    "a failed job is not in the dead-letter list: {}",
                    ctx()
                );
                if stalled_out {
                    self.dead_for_stalls += 1;
                } else {
                    assert!(
                        plan.fail_attempts >= ATTEMPTS,
                        "a job that should complete was dead-lettered: {}",
                        ctx()
                    );
                    let last = job.last_error.as_deref().unwrap_or("");
                    assert!(
                        last.contains(&format!("attempt {ATTEMPTS}")),
                        "dead-lettered before its last attempt: {}",
                        ctx()
                    );
                }
            }
            other => panic!("job {id} ended {other}, not completed or dead-lettered: {}", ctx()),
        }

        // The outcome of each token: the final one for a completed job, the
        // history entries for the rest.
        let mut outcome: HashMap<&str, &str> = HashMap::new();
        for a in &job.history {
            if a.outcome == "completed" || a.outcome == "running" {
                continue;
            }
            if let Some(tk) = a.token.as_deref() {
                assert!(
                    outcome.insert(tk, a.outcome.as_str()).is_none(),
                    "token {tk} has two outcomes: {}",
                    ctx()
                );
            }
        }
        if job.state == JobState::Completed {
            let last = job.history.last().unwrap();
            let tk =
                last.token.as_deref().unwrap_or_else(|| panic!("completed job without its token: {}", ctx()));
            assert!(outcome.insert(tk, "completed").is_none(), "{}", ctx());
            let completing = runs
                .iter()
                .find(|e| e.token == tk)
                .unwrap_or_else(|| panic!("the completing token {tk} is not in the ledger: {}", ctx()));
            assert_eq!(
                completing.attempt,
                plan.fail_attempts + 1,
                "the job completed on the wrong attempt: an attempt was used up by a stall, \
                 release or restart: {}",
                ctx()
            );
        }
        // Runs per attempt number. Ledger order is not lease order: a worker
        // frozen between fetching a job and starting its handler writes its
        // line after the run that replaced it. So the rule is order-free: of
        // the runs of one attempt, at most one ended with an accepted outcome
        // (completed, or a failure that counted); every other run lost its lease.
        let mut per_attempt: BTreeMap<u32, Vec<&Execution>> = BTreeMap::new();
        for e in runs {
            assert!(
                outcome.contains_key(e.token.as_str()),
                "execution with token {} has no recorded outcome: {}",
                e.token,
                ctx()
            );
            per_attempt.entry(e.attempt).or_default().push(e);
        }
        for (attempt, list) in per_attempt {
            self.duplicates += list.len() - 1;
            let accepted: Vec<(&str, &str)> = list
                .iter()
                .map(|e| (e.token.as_str(), outcome[e.token.as_str()]))
                .filter(|(_, out)| *out != "stalled" && *out != "released")
                .collect();
            assert!(
                accepted.len() <= 1,
                "attempt {attempt} ran {} times with accepted outcomes {accepted:?}: only runs that \
                 lost their lease may run again: {}",
                list.len(),
                ctx()
            );
        }
    }
}
