//! Concurrency keys, one state move at a time: fetch leases at most the
//! key's limit of its jobs, holds the others aside (never leasing a job to
//! give it back) without blocking other jobs, and every way a lease ends
//! frees its slot for the oldest held job. Held jobs still count and list
//! as waiting.

use std::time::Duration;

use quern_common::{FailureKind, JobOptions, JobState, RedisConfig};
use quern_producer::{KeyUse, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;

const LEASE: Duration = Duration::from_secs(30);

async fn setup() -> (RedisConfig, Queue, Mover) {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    (cfg, q, m)
}

async fn add(q: &Queue, key: &str) -> String {
    q.add_with("job", &(), JobOptions::new().concurrency_key(key)).await.unwrap().id
}

async fn key_use(q: &Queue, key: &str) -> Option<KeyUse> {
    q.concurrency_keys().await.unwrap().busy.into_iter().find(|k| k.key == key)
}

#[tokio::test]
async fn fetch_leases_up_to_the_limit_and_holds_the_rest_without_blocking_other_keys() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let a: Vec<String> = [add(&q, "a").await, add(&q, "a").await, add(&q, "a").await].into();
    let b = add(&q, "b").await;
    let plain = q.add("job", &()).await.unwrap().id;
    let got = m.fetch(10, LEASE, "w1").await;
    assert_eq!(got.ids(), [a[0].clone(), b.clone(), plain.clone()], "a's second and third are held");
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active), (2, 3), "held jobs count as waiting");
    let waiting = q.job_ids(JobState::Waiting, 0, 10).await.unwrap();
    assert_eq!(waiting, a[1..], "and are listed as waiting");
    assert_eq!(q.job(&a[1]).await.unwrap().unwrap().concurrency_key.as_deref(), Some("a"));
    let use_a = key_use(&q, "a").await.unwrap();
    assert_eq!((use_a.active, use_a.waiting, use_a.limit, use_a.at_limit()), (1, 2, Some(1), true));
    assert!(m.fetch(10, LEASE, "w2").await.jobs.is_empty(), "nothing leased beyond the limit");
}

#[tokio::test]
async fn every_end_of_a_lease_frees_its_slot_for_the_oldest_held_job() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let ids: Vec<String> = futures_free_adds(&q, "a", 5).await;
    let first = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    assert_eq!(first.id, ids[0]);
    // Completed: the next one runs.
    m.complete(-1, &[(&first.id, &first.token, "")]).await;
    let second = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    assert_eq!(second.id, ids[1]);
    // Failed and retried later: its slot frees meanwhile.
    m.fail(&second.id, &second.token, "boom", FailureKind::Error, 60_000).await;
    let third = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    assert_eq!(third.id, ids[2]);
    // Released by a stopping worker: it goes back first, and runs again first.
    assert_eq!(m.release(&[(&third.id, &third.token)]).await, 1);
    let again = m.fetch(10, LEASE, "w").await;
    assert_eq!(again.ids(), [ids[2].clone()]);
    // Cancelled while running.
    q.cancel(&ids[2], "stop").await.unwrap();
    let fourth = m.fetch(10, LEASE, "w").await;
    assert_eq!(fourth.ids(), [ids[3].clone()]);
    // Dead-lettered.
    let job = &fourth.jobs[0];
    m.fail(&job.id, &job.token, "no", FailureKind::Permanent, -1).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [ids[4].clone()]);
    assert_eq!(key_use(&q, "a").await.map(|k| (k.active, k.waiting)), Some((1, 0)));
}

#[tokio::test]
async fn an_expired_lease_frees_its_slot_when_the_reaper_takes_the_job_back() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let ids = futures_free_adds(&q, "a", 2).await;
    let lost = m.fetch(10, Duration::from_millis(100), "crashed").await;
    assert_eq!(lost.ids(), [ids[0].clone()]);
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reaped = m.reap(3, 100, 0).await;
    assert_eq!(reaped.recovered, [ids[0].clone()]);
    // Both wait again; one runs at a time, the held one first (it waited longest).
    let next = m.fetch(10, LEASE, "w").await;
    assert_eq!(next.ids().len(), 1);
    assert_eq!(q.counts().await.unwrap().waiting, 1);
}

