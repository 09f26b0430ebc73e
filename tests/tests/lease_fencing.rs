//! Leases with fencing: a worker that lost its lease gets a typed "lease lost"
//! answer, its write is discarded and logged; renewing checks the token; one
//! timer renews every lease a worker holds, in one call, and tells a running
//! handler when its lease is gone (`JobContext::is_lease_lost`); a lease can be as
//! short as about one second (or less) and still hold a long job.

use quern_common::FailureKind;
use std::path::Path;
use std::time::Duration;

use quern_common::{JobState, ScriptCode};
use quern_producer::Queue;
use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings, read_ledger};
use quern_tests::moves::Mover;
use quern_tests::workers::RunningWorker;
use quern_tests::{RedisConfig, TestRedis, config, config_for, eventually};
use quern_worker::{JobContext, JobError, Worker};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chaos_worker"))
}

#[tokio::test]
async fn stale_tokens_get_lease_lost_and_change_nothing() {
    let cfg = config();
    let q = Queue::connect(&cfg, "fence").await.unwrap();
    let m = Mover::new(&cfg, "fence").await;
    let id = q.add("chaos", &ChaosJob { sleep_ms: 0, fail_attempts: 0 }).await.unwrap().id;

    // Lease 1 runs out; the reaper recovers the job; lease 2 takes it.
    let first = m.fetch(1, Duration::from_millis(100), "host:1:old").await.jobs.remove(0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(m.reap(3, 100, 0).await.recovered, vec![id.clone()]);
    let second = m.fetch(1, Duration::from_secs(30), "host:2:new").await.jobs.remove(0);
    assert_ne!(first.token, second.token);
    let lease_before = m.zset(m.keys().active()).await;

    // Every write of the old lease is refused with the typed code, and changes nothing.
    assert_eq!(m.renew(Duration::from_secs(60), &[(&id, &first.token)]).await, vec![id.clone()]);
    assert_eq!(m.zset(m.keys().active()).await, lease_before, "a stale renew must not extend the lease");
    assert_eq!(m.complete(-1, &[(&id, &first.token, "\"old\"")]).await, vec![ScriptCode::LeaseLost]);
    assert_eq!(m.fail(&id, &first.token, "old failure", FailureKind::Error, 0).await, ScriptCode::LeaseLost);
    assert_eq!(m.release(&[(&id, &first.token)]).await, 0);
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Active);
    assert_eq!(job.worker.as_deref(), Some("host:2:new"));
    assert_eq!(job.result, None);
    assert_eq!(job.last_error, None);

    // The current lease renews, and completes.
    assert!(m.renew(Duration::from_secs(60), &[(&id, &second.token)]).await.is_empty());
    let renewed = m.zset(m.keys().active()).await;
    assert!(renewed[0].1 > lease_before[0].1 + 20_000.0, "the renew extended the lease");
    assert_eq!(m.complete(-1, &[(&id, &second.token, "\"new\"")]).await, vec![ScriptCode::Ok]);
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.result.as_deref(), Some("\"new\""));
    // Even once completed, the old token cannot touch it.
    assert_eq!(m.complete(-1, &[(&id, &first.token, "\"old\"")]).await, vec![ScriptCode::LeaseLost]);
    assert_eq!(q.job(&id).await.unwrap().unwrap().result.as_deref(), Some("\"new\""));
}

/// A worker frozen (SIGSTOP: a long GC pause, a suspended VM) past its lease
/// wakes up to find the job taken over: its result is discarded, it says so
/// in its log, and the job completes exactly once, from the new lease.
#[tokio::test]
async fn a_frozen_worker_loses_its_lease_and_its_late_result_is_discarded() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let mut s = WorkerSettings::new(cfg.url.clone(), "frozen", dir.path().join("ledger"));
    s.prefix = Some(cfg.prefix.clone());
    s.lease = Duration::from_millis(1000);
    s.reap_interval = Duration::from_millis(200);
    let q = Queue::connect(&cfg, "frozen").await.unwrap();

    let frozen = WorkerProcess::start(binary(), &s, &dir.path().join("frozen.log")).await.unwrap();
    let id = q.add("chaos", &ChaosJob { sleep_ms: 1500, fail_attempts: 0 }).await.unwrap().id;
    // Started means leased and its handler running (ledger line written): a
    // freeze between fetch and handler start would put its run after the rescuer's.
    eventually(Duration::from_secs(10), "the job to start on the first worker", || async {
        let job = q.job(&id).await.unwrap()?;
        let running = read_ledger(&s.ledger).ok()?.iter().any(|e| e.pid == frozen.pid());
        (job.worker.as_deref() == Some(frozen.worker_id()) && running).then_some(())
    })
    .await;
    frozen.signal("STOP").unwrap();

    let rescuer = WorkerProcess::start(binary(), &s, &dir.path().join("rescuer.log")).await.unwrap();
    let job = eventually(Duration::from_secs(10), "the job to complete on the rescuer", || async {
        let job = q.job(&id).await.unwrap()?;
        (job.state == JobState::Completed).then_some(job)
    })
    .await;
    assert_eq!(job.worker.as_deref(), Some(rescuer.worker_id()));

    // Wake the frozen worker: its handler finishes, its acknowledgement is refused.
    frozen.signal("CONT").unwrap();
    let log = eventually(Duration::from_secs(10), "the frozen worker to log its lost lease", || async {
        let log = frozen.log();
        log.contains("lease lost").then_some(log)
    })
    .await;
    // Give its acknowledgement time to arrive (its handler slept 1.5 s).
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let log = frozen.log() + &log;
    assert!(log.contains(&id), "the log names the job: {log}");

    let after = q.job(&id).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Completed);
    assert_eq!(after.finished_at_ms, job.finished_at_ms, "the late acknowledgement changed nothing");
    let completed: Vec<String> = redis::AsyncCommands::lrange(
        &mut quern_tests::raw_connection(&cfg).await,
        q.keys().completed(),
        0,
        -1,
    )
    .await
    .unwrap();
    assert_eq!(completed, vec![id.clone()], "completed exactly once");

    let runs = read_ledger(&s.ledger).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].pid, frozen.pid());
    assert_eq!(runs[1].pid, rescuer.pid());
    let stalled = after.history.iter().find(|a| a.outcome == "stalled").expect("a stalled entry");
    assert_eq!(stalled.token.as_deref(), Some(runs[0].token.as_str()));
    assert_eq!(after.history.last().unwrap().token.as_deref(), Some(runs[1].token.as_str()));
    frozen.kill9().await.unwrap();
    rescuer.kill9().await.unwrap();
}

