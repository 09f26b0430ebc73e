//! Durable steps through the CLI: `quern job` shows a job's step timeline,
//! `quern dlq retry` resumes after its finished steps and `--from-step`
//! reruns it from a chosen step.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::config;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};
use support::{json, run};

#[tokio::test]
async fn job_shows_the_step_timeline_and_dlq_retry_from_step_reruns_from_there() {
    let cfg = config();
    let q = Queue::connect(&cfg, "flows").await.unwrap();
    // Step "ship" fails for good on its first run; "pack" counts its runs.
    let (packed, shipped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (p, s) = (packed.clone(), shipped.clone());
    let w = RunningWorker::start(Worker::builder(&cfg, "flows").handler(
        "order",
        move |ctx: JobContext, _: ()| {
            let (p, s) = (p.clone(), s.clone());
            async move {
                ctx.step("pack", || async { Ok(p.fetch_add(1, Ordering::SeqCst) + 1) }).await?;
                ctx.step("ship", || async {
                    match s.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(JobError::permanent("carrier refused the parcel")),
                        _ => Ok("shipped".to_owned()),
                    }
                })
                .await?;
                Ok::<(), JobError>(())
            }
        },
    ))
    .await;
    let id = q.add("order", &()).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Failed, Duration::from_secs(10)).await;

    let human = run(&cfg, &["job", "flows", &id]).ok();
    assert!(human.contains("steps:"), "{human}");
    let pack = human.lines().find(|l| l.trim_start().starts_with("pack")).expect("a pack line");
    assert!(pack.contains("ok") && pack.contains("1 bytes"), "{pack}");
    let ship = human.lines().find(|l| l.trim_start().starts_with("ship")).expect("a ship line");
    assert!(ship.contains("failed") && ship.contains("carrier refused the parcel"), "{ship}");
    let job = json(&run(&cfg, &["job", "flows", &id, "--json"]).ok());
    assert_eq!(job["steps"][0]["name"], "pack");
    assert_eq!(job["steps"][0]["occurrence"], 1);
    assert_eq!(job["steps"][0]["attempt"], 1);
    assert_eq!(job["steps"][0]["result_bytes"], 1);
    assert_eq!(job["steps"][1]["outcome"], "failed");
    assert_eq!(job["steps"][1]["error"], "carrier refused the parcel");

    let unknown = run(&cfg, &["dlq", "flows", "retry", &id, "--from-step", "label"]).fails_with(3);
    assert!(
        unknown.contains("no stored step \"label#1\"") && unknown.contains("pack#1, ship#1"),
        "{unknown}"
    );
    let bad = run(&cfg, &["dlq", "flows", "retry", &id, "--from-step", "pack#0"]).fails_with(2);
    assert!(bad.contains("occurrence"), "{bad}");

    run(&cfg, &["dlq", "flows", "retry", &id, "--from-step", "pack"]).ok();
    wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!((packed.load(Ordering::SeqCst), shipped.load(Ordering::SeqCst)), (2, 2), "both ran again");
    w.stop().await;
}

#[tokio::test]
async fn dlq_retry_resumes_after_the_finished_steps() {
    let cfg = config();
    let q = Queue::connect(&cfg, "resume").await.unwrap();
    let (packed, shipped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (p, s) = (packed.clone(), shipped.clone());
    let w = RunningWorker::start(Worker::builder(&cfg, "resume").handler(
        "order",
        move |ctx: JobContext, _: ()| {
            let (p, s) = (p.clone(), s.clone());
            async move {
                ctx.step("pack", || async { Ok(p.fetch_add(1, Ordering::SeqCst)) }).await?;
                ctx.step("ship", || async {
                    match s.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(JobError::permanent("no carrier")),
                        n => Ok(n),
                    }
                })
                .await?;
                Ok::<(), JobError>(())
            }
        },
    ))
    .await;
    let id = q.add("order", &()).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Failed, Duration::from_secs(10)).await;
    run(&cfg, &["dlq", "resume", "retry", &id]).ok();
    wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!((packed.load(Ordering::SeqCst), shipped.load(Ordering::SeqCst)), (1, 2));
    w.stop().await;
}
