//! Every state move of the Lua scripts and every result code they return,
//! driven one call at a time and checked by reading the queue's keys.

use quern_common::FailureKind;
use std::collections::HashSet;
use std::time::Duration;

use quern_common::{Attempt, Error, JobOptions, JobState, RedisConfig, ScriptCode};
use quern_producer::Queue;
use quern_tests::moves::Mover;
use quern_tests::{TestRedis, config, config_for, raw_connection};
use redis::AsyncCommands;

const LEASE: Duration = Duration::from_secs(30);

async fn setup(queue: &str) -> (RedisConfig, Queue, Mover) {
    let cfg = config();
    let q = Queue::connect(&cfg, queue).await.expect("connect");
    let m = Mover::new(&cfg, queue).await;
    (cfg, q, m)
}

fn history(raw: Option<String>) -> Vec<Attempt> {
    serde_json::from_str(&raw.expect("history field")).expect("history is JSON")
}

/// The error a code stands for, as the producer and worker map it.
fn error_of(code: ScriptCode, id: &str) -> Option<Error> {
    code.to_error("q", id)
}

#[tokio::test]
async fn add_makes_jobs_waiting_and_fetch_leases_each_with_a_fresh_token() {
    let (_cfg, q, m) = setup("q").await;
    let before = m.now_ms().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(q.add("mail", &serde_json::json!({ "n": i })).await.unwrap().id);
    }
    assert_eq!(m.wait_list().await, ids, "priority-0 jobs queue FIFO on the wait list");
    let h = m.hash(&ids[0]).await;
    assert_eq!(h["s"], "waiting");
    assert_eq!(h["n"], "mail");
    assert_eq!(h["d"], r#"{"n":0}"#);
    let created: u64 = h["t"].parse().unwrap();
    assert!(created >= before && created <= m.now_ms().await, "created at is Redis time");
    assert!(!h.contains_key("tk") && !h.contains_key("at"));

    let first = m.fetch(2, LEASE, "w1").await;
    assert!(!first.paused);
    assert_eq!(first.ids(), ids[..2]);
    let second = m.fetch(5, LEASE, "w2").await;
    assert_eq!(second.ids(), ids[2..]);
    // One token per fetch call: the jobs of one batch share it, each lease of a
    // job (one per call at most) still gets a token no earlier lease had.
    let tokens: HashSet<&str> = first.jobs.iter().chain(&second.jobs).map(|j| j.token.as_str()).collect();
    assert_eq!(tokens.len(), 2, "every fetch call draws a fresh token");
    assert!(first.jobs.iter().all(|j| j.token == first.jobs[0].token));
    for j in first.jobs.iter().chain(&second.jobs) {
        assert_eq!(j.attempt, 1);
        assert_eq!(j.name, "mail");
        let h = m.hash(&j.id).await;
        assert_eq!(h["s"], "active");
        assert_eq!(h["tk"], j.token);
        assert_eq!(h["at"], "1");
        assert!(h["st"].parse::<u64>().unwrap() >= created);
    }
    assert_eq!(m.hash(&ids[2]).await["w"], "w2");
    let now = m.now_ms().await as f64;
    let active = m.zset(m.keys().active()).await;
    assert_eq!(active.len(), 3);
    for (_, deadline) in &active {
        let left = deadline - now;
        assert!(left > 29_000.0 && left <= 30_000.0, "lease deadline is Redis now + lease, {left} ms left");
    }
    assert!(m.wait_list().await.is_empty());
    let empty = m.fetch(5, LEASE, "w1").await;
    assert!(empty.jobs.is_empty());
    assert_eq!(empty.next_delayed_ms, None, "no delayed job to wait for");
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 3));
}

