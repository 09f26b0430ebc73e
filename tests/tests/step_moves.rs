//! The scripts of durable steps and sleeps (`step.lua`, `sleep.lua`, and
//! `dead_letter.lua`'s retry from a step), driven one call at a time and
//! checked by reading the job's hash.

use std::time::Duration;

use quern_common::FailureKind;
use quern_common::moves::{
    DeadLetter, DeadLetterAction, Sleep, Step, StepEnd, StepLimits, StepReply, WakeAt,
};
use quern_common::steps::{StepOutcome, StepRecord};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;
use redis::AsyncCommands;

const LEASE: Duration = Duration::from_secs(30);
const LIMITS: StepLimits = StepLimits { max_steps: 100, max_bytes: 100_000 };

/// A queue with one job, leased: (mover, queue, id, token).
async fn leased_job(queue: &str) -> (Mover, Queue, String, String) {
    let cfg = config();
    let q = Queue::connect(&cfg, queue).await.expect("connect");
    let m = Mover::new(&cfg, queue).await;
    let id = q.add("flow", &serde_json::json!({})).await.unwrap().id;
    let leased = m.fetch(1, LEASE, "w1").await;
    assert_eq!(leased.ids(), std::slice::from_ref(&id));
    let token = leased.jobs[0].token.clone();
    (m, q, id, token)
}

async fn step(m: &Mover, id: &str, token: &str, key: &str, end: StepEnd, value: &str) -> StepReply {
    m.run(&Step { id, token, key, end, took_ms: 5, value, limits: LIMITS }).await
}

#[tokio::test]
async fn a_step_is_stored_in_the_job_hash_with_its_attempt_and_an_event() {
    let (m, _q, id, token) = leased_job("steps-store").await;
    let before = m.now_ms().await;
    assert_eq!(
        step(&m, &id, &token, "charge#1", StepEnd::Ok, r#"{"paid":12}"#).await,
        StepReply::Stored("1".into())
    );
    assert_eq!(step(&m, &id, &token, "charge#2", StepEnd::Ok, "7").await, StepReply::Stored("2".into()));
    let h = m.hash(&id).await;
    let record = StepRecord::parse("charge#1", &h["s:charge#1"]).unwrap();
    assert_eq!((record.seq, record.attempt, record.took_ms), (1, 1, 5));
    assert_eq!(record.outcome, StepOutcome::Ok);
    assert_eq!(record.value, r#"{"paid":12}"#);
    assert!(record.started_at_ms + 5 >= before && record.started_at_ms <= m.now_ms().await, "Redis time");
    assert_eq!((h["sx"].as_str(), h["sn"].as_str()), ("2", "2"));
    let bytes: usize = h["sb"].parse().unwrap();
    assert_eq!(
        bytes,
        "s:charge#1".len() + h["s:charge#1"].len() + "s:charge#2".len() + h["s:charge#2"].len()
    );
    let events = m.event_entries().await;
    let steps: Vec<_> = events.iter().filter(|e| e["ev"] == "step").collect();
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0]["id"].as_str(), steps[0]["step"].as_str()), (id.as_str(), "charge#1"));
    assert_eq!(steps[0]["outcome"], "ok");
}

#[tokio::test]
async fn a_stale_worker_cannot_store_a_step_after_its_job_was_taken_over() {
    let cfg = config();
    let q = Queue::connect(&cfg, "steps-stale").await.unwrap();
    let m = Mover::new(&cfg, "steps-stale").await;
    let id = q.add("flow", &serde_json::json!({})).await.unwrap().id;
    let stale = m.fetch(1, Duration::from_millis(1), "w1").await.jobs[0].token.clone();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(m.reap(5, 100, 0).await.recovered, std::slice::from_ref(&id));
    let fresh = m.fetch(1, LEASE, "w2").await.jobs[0].token.clone();
    assert_eq!(step(&m, &id, &stale, "a#1", StepEnd::Ok, "1").await, StepReply::LeaseLost);
    assert!(!m.hash(&id).await.contains_key("s:a#1"), "the stale write stored nothing");
    assert_eq!(step(&m, &id, &fresh, "a#1", StepEnd::Ok, "2").await, StepReply::Stored("1".into()));
    assert_eq!(step(&m, "nope", &fresh, "a#1", StepEnd::Ok, "2").await, StepReply::NotFound);
}

