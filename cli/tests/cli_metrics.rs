//! `quern metrics`: Prometheus text of every queue and schedule, printed once
//! or served over HTTP, and `quern_up 0` while Redis is unreachable.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use quern_tests::{TestRedis, config, config_for};
use support::{WorkerProcess, json, quern, run};

/// The samples of an exposition text, `name{labels}` to value. Panics on a
/// line that is neither a comment nor a sample, or on a sample that does not
/// follow the `# TYPE` line of its family with the rest of that family (the
/// text format wants each family's samples together).
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(!typed.iter().any(|n| n == name), "{name} typed twice");
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = typed.last().map(String::as_str);
        let in_histogram = family.is_some_and(|f| {
            ["_bucket", "_sum", "_count"].iter().any(|suffix| name.strip_suffix(suffix) == Some(f))
        });
        assert!(family == Some(name) || in_histogram, "{name} is not under its own # TYPE");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(out.insert(series.to_owned(), value).is_none(), "{series} twice");
    }
    out
}

#[test]
fn metrics_once_counts_jobs_per_state_and_follows_the_schedules() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.toml");
    std::fs::write(
        &file,
        r#"
[[schedule]]
name = "beat"
cron = "* * * * * *"
queue = "ops"
job = "command"
payload = { argv = ["true"] }

[[schedule]]
name = "off"
cron = "0 3 * * *"
queue = "ops"
job = "command"
payload = { argv = ["true"] }
enabled = false
"#,
    )
    .unwrap();
    run(&cfg, &["enqueue", "idle", "a"]).ok();
    run(&cfg, &["enqueue", "idle", "b"]).ok();
    run(&cfg, &["enqueue", "idle", "c", "--delay", "1h"]).ok();
    run(&cfg, &["pause", "idle"]).ok();
    run(&cfg, &["limit", "idle", "10/1m"]).ok();
    run(&cfg, &["enqueue", "ops", "command", "--payload", r#"{"argv":["false"]}"#, "--attempts", "1"]).ok();

    let _worker = WorkerProcess::start(&cfg, "ops", &[]);
    let mut scheduler = quern(&cfg)
        .args(["scheduler", "--schedules", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = json(&run(&cfg, &["schedules", "list", "--json"]).ok());
        let ran = list
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "beat" && s["last_run"]["state"] == "completed");
        let stats = json(&run(&cfg, &["stats", "ops", "--json"]).ok());
        if ran && stats["ops"]["failed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no completed tick or no dead-lettered job: {list} {stats}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = scheduler.kill();
    let _ = scheduler.wait();

    let text = run(&cfg, &["metrics", "--once"]).ok();
    let m = samples(&text);
    let at = |series: &str| *m.get(series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
    assert_eq!(at("quern_up"), 1.0);
    assert_eq!(at(r#"quern_queue_jobs{queue="idle",state="waiting"}"#), 2.0);
    assert_eq!(at(r#"quern_queue_jobs{queue="idle",state="delayed"}"#), 1.0);
    assert_eq!(at(r#"quern_queue_jobs{queue="idle",state="active"}"#), 0.0);
    assert_eq!(at(r#"quern_queue_paused{queue="idle"}"#), 1.0);
    assert_eq!(at(r#"quern_queue_paused{queue="ops"}"#), 0.0);
    assert_eq!(at(r#"quern_queue_jobs{queue="ops",state="failed"}"#), 1.0);
    assert!(at(r#"quern_queue_jobs{queue="ops",state="completed"}"#) >= 1.0);
    assert_eq!(at(r#"quern_queue_workers{queue="ops"}"#), 1.0, "the stock worker");
    assert_eq!(at(r#"quern_queue_workers{queue="idle"}"#), 0.0);
    assert_eq!(at(r#"quern_queue_rate_limit_jobs{queue="idle"}"#), 10.0);
    assert_eq!(at(r#"quern_queue_rate_limit_window_seconds{queue="idle"}"#), 60.0);
    assert!(!m.contains_key(r#"quern_queue_rate_limit_jobs{queue="ops"}"#), "no limit, no sample");

    let beat = r#"schedule="beat",queue="ops""#;
    let off = r#"schedule="off",queue="ops""#;
    assert_eq!(at(&format!("quern_schedule_enabled{{{beat}}}")), 1.0);
    assert_eq!(at(&format!("quern_schedule_enabled{{{off}}}")), 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let next = at(&format!("quern_schedule_next_fire_timestamp_seconds{{{beat}}}"));
    assert!((now - 60.0..now + 60.0).contains(&next), "next fire {next}, now {now}");
    assert!(
        !m.contains_key(&format!("quern_schedule_next_fire_timestamp_seconds{{{off}}}")),
        "disabled: no next fire"
    );
    assert!(at(&format!("quern_schedule_runs_total{{{beat}}}")) >= 1.0);
    assert_eq!(at(&format!("quern_schedule_runs_total{{{off}}}")), 0.0);
    assert!(at(&format!("quern_schedule_last_tick_timestamp_seconds{{{beat}}}")) <= now + 1.0);
    assert_eq!(at(&format!("quern_schedule_overdue{{{beat}}}")), 0.0);
    assert_eq!(at(&format!("quern_schedule_missed_ticks{{{beat}}}")), 0.0);
    for outcome in ["pending", "running", "completed", "failed", "dead", "gone"] {
        let want = if outcome == "completed" { 1.0 } else { 0.0 };
        assert_eq!(
            at(&format!(r#"quern_schedule_last_run{{{beat},outcome="{outcome}"}}"#)),
            want,
            "{outcome}"
        );
        assert_eq!(at(&format!(r#"quern_schedule_last_run{{{off},outcome="{outcome}"}}"#)), 0.0, "{outcome}");
    }
}

/// Run `promtool check metrics` on `text` when promtool is installed (CI
/// installs it: there, with `CI` set, a missing promtool fails the test).
fn promtool_accepts(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); ./run tests installs it");
            return;
        }
        Err(e) => panic!("promtool is required under CI: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

#[test]
fn job_counters_and_histograms_follow_real_workers_and_pass_promtool() {
    let cfg = config();
    run(&cfg, &["enqueue", "counted", "command", "--payload", r#"{"argv":["true"]}"#]).ok();
    run(&cfg, &["enqueue", "counted", "command", "--payload", r#"{"argv":["sleep","0.3"]}"#]).ok();
    let fails = r#"{"argv":["false"]}"#;
    run(&cfg, &["enqueue", "counted", "command", "--payload", fails, "--attempts", "2", "--backoff", "none"])
        .ok();
    run(&cfg, &["enqueue", "waiting", "nobody-runs-this"]).ok();
    let _worker = WorkerProcess::start(&cfg, "counted", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = json(&run(&cfg, &["stats", "counted", "--json"]).ok());
        if stats["counted"]["failed"] == 1 && stats["counted"]["completed"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let text = run(&cfg, &["metrics", "--once"]).ok();
    let m = samples(&text);
    let at = |series: &str| *m.get(series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
    assert_eq!(at(r#"quern_jobs_completed_total{queue="counted"}"#), 2.0);
    assert_eq!(at(r#"quern_jobs_failed_total{queue="counted"}"#), 1.0);
    assert_eq!(at(r#"quern_jobs_retried_total{queue="counted"}"#), 1.0);
    assert_eq!(at(r#"quern_jobs_stalled_total{queue="counted"}"#), 0.0);
    assert_eq!(at(r#"quern_job_run_seconds_count{queue="counted"}"#), 2.0);
    assert_eq!(at(r#"quern_job_run_seconds_bucket{queue="counted",le="+Inf"}"#), 2.0);
    assert!(at(r#"quern_job_run_seconds_sum{queue="counted"}"#) >= 0.3);
    assert_eq!(
        at(r#"quern_job_run_seconds_bucket{queue="counted",le="0.25"}"#),
        1.0,
        "one of the two slept 0.3 s"
    );
    assert_eq!(at(r#"quern_job_wait_seconds_count{queue="counted"}"#), 2.0);
    assert_eq!(at(r#"quern_jobs_completed_total{queue="waiting"}"#), 0.0);
    assert!(at(r#"quern_queue_oldest_waiting_seconds{queue="waiting"}"#) > 0.0);
    assert_eq!(at(r#"quern_queue_oldest_waiting_seconds{queue="counted"}"#), 0.0);
    promtool_accepts(&text);
}

/// `GET path` over a fresh connection: the status line, the headers (lower
/// case) and the body.
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the exporter");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_ascii_lowercase(), body.to_owned())
}

/// Start `quern metrics` on a port the system picks; returns it with the port.
fn serve(cfg: &quern_tests::RedisConfig) -> (Child, u16) {
    let mut child = quern(cfg)
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    let port = first
        .trim()
        .strip_suffix("/metrics")
        .and_then(|s| s.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    (child, port)
}

#[test]
fn metrics_are_served_over_http_and_an_unreachable_redis_is_up_0() {
    let mut redis = TestRedis::start();
    let cfg = config_for(&redis.url());
    run(&cfg, &["enqueue", "mail", "welcome"]).ok();
    let (mut exporter, port) = serve(&cfg);

    let (status, headers, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    let m = samples(&body);
    assert_eq!(m["quern_up"], 1.0);
    assert_eq!(m[r#"quern_queue_jobs{queue="mail",state="waiting"}"#], 1.0);
    assert_eq!(get(port, "/nothing-here").0, "HTTP/1.1 404 Not Found");

    // Redis down: the scrape still answers, with quern_up 0 and no stale counts.
    redis.kill();
    let (status, _, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let m = samples(&body);
    assert_eq!(m["quern_up"], 0.0);
    assert!(!body.contains("quern_queue_jobs{"), "{body}");

    // Back up (empty: no persistence): the exporter reconnects by itself.
    redis.restart();
    run(&cfg, &["enqueue", "mail", "again"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = samples(&get(port, "/metrics").2);
        if m["quern_up"] == 1.0 {
            assert_eq!(m[r#"quern_queue_jobs{queue="mail",state="waiting"}"#], 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the exporter did not reconnect");
        std::thread::sleep(Duration::from_millis(100));
    }

    std::process::Command::new("kill").args(["-TERM", &exporter.id().to_string()]).status().unwrap();
    assert_eq!(exporter.wait().unwrap().code(), Some(0), "SIGTERM ends it cleanly");
}

#[test]
fn bad_metrics_input_fails_clearly() {
    let cfg = config();
    let err = run(&cfg, &["metrics", "--listen", "localhost-9000"]).fails_with(2);
    assert!(err.contains("--listen"), "{err}");

    let down = config_for("redis://127.0.0.1:1");
    let err = run(&down, &["metrics", "--once"]).fails_with(1);
    assert!(err.contains("cannot connect to Redis"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = run(&cfg, &["metrics", "--listen", &addr]).fails_with(1);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
