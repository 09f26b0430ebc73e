//! Reading a queue's events stream from the library: recent events, events
//! after a given one, following as they happen, and a queue without events.

use std::time::Duration;

use quern_producer::{EventFollower, Queue};
use quern_tests::config;

#[tokio::test]
async fn recent_events_and_those_after_one_are_oldest_first() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(q.add("n", &i).await.unwrap().id);
    }
    let recent = q.recent_events(2).await.unwrap();
    let recent_ids: Vec<&str> = recent.iter().flat_map(|e| e.job_ids()).collect();
    assert_eq!(recent_ids, [ids[2].as_str(), ids[3].as_str()]);
    assert!(recent.iter().all(|e| e.kind == "added"));

    let all = q.events_after("0", 100).await.unwrap();
    assert_eq!(all.len(), 4);
    let rest = q.events_after(&all[1].id, 100).await.unwrap();
    assert_eq!(rest, all[2..], "after an event: the ones that followed it");
    assert!(q.events_after(&all[3].id, 100).await.unwrap().is_empty());
    assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}

#[tokio::test]
async fn a_follower_gets_what_happens_after_it_started() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.add("n", &0).await.unwrap();
    let mut follower = EventFollower::connect(&cfg, &q, None).await.unwrap();
    let id = q.add("n", &1).await.unwrap().id;
    q.pause().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(10), follower.next()).await.unwrap().unwrap();
        seen.extend(batch);
    }
    assert_eq!(seen[0].kind, "added", "not the add from before it started: {seen:?}");
    assert_eq!(seen[0].job_ids(), [id.as_str()]);
    assert_eq!(seen[1].kind, "paused");
}

#[tokio::test]
async fn a_queue_with_events_off_records_none() {
    let cfg = config();
    let q = Queue::builder(&cfg, "quiet").events_max_len(0).connect().await.unwrap();
    q.add("n", &0).await.unwrap();
    assert!(q.recent_events(10).await.unwrap().is_empty());
}
