//! `quern enqueue`, `stats`, `workers`, `job`, `jobs`, `dlq`, `promote`, `remove`, `pause`, `resume`
//! and `limit` against a real Redis.

mod support;

use std::time::Duration;

use quern_tests::{config, eventually};
use quern_worker::{JobContext, JobError, Worker};
use support::{json, run};

#[test]
fn enqueue_prints_the_id_and_stats_count_it() {
    let cfg = config();
    let id = run(&cfg, &["enqueue", "mail", "welcome", "--payload", r#"{"to":"ada"}"#]).ok();
    assert!(!id.trim().is_empty());
    run(&cfg, &["enqueue", "mail", "later", "--delay", "1h", "--priority", "2", "--attempts", "5"]).ok();
    let stats = json(&run(&cfg, &["stats", "--json"]).ok());
    assert_eq!(stats["mail"]["waiting"], 1);
    assert_eq!(stats["mail"]["delayed"], 1);
    for state in ["active", "completed", "failed"] {
        assert_eq!(stats["mail"][state], 0, "{state}");
    }
    let one = json(&run(&cfg, &["stats", "mail", "--json"]).ok());
    assert_eq!(one.as_object().unwrap().len(), 1);
    let table = run(&cfg, &["stats"]).ok();
    assert!(table.contains("QUEUE") && table.contains("mail"), "{table}");
}

#[test]
fn explicit_ids_are_idempotent() {
    let cfg = config();
    let first = json(&run(&cfg, &["enqueue", "q", "n", "--id", "order-7", "--json"]).ok());
    assert_eq!(first["id"], "order-7");
    assert_eq!(first["created"], true);
    let again = run(&cfg, &["enqueue", "q", "n", "--id", "order-7"]);
    assert!(again.stderr.contains("existed already"), "{}", again.stderr);
    assert_eq!(again.ok().trim(), "order-7");
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!(stats["q"]["waiting"], 1);
}

#[test]
fn an_idempotency_key_adds_once_within_its_window() {
    let cfg = config();
    let args = ["enqueue", "q", "n", "--idempotency-key", "pay-7", "--idempotency-window", "24h", "--json"];
    let first = json(&run(&cfg, &args).ok());
    assert_eq!((first["created"].as_bool(), first["deduplicated"].as_bool()), (Some(true), Some(false)));
    let again = json(&run(&cfg, &args).ok());
    assert_eq!(again["id"], first["id"]);
    assert_eq!((again["created"].as_bool(), again["deduplicated"].as_bool()), (Some(false), Some(true)));
    let text = run(&cfg, &["enqueue", "q", "n", "--idempotency-key", "pay-7", "--idempotency-window", "1h"]);
    assert!(text.stderr.contains("idempotency key already used"), "{}", text.stderr);
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!(stats["q"]["waiting"], 1);
    let id = first["id"].as_str().unwrap();
    assert_eq!(json(&run(&cfg, &["job", "q", id, "--json"]).ok())["idempotency_key"], "pay-7");
    assert!(run(&cfg, &["job", "q", id]).ok().contains("idem. key  pay-7"));
    let alone = run(&cfg, &["enqueue", "q", "n", "--idempotency-key", "pay-8"]);
    let why = alone.fails_with(2);
    assert!(why.contains("idempotency-window"), "a key needs its window: {why}");
}

#[test]
fn job_shows_fields_and_payload() {
    let cfg = config();
    let id =
        run(&cfg, &["enqueue", "q", "report", "--payload", r#"{"day":"monday"}"#, "--timeout", "10s"]).ok();
    let id = id.trim();
    let job = json(&run(&cfg, &["job", "q", id, "--json"]).ok());
    assert_eq!(job["id"], id);
    assert_eq!(job["name"], "report");
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["payload"]["day"], "monday");
    let human = run(&cfg, &["job", "q", id]).ok();
    assert!(human.contains("state      waiting") && human.contains("history:"), "{human}");
}

#[test]
fn jobs_lists_a_state() {
    let cfg = config();
    for i in 0..3 {
        run(&cfg, &["enqueue", "q", "n", "--id", &format!("d{i}"), "--delay", "10m"]).ok();
    }
    run(&cfg, &["enqueue", "q", "n", "--id", "w0"]).ok();
    let delayed = json(&run(&cfg, &["jobs", "q", "--state", "delayed", "--json"]).ok());
    let ids: Vec<&str> = delayed.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d0", "d1", "d2"]);
    let limited = json(&run(&cfg, &["jobs", "q", "--state", "delayed", "--limit", "1", "--json"]).ok());
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let waiting = run(&cfg, &["jobs", "q", "--state", "waiting"]).ok();
    assert!(waiting.contains("w0") && !waiting.contains("d0"), "{waiting}");
    let none = run(&cfg, &["jobs", "q", "--state", "failed"]).ok();
    assert!(none.contains("no failed jobs"), "{none}");
}

/// Dead-letter `count` jobs of queue `q` with a worker whose handler always fails for good.
async fn dead_letter(cfg: &quern_tests::RedisConfig, count: usize) {
    let worker = Worker::builder(cfg, "q")
        .handler("doomed", |_ctx: JobContext, _p: serde_json::Value| async move {
            Err::<(), _>(JobError::permanent("the upstream said no"))
        })
        .build()
        .await
        .unwrap();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run_until(std::future::pending()));
    let queue = quern_producer::Queue::connect(cfg, "q").await.unwrap();
    eventually(Duration::from_secs(10), "jobs dead-lettered", || {
        let queue = queue.clone();
        async move { (queue.counts().await.unwrap().failed == count as u64).then_some(()) }
    })
    .await;
    stop.shutdown();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn dlq_list_retry_and_purge() {
    let cfg = config();
    for i in 0..3 {
        run(&cfg, &["enqueue", "q", "doomed", "--id", &format!("j{i}")]).ok();
    }
    dead_letter(&cfg, 3).await;

    let listed = json(&run(&cfg, &["dlq", "q", "list", "--json"]).ok());
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[0]["last_error"], "the upstream said no");
    let table = run(&cfg, &["dlq", "q", "list"]).ok();
    assert!(table.contains("the upstream said no"), "{table}");
    let job = run(&cfg, &["job", "q", "j0"]).ok();
    assert!(job.contains("permanent") && job.contains("the upstream said no"), "{job}");

    let retried = json(&run(&cfg, &["dlq", "q", "retry", "j0", "--json"]).ok());
    assert_eq!(retried["retried"], 1);
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!((stats["q"]["waiting"].as_u64(), stats["q"]["failed"].as_u64()), (Some(1), Some(2)));
    // Retrying it again: it is no longer dead-lettered.
    let err = run(&cfg, &["dlq", "q", "retry", "j0"]).fails_with(3);
    assert!(err.contains("not in the dead-letter list"), "{err}");

    run(&cfg, &["dlq", "q", "purge", "j1"]).ok();
    assert!(run(&cfg, &["job", "q", "j1"]).fails_with(3).contains("not found"));
    let all = json(&run(&cfg, &["dlq", "q", "retry", "--all", "--json"]).ok());
    assert_eq!(all["retried"], 1);
    dead_letter(&cfg, 2).await;
    let purged = json(&run(&cfg, &["dlq", "q", "purge", "--json"]).ok());
    assert_eq!(purged["purged"], 2);
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!(stats["q"]["failed"], 0);
}

#[test]
fn pause_and_resume_show_in_stats() {
    let cfg = config();
    run(&cfg, &["enqueue", "q", "n"]).ok();
    assert!(run(&cfg, &["pause", "q"]).ok().contains("paused"));
    let table = run(&cfg, &["stats", "q"]).ok();
    assert!(table.lines().nth(1).unwrap().trim_end().ends_with("yes"), "{table}");
    run(&cfg, &["resume", "q"]).ok();
    let table = run(&cfg, &["stats", "q"]).ok();
    assert!(table.lines().nth(1).unwrap().trim_end().ends_with("no"), "{table}");
}

#[test]
fn promote_and_remove_by_id_report_each_and_exit_with_the_first_failure() {
    let cfg = config();
    let later = run(&cfg, &["enqueue", "q", "n", "--delay", "1h"]).ok().trim().to_owned();
    let waiting = run(&cfg, &["enqueue", "q", "n"]).ok().trim().to_owned();
    let out = run(&cfg, &["promote", "q", &later, &waiting, "nope"]);
    assert_eq!(out.stdout.trim(), format!("promoted {later}: waiting"));
    assert!(
        out.stderr.contains("is not delayed (it is waiting)") && out.stderr.contains("\"nope\" not found"),
        "{}",
        out.stderr
    );
    assert_eq!(out.code, 3);
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!((stats["q"]["waiting"].as_u64(), stats["q"]["delayed"].as_u64()), (Some(2), Some(0)));

    run(&cfg, &["enqueue", "q", "n", "--delay", "1h"]).ok();
    run(&cfg, &["enqueue", "q", "n", "--delay", "2h"]).ok();
    assert!(run(&cfg, &["promote", "q", "--all"]).ok().contains("promoted 2 delayed job(s)"));
    run(&cfg, &["promote", "q"]).fails_with(2);

    assert_eq!(
        run(&cfg, &["remove", "q", &later, &waiting]).ok(),
        format!("removed {later}\nremoved {waiting}\n")
    );
    let err = run(&cfg, &["remove", "q", &later]).fails_with(3);
    assert!(err.contains("not found"), "{err}");
    run(&cfg, &["remove", "nowhere", "1"]).fails_with(3);
    let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
    assert_eq!(stats["q"]["waiting"], 2);
}

#[test]
fn workers_lists_the_live_workers_of_each_queue() {
    let cfg = config();
    run(&cfg, &["enqueue", "other", "n"]).ok();
    assert_eq!(run(&cfg, &["workers"]).ok().trim(), "no live workers");
    let _worker = support::WorkerProcess::start(&cfg, "q", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let all = json(&run(&cfg, &["workers", "--json"]).ok());
        if all["q"].as_array().is_some_and(|w| w.len() == 1) {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "the worker was never listed: {all}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(listed["other"], serde_json::json!([]));
    let w = &listed["q"][0];
    assert_eq!(
        (w["concurrency"].as_u64(), w["running"].as_u64(), w["stopping"].as_bool()),
        (Some(4), Some(0), Some(false))
    );
    let table = run(&cfg, &["workers", "q"]).ok();
    assert!(
        table.starts_with("QUEUE") && table.contains(w["id"].as_str().unwrap()) && table.contains("running"),
        "{table}"
    );
    run(&cfg, &["workers", "nowhere"]).fails_with(3);
}

#[test]
fn delete_queue_asks_for_yes_then_deletes_the_queue_and_its_jobs() {
    let cfg = config();
    run(&cfg, &["enqueue", "old", "n"]).ok();
    run(&cfg, &["enqueue", "old", "n", "--delay", "1h"]).ok();
    run(&cfg, &["enqueue", "keep", "n"]).ok();
    let err = run(&cfg, &["delete-queue", "old"]).fails_with(2);
    assert!(err.contains("its 2 job(s)") && err.contains("--yes"), "{err}");
    assert_eq!(
        run(&cfg, &["delete-queue", "old", "--yes"]).ok().trim(),
        "deleted queue old and its 2 job(s)"
    );
    let stats = json(&run(&cfg, &["stats", "--json"]).ok());
    assert_eq!(stats.as_object().unwrap().keys().collect::<Vec<_>>(), ["keep"]);
    run(&cfg, &["delete-queue", "old", "--yes"]).fails_with(3);
}

#[test]
fn limit_shows_sets_and_removes_a_rate_limit() {
    let cfg = config();
    run(&cfg, &["enqueue", "q", "n"]).ok();
    assert_eq!(run(&cfg, &["limit", "q"]).ok().trim(), "queue q: no rate limit");
    assert!(run(&cfg, &["limit", "q", "100/1m"]).ok().contains("rate limit 100/1m"));
    assert_eq!(run(&cfg, &["limit", "q"]).ok().trim(), "queue q: rate limit 100/1m");
    run(&cfg, &["limit", "q", "--off"]).ok();
    assert_eq!(run(&cfg, &["limit", "q"]).ok().trim(), "queue q: no rate limit");
    for bad in ["0/1s", "100", "100/1", "x/1s"] {
        let err = run(&cfg, &["limit", "q", bad]).fails_with(2);
        assert!(err.contains("rate"), "{bad}: {err}");
    }
    run(&cfg, &["limit", "q", "1/1s", "--off"]).fails_with(2);
    run(&cfg, &["limit", "nowhere", "1/1s"]).fails_with(3);
}

#[test]
fn bad_input_is_exit_2_with_a_clear_message() {
    let cfg = config();
    let err = run(&cfg, &["enqueue", "q", "n", "--payload", "{not json"]).fails_with(2);
    assert!(err.contains("invalid JSON payload"), "{err}");
    let err = run(&cfg, &["enqueue", "q", "n", "--delay", "30"]).fails_with(2);
    assert!(err.contains("no unit"), "{err}");
    let err = run(&cfg, &["enqueue", "q", "n", "--timeout", "5 parsecs"]).fails_with(2);
    assert!(err.contains("invalid duration"), "{err}");
    let err = run(&cfg, &["enqueue", "q", "n", "--attempts", "0"]).fails_with(2);
    assert!(err.contains("attempts"), "{err}");
    let err = run(&cfg, &["enqueue", "bad queue!", "n"]).fails_with(2);
    assert!(err.contains("invalid queue name"), "{err}");
    let err = run(&cfg, &["jobs", "q", "--state", "finished"]).fails_with(2);
    assert!(err.contains("unknown job state"), "{err}");
    run(&cfg, &["dlq", "q", "retry"]).fails_with(2);
    run(&cfg, &["no-such-command"]).fails_with(2);
}

#[test]
fn unknown_queue_and_job_are_exit_3() {
    let cfg = config();
    let err = run(&cfg, &["job", "nowhere", "1"]).fails_with(3);
    assert!(err.contains("unknown queue \"nowhere\""), "{err}");
    run(&cfg, &["stats", "nowhere"]).fails_with(3);
    run(&cfg, &["pause", "nowhere"]).fails_with(3);
    run(&cfg, &["dlq", "nowhere", "list"]).fails_with(3);
    run(&cfg, &["enqueue", "q", "n"]).ok();
    let err = run(&cfg, &["job", "q", "12345"]).fails_with(3);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn unreachable_redis_is_a_clear_exit_1() {
    // A port nothing listens on: bind one, then drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = quern_tests::config_for(&format!("redis://127.0.0.1:{port}"));
    for args in [&["stats"][..], &["enqueue", "q", "n"], &["job", "q", "1"]] {
        let err = run(&cfg, args).fails_with(1);
        assert!(err.contains("cannot connect to Redis"), "{args:?}: {err}");
        assert!(err.contains("REDIS_URL"), "{err}");
    }
}

#[test]
fn every_subcommand_has_help() {
    let cfg = config();
    for cmd in [
        "enqueue",
        "stats",
        "job",
        "jobs",
        "dlq",
        "pause",
        "resume",
        "limit",
        "metrics",
        "events",
        "promote",
        "remove",
        "workers",
        "cancel",
        "delete-queue",
    ] {
        let out = run(&cfg, &[cmd, "--help"]).ok();
        assert!(out.contains("Usage: quern"), "{cmd}: {out}");
    }
    let top = run(&cfg, &["--help"]).ok();
    assert!(top.contains("REDIS_URL") && top.contains("Exit codes"), "{top}");
}

#[test]
fn stats_json_is_an_empty_object_without_queues() {
    let cfg = config();
    assert_eq!(json(&run(&cfg, &["stats", "--json"]).ok()), serde_json::json!({}));
    assert!(run(&cfg, &["stats"]).ok().contains("no queues"));
}

#[test]
fn payload_from_a_file_or_stdin() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.json");
    std::fs::write(&path, r#"{"argv":["true"]}"#).unwrap();
    let id = run(&cfg, &["enqueue", "q", "command", "--payload-file", path.to_str().unwrap()]).ok();
    let job = json(&run(&cfg, &["job", "q", id.trim(), "--json"]).ok());
    assert_eq!(job["payload"]["argv"][0], "true");

    let mut child = support::quern(&cfg)
        .args(["enqueue", "q", "n", "--payload-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(br#"{"from":"stdin"}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    let job = json(&run(&cfg, &["job", "q", id.trim(), "--json"]).ok());
    assert_eq!(job["payload"]["from"], "stdin");

    let err = run(&cfg, &["enqueue", "q", "n", "--payload-file", "/no/such/file.json"]).fails_with(2);
    assert!(err.contains("cannot read the payload file"), "{err}");
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let cfg = config();
    run(&cfg, &["enqueue", "q", "n"]).ok();
    let mut child = support::quern(&cfg)
        .args(["stats"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `quern stats | head -0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