#[tokio::test]
async fn complete_stores_the_result_and_answers_duplicate_lease_lost_and_not_found() {
    let (_cfg, q, m) = setup("q").await;
    let a = q.add("job", &1).await.unwrap().id;
    let b = q.add("job", &2).await.unwrap().id;
    let f = m.fetch(2, LEASE, "w").await;
    let (ta, tb) = (f.jobs[0].token.clone(), f.jobs[1].token.clone());
    let codes = m.complete(-1, &[(&a, &ta, r#"{"sent":true}"#), (&b, &tb, "")]).await;
    assert_eq!(codes, [ScriptCode::Ok, ScriptCode::Ok], "one code per job of the batch");
    let h = m.hash(&a).await;
    assert_eq!(h["s"], "completed");
    assert_eq!(h["r"], r#"{"sent":true}"#);
    assert!(h["fin"].parse::<u64>().unwrap() >= h["st"].parse::<u64>().unwrap());
    assert!(!m.hash(&b).await.contains_key("r"), "an empty result is not stored");
    assert_eq!(m.completed_list().await, [a.clone(), b.clone()]);
    assert!(m.zset(m.keys().active()).await.is_empty());

    // The same acknowledgement again (a retried round trip) changes nothing.
    let again = m.complete(-1, &[(&a, &ta, r#"{"sent":false}"#)]).await;
    assert_eq!(again, [ScriptCode::Duplicate]);
    assert!(error_of(ScriptCode::Duplicate, &a).is_none(), "a duplicate is not an error");
    assert_eq!(m.hash(&a).await["r"], r#"{"sent":true}"#);
    assert_eq!(m.completed_list().await.len(), 2, "not listed twice");

    let wrong = m.complete(-1, &[(&a, "not-the-token", "")]).await;
    assert_eq!(wrong, [ScriptCode::LeaseLost]);
    assert!(matches!(error_of(wrong[0], &a), Some(Error::LeaseLost { id, .. }) if id == a));
    let missing = m.complete(-1, &[("no-such-job", "1", "")]).await;
    assert_eq!(missing, [ScriptCode::NotFound]);
    assert!(matches!(error_of(missing[0], "no-such-job"), Some(Error::JobNotFound { .. })));
    assert_eq!(q.counts().await.unwrap().completed, 2);
}

#[tokio::test]
async fn a_stale_token_after_the_job_was_leased_again_is_lease_lost() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let old = m.fetch(1, LEASE, "w1").await.jobs.remove(0);
    assert_eq!(m.fail(&id, &old.token, "boom", FailureKind::Error, 0).await, ScriptCode::Ok);
    let new = m.fetch(1, LEASE, "w2").await.jobs.remove(0);
    assert_eq!(new.id, id);
    assert_ne!(new.token, old.token);
    assert_eq!(new.attempt, 2);

    assert_eq!(m.complete(-1, &[(&id, &old.token, "")]).await, [ScriptCode::LeaseLost]);
    assert_eq!(m.fail(&id, &old.token, "late", FailureKind::Error, -1).await, ScriptCode::LeaseLost);
    assert_eq!(m.renew(LEASE, &[(&id, &old.token)]).await, [id.as_str()]);
    assert_eq!(m.release(&[(&id, &old.token)]).await, 0);
    let h = m.hash(&id).await;
    assert_eq!((h["s"].as_str(), h["tk"].as_str()), ("active", new.token.as_str()), "stale writes discarded");

    assert_eq!(m.complete(-1, &[(&id, &new.token, "")]).await, [ScriptCode::Ok]);
}

#[tokio::test]
async fn fail_with_a_delay_schedules_the_retry_in_delayed_and_records_the_attempt() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w1").await.jobs.remove(0);
    let started: u64 = m.field(&id, "st").await.unwrap().parse().unwrap();
    assert_eq!(m.fail(&id, &job.token, "smtp 451", FailureKind::Error, 60_000).await, ScriptCode::Ok);
    assert!(error_of(ScriptCode::Ok, &id).is_none());
    let now = m.now_ms().await;

    let h = m.hash(&id).await;
    assert_eq!(h["s"], "delayed");
    assert_eq!(h["e"], "smtp 451");
    let delayed = m.zset(m.keys().delayed()).await;
    assert_eq!(delayed.len(), 1);
    let due = delayed[0].1 as u64;
    assert!(due > now + 59_000 && due <= now + 60_000, "due = failure time + delay, got {due} at {now}");
    assert!(m.zset(m.keys().active()).await.is_empty());
    let hist = history(h.get("h").cloned());
    assert_eq!(hist.len(), 1);
    let a = &hist[0];
    assert_eq!((a.number, a.outcome.as_str(), a.error.as_deref()), (Some(1), "error", Some("smtp 451")));
    assert_eq!(a.worker.as_deref(), Some("w1"));
    assert_eq!(a.started_at_ms, Some(started));
    assert!(a.finished_at_ms.unwrap() >= started);

    // Already settled: the same failure again is a duplicate, not a second attempt.
    assert_eq!(m.fail(&id, &job.token, "smtp 451", FailureKind::Error, 60_000).await, ScriptCode::Duplicate);
    assert_eq!(history(m.field(&id, "h").await).len(), 1);
    assert_eq!(m.complete(-1, &[(&id, &job.token, "")]).await, [ScriptCode::Duplicate]);

    let early = m.fetch(1, LEASE, "w1").await;
    assert!(early.jobs.is_empty(), "not fetched before it is due");
    assert!(
        early.next_delayed_ms.is_some_and(|ms| ms > 58_000 && ms <= 60_000),
        "{:?}",
        early.next_delayed_ms
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.delayed, c.active, c.waiting), (1, 0, 0));
}

#[tokio::test]
async fn fail_with_no_delay_requeues_at_the_back_of_its_priority() {
    let (_cfg, q, m) = setup("q").await;
    let a = q.add("job", &"a").await.unwrap().id;
    let b = q.add("job", &"b").await.unwrap().id;
    let p1 = q.add_with("job", &"p1", JobOptions::new().priority(4)).await.unwrap().id;
    let p2 = q.add_with("job", &"p2", JobOptions::new().priority(4)).await.unwrap().id;
    let f = m.fetch(1, LEASE, "w").await;
    assert_eq!(f.ids(), [a.as_str()]);
    assert_eq!(m.fail(&a, &f.jobs[0].token, "x", FailureKind::Error, 0).await, ScriptCode::Ok);
    assert_eq!(m.field(&a, "s").await.as_deref(), Some("waiting"));
    assert_eq!(m.wait_list().await, [b.clone(), a.clone()]);

    let f = m.fetch(2, LEASE, "w").await;
    assert_eq!(f.ids(), [b.clone(), a.clone()]);
    let f = m.fetch(1, LEASE, "w").await;
    assert_eq!(f.ids(), [p1.as_str()]);
    assert_eq!(m.fail(&p1, &f.jobs[0].token, "x", FailureKind::Error, 0).await, ScriptCode::Ok);
    assert_eq!(m.zset_ids(m.keys().prioritized()).await, [p2.clone(), p1.clone()]);
}

#[tokio::test]
async fn fail_on_the_last_attempt_dead_letters_the_job() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    let code = m.fail(&id, &job.token, "gave up", FailureKind::Error, -1).await;
    assert_eq!(code, ScriptCode::Dead);
    assert!(error_of(code, &id).is_none(), "dead-lettering is a normal outcome");
    let h = m.hash(&id).await;
    assert_eq!(h["s"], "failed");
    assert_eq!(h["e"], "gave up");
    assert!(h.contains_key("fin"));
    assert_eq!(m.zset_ids(m.keys().dead_letter()).await, [id.as_str()]);
    assert!(m.zset(m.keys().active()).await.is_empty());
    assert_eq!(m.fail(&id, &job.token, "gave up", FailureKind::Error, -1).await, ScriptCode::Duplicate);
    assert_eq!(m.zset(m.keys().dead_letter()).await.len(), 1);

    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.active, c.waiting, c.delayed), (1, 0, 0, 0));
    let dead: Vec<_> =
        q.dead_letters(0, 10).await.unwrap().into_iter().map(|e| e.into_result().unwrap()).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].state), (id.as_str(), JobState::Failed));
    assert_eq!(dead[0].last_error.as_deref(), Some("gave up"));
    assert_eq!(m.fetch(5, LEASE, "w").await.jobs.len(), 0, "a dead job is never fetched");
}

