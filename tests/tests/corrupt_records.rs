//! Corrupt data never hides good data: hand-corrupted job records in a real
//! Redis are listed with what is wrong, next to the healthy jobs around them,
//! instead of failing the listing as a whole.

use quern_common::{Error, JobEntry, JobInfo, JobState, RedisConfig, UnreadableJob};
use quern_producer::Queue;
use quern_tests::{config, raw_connection};
use redis::AsyncCommands;

/// Queue `q` with jobs `j0`..`j{n-1}` added in order; with `dead`, each is
/// cancelled into the dead-letter list in order too (so the list, newest
/// first, reads `j{n-1}` .. `j0`).
async fn queue_with(cfg: &RedisConfig, n: usize, dead: bool) -> Queue {
    let q = Queue::connect(cfg, "q").await.unwrap();
    for i in 0..n {
        let id = format!("j{i}");
        q.add_with("work", &i, quern_common::JobOptions::new().job_id(&id)).await.unwrap();
        if dead {
            q.cancel(&id, "not needed").await.unwrap();
        }
    }
    q
}

/// Overwrite field `field` of job `id`'s hash.
async fn set_field(cfg: &RedisConfig, q: &Queue, id: &str, field: &str, value: &str) {
    let _: i64 = raw_connection(cfg).await.hset(q.keys().job(id), field, value).await.unwrap();
}

fn ids(entries: &[JobEntry]) -> Vec<&str> {
    entries.iter().map(JobEntry::id).collect()
}

fn job<'a>(entries: &'a [JobEntry], id: &str) -> &'a JobInfo {
    entries
        .iter()
        .find(|e| e.id() == id)
        .and_then(JobEntry::job)
        .unwrap_or_else(|| panic!("{id} in {entries:#?}"))
}

