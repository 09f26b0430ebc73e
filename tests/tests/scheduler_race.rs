//! Three scheduler processes race on a once-a-second schedule (leader election
//! off, so all three try every tick) while the test keeps deleting the jobs
//! they create: every tick is enqueued exactly once, none is missed.

use std::path::Path;
use std::time::Duration;

use quern_common::QueueKeys;
use quern_scheduler::{Schedule, Schedules};
use quern_tests::sched::{SchedulerProcess, added_events, assert_consecutive_seconds, parse_ticks};
use quern_tests::{config, raw_connection};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_scheduler_proc"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_racing_schedulers_enqueue_every_tick_exactly_once() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("race", "* * * * * *", "raced", "tick")).await.unwrap();
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(SchedulerProcess::start(binary(), &cfg, &["--no-lease"]).await);
    }

    // Trim every job as soon as it appears: the watermark alone must keep a
    // tick from coming back.
    let keys = QueueKeys::new(&cfg.prefix, "raced").unwrap();
    let mut conn = raw_connection(&cfg).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(33);
    let mut trimmed = 0usize;
    while tokio::time::Instant::now() < deadline {
        let ids: Vec<String> =
            redis::cmd("LRANGE").arg(keys.wait()).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
        for id in &ids {
            let _: () = redis::pipe()
                .lrem(keys.wait(), 1, id)
                .del(keys.job(id))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        trimmed += ids.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut enqueued = Vec::new();
    let mut refused = 0;
    let mut by_process = Vec::new();
    for p in procs {
        let ticks = parse_ticks(&p.stop().await);
        let mine: Vec<String> =
            ticks.iter().filter(|(o, _, _)| o == "enqueued").map(|(_, id, _)| id.clone()).collect();
        refused += ticks.iter().filter(|(o, _, _)| o == "stale").count();
        by_process.push(mine.len());
        enqueued.extend(mine);
    }
    let n = assert_consecutive_seconds(&enqueued);
    assert!(n >= 30, "only {n} ticks in 33 s");
    // Redis' own record: one `added` event per created job, no more.
    let mut added = added_events(&cfg, "raced").await;
    added.sort();
    let mut ours = enqueued.clone();
    ours.sort();
    assert_eq!(added, ours, "the queue's added events match the enqueue reports");
    assert!(trimmed >= 25, "jobs were trimmed while racing ({trimmed} of {n})");
    assert!(refused > 0, "the schedulers did race (refusals seen: {refused}, per process {by_process:?})");
}
