//! The leader lease: one scheduler enqueues, a standby takes over within the
//! lease when the leader dies (no tick lost or doubled), and a leader that
//! loses its lease stops enqueuing at once.

use std::path::Path;
use std::time::{Duration, Instant};

use quern_scheduler::{Schedule, Scheduler, Schedules, TickOutcome};
use quern_tests::sched::{RunningScheduler, SchedulerProcess, added_events, assert_consecutive_seconds};
use quern_tests::{config, eventually, raw_connection};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_scheduler_proc"))
}

const LEASE_MS: u64 = 1500;

fn enqueued(p: &SchedulerProcess) -> Vec<String> {
    p.ticks().into_iter().filter(|(o, _, _)| o == "enqueued").map(|(_, id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_the_lease_after_kill_9_and_no_tick_is_lost_or_doubled() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("beat", "* * * * * *", "hb", "beat")).await.unwrap();
    let lease = format!("--lease-ms={LEASE_MS}");
    let a = SchedulerProcess::start(binary(), &cfg, &[&lease, "--id=a"]).await;
    eventually(Duration::from_secs(5), "a leads", || async { a.is_leader().then_some(()) }).await;
    let b = SchedulerProcess::start(binary(), &cfg, &[&lease, "--id=b"]).await;
    eventually(Duration::from_secs(5), "a enqueues 3 ticks", || async {
        (enqueued(&a).len() >= 3).then_some(())
    })
    .await;
    assert!(!b.is_leader() && enqueued(&b).is_empty(), "the standby stays quiet: {:?}", b.lines());
    assert_eq!(schedules.leader().await.unwrap().as_deref(), Some("a"));

    let a_lines = a.kill9().await;
    let killed = Instant::now();
    eventually(Duration::from_secs(5), "b takes over", || async { b.is_leader().then_some(()) }).await;
    let takeover = b.when("leader").unwrap().duration_since(killed);
    assert!(takeover <= Duration::from_millis(LEASE_MS + 500), "takeover took {takeover:?}");
    eventually(Duration::from_secs(6), "b enqueues 3 ticks", || async {
        (enqueued(&b).len() >= 3).then_some(())
    })
    .await;
    let b_lines = b.stop().await;

    // Redis' record of created jobs: every second from the first to the last, once.
    let added = added_events(&cfg, "hb").await;
    let n = assert_consecutive_seconds(&added);
    assert!(n >= 6, "{added:?}");
    // Each reported enqueue is in that record, and no tick was reported twice.
    let mut reported: Vec<String> = quern_tests::sched::parse_ticks(&a_lines)
        .into_iter()
        .chain(quern_tests::sched::parse_ticks(&b_lines))
        .filter(|(o, _, _)| o == "enqueued")
        .map(|(_, id, _)| id)
        .collect();
    reported.sort();
    let before = reported.len();
    reported.dedup();
    assert_eq!(before, reported.len(), "a tick reported twice: {reported:?}");
    assert!(reported.iter().all(|id| added.contains(id)));
    // b started right after a's last tick: the handover lost nothing.
    let b_first = quern_tests::sched::parse_ticks(&b_lines)
        .into_iter()
        .find(|(o, _, _)| o == "enqueued")
        .map(|(_, id, _)| quern_tests::sched::tick_second(&id))
        .unwrap();
    let a_last = quern_tests::sched::parse_ticks(&a_lines)
        .into_iter()
        .filter(|(o, _, _)| o == "enqueued")
        .map(|(_, id, _)| quern_tests::sched::tick_second(&id))
        .max()
        .unwrap();
    assert!(b_first <= a_last + 2, "a's last {a_last}, b's first {b_first}: {b_lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_hands_the_lease_over_quickly() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("beat", "* * * * * *", "hb", "beat")).await.unwrap();
    let lease = format!("--lease-ms={LEASE_MS}");
    let a = SchedulerProcess::start(binary(), &cfg, &[&lease]).await;
    eventually(Duration::from_secs(5), "a leads", || async { a.is_leader().then_some(()) }).await;
    let b = SchedulerProcess::start(binary(), &cfg, &[&lease]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    a.stop().await;
    eventually(Duration::from_secs(3), "b takes over", || async { b.is_leader().then_some(()) }).await;
    assert!(b.when("leader").unwrap().duration_since(stopped) < Duration::from_millis(LEASE_MS));
    b.stop().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_enqueuing_at_once() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("beat", "* * * * * *", "hb", "beat")).await.unwrap();
    let mut s =
        RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_millis(LEASE_MS))).await;
    eventually(Duration::from_secs(5), "it leads and enqueues", || {
        let ok = s.is_leader() && s.events().iter().any(|e| e.outcome == TickOutcome::Enqueued);
        async move { ok.then_some(()) }
    })
    .await;
    // Someone else holds the lease now (as after a long pause of this process).
    let mut conn = raw_connection(&cfg).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:scheduler:leader", cfg.prefix))
        .arg("thief/1")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stolen = Instant::now();
    eventually(Duration::from_secs(2), "it notices", || {
        let led = s.is_leader();
        async move { (!led).then_some(()) }
    })
    .await;
    assert!(stolen.elapsed() <= Duration::from_millis(LEASE_MS), "noticed after {:?}", stolen.elapsed());
    let count = s.events().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.events().len(), count, "no tick handled without the lease");
    assert!(!s.is_leader());
    assert_eq!(schedules.leader().await.unwrap().as_deref(), Some("thief"));
    s.stop().await;
}