#[tokio::test]
async fn a_finished_step_is_never_replaced_but_a_failed_one_is() {
    let (m, _q, id, token) = leased_job("steps-replace").await;
    step(&m, &id, &token, "a#1", StepEnd::Ok, "1").await;
    match step(&m, &id, &token, "a#1", StepEnd::Ok, "2").await {
        StepReply::AlreadyStored(raw) => assert_eq!(StepRecord::parse("a#1", &raw).unwrap().value, "1"),
        other => panic!("expected the stored record, got {other:?}"),
    }
    assert_eq!(
        step(&m, &id, &token, "b#1", StepEnd::Failed, "card declined").await,
        StepReply::Stored("2".into())
    );
    assert_eq!(step(&m, &id, &token, "b#1", StepEnd::Ok, "3").await, StepReply::Stored("3".into()));
    let h = m.hash(&id).await;
    assert_eq!(StepRecord::parse("b#1", &h["s:b#1"]).unwrap().outcome, StepOutcome::Ok);
    assert_eq!(h["sn"], "2", "the failed record was replaced, not added");
}

#[tokio::test]
async fn step_limits_refuse_a_step_over_the_count_or_the_size_and_store_nothing() {
    let (m, _q, id, token) = leased_job("steps-limits").await;
    let two = StepLimits { max_steps: 2, max_bytes: 1000 };
    for key in ["a#1", "a#2"] {
        let r = m
            .run(&Step { id: &id, token: &token, key, end: StepEnd::Ok, took_ms: 0, value: "1", limits: two })
            .await;
        assert!(matches!(r, StepReply::Stored(_)), "{r:?}");
    }
    let third = m
        .run(&Step {
            id: &id,
            token: &token,
            key: "a#3",
            end: StepEnd::Ok,
            took_ms: 0,
            value: "1",
            limits: two,
        })
        .await;
    assert!(matches!(&third, StepReply::Limit(why) if why.contains("2 durable steps")), "{third:?}");
    let big = "x".repeat(2000);
    let wide = StepLimits { max_steps: 10, max_bytes: 1000 };
    let r = m
        .run(&Step {
            id: &id,
            token: &token,
            key: "b#1",
            end: StepEnd::Ok,
            took_ms: 0,
            value: &big,
            limits: wide,
        })
        .await;
    assert!(matches!(&r, StepReply::Limit(why) if why.contains("at most 1000")), "{r:?}");
    let h = m.hash(&id).await;
    assert!(!h.contains_key("s:a#3") && !h.contains_key("s:b#1"));
    assert_eq!(h["sn"], "2");
}

#[tokio::test]
async fn a_sleep_moves_the_job_to_delayed_without_spending_an_attempt_or_keeping_its_lease() {
    let (m, _q, id, token) = leased_job("steps-sleep").await;
    let before = m.now_ms().await;
    let r = m
        .run(&Sleep { id: &id, token: &token, key: "~sleep#1", wake: WakeAt::In(60_000), limits: LIMITS })
        .await;
    let StepReply::Sleeping(wake) = r else { panic!("expected sleeping, got {r:?}") };
    assert!(wake >= before + 60_000 && wake <= m.now_ms().await + 60_000, "wake time by Redis' clock");
    let h = m.hash(&id).await;
    assert_eq!((h["s"].as_str(), h["tk"].as_str(), h["at"].as_str()), ("delayed", "", "0"));
    let record = StepRecord::parse("~sleep#1", &h["s:~sleep#1"]).unwrap();
    assert_eq!((&record.outcome, record.wake_at_ms()), (&StepOutcome::Sleep, Some(wake)));
    assert_eq!(m.zset(m.keys().delayed()).await, [(id.clone(), wake as f64)]);
    assert!(m.zset_ids(m.keys().active()).await.is_empty(), "the lease is given up");
    let events = m.event_entries().await;
    let sleeping = events.iter().find(|e| e["ev"] == "sleeping").expect("a sleeping event");
    assert_eq!(
        (sleeping["id"].as_str(), sleeping["until"].as_str()),
        (id.as_str(), wake.to_string().as_str())
    );
    assert_eq!(
        step(&m, &id, &token, "after#1", StepEnd::Ok, "1").await,
        StepReply::LeaseLost,
        "the lease is over"
    );
    let again =
        m.run(&Sleep { id: &id, token: &token, key: "~sleep#2", wake: WakeAt::In(1), limits: LIMITS }).await;
    assert_eq!(again, StepReply::LeaseLost);
}

