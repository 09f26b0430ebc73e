//! Payloads come back byte for byte whatever their size and text, and typical
//! ones (65 to about 576 bytes) keep the job hash in Redis's compact encoding.

use quern_producer::{JobOptions, Queue};
use quern_tests::{config, raw_connection};
use quern_worker::{JobContext, JobError, Worker};
use tokio::sync::mpsc;

fn payloads() -> Vec<String> {
    let mut out = Vec::new();
    for len in [0usize, 1, 60, 62, 63, 64, 65, 100, 127, 128, 129, 500, 574, 575, 576, 577, 700, 5000] {
        out.push(serde_json::to_string(&"x".repeat(len.saturating_sub(2))).unwrap());
    }
    // Multi-byte characters straddling every 64-byte boundary.
    for len in [40usize, 63, 64, 65, 200] {
        out.push(serde_json::to_string(&"é€😀".repeat(len / 3)).unwrap());
    }
    out
}

#[tokio::test]
async fn job_inspection_returns_every_payload_unchanged() {
    let cfg = config();
    let queue = Queue::connect(&cfg, "payloads").await.unwrap();
    for payload in payloads() {
        let added = queue.add_json("p", &payload, JobOptions::new()).await.unwrap();
        let job = queue.job(&added.id).await.unwrap().unwrap();
        assert_eq!(job.payload, payload, "payload of {} bytes", payload.len());
    }
}

#[tokio::test]
async fn workers_receive_every_payload_unchanged() {
    let cfg = config();
    let queue = Queue::connect(&cfg, "payloads").await.unwrap();
    let sent = payloads();
    for payload in &sent {
        queue.add_json("p", payload, JobOptions::new()).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(&cfg, "payloads")
        .concurrency(4)
        .handler("p", move |_ctx: JobContext, value: serde_json::Value| {
            let tx = tx.clone();
            async move {
                tx.send(serde_json::to_string(&value).unwrap()).unwrap();
                Ok::<(), JobError>(())
            }
        })
        .build()
        .await
        .unwrap();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run_until(std::future::pending()));
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        received.push(got.expect("every job runs").unwrap());
    }
    stop.shutdown();
    running.await.unwrap().unwrap();
    let mut sent = sent.clone();
    sent.sort();
    received.sort();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn a_typical_payload_keeps_the_job_hash_compact() {
    let cfg = config();
    let queue = Queue::connect(&cfg, "compact").await.unwrap();
    let mut conn = raw_connection(&cfg).await;
    let typical = serde_json::json!({ "i": 1, "pad": "x".repeat(100) });
    let id = queue.add("job", &typical).await.unwrap().id;
    let encoding: String =
        redis::cmd("OBJECT").arg("ENCODING").arg(queue.keys().job(&id)).query_async(&mut conn).await.unwrap();
    assert_eq!(encoding, "listpack", "a 112-byte payload must not force the hashtable encoding");
}
