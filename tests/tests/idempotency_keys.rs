//! Idempotency keys with a window: within the window an add with a used key
//! adds nothing and answers the first job's id, whatever became of that job;
//! after the window the key is free again.

use std::time::Duration;

use quern_common::{FailureKind, JobOptions, NewJob};
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::moves::Mover;
use redis::AsyncCommands;

const LEASE: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn setup() -> (Queue, Mover) {
    let cfg = config();
    (Queue::connect(&cfg, "q").await.unwrap(), Mover::new(&cfg, "q").await)
}

fn keyed(key: &str, window: Duration) -> JobOptions {
    JobOptions::new().idempotency_key(key, window)
}

async fn total_jobs(q: &Queue) -> u64 {
    let c = q.counts().await.unwrap();
    c.waiting + c.delayed + c.active + c.completed + c.failed
}

#[tokio::test]
async fn a_second_add_with_the_same_key_adds_nothing_and_answers_the_first_id() {
    let (q, m) = setup().await;
    let first = q.add_with("pay", &1, keyed("payment-7", DAY)).await.unwrap();
    assert!(first.created && !first.deduplicated);
    let again = q.add_with("pay", &2, keyed("payment-7", DAY)).await.unwrap();
    assert_eq!((again.id.as_str(), again.created, again.deduplicated), (first.id.as_str(), false, true));
    assert_eq!(total_jobs(&q).await, 1);
    let other = q.add_with("pay", &3, keyed("payment-8", DAY)).await.unwrap();
    assert!(other.created && other.id != first.id, "another key adds");
    let events = m.event_entries().await;
    let dedup: Vec<_> = events.iter().filter(|e| e["ev"] == "deduplicated").collect();
    assert_eq!(dedup.len(), 1, "{events:?}");
    assert_eq!((dedup[0]["id"].as_str(), dedup[0]["key"].as_str()), (first.id.as_str(), "payment-7"));
}

#[tokio::test]
async fn the_key_holds_after_the_job_completed_and_was_trimmed() {
    let (q, m) = setup().await;
    let first = q.add_with("pay", &1, keyed("k", DAY)).await.unwrap();
    let job = m.fetch(1, LEASE, "w").await.jobs.pop().unwrap();
    // Keep no completed job: the hash is deleted at once.
    m.complete(0, &[(&job.id, &job.token, "")]).await;
    assert!(q.job(&first.id).await.unwrap().is_none(), "the job is gone");
    let again = q.add_with("pay", &1, keyed("k", DAY)).await.unwrap();
    assert!(again.deduplicated && again.id == first.id);
    assert_eq!(total_jobs(&q).await, 0);
}

#[tokio::test]
async fn the_key_holds_after_the_job_was_removed_or_dead_lettered() {
    let (q, m) = setup().await;
    let removed = q.add_with("pay", &1, keyed("removed", DAY)).await.unwrap();
    q.remove(&removed.id).await.unwrap();
    let again = q.add_with("pay", &1, keyed("removed", DAY)).await.unwrap();
    assert!(again.deduplicated && again.id == removed.id);

    let dead = q.add_with("pay", &1, keyed("dead", DAY)).await.unwrap();
    let job = m.fetch(1, LEASE, "w").await.jobs.pop().unwrap();
    m.fail(&job.id, &job.token, "no", FailureKind::Permanent, -1).await;
    assert_eq!(q.counts().await.unwrap().failed, 1);
    let again = q.add_with("pay", &1, keyed("dead", DAY)).await.unwrap();
    assert!(again.deduplicated && again.id == dead.id);
    assert_eq!(total_jobs(&q).await, 1, "only the dead-lettered job");
}

#[tokio::test]
async fn the_key_is_independent_of_explicit_job_ids() {
    let (q, _m) = setup().await;
    let first = q.add_with("pay", &1, keyed("k", DAY).job_id("a")).await.unwrap();
    // Same key, another explicit id: the key wins, nothing is added.
    let same_key = q.add_with("pay", &1, keyed("k", DAY).job_id("b")).await.unwrap();
    assert!(same_key.deduplicated && same_key.id == first.id);
    assert!(q.job("b").await.unwrap().is_none());
    // Same id, no key: the explicit id's own rule (exists: nothing added).
    let same_id = q.add_with("pay", &1, JobOptions::new().job_id("a")).await.unwrap();
    assert!(!same_id.created && !same_id.deduplicated);
}

