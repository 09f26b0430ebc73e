//! The counters the scripts keep per queue: completed jobs with their run and
//! wait times, retries, dead-lettered jobs and stalls, counted through real
//! workers and filed per minute by the reaper.

use std::time::Duration;

use quern_common::{Backoff, JobOptions, JobState};
use quern_producer::{Queue, Resolution};
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{config, eventually};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn completions_retries_dead_letters_and_stalls_are_counted_and_filed_per_minute() {
    let cfg = config();
    let q = Queue::connect(&cfg, "counted").await.unwrap();
    assert_eq!(q.stats().await.unwrap().completed(), 0, "a new queue counts nothing");

    // Two jobs wait before any worker runs: their wait time is at least 300 ms.
    let mut ok = Vec::new();
    for _ in 0..2 {
        ok.push(q.add("ok", &()).await.unwrap().id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.oldest_waiting_age().await.unwrap().unwrap() >= Duration::from_millis(300));

    let builder = Worker::builder(&cfg, "counted")
        .concurrency(4)
        .reap_interval(Duration::from_millis(100))
        .idle_block(Duration::from_secs(1))
        .handler("ok", |_ctx: JobContext, _: ()| async move { Ok::<(), JobError>(()) })
        .handler("slow", |_ctx: JobContext, _: ()| async move {
            tokio::time::sleep(Duration::from_millis(120)).await;
            Ok::<(), JobError>(())
        })
        .handler(
            "bad",
            |_ctx: JobContext, _: ()| async move { Err::<(), JobError>(JobError::retryable("no")) },
        );
    let worker = RunningWorker::start(builder).await;
    ok.push(q.add("slow", &()).await.unwrap().id);
    let twice = JobOptions::new().attempts(2).backoff(Backoff::None);
    let bad = q.add_with("bad", &(), twice).await.unwrap().id;
    for id in &ok {
        wait_for_state(&q, id, JobState::Completed, WAIT).await;
    }
    wait_for_state(&q, &bad, JobState::Failed, WAIT).await;
    assert_eq!(q.oldest_waiting_age().await.unwrap(), None, "nothing waits");
    worker.stop().await;

    // A stall: a lease that runs out and is reaped.
    let stuck = q.add("stuck", &()).await.unwrap().id;
    let mover = Mover::new(&cfg, "counted").await;
    let leased = mover.fetch(1, Duration::from_millis(20), "gone-worker").await;
    assert_eq!(leased.jobs.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mover.reap(5, 100, 0).await.recovered, [stuck]);

    let s = q.stats().await.unwrap();
    assert_eq!(s.completed(), 3);
    assert_eq!((s.retried, s.failed, s.stalled), (1, 1, 1));
    assert_eq!(s.wait.count(), 3);
    assert!(s.run.sum_ms >= 120, "the slow job ran 120 ms: {s:?}");
    assert!(s.wait.sum_ms >= 600, "two jobs waited 300 ms each: {s:?}");
    let waited_long = s
        .wait
        .counts
        .iter()
        .enumerate()
        .filter(|(i, _)| quern_common::stats::BUCKET_BOUNDS_MS.get(*i).is_none_or(|b| *b >= 300));
    assert!(waited_long.map(|(_, n)| n).sum::<u64>() >= 2, "{s:?}");
    let slow_bucket = s
        .run
        .counts
        .iter()
        .enumerate()
        .filter(|(i, _)| quern_common::stats::BUCKET_BOUNDS_MS.get(*i).is_none_or(|b| *b >= 120));
    assert!(slow_bucket.map(|(_, n)| n).sum::<u64>() >= 1, "{s:?}");

    // The series: what the last minutes gained sums to the totals (the
    // reaper files a snapshot once per minute; the current minute is read live).
    let minutes = q.stats_series(Resolution::Minute, 5).await.unwrap();
    assert_eq!(minutes.len(), 5);
    let sum = minutes.iter().fold(quern_common::QueueStats::default(), |a, p| a.plus(&p.stats));
    assert_eq!(sum, s, "{minutes:?}");
    let hours = q.stats_series(Resolution::Hour, 2).await.unwrap();
    let sum = hours.iter().fold(quern_common::QueueStats::default(), |a, p| a.plus(&p.stats));
    assert_eq!(sum, s, "{hours:?}");
}

#[tokio::test]
async fn a_minute_that_ended_is_filed_under_its_own_number_and_slots_out_of_the_window_are_dropped() {
    let cfg = config();
    let q = Queue::connect(&cfg, "filed").await.unwrap();
    let mover = Mover::new(&cfg, "filed").await;
    // The first reap takes the baseline; jobs counted afterwards are filed
    // at the next reap in a later minute. Move the baseline back by hand
    // instead of waiting: 3,000 minutes, as if no reaper had run for two
    // days, leaving behind a slot filed then (now out of the 24 h window).
    mover.reap(5, 100, 0).await;
    let id = q.add("x", &()).await.unwrap().id;
    let leased = mover.fetch(1, Duration::from_secs(30), "w").await;
    let token = leased.jobs[0].token.clone();
    assert_eq!(mover.complete(-1, &[(&id, &token, "")]).await, [quern_common::ScriptCode::Ok]);
    let key = q.keys().stats_minutes();
    let mut conn = quern_tests::raw_connection(&cfg).await;
    let at: u64 = redis::cmd("HGET").arg(&key).arg("at").query_async(&mut conn).await.unwrap();
    let stale = at - 3001;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("at")
        .arg(at - 3000)
        .arg(stale)
        .arg("f=5")
        .query_async(&mut conn)
        .await
        .unwrap();
    mover.reap(5, 100, 0).await;
    // Filed under the minute before the one of this reap (`at`, unless a
    // minute just began).
    let at: u64 = redis::cmd("HGET").arg(&key).arg("at").query_async(&mut conn).await.unwrap();
    let filed: Option<String> =
        redis::cmd("HGET").arg(&key).arg(at - 1).query_async(&mut conn).await.unwrap();
    let filed = quern_common::QueueStats::from_text(&filed.expect("the ended minute is filed"));
    assert_eq!(filed.completed(), 1);
    let left: Option<String> = redis::cmd("HGET").arg(&key).arg(stale).query_async(&mut conn).await.unwrap();
    assert_eq!(left, None, "a slot out of the window is dropped");
    eventually(WAIT, "the series shows it", || async {
        let points = q.stats_series(Resolution::Minute, 3).await.unwrap();
        (points.iter().map(|p| p.stats.completed()).sum::<u64>() == 1).then_some(())
    })
    .await;
}