#[tokio::test]
async fn a_dead_letter_with_a_bad_created_time_is_listed_with_its_problem_among_the_others() {
    let cfg = config();
    let q = queue_with(&cfg, 3, true).await;
    set_field(&cfg, &q, "j1", "t", "yesterday").await;

    let listed = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(ids(&listed), ["j2", "j1", "j0"], "every dead letter is listed");
    let bad = job(&listed, "j1");
    assert_eq!(bad.problems, [r#"field t (created) is not a number: "yesterday""#]);
    assert_eq!((bad.state, bad.name.as_str(), bad.payload.as_str()), (JobState::Failed, "work", "1"));
    assert_eq!(bad.last_error.as_deref(), Some("not needed"), "the readable fields are all there");
    for good in ["j0", "j2"] {
        assert!(job(&listed, good).problems.is_empty(), "{good}");
    }
    assert_eq!(q.job("j1").await.unwrap().as_ref(), Some(bad), "job(id) reads it the same way");
}

#[tokio::test]
async fn a_dead_letter_whose_hash_is_gone_is_listed_as_missing() {
    let cfg = config();
    let q = queue_with(&cfg, 3, true).await;
    let _: i64 = raw_connection(&cfg).await.del(q.keys().job("j1")).await.unwrap();

    let listed = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(ids(&listed), ["j2", "j1", "j0"]);
    assert_eq!(listed[1], JobEntry::Unreadable(UnreadableJob::missing("q", "j1", JobState::Failed)));
    match &listed[1] {
        JobEntry::Unreadable(u) => assert_eq!(u.problem, "listed as failed but its job hash is missing"),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.job("j1").await.unwrap(), None, "job(id) has no such job");
}

#[tokio::test]
async fn a_record_without_a_state_is_an_unreadable_entry_and_an_error_for_job() {
    let cfg = config();
    let q = queue_with(&cfg, 3, true).await;
    let _: i64 = raw_connection(&cfg).await.hdel(q.keys().job("j0"), "s").await.unwrap();

    let listed = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(ids(&listed), ["j2", "j1", "j0"]);
    assert_eq!(listed[2], JobEntry::Unreadable(UnreadableJob::new("q", "j0", "field s (state) is missing")));
    assert!(listed[..2].iter().all(|e| e.job().is_some_and(|j| j.problems.is_empty())));
    match q.job("j0").await {
        Err(Error::UnreadableJob { id, problem, .. }) => {
            assert_eq!((id.as_str(), problem.as_str()), ("j0", "field s (state) is missing"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unreadable_history_still_shows_the_job() {
    let cfg = config();
    let q = queue_with(&cfg, 2, true).await;
    set_field(&cfg, &q, "j0", "h", "[{\"n\":1,").await;

    let j = q.job("j0").await.unwrap().unwrap();
    assert_eq!((j.state, j.last_error.as_deref()), (JobState::Failed, Some("not needed")));
    assert!(j.history.is_empty());
    assert_eq!(j.problems.len(), 1, "{:?}", j.problems);
    assert!(j.problems[0].starts_with("field h (history) is not a JSON list"), "{}", j.problems[0]);
    assert!(j.problems[0].contains(r#""[{\"n\":1,""#), "names the value: {}", j.problems[0]);
    let listed = q.dead_letters(0, 10).await.unwrap();
    assert_eq!(listed.iter().filter_map(JobEntry::job).count(), 2);
}

#[tokio::test]
async fn waiting_jobs_are_listed_whatever_is_wrong_with_one_of_them() {
    let cfg = config();
    let q = queue_with(&cfg, 6, false).await;
    let mut conn = raw_connection(&cfg).await;
    set_field(&cfg, &q, "j1", "p", "high").await;
    set_field(&cfg, &q, "j1", "o", "{oops").await;
    set_field(&cfg, &q, "j2", "s", "zombie").await;
    let _: i64 = conn.hdel(q.keys().job("j3"), "n").await.unwrap();
    let _: () = conn.del(q.keys().job("j4")).await.unwrap();
    let _: () = conn.set(q.keys().job("j5"), "not a hash").await.unwrap();

    let listed = q.jobs(JobState::Waiting, 0, 50).await.unwrap();
    assert_eq!(ids(&listed), ["j0", "j1", "j2", "j3", "j4", "j5"], "{listed:#?}");
    assert!(job(&listed, "j0").problems.is_empty());
    let j1 = job(&listed, "j1");
    assert_eq!((j1.priority, j1.max_attempts), (0, 3), "unreadable fields fall back to their defaults");
    assert_eq!(j1.problems.len(), 2, "{:?}", j1.problems);
    assert!(j1.problems.contains(&r#"field p (priority) is not a number: "high""#.to_owned()));
    assert!(j1.problems.iter().any(|p| p.starts_with("field o (options)") && p.contains("{oops")));
    let unreadable: Vec<(&str, &str)> = listed
        .iter()
        .filter_map(|e| match e {
            JobEntry::Unreadable(u) => Some((u.id.as_str(), u.problem.as_str())),
            JobEntry::Job(_) => None,
        })
        .collect();
    assert_eq!(
        unreadable,
        [
            ("j2", r#"field s (state) is not a job state: "zombie""#),
            ("j3", "field n (name) is missing"),
            ("j4", "listed as waiting but its job hash is missing"),
            ("j5", "its job key is not a hash"),
        ]
    );
    assert_eq!(ids(&q.jobs(JobState::Waiting, 4, 1).await.unwrap()), ["j4"], "paging counts every entry");
}

#[tokio::test]
async fn a_fetch_drops_a_waiting_id_with_no_job_and_says_so_while_leasing_the_rest() {
    use quern_common::EventKind;
    let cfg = config();
    let q = queue_with(&cfg, 2, false).await;
    // A dangling id between the two jobs, as a hand edit or a bug could leave.
    let mut raw = raw_connection(&cfg).await;
    let _: i64 = raw.linsert_after(q.keys().wait(), "j0", "ghost").await.unwrap();
    let m = quern_tests::moves::Mover::new(&cfg, "q").await;

    let fetched = m.fetch(10, std::time::Duration::from_secs(30), "w").await;
    assert_eq!(fetched.ids(), ["j0", "j1"], "the real jobs are leased");
    assert_eq!(fetched.dropped, ["ghost"], "the worker is told which id was dropped");
    assert!(m.wait_list().await.is_empty(), "the dangling id left the list");
    let events = q.recent_events(10).await.unwrap();
    let dropped: Vec<_> = events.iter().filter(|e| e.kind == EventKind::Dropped).collect();
    assert_eq!(dropped.len(), 1, "{events:#?}");
    assert_eq!(dropped[0].job_ids(), ["ghost"]);
    let active = events.iter().find(|e| e.kind == EventKind::Active).expect("an active event");
    assert_eq!(active.job_ids(), ["j0", "j1"], "the active event names only the jobs leased");
}

#[tokio::test]
async fn a_job_whose_history_is_corrupt_still_fails_and_retries() {
    use quern_common::{AttemptOutcome, FailureKind, ScriptCode};
    let cfg = config();
    let q = queue_with(&cfg, 1, false).await;
    set_field(&cfg, &q, "j0", "h", "{not json").await;
    let m = quern_tests::moves::Mover::new(&cfg, "q").await;
    let job = m.fetch(1, std::time::Duration::from_secs(30), "w").await.jobs.remove(0);

    let code = m.fail("j0", &job.token, "smtp 451", FailureKind::Error, 0).await;
    assert_eq!(code, ScriptCode::Ok, "the failure is recorded, not refused by the bad history");
    let info = q.job("j0").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Waiting, "and the job is retried");
    let outcomes: Vec<_> = info.history.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(outcomes, [AttemptOutcome::HistoryReset, AttemptOutcome::Error]);
}
