//! A concurrency key's waiting count is exact: every waiting job of the key
//! counts, whether a worker set it aside for the key or it still waits in
//! the queue's waiting lists, through every move in and out of waiting (add,
//! fetch, retry, promotion, release, an expired lease taken back, cancel,
//! remove, a dead-letter retry, a durable sleep's wake). And a key's waiting
//! jobs can be listed, a bounded page at a time.

use std::time::Duration;

use quern_common::{FailureKind, JobEntry, JobOptions, NewJob, RedisConfig};
use quern_producer::{KEY_SCAN_PAGE, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;

const LEASE: Duration = Duration::from_secs(30);

async fn setup() -> (RedisConfig, Queue, Mover) {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    (cfg, q, m)
}

fn of(key: &str) -> JobOptions {
    JobOptions::new().concurrency_key(key)
}

async fn add(q: &Queue, key: &str) -> String {
    q.add_with("job", &(), of(key)).await.unwrap().id
}

/// Key `key`'s (active, waiting, held) jobs; zeros when it is not listed.
async fn use_of(q: &Queue, key: &str) -> (u64, u64, u64) {
    let keys = q.concurrency_keys().await.unwrap();
    keys.busy.iter().find(|k| k.key == key).map_or((0, 0, 0), |k| (k.active, k.waiting, k.held))
}

fn ids(jobs: &[JobEntry]) -> Vec<String> {
    jobs.iter().map(|j| j.id().to_owned()).collect()
}

#[tokio::test]
async fn jobs_of_a_key_count_as_waiting_before_any_worker_met_them() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let a: Vec<String> = vec![add(&q, "a").await, add(&q, "a").await, add(&q, "a").await];
    q.add("job", &()).await.unwrap();
    q.add_with("job", &(), of("a").delay(Duration::from_secs(3600))).await.unwrap();
    q.add_with("job", &(), of("a").priority(3)).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (0, 4, 0), "a delayed job is not waiting");
    let got = m.fetch(10, LEASE, "w").await;
    assert_eq!(got.jobs.len(), 2, "a's first and the plain job");
    assert_eq!(use_of(&q, "a").await, (1, 3, 3), "the others are held now, and still waiting");
    m.complete(-1, &[(&a[0], &got.jobs[0].token, "")]).await;
    assert_eq!(m.fetch(10, LEASE, "w").await.ids(), [a[1].clone()], "a held job runs when the slot frees");
    assert_eq!(use_of(&q, "a").await, (1, 2, 2));
    // A key with room: its jobs count until they run.
    q.set_key_limit_for("free", Some(5)).await.unwrap();
    add(&q, "free").await;
    add(&q, "free").await;
    assert_eq!(use_of(&q, "free").await, (0, 2, 0));
    m.fetch(10, LEASE, "w").await;
    assert_eq!(use_of(&q, "free").await, (2, 0, 0));
}

#[tokio::test]
async fn retries_releases_promotions_and_expired_leases_count_their_job_waiting_again() {
    let (_cfg, q, m) = setup().await;
    let id = add(&q, "a").await;
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(use_of(&q, "a").await.1, 0, "running, not waiting");
    // Retried at once.
    m.fail(&id, &job.token, "again", FailureKind::Error, 0).await;
    assert_eq!(use_of(&q, "a").await.1, 1);
    // Retried after a backoff: waiting only once promoted.
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(use_of(&q, "a").await.1, 0);
    m.fail(&id, &job.token, "later", FailureKind::Error, 3_600_000).await;
    assert_eq!(use_of(&q, "a").await.1, 0, "backing off is delayed, not waiting");
    q.promote(&id).await.unwrap();
    assert_eq!(use_of(&q, "a").await.1, 1);
    // Released by a stopping worker.
    let job = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(m.release(&[(&id, &job.token)]).await, 1);
    assert_eq!(use_of(&q, "a").await.1, 1);
    // Its worker died (the reaper's pass a kill -9 leads to).
    m.fetch(1, Duration::from_millis(50), "crashed").await;
    assert_eq!(use_of(&q, "a").await.1, 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(m.reap(3, 100, 0).await.recovered, std::slice::from_ref(&id));
    assert_eq!(use_of(&q, "a").await.1, 1);
    // Under a limit, the taken-back job is held for its key: counted once.
    q.set_key_limit(Some(1)).await.unwrap();
    m.fetch(1, Duration::from_millis(50), "crashed").await;
    add(&q, "a").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    m.reap(3, 100, 0).await;
    assert_eq!(use_of(&q, "a").await, (0, 2, 1));
}

#[tokio::test]
async fn cancelling_or_removing_waiting_jobs_of_a_key_uncounts_them_held_or_not() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let a: Vec<String> = vec![add(&q, "a").await, add(&q, "a").await, add(&q, "a").await];
    m.fetch(1, LEASE, "w").await;
    m.fetch(1, LEASE, "w").await; // meets a[1] and a[2]: held
    let more: Vec<String> = vec![add(&q, "a").await, add(&q, "a").await];
    assert_eq!(use_of(&q, "a").await, (1, 4, 2));
    q.cancel(&a[1], "held one").await.unwrap();
    q.remove(&a[2]).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (1, 2, 0));
    q.cancel(&more[0], "in the list").await.unwrap();
    q.remove(&more[1]).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (1, 0, 0));
    // Removing or cancelling a delayed job of the key changes nothing.
    let later = q.add_with("job", &(), of("a").delay(Duration::from_secs(3600))).await.unwrap().id;
    q.remove(&later).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (1, 0, 0));
}

