//! The web producer example: POST enqueues (202 + job id), GET reports the
//! job's state as a worker runs it.

use std::time::Duration;

use quern_examples::web::app;
use quern_examples::{EMAILS_QUEUE, Welcome};
use quern_producer::Queue;
use quern_tests::{config, eventually};
use quern_worker::{JobContext, Worker};

#[tokio::test]
async fn post_enqueues_and_get_reports_the_state() {
    let cfg = config();
    let queue = Queue::connect(&cfg, EMAILS_QUEUE).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(queue)).await });
    let http = reqwest::Client::new();

    let answer = http
        .post(format!("{base}/signups"))
        .json(&serde_json::json!({ "email": "ada@example.com", "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let body: serde_json::Value = answer.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], format!("/jobs/{id}"));

    let status: serde_json::Value =
        http.get(format!("{base}/jobs/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["state"], "waiting");

    let bad = http
        .post(format!("{base}/signups"))
        .json(&serde_json::json!({ "email": "nobody", "name": "X" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(http.get(format!("{base}/jobs/nope")).send().await.unwrap().status(), 404);

    let worker = Worker::builder(&cfg, EMAILS_QUEUE)
        .handler("welcome", |_ctx: JobContext, mail: Welcome| async move {
            Ok::<_, quern_worker::JobError>(serde_json::json!({ "sent_to": mail.email }))
        })
        .build()
        .await
        .unwrap();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run_until(std::future::pending()));
    let done = eventually(Duration::from_secs(10), "the job completes", || {
        let (http, url) = (http.clone(), format!("{base}/jobs/{id}"));
        async move {
            let s: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (s["state"] == "completed").then_some(s)
        }
    })
    .await;
    assert_eq!(done["result"]["sent_to"], "ada@example.com");
    stop.shutdown();
    running.await.unwrap().unwrap();
}
