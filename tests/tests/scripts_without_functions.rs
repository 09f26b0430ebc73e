//! Where a Redis refuses Redis Functions (Redis 6.2 does not know `FCALL`;
//! here an ACL forbids it), quern falls back to `EVALSHA` for the whole
//! process and everything keeps working. A test binary of its own: the
//! fallback is process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::scripts;
use quern_common::{JobOptions, JobState, NewJob, OnChildFailure};
use quern_producer::{FlowJob, Queue};
use quern_tests::workers::{RunningWorker, counting, wait_for_state};
use quern_tests::{TestRedis, command_calls, config_for, raw_connection};
use quern_worker::Worker;

#[tokio::test]
async fn jobs_run_through_evalsha_when_fcall_is_refused() {
    let server = TestRedis::start();
    let admin = config_for(&server.url());
    let mut raw = raw_connection(&admin).await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "legacy", "on", ">pw", "~*", "&*", "+@all", "-fcall", "-fcall_ro", "-function"])
        .query_async(&mut raw)
        .await
        .unwrap();
    let legacy_url = server.url().replace("redis://", "redis://legacy:pw@");
    let cfg = config_for(&legacy_url);
    assert!(scripts::calls_functions(), "functions are tried first");

    // The first add is refused FCALL, falls back, loads its script and runs.
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let first = q.add("job", &1).await.expect("an add falls back to EVALSHA").id;
    assert!(!scripts::calls_functions(), "the process now calls EVALSHA");

    let done = Arc::new(AtomicUsize::new(0));
    let worker =
        RunningWorker::start(counting(Worker::builder(&cfg, "q").concurrency(4), "job", done.clone())).await;
    let mut ids = vec![first];
    for n in 2..=20u64 {
        ids.push(q.add("job", &n).await.unwrap().id);
    }
    for id in &ids {
        wait_for_state(&q, id, JobState::Completed, Duration::from_secs(10)).await;
    }
    worker.stop().await;
    assert_eq!(done.load(Ordering::SeqCst), 20);

    // A flow, whose scripts carry the prelude's flow helpers: the parent
    // runs once its children completed, in this queue and another.
    let child =
        |id: &str| FlowJob::new(NewJob::new("job", &0).unwrap().options(JobOptions::new().job_id(id)));
    let flow = child("parent")
        .child(OnChildFailure::FailParent, child("here"))
        .child(OnChildFailure::FailParent, child("there").in_queue("other"));
    q.add_flow(flow).await.unwrap();
    let here = RunningWorker::start(counting(
        Worker::builder(&cfg, "q").reap_interval(Duration::from_millis(100)),
        "job",
        done.clone(),
    ))
    .await;
    let there = RunningWorker::start(counting(
        Worker::builder(&cfg, "other").reap_interval(Duration::from_millis(100)),
        "job",
        done.clone(),
    ))
    .await;
    let parent = wait_for_state(&q, "parent", JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!(parent.children.len(), 2);
    here.stop().await;
    there.stop().await;

    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut raw).await.unwrap();
    assert!(command_calls(&info, "evalsha") >= 40, "adds, fetches and completions ran as EVALSHA:\n{info}");
    let functions: u64 =
        redis::cmd("FUNCTION").arg("LIST").query_async::<Vec<redis::Value>>(&mut raw).await.unwrap().len()
            as u64;
    assert_eq!(functions, 0, "no library was loaded");
}
