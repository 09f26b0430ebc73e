//! `quern events`: a queue's history from its events stream, and `--follow`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use quern_tests::{TestRedis, config, config_for};
use support::{WorkerProcess, json, quern, run};

#[test]
fn events_show_what_happened_to_each_job() {
    let cfg = config();
    let failing = run(
        &cfg,
        &[
            "enqueue",
            "q",
            "command",
            "--payload",
            r#"{"argv":["sh","-c","exit 3"]}"#,
            "--attempts",
            "2",
            "--backoff",
            "fixed:100ms",
        ],
    )
    .ok();
    let ok = run(&cfg, &["enqueue", "q", "command", "--payload", r#"{"argv":["true"]}"#]).ok();
    let (failing, ok) = (failing.trim(), ok.trim());
    let worker = WorkerProcess::start(&cfg, "q", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = json(&run(&cfg, &["stats", "q", "--json"]).ok());
        if stats["q"]["failed"] == 1 && stats["q"]["completed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(worker);

    let lines = run(&cfg, &["events", "q", "--json", "--last", "100"]).ok();
    let events: Vec<serde_json::Value> = lines.lines().map(json).collect();
    let about = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| {
                [&e["id"], &e["ids"]]
                    .iter()
                    .any(|v| v.as_str().is_some_and(|l| l.split(',').any(|x| x == id)))
            })
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(about(failing), ["added", "active", "retrying", "active", "failed"], "{lines}");
    assert_eq!(about(ok), ["added", "active", "completed"], "{lines}");
    let at: Vec<u64> = events.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "oldest first: {at:?}");
    let retry = events.iter().find(|e| e["event"] == "retrying").unwrap();
    assert_eq!(retry["delay"], "100");
    assert!(retry["error"].as_str().unwrap().contains("exit code 3"), "{retry}");

    let human = run(&cfg, &["events", "q"]).ok();
    assert!(human.lines().any(|l| l.contains("retrying") && l.contains("error=\"exit code 3")), "{human}");
    let last_two = run(&cfg, &["events", "q", "--last", "2", "--json"]).ok();
    assert_eq!(last_two.lines().map(json).collect::<Vec<_>>(), events[events.len() - 2..]);

    run(&cfg, &["events", "nowhere"]).fails_with(3);
    run(&cfg, &["events", "q", "--last", "many"]).fails_with(2);
}

/// `quern events <queue> --follow --json --last 1`, and its output lines.
fn follow(cfg: &quern_tests::RedisConfig, queue: &str) -> (Child, std::io::Lines<BufReader<ChildStdout>>) {
    let mut child = quern(cfg)
        .args(["events", queue, "--follow", "--json", "--last", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn next_event(lines: &mut std::io::Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    json(&lines.next().expect("an event line").expect("readable output"))
}

#[test]
fn follow_prints_events_as_they_happen_and_outlives_a_redis_restart() {
    let mut redis = TestRedis::start();
    let cfg = config_for(&redis.url());
    let first = run(&cfg, &["enqueue", "q", "n"]).ok();
    let (mut child, mut lines) = follow(&cfg, "q");
    // The newest event first; the follower reads on after it, so nothing
    // added from here on is missed, however soon.
    assert_eq!(next_event(&mut lines)["id"], first.trim());
    let second = run(&cfg, &["enqueue", "q", "n"]).ok();
    let e = next_event(&mut lines);
    assert_eq!((e["event"].as_str(), e["id"].as_str()), (Some("added"), Some(second.trim())));
    run(&cfg, &["pause", "q"]).ok();
    assert_eq!(next_event(&mut lines)["event"], "paused");

    // Redis goes away and comes back empty: the follower retries and goes on.
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    let third = run(&cfg, &["enqueue", "q", "n"]).ok();
    let e = next_event(&mut lines);
    assert_eq!((e["event"].as_str(), e["id"].as_str()), (Some("added"), Some(third.trim())));

    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