#[tokio::test]
async fn delayed_jobs_count_once_due_and_dead_letter_retries_and_woken_sleepers_count() {
    use quern_common::moves::{Sleep, StepLimits, StepReply, WakeAt};
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let first = add(&q, "a").await;
    let job = m.fetch(10, LEASE, "w").await.jobs.remove(0);
    // Due while a fetch runs: the fetch promotes it, meets it and holds it.
    q.add_with("job", &(), of("a").delay(Duration::from_millis(30))).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (1, 0, 0));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(m.fetch(10, LEASE, "w").await.jobs.is_empty());
    assert_eq!(use_of(&q, "a").await, (1, 1, 1));
    // Dead-lettered, then retried from the dead-letter list.
    m.fail(&first, &job.token, "no", FailureKind::Permanent, -1).await;
    q.retry_dead_letter(&first).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (0, 2, 1));
    // A durable sleep leaves waiting for delayed; its wake makes it waiting.
    // The held one runs; the retried one is met and held.
    let run = m.fetch(10, LEASE, "w").await.jobs.remove(0);
    assert_eq!(use_of(&q, "a").await, (1, 1, 1));
    let limits = StepLimits { max_steps: 100, max_bytes: 1 << 20 };
    let sleep = Sleep { id: &run.id, token: &run.token, key: "~sleep#1", wake: WakeAt::In(60_000), limits };
    assert!(matches!(m.run(&sleep).await, StepReply::Sleeping(_)));
    assert_eq!(use_of(&q, "a").await, (0, 1, 1));
    q.promote(&run.id).await.unwrap();
    assert_eq!(use_of(&q, "a").await, (0, 2, 1));
    let waiting = q.waiting_jobs_of_key("a", 0, 10).await.unwrap();
    assert_eq!(waiting.jobs.len(), 2);
}

#[tokio::test]
async fn a_keys_waiting_jobs_are_listed_held_ones_first_then_by_the_waiting_lists() {
    let (_cfg, q, m) = setup().await;
    q.set_key_limit(Some(1)).await.unwrap();
    let running = add(&q, "a").await;
    assert_eq!(m.fetch(1, LEASE, "w").await.ids(), [running]);
    let held = add(&q, "a").await;
    assert!(m.fetch(1, LEASE, "w").await.jobs.is_empty(), "meets it: held");
    q.add("job", &()).await.unwrap();
    let a2 = add(&q, "a").await;
    add(&q, "b").await;
    let a3 = add(&q, "a").await;
    let a4 = q.add_with("job", &(), of("a").priority(5)).await.unwrap().id;
    q.add("job", &()).await.unwrap();
    let all = q.waiting_jobs_of_key("a", 0, 10).await.unwrap();
    assert_eq!(ids(&all.jobs), [held.clone(), a2.clone(), a3.clone(), a4.clone()]);
    assert_eq!(all.next, None);
    let page = q.waiting_jobs_of_key("a", 0, 2).await.unwrap();
    assert_eq!(ids(&page.jobs), [held, a2]);
    let rest = q.waiting_jobs_of_key("a", page.next.unwrap(), 2).await.unwrap();
    assert_eq!((ids(&rest.jobs), rest.next), (vec![a3, a4], None));
    assert!(q.waiting_jobs_of_key("none", 0, 10).await.unwrap().jobs.is_empty());
    assert!(q.waiting_jobs_of_key("", 0, 10).await.is_err(), "a bad key is refused");
}

#[tokio::test]
async fn listing_a_keys_jobs_reads_a_bounded_page_of_a_long_waiting_list() {
    let (_cfg, q, _m) = setup().await;
    let first = add(&q, "a").await;
    let plain: Vec<NewJob> = (0..2 * KEY_SCAN_PAGE).map(|i| NewJob::new("job", &i).unwrap()).collect();
    q.add_bulk(&plain).await.unwrap();
    let last = add(&q, "a").await;
    let page = q.waiting_jobs_of_key("a", 0, 10).await.unwrap();
    assert_eq!(
        ids(&page.jobs),
        std::slice::from_ref(&first),
        "the first page stops after {KEY_SCAN_PAGE} entries"
    );
    let mut found = ids(&page.jobs);
    let mut next = page.next;
    let mut calls = 1;
    while let Some(from) = next {
        let page = q.waiting_jobs_of_key("a", from, 10).await.unwrap();
        found.extend(ids(&page.jobs));
        next = page.next;
        calls += 1;
        assert!(calls <= 4, "every call reads up to {KEY_SCAN_PAGE} entries");
    }
    assert_eq!(found, [first, last]);
    assert_eq!(calls, 3);
}