#[tokio::test]
async fn a_new_add_is_accepted_once_the_window_is_over() {
    let (q, m) = setup().await;
    let window = Duration::from_millis(300);
    let first = q.add_with("pay", &1, keyed("short", window)).await.unwrap();
    let ttl: i64 = m.conn().pttl(m.keys().idempotency("short")).await.unwrap();
    assert!(ttl > 0 && ttl <= 300, "the key expires with the window: {ttl}");
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    let second = q.add_with("pay", &1, keyed("short", window)).await.unwrap();
    assert!(second.created && !second.deduplicated && second.id != first.id);
    let third = q.add_with("pay", &1, keyed("short", window)).await.unwrap();
    assert!(third.deduplicated && third.id == second.id, "the new add holds the key afresh");
}

#[tokio::test]
async fn a_bulk_add_deduplicates_inside_one_batch_and_against_earlier_adds() {
    let (q, _m) = setup().await;
    let earlier = q.add_with("pay", &0, keyed("k0", DAY)).await.unwrap();
    let jobs: Vec<NewJob> = ["k0", "k1", "k1", "k2", "", "k2"]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let job = NewJob::new("pay", &i).unwrap();
            if key.is_empty() { job } else { job.options(keyed(key, DAY)) }
        })
        .collect();
    let added = q.add_bulk(&jobs).await.unwrap();
    let flags: Vec<(bool, bool)> = added.iter().map(|a| (a.created, a.deduplicated)).collect();
    assert_eq!(
        flags,
        [(false, true), (true, false), (false, true), (true, false), (true, false), (false, true)]
    );
    assert_eq!(added[0].id, earlier.id);
    assert_eq!(added[2].id, added[1].id);
    assert_eq!(added[5].id, added[3].id);
    assert_eq!(total_jobs(&q).await, 4, "k0, k1, k2 and the job without a key");
}

#[tokio::test]
async fn concurrent_adds_with_one_key_add_one_job() {
    let (q, _m) = setup().await;
    let adds: Vec<_> = (0..20)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.add_with("pay", &i, keyed("race", DAY)).await.unwrap() })
        })
        .collect();
    let mut added = Vec::new();
    for add in adds {
        added.push(add.await.unwrap());
    }
    assert_eq!(added.iter().filter(|a| a.created).count(), 1);
    assert!(added.iter().all(|a| a.id == added[0].id));
    assert_eq!(total_jobs(&q).await, 1);
}

#[tokio::test]
async fn bad_keys_and_windows_are_refused_before_anything_is_sent() {
    let (q, _m) = setup().await;
    let err = q.add_with("pay", &1, keyed("", DAY)).await.unwrap_err();
    assert!(err.to_string().contains("idempotency key"), "{err}");
    let err = q.add_with("pay", &1, keyed("k", Duration::ZERO)).await.unwrap_err();
    assert!(err.to_string().contains("idempotency window"), "{err}");
    assert_eq!(total_jobs(&q).await, 0);
}

#[tokio::test]
async fn deleting_the_queue_deletes_its_keys_so_a_new_queue_of_that_name_starts_afresh() {
    let (q, m) = setup().await;
    let first = q.add_with("pay", &1, keyed("settle", DAY)).await.unwrap();
    // A key outlives its job: removed, the key still holds.
    q.remove(&first.id).await.unwrap();
    assert!(q.add_with("pay", &1, keyed("settle", DAY)).await.unwrap().deduplicated);
    q.obliterate(false).await.unwrap();
    let exists: bool = m.conn().exists(m.keys().idempotency("settle")).await.unwrap();
    assert!(!exists, "the key went with the queue");
    let again = q.add_with("pay", &1, keyed("settle", DAY)).await.unwrap();
    assert!(again.created && !again.deduplicated);
}

#[tokio::test]
async fn the_reaper_drops_index_entries_whose_window_is_over() {
    let (q, m) = setup().await;
    q.add_with("pay", &1, keyed("short", Duration::from_millis(50))).await.unwrap();
    q.add_with("pay", &2, keyed("long", DAY)).await.unwrap();
    let index = m.keys().idempotency_index();
    let listed: Vec<String> = m.conn().zrange(&index, 0, -1).await.unwrap();
    assert_eq!(listed, ["short", "long"]);
    tokio::time::sleep(Duration::from_millis(120)).await;
    m.reap(3, 100, 0).await;
    let listed: Vec<String> = m.conn().zrange(&index, 0, -1).await.unwrap();
    assert_eq!(listed, ["long"], "the expired key's entry is gone, the open one stays");
}