#[tokio::test]
async fn fail_and_complete_of_a_removed_job_are_not_found() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    let _: () = m.conn().del(m.keys().job(&id)).await.unwrap();
    assert_eq!(m.fail(&id, &job.token, "x", FailureKind::Error, 10).await, ScriptCode::NotFound);
    assert_eq!(m.complete(-1, &[(&id, &job.token, "")]).await, [ScriptCode::NotFound]);
    assert!(matches!(error_of(ScriptCode::NotFound, &id), Some(Error::JobNotFound { .. })));
}

#[tokio::test]
async fn remove_deletes_jobs_in_every_state_but_active() {
    let (_cfg, q, m) = setup("q").await;
    let active = q.add("job", &()).await.unwrap().id;
    let leased = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(leased.id, active);
    let waiting = q.add("job", &()).await.unwrap().id;
    let prio = q.add_with("job", &(), JobOptions::new().priority(3)).await.unwrap().id;
    let delayed = q.add_with("job", &(), JobOptions::new().delay(Duration::from_secs(60))).await.unwrap().id;
    let done = q.add("job", &()).await.unwrap().id;
    let dead = q.add("job", &()).await.unwrap().id;
    let f = m.fetch(3, LEASE, "w").await;
    assert_eq!(f.ids(), [waiting.clone(), done.clone(), dead.clone()]);
    // Put `waiting` back, finish `done`, dead-letter `dead`.
    assert_eq!(m.release(&[(&waiting, &f.jobs[0].token)]).await, 1);
    assert_eq!(m.complete(-1, &[(&done, &f.jobs[1].token, "")]).await, [ScriptCode::Ok]);
    assert_eq!(m.fail(&dead, &f.jobs[2].token, "x", FailureKind::Permanent, -1).await, ScriptCode::Dead);

    let err = q.remove(&active).await.unwrap_err();
    assert!(matches!(&err, Error::JobActive { id, .. } if *id == active), "{err}");
    assert_eq!(m.remove(&active).await, ScriptCode::JobActive);
    assert_eq!(m.field(&active, "s").await.as_deref(), Some("active"), "an active job is left alone");

    for id in [&waiting, &prio, &delayed, &done, &dead] {
        q.remove(id).await.unwrap_or_else(|e| panic!("remove {id}: {e}"));
        assert!(m.hash(id).await.is_empty(), "job {id} deleted");
    }
    assert!(m.wait_list().await.is_empty());
    assert!(m.zset(m.keys().prioritized()).await.is_empty());
    assert!(m.zset(m.keys().delayed()).await.is_empty());
    assert!(m.completed_list().await.is_empty());
    assert!(m.zset(m.keys().dead_letter()).await.is_empty());
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.active, c.completed, c.failed), (0, 0, 1, 0, 0));

    let err = q.remove(&waiting).await.unwrap_err();
    assert!(matches!(&err, Error::JobNotFound { id, .. } if *id == waiting), "{err}");
    assert_eq!(m.remove("never-added").await, ScriptCode::NotFound);
}

