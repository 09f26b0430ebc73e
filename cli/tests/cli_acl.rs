//! The read-only operator as the README's `quern-operator` ACL user: `quern
//! stats`, `workers`, `jobs`, `job`, `dlq list`, `events` (also
//! `--follow`), `metrics --once` and `schedules list` work with no command
//! refused; `dlq retry`, `enqueue`, `pause`, `cancel` and `promote` are refused
//! (`NOPERM`) and change nothing. Also `quern enqueue` as the producer user and
//! `quern worker` as the worker user.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use quern_common::JobState;
use quern_producer::{JobOptions, Queue};
use quern_scheduler::{Schedule, Schedules};
use quern_tests::acl::AclServer;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};
use support::{WorkerProcess, json, quern, run, wait_finished};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn the_read_only_operator_reads_everything_and_changes_nothing() {
    let server = AclServer::start().await;
    let producer = Queue::connect(&server.config_of("quern-producer"), "ops").await.unwrap();
    let ok = producer.add("job", &"ok").await.unwrap().id;
    let dead = producer.add_with("job", &"doomed", JobOptions::new().attempts(1)).await.unwrap().id;
    let later =
        producer.add_with("job", &"ok", JobOptions::new().delay(Duration::from_secs(3600))).await.unwrap().id;
    let worker = RunningWorker::start(Worker::builder(&server.config_of("quern-worker"), "ops").handler(
        "job",
        |_: JobContext, kind: String| async move {
            if kind == "doomed" { Err(JobError::permanent("never")) } else { Ok(()) }
        },
    ))
    .await;
    wait_for_state(&producer, &ok, JobState::Completed, WAIT).await;
    wait_for_state(&producer, &dead, JobState::Failed, WAIT).await;
    let scheduler = server.config_of("quern-scheduler");
    Schedules::connect(&scheduler)
        .await
        .unwrap()
        .upsert(&Schedule::new("nightly", "0 2 * * *", "ops", "job"))
        .await
        .unwrap();

    // A listed id whose job hash is gone: `jobs` checks that it is still
    // listed (`LPOS`, `ZSCORE`) and reports it.
    let mut admin = server.admin().await;
    let _: () =
        redis::cmd("RPUSH").arg(producer.keys().wait()).arg("ghost").query_async(&mut admin).await.unwrap();
    let op = server.config_of("quern-operator");
    let stats = tokio::task::block_in_place(|| {
        let waiting = run(&op, &["jobs", "ops", "--state", "waiting", "--json"]).ok();
        assert!(waiting.contains("ghost"), "{waiting}");
        let stats = json(&run(&op, &["stats", "--json"]).ok());
        assert_eq!(stats["ops"]["failed"], 1, "{stats}");
        run(&op, &["stats"]).ok();
        run(&op, &["workers", "--json"]).ok();
        for state in ["waiting", "delayed", "active", "completed", "failed"] {
            run(&op, &["jobs", "ops", "--state", state, "--json"]).ok();
        }
        run(&op, &["job", "ops", &dead, "--json"]).ok();
        run(&op, &["keys", "ops", "--json"]).ok();
        run(&op, &["dlq", "ops", "list"]).ok();
        run(&op, &["events", "ops", "--last", "5"]).ok();
        let metrics = run(&op, &["metrics", "--once"]).ok();
        assert!(metrics.contains("ops"), "{metrics}");
        run(&op, &["schedules", "list"]).ok();
        // --follow: blocks on a connection of its own until killed.
        let mut follow =
            quern(&op).args(["events", "ops", "--follow"]).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(follow.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        // An event written after it started arrives through its `XREAD`.
        let admin_cfg = quern_common::RedisConfig::new(server.redis().url()).prefix(producer.keys().prefix());
        let rt = tokio::runtime::Handle::current();
        let later_id = rt.block_on(async {
            let q = Queue::connect(&admin_cfg, "ops").await.unwrap();
            q.add_with("job", &"ok", JobOptions::new().delay(Duration::from_secs(3600))).await.unwrap().id
        });
        let mut next = String::new();
        while !next.contains(&later_id) {
            next.clear();
            assert!(lines.read_line(&mut next).unwrap() > 0, "the follower ended");
        }
        let _ = follow.kill();
        let _ = follow.wait();
        let _ = stats;
        json(&run(&op, &["stats", "--json"]).ok())
    });
    assert_eq!(server.denials_of("quern-operator").await, Vec::<String>::new());

    tokio::task::block_in_place(|| {
        for args in [
            &["dlq", "ops", "retry", dead.as_str()][..],
            &["enqueue", "ops", "job", "--payload", "\"ok\""],
            &["pause", "ops"],
            &["cancel", "ops", later.as_str()],
            &["promote", "ops", later.as_str()],
        ] {
            let r = run(&op, args);
            assert_ne!(r.code, 0, "{args:?} must be refused: {}", r.stdout);
            // NOPERM, or the same refusal of a command a script runs.
            let stderr = r.stderr.to_lowercase();
            let denied = stderr.contains("noperm") || stderr.contains("can't run this command");
            assert!(denied, "{args:?}: {}", r.stderr);
            assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        }
        assert_eq!(json(&run(&op, &["stats", "--json"]).ok()), stats, "nothing changed");
    });
    worker.stop().await;
}

#[test]
fn quern_enqueue_as_the_producer_and_quern_worker_as_the_worker() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(AclServer::start());
    let producer = server.config_of("quern-producer");
    let id = run(&producer, &["enqueue", "cmds", "command", "--payload", r#"{"argv":["true"]}"#]).ok();
    let _worker = WorkerProcess::start(&server.config_of("quern-worker"), "cmds", &[]);
    let job = wait_finished(&server.config_of("quern-operator"), "cmds", id.trim());
    assert_eq!(job["state"], "completed", "{job}");
    let denied: Vec<String> = ["quern-producer", "quern-worker", "quern-operator"]
        .iter()
        .flat_map(|u| runtime.block_on(server.denials_of(u)))
        .collect();
    assert_eq!(denied, Vec::<String>::new());
}
