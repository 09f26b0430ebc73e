//! Redis goes away for a few seconds under a running scheduler: it keeps
//! retrying, then enqueues the ticks of the outage late (within the misfire
//! grace), each once.

use std::time::Duration;

use quern_scheduler::{Schedule, Scheduler, Schedules, TickOutcome};
use quern_tests::sched::{RunningScheduler, added_events, assert_consecutive_seconds};
use quern_tests::{Persistence, TestRedis, config_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_during_a_redis_outage_are_enqueued_once_afterwards() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url());
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("pulse", "* * * * * *", "q", "beat")).await.unwrap();
    let s = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = s.stop().await;
    let added = added_events(&cfg, "q").await;
    let n = assert_consecutive_seconds(&added);
    assert!(n >= 8, "{added:?}");
    let late =
        events.iter().filter(|e| e.outcome == TickOutcome::Enqueued && e.lateness > Duration::from_secs(1));
    assert!(late.count() >= 2, "the outage's ticks were enqueued late: {events:?}");
}
