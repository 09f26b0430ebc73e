//! Worker identity: every worker gets a unique id `host:pid:random`; nothing
//! depends on stable names, and a restarted worker neither inherits nor waits
//! for the jobs of the process it replaces.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings, read_ledger};
use quern_tests::{config, eventually};
use quern_worker::{JobContext, JobError, Worker};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn ids_are_host_pid_random_and_unique_even_within_one_process() {
    let cfg = config();
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let w = Worker::builder(&cfg, "ids")
            .handler("x", |_c: JobContext, _: ()| async { Ok::<(), JobError>(()) })
            .build()
            .await
            .unwrap();
        let parts: Vec<&str> = w.id().rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{}", w.id());
        let (random, pid, host_part) = (parts[0], parts[1], parts[2]);
        assert_eq!(pid, std::process::id().to_string());
        if !host().is_empty() {
            assert_eq!(host_part, host());
        }
        assert!(random.len() >= 8 && random.chars().all(|c| c.is_ascii_hexdigit()), "{}", w.id());
        assert!(ids.insert(w.id().to_owned()), "duplicate id {}", w.id());
    }
}

#[tokio::test]
async fn a_replacement_process_neither_inherits_nor_waits_for_the_old_ones_jobs() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let mut s = WorkerSettings::new(cfg.url.clone(), "ident", dir.path().join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.concurrency = 4;
    s.lease = Duration::from_secs(3);
    s.reap_interval = Duration::from_millis(200);
    let q = Queue::connect(&cfg, "ident").await.unwrap();

    let old = WorkerProcess::start(binary(), &s, &dir.path().join("old.log")).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(q.add("chaos", &ChaosJob { sleep_ms: 60_000, fail_attempts: 0 }).await.unwrap().id);
    }
    // Held means leased and running: the lease is taken at fetch, the ledger
    // line is written when the handler starts (a kill in between, likely on a
    // loaded machine, would leave no run of the old process to check below).
    eventually(Duration::from_secs(10), "the old worker to run both jobs", || async {
        for id in &held {
            let job = q.job(id).await.unwrap()?;
            if job.worker.as_deref() != Some(old.worker_id()) {
                return None;
            }
        }
        let runs = read_ledger(&s.ledger).ok()?;
        held.iter().all(|id| runs.iter().any(|e| &e.job_id == id && e.pid == old.pid())).then_some(())
    })
    .await;
    let old_id = old.worker_id().to_owned();
    let old_pid = old.pid();
    old.kill9().await.unwrap();

    // Its replacement (as a supervisor would start it) has an id of its own
    // and starts new work at once, while the old leases are still running out.
    let killed = Instant::now();
    let new = WorkerProcess::start(binary(), &s, &dir.path().join("new.log")).await.unwrap();
    assert_ne!(new.worker_id(), old_id);
    let quick = q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.unwrap().id;
    let done = eventually(Duration::from_secs(5), "the new job to complete", || async {
        let job = q.job(&quick).await.unwrap()?;
        (job.state == JobState::Completed).then_some(job)
    })
    .await;
    assert!(killed.elapsed() < s.lease, "new work waited for the old leases: {:?}", killed.elapsed());
    assert_eq!(done.worker.as_deref(), Some(new.worker_id()));
    for id in &held {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Active, "the old lease still holds until it runs out");
        assert_eq!(job.worker.as_deref(), Some(old_id.as_str()), "the new worker did not inherit it");
    }

    // Once the old leases run out the reaper recovers the jobs, recording the
    // old worker, and the new worker runs them under leases of its own.
    for id in &held {
        let job = eventually(Duration::from_secs(10), "the old job to run on the new worker", || async {
            let job = q.job(id).await.unwrap()?;
            (job.worker.as_deref() == Some(new.worker_id())).then_some(job)
        })
        .await;
        let stalled = job.history.iter().find(|a| a.outcome == "stalled").expect("a stalled entry");
        assert_eq!(stalled.worker.as_deref(), Some(old_id.as_str()));
    }
    let runs = read_ledger(&s.ledger).unwrap();
    for id in &held {
        let pids: Vec<u32> = runs.iter().filter(|e| &e.job_id == id).map(|e| e.pid).collect();
        assert_eq!(pids, vec![old_pid, new.pid()]);
    }
    new.kill9().await.unwrap();
}
