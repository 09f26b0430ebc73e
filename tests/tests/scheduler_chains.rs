//! Schedules that enqueue a chain: each tick's links run once each, in order,
//! even with two schedulers racing on every tick; a failed link stops the
//! rest, and `Schedules::status` shows how far the last chain got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_common::JobState;
use quern_producer::Queue;
use quern_scheduler::{ChainLink, OverlapPolicy, Schedule, Scheduler, Schedules, parse_schedules_toml};
use quern_tests::config;
use quern_tests::sched::RunningScheduler;
use quern_tests::workers::RunningWorker;
use quern_worker::{JobContext, JobError, Worker};

const EXAMPLE: &str = r#"
[[schedule]]
name = "nightly"
cron = "0 2 * * *"
queue = "ops"
overlap = "skip"
[[schedule.chain]]
job = "command"
payload = { argv = ["/opt/app/bin/rebuild-profiles"] }
[[schedule.chain]]
job = "command"
payload = { argv = ["/opt/app/bin/snapshot"] }
"#;

#[test]
fn the_schedules_file_takes_a_chain() {
    let s = &parse_schedules_toml(EXAMPLE, "test").unwrap()[0];
    let jobs: Vec<_> = s.chain.iter().map(|l| (l.job.as_str(), l.payload.as_str())).collect();
    assert_eq!(
        jobs,
        [
            ("command", r#"{"argv":["/opt/app/bin/rebuild-profiles"]}"#),
            ("command", r#"{"argv":["/opt/app/bin/snapshot"]}"#)
        ]
    );
    let both = EXAMPLE.replace("overlap = \"skip\"", "overlap = \"skip\"\njob = \"x\"");
    let err = parse_schedules_toml(&both, "test").unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
}

fn link(job: &str, n: u32) -> ChainLink {
    ChainLink { job: job.into(), payload: format!("{{\"n\":{n}}}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_schedulers_run_each_link_of_a_ticks_chain_once_in_order() {
    let cfg = config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    let chain = Schedule::new("pipeline", "* * * * * *", "ops", "").overlap(OverlapPolicy::Skip).chain(vec![
        link("step", 1),
        link("step", 2),
        link("step", 3),
    ]);
    schedules.upsert(&chain).await.unwrap();
    let broken = Schedule::new("broken", "* * * * * *", "ops", "").chain(vec![
        link("step", 1),
        link("reject", 2),
        link("step", 3),
    ]);
    schedules.upsert(&broken).await.unwrap();

    let ran: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let seen = ran.clone();
    let builder = Worker::builder(&cfg, "ops")
        .concurrency(4)
        .idle_block(Duration::from_millis(500))
        .handler("step", move |ctx: JobContext, p: serde_json::Value| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((ctx.id().to_owned(), p["n"].as_u64().unwrap_or(0)));
                Ok::<_, JobError>(())
            }
        })
        .handler("reject", |_ctx: JobContext, _p: serde_json::Value| async move {
            Err::<(), JobError>(JobError::permanent("link two refuses"))
        });
    let worker = RunningWorker::start(builder).await;
    let a = RunningScheduler::start(Scheduler::builder(&cfg).leader_election(false)).await;
    let b = RunningScheduler::start(Scheduler::builder(&cfg).leader_election(false)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    a.stop().await;
    b.stop().await;
    // Let the last chains finish.
    let q = Queue::connect(&cfg, "ops").await.unwrap();
    quern_tests::eventually(Duration::from_secs(20), "every chain to finish", || {
        let q = q.clone();
        async move {
            let c = q.counts().await.unwrap();
            (c.waiting_children == 0 && c.waiting == 0 && c.active == 0).then_some(())
        }
    })
    .await;
    worker.stop().await;

    let ran = ran.lock().unwrap().clone();
    let pipeline: Vec<&(String, u64)> = ran.iter().filter(|(id, _)| id.starts_with("pipeline@")).collect();
    let mut ticks: Vec<&str> = pipeline.iter().filter(|(_, n)| *n == 3).map(|(id, _)| id.as_str()).collect();
    ticks.sort();
    assert!(ticks.len() >= 2, "at least two ticks' chains ran: {ran:?}");
    for tick in &ticks {
        let links: Vec<u64> = pipeline
            .iter()
            .filter(|(id, _)| id == tick || id.strip_prefix(*tick).is_some_and(|r| r.starts_with('#')))
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(links, [1, 2, 3], "tick {tick}: each link once, in order");
    }
    assert_eq!(pipeline.len(), ticks.len() * 3, "no link ran without its chain completing: {pipeline:?}");
    // The broken chain's first link ran, its second failed, its third never ran.
    assert!(ran.iter().all(|(id, n)| !(id.starts_with("broken@") && *n == 3)), "{ran:?}");

    let status = schedules.status().await.unwrap();
    let progress =
        |name: &str| status.iter().find(|s| s.schedule.name == name).unwrap().chain.clone().unwrap();
    let p = progress("pipeline");
    assert_eq!((p.links, p.completed, p.failed), (3, 3, None));
    let b = progress("broken");
    assert_eq!((b.links, b.completed, b.failed), (3, 1, Some(2)));
    let last = status.iter().find(|s| s.schedule.name == "broken").unwrap().last_job_id.clone().unwrap();
    let root = q.job(&last).await.unwrap().unwrap();
    assert_eq!(root.state, JobState::Failed);
    assert!(root.last_error.unwrap().contains("link two refuses"));
}
