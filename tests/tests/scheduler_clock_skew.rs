//! Schedulers whose local clocks are minutes off: due times come from Redis,
//! so no tick is doubled, missed or enqueued early.

use std::time::Duration;

use quern_common::QueueKeys;
use quern_scheduler::{Schedule, Scheduler, Schedules, ShiftedClock, TickOutcome};
use quern_tests::sched::{RunningScheduler, added_events, assert_consecutive_seconds, tick_second};
use quern_tests::{config, raw_connection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_five_minutes_ahead_and_behind_change_nothing() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("skew", "* * * * * *", "skewed", "tick")).await.unwrap();
    let five = Duration::from_secs(300);
    // No leader election: both enqueue, each by its own (wrong) clock if it used one.
    let mut ahead = RunningScheduler::start(
        Scheduler::builder(&cfg).leader_election(false).clock(ShiftedClock::ahead(five)),
    )
    .await;
    let mut behind = RunningScheduler::start(
        Scheduler::builder(&cfg).leader_election(false).clock(ShiftedClock::behind(five)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // They see their skew against Redis (the test Redis runs on this host).
    let (a, b) = (ahead.clock_skew_ms(), behind.clock_skew_ms());
    assert!((a - 300_000).abs() < 2_000, "ahead measured {a} ms");
    assert!((b + 300_000).abs() < 2_000, "behind measured {b} ms");
    let _ = (ahead.events().len(), behind.events().len());
    let events: Vec<_> = ahead.stop().await.into_iter().chain(behind.stop().await).collect();

    let added = added_events(&cfg, "skewed").await;
    let n = assert_consecutive_seconds(&added);
    assert!(n >= 4, "{added:?}");
    let enqueued = events.iter().filter(|e| e.outcome == TickOutcome::Enqueued).count();
    assert_eq!(enqueued, n, "each tick enqueued by exactly one of them");
    // Never early: each job was created (Redis time) at or after its tick.
    let keys = QueueKeys::new(&cfg.prefix, "skewed").unwrap();
    let mut conn = raw_connection(&cfg).await;
    for id in &added {
        let created: i64 =
            redis::cmd("HGET").arg(keys.job(id)).arg("t").query_async(&mut conn).await.unwrap();
        assert!(created >= tick_second(id) * 1000, "{id} created at {created}");
        assert!(created < tick_second(id) * 1000 + 3000, "{id} created 3 s or more late: {created}");
    }
}