#[tokio::test]
async fn dead_letter_retry_gives_a_fresh_attempt_budget_and_keeps_the_history() {
    let (_cfg, q, m) = setup("q").await;
    let opts = JobOptions::new().priority(2).attempts(1);
    let id = q.add_with("job", &(), opts).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(m.fail(&id, &job.token, "bad", FailureKind::Permanent, -1).await, ScriptCode::Dead);

    q.retry_dead_letter(&id).await.unwrap();
    let h = m.hash(&id).await;
    assert_eq!(h["s"], "waiting");
    assert_eq!(h["at"], "0");
    assert!(!h.contains_key("fin") && !h.contains_key("tk"));
    assert_eq!(m.zset_ids(m.keys().prioritized()).await, [id.as_str()], "back at its own priority");
    assert!(m.zset(m.keys().dead_letter()).await.is_empty());
    let hist = history(h.get("h").cloned());
    assert_eq!(hist.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["permanent", "retried"]);
    let woken: Vec<String> = m.conn().lrange(m.keys().wake(), 0, -1).await.unwrap();
    assert!(!woken.is_empty(), "a retry wakes a worker");

    // The old lease stays dead.
    assert_eq!(m.complete(-1, &[(&id, &job.token, "")]).await, [ScriptCode::LeaseLost]);
    let again = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 1));

    let err = q.retry_dead_letter(&id).await.unwrap_err();
    assert!(matches!(&err, Error::NotDeadLettered { .. }), "active job: {err}");
    assert!(matches!(error_of(ScriptCode::WrongState, &id), Some(Error::NotDeadLettered { .. })));
    let err = q.retry_dead_letter("no-such").await.unwrap_err();
    assert!(matches!(&err, Error::JobNotFound { .. }), "{err}");
    let err = q.purge_dead_letter(&id).await.unwrap_err();
    assert!(matches!(&err, Error::NotDeadLettered { .. }), "{err}");
    assert!(!m.hash(&id).await.is_empty(), "purge leaves a job outside the list alone");
}

