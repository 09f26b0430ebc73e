//! `quern worker` started while Redis is down waits for it (retrying with
//! capped backoff, saying so on stderr) instead of exiting, then serves jobs
//! once Redis is up; SIGTERM while it waits stops it with exit 0.

mod support;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use quern_tests::{Persistence, TestRedis, config_for};
use support::{quern, run, wait_finished};

fn start_worker(cfg: &quern_tests::RedisConfig, stderr: &std::path::Path) -> Child {
    quern(cfg)
        .args(["worker", "q", "--concurrency", "2", "--shutdown-grace", "2s"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start quern worker")
}

fn read(path: &std::path::Path) -> String {
    let mut text = String::new();
    std::fs::File::open(path).unwrap().read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_worker_started_while_redis_is_down_waits_and_then_serves() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = config_for(&server.url());
    server.kill();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut worker = start_worker(&cfg, &log);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited while Redis was down: {}", read(&log));
    assert!(read(&log).contains("waiting for Redis"), "{}", read(&log));

    server.restart();
    run(&cfg, &["enqueue", "q", "command", "--id", "after", "--payload", r#"{"argv":["true"]}"#]).ok();
    let job = wait_finished(&cfg, "q", "after");
    assert_eq!(job["state"], "completed", "{job}");
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn sigterm_while_waiting_for_redis_exits_0() {
    let mut server = TestRedis::start();
    let cfg = config_for(&server.url());
    server.kill();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut worker = start_worker(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(&log).contains("waiting for Redis") {
        assert!(Instant::now() < deadline, "no waiting message: {}", read(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = Instant::now();
    let status =
        std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = worker.try_wait().unwrap() {
            break exit;
        }
        assert!(signalled.elapsed() < Duration::from_secs(5), "still waiting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}: {}", read(&log));
}
