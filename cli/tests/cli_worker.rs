//! `quern worker` running the stock job kinds end to end: `command` (exit
//! codes, output tails, timeouts that kill a whole process group) and `http`
//! (each status class, network errors, secrets from the environment).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_tests::config;
use support::{WorkerProcess, run, wait_finished};

fn enqueue(cfg: &quern_tests::RedisConfig, kind: &str, id: &str, payload: &str, extra: &[&str]) {
    let mut args = vec!["enqueue", "q", kind, "--id", id, "--payload", payload, "--backoff", "fixed:100ms"];
    args.extend_from_slice(extra);
    run(cfg, &args).ok();
}

fn attempts(job: &serde_json::Value) -> Vec<String> {
    job["history"].as_array().unwrap().iter().map(|a| a["out"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn command_success_stores_exit_code_and_output_tail() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    let payload = r#"{"argv":["sh","-c","echo \"hello $GREETING\"; pwd; echo warn >&2"],"env":{"GREETING":"crontab"},"cwd":"/tmp"}"#;
    enqueue(&cfg, "command", "ok", payload, &[]);
    let job = wait_finished(&cfg, "q", "ok");
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"]["exit_code"], 0);
    assert_eq!(job["result"]["stdout_tail"], "hello crontab\n/tmp\n");
    assert_eq!(job["result"]["stderr_tail"], "warn\n");
}

#[test]
fn command_nonzero_exit_is_a_failed_attempt_with_code_and_tail() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    // Much output: only the tail is kept.
    let payload = r#"{"argv":["sh","-c","seq 1 5000; echo disk full >&2; exit 3"]}"#;
    enqueue(&cfg, "command", "bad", payload, &["--attempts", "2"]);
    let job = wait_finished(&cfg, "q", "bad");
    assert_eq!(job["state"], "failed");
    assert_eq!(attempts(&job), ["error", "error"], "retried once, then dead-lettered");
    let error = job["last_error"].as_str().unwrap();
    assert!(error.starts_with("exit code 3"), "{error}");
    assert!(error.contains("disk full") && error.contains("5000"), "{error}");
    assert!(!error.contains("\n1\n2\n3\n"), "the head of stdout is not kept: {error}");
    assert!(error.len() < 6000, "{}", error.len());
}

#[test]
fn command_that_cannot_start_fails_permanently() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    enqueue(&cfg, "command", "nf", r#"{"argv":["/no/such/program"]}"#, &["--attempts", "5"]);
    enqueue(&cfg, "command", "empty", r#"{"argv":[]}"#, &[]);
    enqueue(&cfg, "command", "typo", r#"{"args":["ls"]}"#, &[]);
    let job = wait_finished(&cfg, "q", "nf");
    assert_eq!((job["state"].as_str(), job["attempts_made"].as_u64()), (Some("failed"), Some(1)));
    assert!(job["last_error"].as_str().unwrap().contains("/no/such/program"));
    let job = wait_finished(&cfg, "q", "empty");
    assert!(job["last_error"].as_str().unwrap().contains("argv is empty"), "{job}");
    let job = wait_finished(&cfg, "q", "typo");
    assert!(job["last_error"].as_str().unwrap().contains("unknown field"), "{job}");
}

/// Poll `check` every 50 ms for at most `limit`.
fn wait_until(limit: Duration, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn process_is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has exited; it only waits to be reaped.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn timeout_kills_the_whole_process_group_even_if_it_ignores_sigterm() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    // The leader and a background child both ignore SIGTERM and record their pids.
    let script = format!(
        "trap '' TERM; sh -c 'trap \"\" TERM; echo $$ >> {p}; exec sleep 60' & echo $$ >> {p}; sleep 60; wait",
        p = pids.display()
    );
    let payload = serde_json::json!({ "argv": ["sh", "-c", script], "timeout": "1s", "kill_grace": "300ms" });
    let started = std::time::Instant::now();
    enqueue(&cfg, "command", "slow", &payload.to_string(), &["--attempts", "1"]);
    let job = wait_finished(&cfg, "q", "slow");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(job["state"], "failed");
    assert!(job["last_error"].as_str().unwrap().contains("timed out after 1s"), "{job}");
    let recorded = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = recorded.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{recorded}");
    for pid in pids {
        wait_until(Duration::from_secs(5), || process_is_gone(pid));
        assert!(process_is_gone(pid), "process {pid} of the group survived the timeout");
    }
}

#[test]
fn job_timeout_also_kills_the_process_group() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    let script = format!("sh -c 'echo $$ > {p}; exec sleep 60' & wait", p = pidfile.display());
    let payload = serde_json::json!({ "argv": ["sh", "-c", script], "kill_grace": "200ms" });
    enqueue(&cfg, "command", "slow", &payload.to_string(), &["--attempts", "1", "--timeout", "700ms"]);
    let job = wait_finished(&cfg, "q", "slow");
    assert_eq!(job["state"], "failed", "{job}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    wait_until(Duration::from_secs(5), || process_is_gone(pid.trim()));
    assert!(process_is_gone(pid.trim()), "the grandchild survived the job's timeout");
}

/// A tiny HTTP server: `/status/N` answers N; records each request's head.
fn http_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            log.lock().unwrap().push(head);
            let status: u16 = path.strip_prefix("/status/").and_then(|s| s.parse().ok()).unwrap_or(200);
            let reply = format!("status {status} body");
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn http_status_classes() {
    let cfg = config();
    let (base, seen) = http_server();
    let _worker = WorkerProcess::start(&cfg, "q", &[("QUERN_TEST_TOKEN", "s3cret")]);
    let job = |id: &str, path: &str| {
        let payload = serde_json::json!({
            "method": "POST",
            "url": format!("{base}{path}"),
            "headers": { "Authorization": "Bearer ${QUERN_TEST_TOKEN}" },
            "body": { "report": id },
        });
        enqueue(&cfg, "http", id, &payload.to_string(), &["--attempts", "2"]);
    };
    job("ok", "/status/204");
    job("s503", "/status/503");
    job("s429", "/status/429");
    job("s408", "/status/408");
    job("s404", "/status/404");
    job("s401", "/status/401");

    let ok = wait_finished(&cfg, "q", "ok");
    assert_eq!(ok["state"], "completed");
    assert_eq!(ok["result"]["status"], 204);
    for id in ["s503", "s429", "s408"] {
        let j = wait_finished(&cfg, "q", id);
        assert_eq!(j["state"], "failed", "{id}");
        assert_eq!(attempts(&j), ["error", "error"], "{id} is retried");
        let code = &id[1..];
        assert!(j["last_error"].as_str().unwrap().contains(&format!("answered {code}")), "{j}");
    }
    for id in ["s404", "s401"] {
        let j = wait_finished(&cfg, "q", id);
        assert_eq!(
            (j["state"].as_str(), j["attempts_made"].as_u64()),
            (Some("failed"), Some(1)),
            "{id}: {j}"
        );
    }
    let requests = seen.lock().unwrap().clone();
    let first = requests.iter().find(|r| r.contains("/status/204")).unwrap();
    assert!(first.starts_with("POST "), "{first}");
    assert!(first.contains("Bearer s3cret"), "the secret is expanded from the worker's env: {first}");
    assert!(first.to_ascii_lowercase().contains("content-type: application/json"), "{first}");
    assert!(first.contains(r#"{"report":"ok"}"#), "{first}");
    // The secret never reaches Redis: the stored payload keeps the reference.
    let stored = run(&cfg, &["job", "q", "ok", "--json"]).ok();
    assert!(stored.contains("${QUERN_TEST_TOKEN}") && !stored.contains("s3cret"), "{stored}");
}

#[test]
fn http_network_errors_are_retried_and_missing_secrets_are_permanent() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = serde_json::json!({ "url": format!("http://127.0.0.1:{port}/") });
    enqueue(&cfg, "http", "refused", &refused.to_string(), &["--attempts", "2"]);
    let no_secret =
        serde_json::json!({ "url": "http://127.0.0.1:1/", "headers": { "X-Key": "${QUERN_UNSET_SECRET}" } });
    enqueue(&cfg, "http", "nosecret", &no_secret.to_string(), &["--attempts", "3"]);
    let j = wait_finished(&cfg, "q", "refused");
    assert_eq!(attempts(&j), ["error", "error"], "{j}");
    let j = wait_finished(&cfg, "q", "nosecret");
    assert_eq!(j["attempts_made"], 1);
    assert!(j["last_error"].as_str().unwrap().contains("QUERN_UNSET_SECRET is not set"), "{j}");
}

#[test]
fn worker_needs_a_queue_and_valid_flags() {
    let cfg = config();
    run(&cfg, &["worker"]).fails_with(2);
    let err = run(&cfg, &["worker", "q", "--lease", "soon"]).fails_with(2);
    assert!(err.contains("invalid duration"), "{err}");
    let err = run(&cfg, &["worker", "q", "--concurrency", "0"]).fails_with(2);
    assert!(err.contains("concurrency"), "{err}");
}

#[test]
fn sigterm_lets_the_running_job_finish_and_exits_0() {
    let cfg = config();
    let worker = support::quern(&cfg)
        .args(["worker", "q", "--shutdown-grace", "10s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    enqueue(&cfg, "command", "slow", r#"{"argv":["sh","-c","sleep 2; echo finished"]}"#, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while support::json(&run(&cfg, &["job", "q", "slow", "--json"]).ok())["state"] != "active" {
        assert!(std::time::Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed =
        std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    let job = support::json(&run(&cfg, &["job", "q", "slow", "--json"]).ok());
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"]["stdout_tail"], "finished\n");
}

#[test]
fn completed_results_keep_a_short_tail() {
    let cfg = config();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    enqueue(&cfg, "command", "chatty", r#"{"argv":["seq","1","2000"]}"#, &[]);
    let job = wait_finished(&cfg, "q", "chatty");
    let out = job["result"]["stdout_tail"].as_str().unwrap();
    assert!(out.len() <= 512 && out.ends_with("1999\n2000\n"), "{out}");
}