#[tokio::test]
async fn a_sleeping_job_runs_again_at_its_wake_time_as_the_same_attempt() {
    let (m, _q, id, token) = leased_job("steps-wake").await;
    let r = m
        .run(&Sleep { id: &id, token: &token, key: "~sleep#1", wake: WakeAt::In(300), limits: LIMITS })
        .await;
    assert!(matches!(r, StepReply::Sleeping(_)), "{r:?}");
    assert!(m.fetch(1, LEASE, "w1").await.jobs.is_empty(), "asleep until its wake time");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let woken = m.fetch(1, LEASE, "w2").await;
    assert_eq!(woken.ids(), std::slice::from_ref(&id));
    assert_eq!(woken.jobs[0].attempt, 1, "the sleep spent no attempt");
    let r = m
        .run(&Sleep {
            id: &id,
            token: &woken.jobs[0].token,
            key: "~sleep#1",
            wake: WakeAt::In(300),
            limits: LIMITS,
        })
        .await;
    assert!(matches!(r, StepReply::AlreadyStored(_)), "a sleep is recorded once: {r:?}");
}

#[tokio::test]
async fn a_sleep_whose_wake_time_has_passed_keeps_the_job_running() {
    let (m, _q, id, token) = leased_job("steps-awake").await;
    let r = m
        .run(&Sleep { id: &id, token: &token, key: "~sleep#1", wake: WakeAt::At(1000), limits: LIMITS })
        .await;
    assert_eq!(r, StepReply::Awake(1000));
    let h = m.hash(&id).await;
    assert_eq!((h["s"].as_str(), h["tk"].as_str()), ("active", token.as_str()));
    assert!(h.contains_key("s:~sleep#1"));
}

#[tokio::test]
async fn a_dead_letter_retry_keeps_finished_steps_and_from_a_step_forgets_it_and_those_after() {
    let (m, q, id, token) = leased_job("steps-dlq").await;
    for key in ["a#1", "b#1", "c#1"] {
        step(&m, &id, &token, key, StepEnd::Ok, "1").await;
    }
    m.fail(&id, &token, "boom", FailureKind::Permanent, -1).await;
    let ids = [id.as_str()];
    let retry = |from_step| DeadLetter { action: DeadLetterAction::Retry, batch: 10, ids: &ids, from_step };
    assert!(m.run(&retry(Some("zzz#1"))).await.is_empty(), "a job without that step is skipped");
    assert_eq!(q.job(&id).await.unwrap().unwrap().state, quern_common::JobState::Failed);
    assert_eq!(m.run(&retry(Some("b#1"))).await, std::slice::from_ref(&id));
    let h = m.hash(&id).await;
    assert_eq!(h["s"], "waiting");
    assert!(h.contains_key("s:a#1") && !h.contains_key("s:b#1") && !h.contains_key("s:c#1"));
    assert_eq!(h["sn"], "1");
    assert_eq!(h["sb"].parse::<usize>().unwrap(), "s:a#1".len() + h["s:a#1"].len());
    let job = q.job(&id).await.unwrap().unwrap();
    assert!(job.history.last().unwrap().error.as_deref().unwrap().contains("from step b#1"));

    // A plain retry keeps them all.
    let token = m.fetch(1, LEASE, "w1").await.jobs[0].token.clone();
    step(&m, &id, &token, "b#1", StepEnd::Ok, "2").await;
    m.fail(&id, &token, "boom", FailureKind::Permanent, -1).await;
    assert_eq!(m.run(&retry(None)).await, std::slice::from_ref(&id));
    let steps: Vec<String> = q.job(&id).await.unwrap().unwrap().steps.iter().map(StepRecord::key).collect();
    assert_eq!(steps, ["a#1", "b#1"]);
}

#[tokio::test]
async fn a_job_deleted_on_completion_leaves_no_step_record_behind() {
    let (m, _q, id, token) = leased_job("steps-gone").await;
    step(&m, &id, &token, "a#1", StepEnd::Ok, "1").await;
    m.complete(0, &[(&id, &token, "")]).await;
    let exists: bool = m.conn().exists(m.keys().job(&id)).await.unwrap();
    assert!(!exists, "the steps live in the job hash and went with it");
}

#[tokio::test]
async fn a_step_is_stored_with_redis_time_when_events_are_off() {
    let (m, _q, id, token) = leased_job("steps-no-events").await;
    let quiet = quern_common::QueueScripts::new(m.keys().clone(), 0);
    let before = m.now_ms().await;
    let step =
        Step { id: &id, token: &token, key: "a#1", end: StepEnd::Ok, took_ms: 0, value: "1", limits: LIMITS };
    let reply = quiet.run(&mut m.conn(), &step).await.unwrap();
    assert_eq!(reply, StepReply::Stored("1".into()));
    let record = StepRecord::parse("a#1", &m.hash(&id).await["s:a#1"]).unwrap();
    assert!(record.started_at_ms >= before && record.started_at_ms <= m.now_ms().await);
    assert!(!m.events().await.iter().any(|e| e == "step"), "no event written");
}
