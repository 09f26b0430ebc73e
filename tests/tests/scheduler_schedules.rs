//! Schedules stored in Redis: the client API, the schedules file, and the
//! tick script's guarantees checked directly (at most once, never early).

use std::time::Duration;

use chrono::{DateTime, Utc};
use quern_common::QueueKeys;
use quern_common::QueueScripts;
use quern_common::moves::{Tick, TickAction, TickReply, TickStatus};
use quern_scheduler::{
    Error, MisfirePolicy, OverlapPolicy, RunOutcome, Schedule, Scheduler, Schedules, Upserted,
};
use quern_tests::sched::{RunningScheduler, added_events, job_ids};
use quern_tests::{config, raw_connection};

#[tokio::test]
async fn upsert_list_enable_disable_remove() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    let s = Schedule::new("nightly", "0 2 * * *", "billing", "settle").time_zone("Europe/Berlin");
    assert_eq!(schedules.upsert(&s).await.unwrap(), Upserted::Created);
    assert_eq!(schedules.upsert(&s).await.unwrap(), Upserted::Unchanged);
    let changed = s.clone().overlap(OverlapPolicy::Skip);
    assert_eq!(schedules.upsert(&changed).await.unwrap(), Upserted::Updated);
    assert_eq!(schedules.get("nightly").await.unwrap(), Some(changed.clone()));

    schedules.set_enabled("nightly", false).await.unwrap();
    assert!(!schedules.get("nightly").await.unwrap().unwrap().enabled);
    schedules.set_enabled("nightly", true).await.unwrap();

    let other = Schedule::new("hourly", "0 * * * *", "ops", "ping");
    schedules.upsert(&other).await.unwrap();
    let names: Vec<String> = schedules.list().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["hourly", "nightly"]);

    schedules.remove("hourly").await.unwrap();
    assert!(matches!(schedules.remove("hourly").await, Err(Error::NotFound(n)) if n == "hourly"));
    assert!(matches!(schedules.set_enabled("nope", true).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn bad_schedules_are_refused_with_clear_errors_and_nothing_is_written() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    let cases = [
        (Schedule::new("", "0 2 * * *", "q", "j"), "name is empty"),
        (Schedule::new("a", "0 2 * *", "q", "j"), "invalid cron expression"),
        (Schedule::new("a", "0 25 * * *", "q", "j"), "invalid cron expression"),
        (Schedule::new("a", "0 2 * * *", "q", "j").time_zone("Europe/Atlantis"), "unknown time zone"),
        (Schedule::new("a", "0 2 * * *", "", "j"), "queue"),
    ];
    for (bad, expected) in cases {
        let e = schedules.upsert(&bad).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
        assert!(e.to_string().contains(expected), "{e} should mention {expected:?}");
    }
    // apply() checks all before writing any.
    let good = Schedule::new("good", "* * * * *", "q", "j");
    let bad = Schedule::new("bad", "nope", "q", "j");
    assert!(schedules.apply(&[good, bad], false).await.is_err());
    assert!(schedules.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn schedules_file_is_applied_with_prune() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("old", "* * * * *", "q", "j")).await.unwrap();
    schedules.upsert(&Schedule::new("keep", "0 3 * * *", "q", "j")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.toml");
    std::fs::write(
        &path,
        r#"
[[schedule]]
name = "keep"
cron = "0 3 * * *"
queue = "q"
job = "j"

[[schedule]]
name = "new"
cron = "*/5 * * * * *"
time_zone = "Europe/Berlin"
queue = "q"
job = "j"
misfire = "run_once"
"#,
    )
    .unwrap();
    let report = schedules.apply_file(&path, false).await.unwrap();
    assert_eq!((report.created, report.unchanged), (vec!["new".to_owned()], vec!["keep".to_owned()]));
    assert!(report.pruned.is_empty());
    assert_eq!(schedules.list().await.unwrap().len(), 3);
    let report = schedules.apply_file(&path, true).await.unwrap();
    assert_eq!(report.pruned, ["old"]);
    let new = schedules.get("new").await.unwrap().unwrap();
    assert_eq!(new.misfire, MisfirePolicy::RunOnce);

    std::fs::write(&path, "[[schedule]]\nname = \"x\"\ncron = \"0 0 * *\"\nqueue = \"q\"\njob = \"j\"\n")
        .unwrap();
    let e = schedules.apply_file(&path, true).await.unwrap_err().to_string();
    assert!(e.contains("invalid cron expression \"0 0 * *\""), "{e}");
    assert_eq!(schedules.list().await.unwrap().len(), 2, "a bad file changes nothing");
}

/// Run the tick script for tick `tick_ms` of schedule `name` on `queue`.
async fn tick(cfg: &quern_common::RedisConfig, queue: &str, name: &str, tick_ms: i64) -> TickReply {
    let keys = QueueKeys::new(&cfg.prefix, queue).unwrap();
    let state = keys.custom(&format!("sched:{name}"));
    let job_id = quern_scheduler::tick_job_id(name, DateTime::<Utc>::from_timestamp_millis(tick_ms).unwrap());
    let action = TickAction::Enqueue {
        job_id: &job_id,
        name: "j",
        payload: "{}",
        options: "",
        priority: 0,
        delay_ms: 0,
        skip_overlap: false,
    };
    let scripts = QueueScripts::new(keys, 100);
    scripts.run(&mut raw_connection(cfg).await, &Tick { state_key: &state, tick_ms, action }).await.unwrap()
}

#[tokio::test]
async fn tick_script_enqueues_a_tick_once_even_after_its_job_is_gone_and_never_early() {
    let cfg = config();
    let mut conn = raw_connection(&cfg).await;
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let past = (secs - 10) * 1000;
    let first = tick(&cfg, "q", "s", past).await;
    assert_eq!(first.status, TickStatus::Added);
    assert_eq!(
        first.detail,
        quern_scheduler::tick_job_id("s", DateTime::from_timestamp_millis(past).unwrap())
    );
    // The job is trimmed/removed: the tick still cannot come back.
    let keys = QueueKeys::new(&cfg.prefix, "q").unwrap();
    let _: () =
        redis::pipe().del(keys.job(&first.detail)).del(keys.wait()).query_async(&mut conn).await.unwrap();
    for t in [past, past - 1000] {
        let again = tick(&cfg, "q", "s", t).await;
        assert_eq!(again.status, TickStatus::Stale, "tick {t}");
    }
    // A tick Redis does not consider due yet is refused (a fast local clock).
    let future = (secs + 120) * 1000;
    let early = tick(&cfg, "q", "s", future).await;
    assert_eq!(early.status, TickStatus::Early);
    assert_eq!(job_ids(&cfg, "q").await, Vec::<String>::new());
    assert_eq!(added_events(&cfg, "q").await.len(), 1);
}

#[tokio::test]
async fn a_running_scheduler_enqueues_each_second_and_reports_status() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules
        .upsert(
            &Schedule::new("pulse", "* * * * * *", "beats", "beat")
                .payload(serde_json::json!({"n": 1}))
                .misfire_grace(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let running = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_secs(2))).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let events = running.stop().await;
    let ids = job_ids(&cfg, "beats").await;
    assert!(ids.len() >= 3, "{ids:?}");
    assert_eq!(ids.len(), events.len(), "{events:?}");
    let ticks: Vec<i64> = ids
        .iter()
        .map(|id| {
            let t = id.strip_prefix("pulse@").expect("id is <schedule>@<instant>");
            DateTime::parse_from_rfc3339(t).unwrap().timestamp()
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "consecutive seconds: {ids:?}");
    assert!(events.iter().all(|e| e.lateness < Duration::from_secs(2)), "{events:?}");

    let status = schedules.status().await.unwrap();
    assert_eq!(status.len(), 1);
    let st = &status[0];
    assert_eq!(st.last_job_id.as_deref(), ids.last().map(String::as_str));
    assert_eq!(st.last_run, Some(RunOutcome::Pending));
    assert_eq!(st.runs, ids.len() as u64);
    assert!(st.next_fire.unwrap() > st.last_tick.unwrap());
    assert!(!st.flagged(), "{:?}", st.flags);
}
