//! Stalled-job recovery: the jobs of a worker killed with `kill -9` are back in
//! `waiting` within the lease plus one reaper interval (measured and printed),
//! a job that stalls too often is dead-lettered, and reaping twice is harmless.

use std::path::Path;
use std::time::Duration;

use quern_common::{JobOptions, JobState};
use quern_producer::Queue;
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings, read_ledger};
use quern_tests::moves::Mover;
use quern_tests::{RedisConfig, config, eventually};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

fn settings(cfg: &RedisConfig, dir: &Path) -> WorkerSettings {
    let mut s = WorkerSettings::new(cfg.url.clone(), "stalls", dir.join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.concurrency = 4;
    s.lease = Duration::from_millis(1000);
    s.reap_interval = Duration::from_millis(250);
    s
}

async fn start(s: &WorkerSettings, dir: &Path, name: &str) -> WorkerProcess {
    WorkerProcess::start(binary(), s, &dir.join(format!("{name}.log"))).await.expect("start a chaos worker")
}

/// Wait until every job in `ids` is active under worker `worker_id`.
async fn wait_active_on(q: &Queue, ids: &[String], worker_id: &str) {
    eventually(Duration::from_secs(10), "jobs active on the worker", || async {
        for id in ids {
            let job = q.job(id).await.unwrap()?;
            if job.state != JobState::Active || job.worker.as_deref() != Some(worker_id) {
                return None;
            }
        }
        Some(())
    })
    .await
}

async fn redis_now_ms(cfg: &RedisConfig) -> u64 {
    let mut conn = quern_tests::raw_connection(cfg).await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    s * 1000 + us / 1000
}

#[tokio::test]
async fn a_killed_workers_jobs_are_back_in_waiting_within_lease_plus_reap_interval() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&cfg, dir.path());
    let q = Queue::connect(&cfg, "stalls").await.unwrap();

    let victim = start(&s, dir.path(), "victim").await;
    let long = ChaosJob { sleep_ms: 60_000, fail_attempts: 0 };
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(q.add("chaos", &long).await.unwrap().id);
    }
    wait_active_on(&q, &ids, victim.worker_id()).await;
    // Let the victim renew its leases a few times: recovery must not depend
    // on when the job was fetched, only on the last renewal.
    tokio::time::sleep(s.lease * 2).await;
    for id in &ids {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Active, "a renewed lease must not be reaped: {job:#?}");
    }
    // The rescuer runs the reaper; it also picks the jobs up again afterwards.
    let rescuer = start(&s, dir.path(), "rescuer").await;
    let victim_id = victim.worker_id().to_owned();
    victim.kill9().await.unwrap();
    let killed_at = redis_now_ms(&cfg).await;

    let bound = s.lease + s.reap_interval;
    let mut worst = 0u64;
    for id in &ids {
        let job = eventually(Duration::from_secs(10), "the job to be recovered", || async {
            let job = q.job(id).await.unwrap()?;
            job.history.iter().any(|a| a.outcome == "stalled").then_some(job)
        })
        .await;
        let stalled = job.history.iter().find(|a| a.outcome == "stalled").unwrap();
        assert_eq!(stalled.worker.as_deref(), Some(victim_id.as_str()), "{job:#?}");
        assert_eq!(job.stalls, 1);
        let recovered_at = stalled.finished_at_ms.unwrap();
        worst = worst.max(recovered_at.saturating_sub(killed_at));
    }
    println!(
        "stalled recovery: the killed worker's 4 jobs were back in waiting {worst} ms after kill -9 \
         (bound: lease {} ms + reap interval {} ms = {} ms)",
        s.lease.as_millis(),
        s.reap_interval.as_millis(),
        bound.as_millis()
    );
    // Scheduling noise on a busy CI machine: allow 500 ms beyond the bound.
    assert!(
        worst <= bound.as_millis() as u64 + 500,
        "recovery took {worst} ms, more than the lease plus one reaper interval ({bound:?})"
    );
    // And the rescuer runs them, as attempt 1 still: a stall does not use up an attempt.
    wait_active_on(&q, &ids, rescuer.worker_id()).await;
    for id in &ids {
        assert_eq!(q.job(id).await.unwrap().unwrap().attempts_made, 1);
    }
    let ledger = read_ledger(&s.ledger).unwrap();
    for id in &ids {
        let runs: Vec<_> = ledger.iter().filter(|e| &e.job_id == id).collect();
        assert_eq!(runs.len(), 2, "one run on each worker: {runs:?}");
        assert_ne!(runs[0].token, runs[1].token, "the rescuer's lease has a fresh token");
        assert!(runs.iter().all(|e| e.attempt == 1));
    }
    rescuer.kill9().await.unwrap();
}

