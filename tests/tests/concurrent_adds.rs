//! Concurrent `add` calls on one handle are combined into shared script calls;
//! each caller still gets its own, correct outcome.

use std::collections::HashSet;

use quern_producer::{Error, JobOptions, Queue};
use quern_tests::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_adds_each_get_their_own_job() {
    let queue = Queue::connect(&config(), "burst").await.unwrap();
    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { (i, queue.add("n", &serde_json::json!({ "i": i })).await.unwrap()) })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let (i, added) = task.await.unwrap();
        assert!(added.created);
        let job = queue.job(&added.id).await.unwrap().expect("the job exists");
        assert_eq!(job.payload, format!(r#"{{"i":{i}}}"#), "each caller gets the id of its own job");
        assert!(ids.insert(added.id), "ids are unique");
    }
    assert_eq!(queue.counts().await.unwrap().waiting, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_explicit_id_added_concurrently_is_created_once() {
    let queue = Queue::connect(&config(), "idem").await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue.add_with("settle", &i, JobOptions::new().job_id("settlement-2026-11-23")).await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let added = task.await.unwrap();
        assert_eq!(added.id, "settlement-2026-11-23");
        created += usize::from(added.created);
    }
    assert_eq!(created, 1);
    assert_eq!(queue.counts().await.unwrap().waiting, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_add_fails_alone_while_its_neighbours_succeed() {
    let queue = Queue::builder(&config(), "mixed").max_payload_bytes(1_000).connect().await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let pad = if i % 10 == 0 { "x".repeat(2_000) } else { String::new() };
                (i, queue.add("n", &serde_json::json!({ "i": i, "pad": pad })).await)
            })
        })
        .collect();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        if i % 10 == 0 {
            assert!(matches!(outcome, Err(Error::PayloadTooLarge { .. })), "job {i}: {outcome:?}");
        } else {
            assert!(outcome.unwrap().created, "job {i}");
        }
    }
    assert_eq!(queue.counts().await.unwrap().waiting, 180);
}