#[tokio::test]
async fn dead_letter_purge_deletes_and_bulk_actions_drain_the_list() {
    let (_cfg, q, m) = setup("q").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(q.add("job", &i).await.unwrap().id);
    }
    for job in m.fetch(7, LEASE, "w").await.jobs {
        assert_eq!(m.fail(&job.id, &job.token, "x", FailureKind::Error, -1).await, ScriptCode::Dead);
    }
    assert_eq!(q.counts().await.unwrap().failed, 7);

    q.purge_dead_letter(&ids[0]).await.unwrap();
    assert!(m.hash(&ids[0]).await.is_empty());
    let err = q.purge_dead_letter(&ids[0]).await.unwrap_err();
    assert!(matches!(&err, Error::JobNotFound { .. }), "{err}");

    // Newest first.
    let listed: Vec<String> =
        q.dead_letters(0, 100).await.unwrap().iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(listed.len(), 6);
    let page: Vec<String> = q.dead_letters(2, 2).await.unwrap().iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(page, listed[2..4]);

    assert_eq!(q.retry_all_dead_letters().await.unwrap(), 6);
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.waiting), (0, 6));
    for job in m.fetch(6, LEASE, "w").await.jobs {
        assert_eq!(m.fail(&job.id, &job.token, "x", FailureKind::Error, -1).await, ScriptCode::Dead);
    }
    assert_eq!(q.purge_dead_letters().await.unwrap(), 6);
    assert_eq!(q.counts().await.unwrap().failed, 0);
    for id in &ids {
        assert!(m.hash(id).await.is_empty(), "purged {id}");
    }
    assert_eq!(q.purge_dead_letters().await.unwrap(), 0);
    let events = m.events().await;
    assert!(
        events.iter().any(|e| e == "dead_letter_retry") && events.iter().any(|e| e == "dead_letter_purge")
    );
}

#[tokio::test]
async fn pause_makes_fetch_return_nothing_until_resume() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    q.pause().await.unwrap();
    assert!(q.counts().await.unwrap().paused);
    let _: () = m.conn().del(m.keys().wake()).await.unwrap();
    let f = m.fetch(5, LEASE, "w").await;
    assert!(f.paused);
    assert!(f.jobs.is_empty());
    let other = q.add("job", &()).await.unwrap().id;
    let woken: i64 = m.conn().llen(m.keys().wake()).await.unwrap();
    assert_eq!(woken, 0, "adding to a paused queue wakes nobody");
    assert_eq!(m.field(&id, "s").await.as_deref(), Some("waiting"));
    assert_eq!(q.counts().await.unwrap().waiting, 2);

    q.resume().await.unwrap();
    assert!(!q.counts().await.unwrap().paused);
    let woken: i64 = m.conn().llen(m.keys().wake()).await.unwrap();
    assert_eq!(woken, 1, "resuming wakes a worker");
    let f = m.fetch(5, LEASE, "w").await;
    assert!(!f.paused);
    assert_eq!(f.ids(), [id, other]);
    let events = m.events().await;
    assert!(events.iter().any(|e| e == "paused") && events.iter().any(|e| e == "resumed"));
}

#[tokio::test]
async fn counts_report_every_state_at_once() {
    let (_cfg, q, m) = setup("q").await;
    for _ in 0..4 {
        q.add("job", &()).await.unwrap();
    }
    q.add_with("job", &(), JobOptions::new().priority(9)).await.unwrap();
    q.add_with("job", &(), JobOptions::new().delay(Duration::from_secs(60))).await.unwrap();
    q.add_with("job", &(), JobOptions::new().delay(Duration::from_secs(90))).await.unwrap();
    let f = m.fetch(3, LEASE, "w").await;
    assert_eq!(m.complete(-1, &[(&f.jobs[0].id, &f.jobs[0].token, "")]).await, [ScriptCode::Ok]);
    assert_eq!(m.fail(&f.jobs[1].id, &f.jobs[1].token, "x", FailureKind::Error, -1).await, ScriptCode::Dead);
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.waiting, c.delayed, c.active, c.completed, c.failed, c.paused),
        (2, 2, 1, 1, 1, false),
        "{c:?}"
    );
    for state in JobState::ALL {
        let ids = q.job_ids(state, 0, 100).await.unwrap();
        assert_eq!(ids.len() as u64, c.get(state), "{state}");
    }
}