#[tokio::test]
async fn removing_or_cancelling_a_held_job_takes_it_off_its_key() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let ids = futures_free_adds(&q, "a", 3).await;
    m.fetch(10, LEASE, "w").await;
    q.remove(&ids[1]).await.unwrap();
    q.cancel(&ids[2], "not needed").await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active, c.failed), (0, 1, 1));
    assert_eq!(key_use(&q, "a").await.map(|k| (k.active, k.waiting)), Some((1, 0)));
}

#[tokio::test]
async fn a_key_of_its_own_and_a_raised_limit_take_effect_for_held_jobs() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    futures_free_adds(&q, "a", 4).await;
    futures_free_adds(&q, "b", 4).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.jobs.len(), 2, "one of each key");
    q.set_key_limit_for("b", Some(3)).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w").await.jobs.len(), 2, "b's own limit lets two more run");
    q.set_key_limit(None).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w").await.jobs.len(), 3, "a is unlimited now; b keeps its own limit");
    let keys = q.concurrency_keys().await.unwrap();
    assert_eq!(keys.limit, None);
    assert_eq!(keys.overrides.len(), 1);
    let b = keys.busy.iter().find(|k| k.key == "b").unwrap();
    assert_eq!((b.active, b.waiting, b.limit), (3, 1, Some(3)));
    assert!(q.set_key_limit(Some(0)).await.is_err(), "0 is refused");
}

#[tokio::test]
async fn a_keyed_job_is_never_handed_straight_to_a_parked_worker() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    m.park("w", LEASE, LEASE).await;
    add(&q, "a").await;
    assert!(m.handoffs().await.is_empty());
    assert_eq!(m.fetch(10, LEASE, "w").await.jobs.len(), 1);
}

#[tokio::test]
async fn deleting_the_queue_deletes_held_jobs_and_key_state() {
    let (cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let ids = futures_free_adds(&q, "a", 3).await;
    let job = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    m.complete(-1, &[(&job.id, &job.token, "")]).await;
    q.obliterate(true).await.unwrap();
    for id in &ids {
        assert!(q.job(id).await.unwrap().is_none());
    }
    let mut conn = quern_tests::raw_connection(&cfg).await;
    let left: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", m.keys().base())).query_async(&mut conn).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Add `n` jobs of `key`, one after another (in order).
async fn futures_free_adds(q: &Queue, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(add(q, key).await);
    }
    ids
}

/// Two jobs of singleton key `s`, the first leased: (first, its token, second).
async fn singleton_pair(q: &Queue, m: &Mover) -> (String, String, String) {
    q.set_key_singleton(Some("s")).await.unwrap();
    let ids = futures_free_adds(q, "s", 2).await;
    let job = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    assert_eq!(job.id, ids[0]);
    (ids[0].clone(), job.token, ids[1].clone())
}

#[tokio::test]
async fn a_singleton_holder_keeps_its_key_through_its_retry_backoff() {
    let (_cfg, q, m) = setup().await;
    let (first, token, second) = singleton_pair(&q, &m).await;
    m.fail(&first, &token, "try later", FailureKind::Error, 60_000).await;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty(), "the key is still held while the first backs off");
    let held = key_use(&q, "s").await.unwrap();
    assert_eq!((held.active, held.waiting, held.holder.as_deref()), (1, 1, Some(first.as_str())));
    q.promote(&first).await.unwrap();
    let again = m.fetch(10, LEASE, "w").await;
    assert_eq!(again.ids(), std::slice::from_ref(&first), "its holder runs again, on its slot");
    m.complete(-1, &[(&first, &again.jobs[0].token, "")]).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [second], "the next one once the holder has ended");
}