#[tokio::test]
async fn a_job_that_stalls_more_than_max_stalls_times_is_dead_lettered() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&cfg, dir.path());
    s.max_stalls = 1;
    let q = Queue::connect(&cfg, "stalls").await.unwrap();
    let id = q.add("chaos", &ChaosJob { sleep_ms: 60_000, fail_attempts: 0 }).await.unwrap().id;

    // w1 runs the job and is killed; w2 reaps it (stall 1), runs it and is
    // killed too; w3 reaps it again: stall 2 > 1, so it is dead-lettered.
    let w1 = start(&s, dir.path(), "w1").await;
    wait_active_on(&q, std::slice::from_ref(&id), w1.worker_id()).await;
    w1.kill9().await.unwrap();
    let w2 = start(&s, dir.path(), "w2").await;
    wait_active_on(&q, std::slice::from_ref(&id), w2.worker_id()).await;
    assert_eq!(q.job(&id).await.unwrap().unwrap().stalls, 1);
    w2.kill9().await.unwrap();
    let w3 = start(&s, dir.path(), "w3").await;
    let job = eventually(Duration::from_secs(15), "the job to be dead-lettered", || async {
        let job = q.job(&id).await.unwrap()?;
        (job.state == JobState::Failed).then_some(job)
    })
    .await;
    assert!(job.stalls >= 2, "{job:#?}");
    assert!(job.last_error.as_deref().unwrap_or("").contains("stalled"), "{job:#?}");
    assert!(job.history.iter().filter(|a| a.outcome == "stalled").count() >= 2, "{job:#?}");
    let dlq = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(dlq.iter().map(|j| j.id()).collect::<Vec<_>>(), vec![id.as_str()]);
    w3.kill9().await.unwrap();
}

#[tokio::test]
async fn reaping_twice_is_harmless() {
    let cfg = config();
    let q = Queue::connect(&cfg, "reap2").await.unwrap();
    let m = Mover::new(&cfg, "reap2").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            q.add_with("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }, JobOptions::new())
                .await
                .unwrap()
                .id,
        );
    }
    let fetched = m.fetch(3, Duration::from_millis(200), "host:1:dead").await;
    assert_eq!(fetched.jobs.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two reapers at the same moment, then a third one later.
    let (a, b) = tokio::join!(m.reap(3, 100, 0), m.reap(3, 100, 0));
    let c = m.reap(3, 100, 0).await;
    let mut recovered: Vec<String> =
        a.recovered.iter().chain(&b.recovered).chain(&c.recovered).cloned().collect();
    recovered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(recovered, expected, "each job is recovered exactly once");
    assert!(a.dead.is_empty() && b.dead.is_empty() && c.dead.is_empty());

    let mut waiting = m.wait_list().await;
    waiting.sort();
    assert_eq!(waiting, expected, "each job is in waiting once");
    for id in &ids {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Waiting);
        assert_eq!(job.stalls, 1, "{job:#?}");
        assert_eq!(job.history.iter().filter(|h| h.outcome == "stalled").count(), 1, "{job:#?}");
        assert_eq!(job.attempts_made, 0, "a stall gives the attempt back");
    }
    // The old lease's writes are refused now.
    let token = &fetched.jobs[0].token;
    let codes = m.complete(-1, &[(&ids[0], token, "")]).await;
    assert_eq!(codes, vec![quern_common::ScriptCode::LeaseLost]);
}