#[tokio::test]
async fn renew_extends_held_leases_and_names_the_lost_ones() {
    let (_cfg, q, m) = setup("q").await;
    q.add("job", &()).await.unwrap();
    q.add("job", &()).await.unwrap();
    let f = m.fetch(2, Duration::from_secs(1), "w").await;
    let (a, b) = (&f.jobs[0], &f.jobs[1]);
    let lost = m.renew(Duration::from_secs(120), &[(&a.id, &a.token), (&b.id, "stale"), ("gone", "1")]).await;
    assert_eq!(lost, [b.id.clone(), "gone".to_owned()]);
    let now = m.now_ms().await as f64;
    let active = m.zset(m.keys().active()).await;
    let deadline = |id: &str| active.iter().find(|(i, _)| i == id).unwrap().1;
    assert!(deadline(&a.id) - now > 119_000.0, "renewed lease runs 120 s from now");
    assert!(deadline(&b.id) - now <= 1_000.0, "the lost lease is not extended");
    assert!(!active.iter().any(|(i, _)| i == "gone"), "renew never adds to active");
}

#[tokio::test]
async fn reap_recovers_expired_leases_to_the_head_and_dead_letters_after_too_many_stalls() {
    let (_cfg, q, m) = setup("q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let other = q.add("job", &()).await.unwrap().id;
    let first = m.fetch(1, Duration::from_millis(1), "crashed").await.jobs.remove(0);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r = m.reap(1, 100, 0).await;
    assert_eq!((r.recovered, r.dead), (vec![id.clone()], vec![]));
    let h = m.hash(&id).await;
    assert_eq!((h["s"].as_str(), h["stl"].as_str(), h["at"].as_str()), ("waiting", "1", "0"));
    assert_eq!(m.wait_list().await, [id.clone(), other.clone()], "a recovered job goes first");
    let hist = history(h.get("h").cloned());
    assert_eq!(hist[0].outcome, "stalled");
    assert_eq!(hist[0].worker.as_deref(), Some("crashed"));
    assert!(hist[0].error.as_deref().unwrap().contains("lease expired"));
    assert_eq!(m.complete(-1, &[(&id, &first.token, "")]).await, [ScriptCode::LeaseLost]);
    assert_eq!(m.reap(1, 100, 0).await.recovered.len(), 0, "reaping twice is harmless");

    let second = m.fetch(1, Duration::from_millis(1), "crashed").await.jobs.remove(0);
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 1), "a stall does not use an attempt");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r = m.reap(1, 100, 0).await;
    assert_eq!((r.recovered, r.dead), (vec![], vec![id.clone()]));
    let h = m.hash(&id).await;
    assert_eq!(h["s"], "failed");
    assert!(h["e"].contains("stalled 2 times"), "{}", h["e"]);
    assert_eq!(m.zset_ids(m.keys().dead_letter()).await, [id.as_str()]);
    assert_eq!(m.complete(-1, &[(&id, &second.token, "")]).await, [ScriptCode::LeaseLost]);
    assert!(m.events().await.iter().any(|e| e == "stalled"));
}

#[tokio::test]
async fn reap_leaves_live_leases_alone_and_trims_completed_jobs_by_age() {
    let (_cfg, q, m) = setup("q").await;
    let old = q.add("job", &()).await.unwrap().id;
    let live = q.add("job", &()).await.unwrap().id;
    let f = m.fetch(1, LEASE, "w").await;
    assert_eq!(m.complete(-1, &[(&old, &f.jobs[0].token, "")]).await, [ScriptCode::Ok]);
    let live_job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let fresh = q.add("job", &()).await.unwrap().id;
    let f = m.fetch(1, LEASE, "w").await;
    assert_eq!(m.complete(-1, &[(&fresh, &f.jobs[0].token, "")]).await, [ScriptCode::Ok]);

    let r = m.reap(3, 100, 50).await;
    assert!(r.recovered.is_empty() && r.dead.is_empty(), "{r:?}");
    assert_eq!(r.trimmed, 1, "only the completed job older than 50 ms goes");
    assert!(m.hash(&old).await.is_empty());
    assert_eq!(m.completed_list().await, [fresh]);
    assert_eq!(m.field(&live, "tk").await, Some(live_job.token));
}