#[tokio::test]
async fn a_singleton_key_frees_when_its_holder_is_dead_lettered_cancelled_or_removed() {
    let (_cfg, q, m) = setup().await;
    let (first, token, second) = singleton_pair(&q, &m).await;
    m.fail(&first, &token, "no", FailureKind::Permanent, -1).await;
    let next = m.fetch(10, LEASE, "w").await;
    assert_eq!(next.ids(), std::slice::from_ref(&second));
    // The second backs off holding the key; cancelling it frees the key.
    m.fail(&second, &next.jobs[0].token, "later", FailureKind::Error, 60_000).await;
    let third = add(&q, "s").await;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty());
    q.cancel(&second, "enough").await.unwrap();
    let run = m.fetch(10, LEASE, "w").await;
    assert_eq!(run.ids(), std::slice::from_ref(&third));
    // The third backs off holding the key; removing it frees the key.
    m.fail(&third, &run.jobs[0].token, "later", FailureKind::Error, 60_000).await;
    let fourth = add(&q, "s").await;
    q.remove(&third).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [fourth]);
}

#[tokio::test]
async fn a_singleton_holder_whose_lease_expired_keeps_its_key_and_runs_again_first() {
    let (_cfg, q, m) = setup().await;
    q.set_key_singleton(Some("s")).await.unwrap();
    let ids = futures_free_adds(&q, "s", 2).await;
    assert_eq!(m.fetch(10, Duration::from_millis(100), "crashed").await.ids(), [ids[0].clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.reap(3, 100, 0).await.recovered, [ids[0].clone()]);
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [ids[0].clone()]);
    assert_eq!(key_use(&q, "s").await.map(|k| (k.active, k.waiting)), Some((1, 1)));
}

#[tokio::test]
async fn an_add_that_skips_a_busy_key_adds_nothing_and_names_the_holder() {
    let (_cfg, q, m) = setup().await;
    let (first, token, _second) = singleton_pair(&q, &m).await;
    let skip = JobOptions::new().concurrency_key("s").skip_if_key_busy();
    let added = q.add_with("job", &(), skip.clone()).await.unwrap();
    assert_eq!((added.skipped, added.created, added.id.as_str()), (true, false, first.as_str()));
    assert_eq!(q.counts().await.unwrap().waiting, 1, "only the second, queued behind the first");
    let other = q.add_with("job", &(), JobOptions::new().concurrency_key("idle").skip_if_key_busy()).await;
    assert!(other.unwrap().created, "an idle key adds");
    m.complete(-1, &[(&first, &token, "")]).await;
    m.fetch(10, LEASE, "w").await;
    assert!(q.add_with("job", &(), skip).await.unwrap().skipped, "busy again with the second");
}

#[tokio::test]
async fn leaving_the_singleton_mode_gives_a_backing_off_holder_slot_back() {
    let (_cfg, q, m) = setup().await;
    let (first, token, second) = singleton_pair(&q, &m).await;
    m.fail(&first, &token, "later", FailureKind::Error, 60_000).await;
    q.set_key_limit_for("s", Some(1)).await.unwrap();
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [second], "the slot is free for the next job");
    assert_eq!(key_use(&q, "s").await.map(|k| (k.active, k.holder)), Some((1, None)));
}

