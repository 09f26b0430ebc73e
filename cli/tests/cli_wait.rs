//! `quern enqueue --wait`: prints the result and exits 0 when the job
//! completes, and exits 4, 5, 6 or 7 when it was dead-lettered, cancelled,
//! removed, or had not ended in time.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use quern_tests::config;
use support::{Run, WorkerProcess, json, quern, run};

/// Start `quern enqueue ... --wait` in the background.
fn enqueue_and_wait(cfg: &quern_tests::RedisConfig, args: &[&str]) -> Child {
    quern(cfg)
        .arg("enqueue")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quern enqueue")
}

/// Wait until job `id` of queue `q` exists (the background add is in).
fn until_added(cfg: &quern_tests::RedisConfig, q: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while run(cfg, &["job", q, id, "--json"]).code != 0 {
        assert!(Instant::now() < deadline, "job {id} was never added");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().expect("wait for quern enqueue"))
}

#[test]
fn a_completed_job_prints_its_result_and_exits_0() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "ops", &[]);
    let payload = r#"{"argv":["echo","hello"]}"#;
    let out = run(&cfg, &["enqueue", "ops", "command", "--payload", payload, "--wait", "30s"]);
    assert!(out.stderr.contains("waiting up to"), "the id goes to stderr: {}", out.stderr);
    let result = json(&out.ok());
    assert!(result.to_string().contains("hello"), "the command's output is in its result: {result}");
    let line = run(&cfg, &["enqueue", "ops", "command", "--payload", payload, "--wait", "30s", "--json"]);
    let line = json(&line.ok());
    assert_eq!(line["outcome"], "completed");
    assert!(line["result"].to_string().contains("hello"), "{line}");
}

#[test]
fn a_dead_lettered_job_exits_4_with_its_error() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "ops", &[]);
    let payload = r#"{"argv":["false"]}"#;
    let out =
        run(&cfg, &["enqueue", "ops", "command", "--payload", payload, "--attempts", "1", "--wait", "30s"]);
    let stderr = out.fails_with(4);
    assert!(stderr.contains("dead-lettered"), "{stderr}");
}

#[test]
fn a_cancelled_job_exits_5_and_a_removed_one_6() {
    let cfg = config();
    let cancelled = enqueue_and_wait(&cfg, &["ops", "command", "--id", "c1", "--wait", "30s"]);
    let removed = enqueue_and_wait(&cfg, &["ops", "command", "--id", "r1", "--wait", "30s", "--json"]);
    until_added(&cfg, "ops", "c1");
    until_added(&cfg, "ops", "r1");
    run(&cfg, &["cancel", "ops", "c1", "--reason", "not today"]).ok();
    run(&cfg, &["remove", "ops", "r1"]).ok();
    let stderr = finish(cancelled).fails_with(5);
    assert!(stderr.contains("cancelled: not today"), "{stderr}");
    let out = finish(removed);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert_eq!(json(&out.stdout)["outcome"], "removed");
}

#[test]
fn a_job_not_ended_in_time_exits_7_and_stays() {
    let cfg = config();
    let out = run(&cfg, &["enqueue", "ops", "command", "--id", "t1", "--wait", "300ms"]);
    let stderr = out.fails_with(7);
    assert!(stderr.contains("had not ended"), "{stderr}");
    assert_eq!(json(&run(&cfg, &["job", "ops", "t1", "--json"]).ok())["state"], "waiting");
}