#[tokio::test]
async fn complete_keeps_only_the_newest_completed_jobs_when_asked() {
    let (_cfg, q, m) = setup("q").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(q.add("job", &()).await.unwrap().id);
    }
    let f = m.fetch(5, LEASE, "w").await;
    let first: Vec<(&str, &str, &str)> =
        f.jobs[..3].iter().map(|j| (j.id.as_str(), j.token.as_str(), "")).collect();
    assert_eq!(m.complete(2, &first).await, [ScriptCode::Ok; 3]);
    assert_eq!(m.completed_list().await, ids[1..3]);
    assert!(m.hash(&ids[0]).await.is_empty(), "the oldest was trimmed with its hash");

    let (d, e) = (&f.jobs[3], &f.jobs[4]);
    assert_eq!(m.complete(0, &[(&d.id, &d.token, "1")]).await, [ScriptCode::Ok]);
    assert!(m.hash(&d.id).await.is_empty(), "keep 0 deletes at once");
    assert_eq!(m.completed_list().await, ids[1..3]);
    assert_eq!(m.complete(-1, &[(&e.id, &e.token, "")]).await, [ScriptCode::Ok]);
    assert_eq!(m.completed_list().await, [ids[1].clone(), ids[2].clone(), ids[4].clone()]);
}

#[tokio::test]
async fn release_hands_jobs_back_first_in_line_without_using_an_attempt() {
    let (_cfg, q, m) = setup("q").await;
    let a = q.add("job", &()).await.unwrap().id;
    let b = q.add("job", &()).await.unwrap().id;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(m.release(&[(&a, &job.token), (&b, "not-leased")]).await, 1);
    let h = m.hash(&a).await;
    assert_eq!((h["s"].as_str(), h["at"].as_str(), h["tk"].as_str()), ("waiting", "0", ""));
    assert_eq!(m.wait_list().await, [a.clone(), b.clone()]);
    assert_eq!(history(h.get("h").cloned())[0].outcome, "released");
    assert_eq!(m.complete(-1, &[(&a, &job.token, "")]).await, [ScriptCode::LeaseLost]);
    assert_eq!(m.release(&[(&a, &job.token)]).await, 0, "a second release is a no-op");
    let again = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), (a.as_str(), 1));
}

#[tokio::test]
async fn every_move_writes_an_event_and_the_stream_stays_bounded() {
    let cfg = config();
    let q = Queue::builder(&cfg, "q").events_max_len(50).connect().await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("job", &()).await.unwrap().id;
    let j = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    m.fail(&id, &j.token, "x", FailureKind::Error, 0).await;
    let j = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    m.complete(-1, &[(&id, &j.token, "")]).await;
    let events = m.events().await;
    assert_eq!(events, ["added", "active", "retrying", "active", "completed"]);

    for _ in 0..400 {
        q.add("job", &()).await.unwrap();
    }
    let len: usize = m.conn().xlen(m.keys().events()).await.unwrap();
    assert!(len < 400, "the events stream is trimmed (about 50 kept), has {len}");
}

#[tokio::test]
async fn scripts_are_reloaded_after_redis_forgets_them() {
    // A server of its own: flushing scripts must not disturb parallel tests.
    let server = TestRedis::start();
    let cfg = config_for(&server.url());
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.add("job", &()).await.unwrap();
    let mut raw = raw_connection(&cfg).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.unwrap();
    q.add("job", &()).await.expect("NOSCRIPT is answered by loading the script");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.unwrap();
    let bulk =
        [quern_producer::NewJob::new("job", &1).unwrap(), quern_producer::NewJob::new("job", &2).unwrap()];
    assert_eq!(q.add_bulk(&bulk).await.expect("pipelined calls reload too").len(), 2);
    assert_eq!(q.counts().await.unwrap().waiting, 4);
    // The same for the Function library (Redis 7.0+), single and pipelined.
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query_async(&mut raw).await.unwrap();
    q.add("job", &()).await.expect("\"Function not found\" is answered by loading the library");
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query_async(&mut raw).await.unwrap();
    assert_eq!(q.add_bulk(&bulk).await.expect("pipelined calls reload the library too").len(), 2);
    assert_eq!(q.counts().await.unwrap().waiting, 7);
    assert!(quern_common::scripts::calls_functions(), "this Redis runs functions");
    let libs: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query_async(&mut raw).await.unwrap();
    assert_eq!(libs.len(), 1, "one library, loaded again after each flush");
}