#[tokio::test]
async fn a_key_with_ten_thousand_waiting_jobs_does_not_starve_a_key_with_one() {
    let (cfg, q, _m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let big: Vec<quern_common::NewJob> = (0..10_000)
        .map(|_| {
            quern_common::NewJob::new("job", "big").unwrap().options(JobOptions::new().concurrency_key("big"))
        })
        .collect();
    q.add_bulk(&big).await.unwrap();
    add(&q, "small").await;
    // Each start, with when its handler began and ended.
    type Run = (String, std::time::Instant, Option<std::time::Instant>);
    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Run>::new()));
    let log = started.clone();
    let worker = quern_tests::workers::RunningWorker::start(
        quern_worker::Worker::builder(&cfg, "q").concurrency(4).handler(
            "job",
            move |_ctx: quern_worker::JobContext, key: serde_json::Value| {
                let log = log.clone();
                async move {
                    let key = key.as_str().unwrap_or("small").to_owned();
                    let at = {
                        let mut log = log.lock().unwrap();
                        log.push((key, std::time::Instant::now(), None));
                        log.len() - 1
                    };
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    log.lock().unwrap()[at].2 = Some(std::time::Instant::now());
                    Ok::<(), quern_worker::JobError>(())
                }
            },
        ),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !started.lock().unwrap().iter().any(|r| r.0 == "small") {
        assert!(tokio::time::Instant::now() < deadline, "the small key never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
    let runs = started.lock().unwrap().clone();
    let before = runs.iter().position(|r| r.0 == "small").unwrap();
    // Fetches set the big key's jobs aside about 200 per call, so the small
    // one starts after a short scan, not after the big key's 10,000 jobs.
    assert!(before < 100, "the small key ran after {before} jobs of the big one");
    // The big key's jobs ran one at a time (limit 1): each started after the
    // one before it had ended.
    let big: Vec<&Run> = runs.iter().filter(|r| r.0 == "big").collect();
    for pair in big.windows(2) {
        let ended = pair[0].2.expect("a job the worker waited for at its stop ended");
        assert!(pair[1].1 >= ended, "two jobs of the big key ran at once: {big:?}");
    }
    let c = q.counts().await.unwrap();
    assert_eq!(c.waiting + c.completed, 10_001, "every job waits or completed: {c:?}");
}

const STEP_LIMITS: quern_common::moves::StepLimits =
    quern_common::moves::StepLimits { max_steps: 100, max_bytes: 1 << 20 };

/// Job `id` (leased with `token`) starts a durable sleep of a minute.
async fn sleep_a_minute(m: &Mover, id: &str, token: &str) {
    use quern_common::moves::{Sleep, StepReply, WakeAt};
    let sleep = Sleep { id, token, key: "~sleep#1", wake: WakeAt::In(60_000), limits: STEP_LIMITS };
    let r = m.run(&sleep).await;
    assert!(matches!(r, StepReply::Sleeping(_)), "{r:?}");
}

#[tokio::test]
async fn a_sleeping_job_gives_its_key_slot_to_the_next_job_of_its_key() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let ids = futures_free_adds(&q, "a", 2).await;
    let first = m.fetch(10, LEASE, "w").await.jobs.pop().unwrap();
    assert_eq!(first.id, ids[0]);
    sleep_a_minute(&m, &first.id, &first.token).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [ids[1].clone()], "the sleeper holds no slot of its key");
}

#[tokio::test]
async fn a_sleeping_singleton_holder_keeps_its_key() {
    let (_cfg, q, m) = setup().await;
    let (first, token, second) = singleton_pair(&q, &m).await;
    sleep_a_minute(&m, &first, &token).await;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty(), "the key stays with its sleeping holder");
    let held = key_use(&q, "s").await.unwrap();
    assert_eq!((held.active, held.holder.as_deref()), (1, Some(first.as_str())));
    q.promote(&first).await.unwrap();
    let woken = m.fetch(10, LEASE, "w").await;
    assert_eq!(woken.ids(), std::slice::from_ref(&first), "the holder wakes on its own slot");
    m.complete(-1, &[(&first, &woken.jobs[0].token, "")]).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [second]);
}

#[tokio::test]
async fn a_keys_held_jobs_run_in_the_order_they_were_held_whatever_their_priority() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let id = add(&q, "a").await;
    let first = m.fetch(10, LEASE, "w").await.jobs.remove(0);
    assert_eq!(first.id, id);
    let low = q.add_with("job", &(), JobOptions::new().concurrency_key("a").priority(9)).await.unwrap().id;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty(), "met: held");
    let urgent = add(&q, "a").await;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty(), "met later: held behind it");
    assert_eq!(q.job_ids(JobState::Waiting, 0, 10).await.unwrap(), [low.clone(), urgent.clone()]);
    m.complete(-1, &[(&first.id, &first.token, "")]).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [low], "held first, priority 9 before priority 0");
    // A job of the key not met yet waits in the main list, behind the held ones.
    let later = q.add_with("job", &(), JobOptions::new().concurrency_key("a")).await.unwrap().id;
    let page = q.waiting_jobs_of_key("a", 0, 10).await.unwrap();
    let order: Vec<&str> = page.jobs.iter().map(|j| j.id()).collect();
    assert_eq!(order, [urgent.as_str(), later.as_str()]);
}
