//! Downtime, then a restart: each misfire policy does what it says, and every
//! second of the schedule is accounted for (enqueued once, or counted missed).

use std::time::Duration;

use quern_scheduler::{Flag, MisfirePolicy, Schedule, Scheduler, Schedules, TickEvent, TickOutcome};
use quern_tests::config;
use quern_tests::sched::{RunningScheduler, tick_second};

const GRACE: Duration = Duration::from_millis(1500);

/// Run a scheduler 2.5 s, stop it for 5 s, run it 2.5 s again.
/// Returns the events of the second run and the status afterwards.
async fn outage(policy: MisfirePolicy) -> (Vec<TickEvent>, Vec<TickEvent>, Schedules) {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules
        .upsert(&Schedule::new("m", "* * * * * *", "mq", "tick").misfire(policy).misfire_grace(GRACE))
        .await
        .unwrap();
    let builder = || Scheduler::builder(&cfg).lease(Duration::from_secs(1));
    let first = RunningScheduler::start(builder()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = first.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = RunningScheduler::start(builder()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = second.stop().await;
    (before, after, schedules)
}

/// Every second from the first tick to the last is enqueued once or missed.
/// Returns (late enqueues past the grace, ticks counted missed).
fn account(before: &[TickEvent], after: &[TickEvent]) -> (usize, u64) {
    let all: Vec<&TickEvent> = before.iter().chain(after).collect();
    let mut enqueued: Vec<i64> =
        all.iter().filter(|e| e.outcome == TickOutcome::Enqueued).map(|e| tick_second(&e.job_id)).collect();
    enqueued.sort();
    let n = enqueued.len();
    enqueued.dedup();
    assert_eq!(n, enqueued.len(), "a tick enqueued twice");
    let missed: u64 = after
        .iter()
        .filter_map(|e| match e.outcome {
            TickOutcome::Missed { ticks } => Some(ticks),
            _ => None,
        })
        .sum();
    let span = (enqueued.last().unwrap() - enqueued.first().unwrap() + 1) as u64;
    assert_eq!(n as u64 + missed, span, "enqueued {enqueued:?}, missed {missed}");
    let late: Vec<&TickEvent> =
        after.iter().filter(|e| e.outcome == TickOutcome::Enqueued && e.caught_up).collect();
    assert!(late.iter().all(|e| e.lateness >= GRACE), "caught-up ticks were past their grace: {late:?}");
    let on_time = all.iter().filter(|e| e.outcome == TickOutcome::Enqueued && !e.caught_up);
    assert!(on_time.into_iter().all(|e| e.lateness < GRACE + Duration::from_millis(500)));
    (late.len(), missed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_drops_missed_ticks_and_flags_them() {
    let (before, after, schedules) = outage(MisfirePolicy::Skip).await;
    let (late, missed) = account(&before, &after);
    assert_eq!(late, 0);
    assert!(missed >= 2, "{after:?}");
    let st = &schedules.status().await.unwrap()[0];
    assert_eq!(st.missed_ticks, missed);
    assert!(st.flags.contains(&Flag::Missed { ticks: missed }), "{:?}", st.flags);
    schedules.acknowledge_missed("m").await.unwrap();
    assert!(!schedules.status().await.unwrap()[0].flagged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_enqueues_the_latest_missed_tick_only() {
    let (before, after, _) = outage(MisfirePolicy::RunOnce).await;
    let (late, missed) = account(&before, &after);
    assert_eq!(late, 1, "{after:?}");
    assert!(missed >= 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_enqueues_up_to_its_bound() {
    let (before, after, _) = outage(MisfirePolicy::CatchUp { max: 2 }).await;
    let (late, missed) = account(&before, &after);
    assert_eq!(late, 2, "{after:?}");
    assert!(missed >= 1, "{after:?}");
    // Caught-up ticks go out oldest first.
    let late_ticks: Vec<i64> = after
        .iter()
        .filter(|e| e.outcome == TickOutcome::Enqueued && e.caught_up)
        .map(|e| tick_second(&e.job_id))
        .collect();
    assert!(late_ticks[0] < late_ticks[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_with_room_for_all_misses_nothing() {
    let (before, after, schedules) = outage(MisfirePolicy::CatchUp { max: 100 }).await;
    let (late, missed) = account(&before, &after);
    assert_eq!(missed, 0);
    assert!(late >= 2, "{after:?}");
    assert!(!schedules.status().await.unwrap()[0].flagged());
}