/// Script calls so far on a private server (`FCALL` and `EVALSHA`), from
/// `INFO commandstats`.
async fn script_calls(cfg: &RedisConfig) -> u64 {
    let mut conn = quern_tests::raw_connection(cfg).await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    quern_tests::script_calls(&info)
}

#[tokio::test]
async fn one_timer_renews_every_held_lease_in_one_call_and_a_short_lease_holds_a_long_job() {
    let server = TestRedis::start();
    let cfg = config_for(&server.url());
    let q = Queue::connect(&cfg, "held").await.unwrap();
    let lease = Duration::from_millis(600);
    let builder = Worker::builder(&cfg, "held")
        .concurrency(20)
        .lease(lease)
        .reap_interval(Duration::from_secs(1))
        .idle_block(Duration::from_secs(5))
        .handler("long", |ctx: JobContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if ctx.is_lease_lost() {
                return Err(JobError::retryable("lease lost while running"));
            }
            Ok(())
        });
    let worker = RunningWorker::start(builder).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(q.add("long", &4000u64).await.unwrap().id);
    }
    eventually(Duration::from_secs(5), "20 jobs active", || async {
        (q.counts().await.unwrap().active == 20).then_some(())
    })
    .await;

    // While the 20 jobs run, count script calls: renewals (one per third of
    // the lease) and reaper passes (every second), nothing per job.
    let window = Duration::from_secs(2);
    let before = script_calls(&cfg).await;
    tokio::time::sleep(window).await;
    let calls = script_calls(&cfg).await - before;
    let renew_ticks = window.as_millis() / (lease.as_millis() / 3);
    let reap_ticks = window.as_millis() / 1000;
    println!(
        "lease renewal: {calls} script calls in {window:?} for 20 held leases ({renew_ticks} renew ticks)"
    );
    assert!(
        calls as u128 <= renew_ticks + reap_ticks + 4,
        "{calls} script calls in {window:?}: leases are not renewed in one call per tick"
    );
    // A 600 ms lease held 4 s jobs: no stall, one attempt each.
    for id in &ids {
        let job = eventually(Duration::from_secs(10), "the long job to complete", || async {
            let job = q.job(id).await.unwrap()?;
            (job.state == JobState::Completed).then_some(job)
        })
        .await;
        assert_eq!(job.stalls, 0, "{job:#?}");
        assert_eq!(job.history.len(), 1, "{job:#?}");
    }
    worker.stop().await;
}

/// A running handler learns that its lease was taken over (here: another
/// lease token written over its own, as a takeover would) within one renewal
/// interval, so a long handler can stop early; its result is then discarded.
#[tokio::test]
async fn a_running_handler_sees_its_lease_lost_within_one_renewal() {
    let cfg = config();
    let q = Queue::connect(&cfg, "taken").await.unwrap();
    let lease = Duration::from_millis(900);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let builder =
        Worker::builder(&cfg, "taken").lease(lease).handler("watch", move |ctx: JobContext, _: ()| {
            let seen = seen_tx.clone();
            async move {
                let started = std::time::Instant::now();
                while !ctx.is_lease_lost() {
                    if started.elapsed() > Duration::from_secs(10) {
                        return Err(JobError::permanent("never told about the lost lease"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = seen.send(started.elapsed());
                Ok("late result")
            }
        });
    let worker = RunningWorker::start(builder).await;
    let id = q.add("watch", &()).await.unwrap().id;
    let job = eventually(Duration::from_secs(5), "the job to run", || async {
        let job = q.job(&id).await.unwrap()?;
        (job.state == JobState::Active).then_some(job)
    })
    .await;
    let mut conn = quern_tests::raw_connection(&cfg).await;
    let taken_at = std::time::Instant::now();
    let _: () = redis::AsyncCommands::hset(&mut conn, q.keys().job(&id), "tk", "taken-over").await.unwrap();
    let _ = seen_rx.recv().await.expect("the handler saw the lost lease");
    let noticed = taken_at.elapsed();
    println!(
        "lease fencing: the handler saw its lease lost {noticed:?} after the takeover (lease {lease:?})"
    );
    assert!(noticed < lease / 3 + Duration::from_millis(400), "noticed after {noticed:?}");
    // Its result is refused: the job stays as the new holder left it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = q.job(&id).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Active);
    assert_eq!(after.result, None);
    assert_eq!(after.started_at_ms, job.started_at_ms);
    worker.stop().await;
}
