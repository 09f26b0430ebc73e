//! `quern scheduler` and `quern schedules` against a real Redis, with the
//! worked schedules file of the README.

mod support;

use std::time::{Duration, Instant};

use quern_tests::config;
use support::{WorkerProcess, json, quern, run};

fn worked_example() -> String {
    format!("{}/../examples/schedules.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_worked_schedules_file_applies_and_lists() {
    let cfg = config();
    let out = run(&cfg, &["schedules", "apply", &worked_example()]).ok();
    assert!(out.contains("created:   settle-payments, refresh-cache, weekly-backup"), "{out}");
    let again = run(&cfg, &["schedules", "apply", &worked_example()]).ok();
    assert!(again.contains("created:   -"), "{again}");
    let list = json(&run(&cfg, &["schedules", "list", "--json"]).ok());
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["refresh-cache", "settle-payments", "weekly-backup"]);
    let settle = &list[1];
    assert_eq!(settle["time_zone"], "Europe/Berlin");
    assert_eq!(settle["misfire"], "run_once");
    assert_eq!(settle["overlap"], "skip");
    assert!(settle["next_fire"].as_str().unwrap().ends_with(":00:00+00:00"), "{settle}");
    let table = run(&cfg, &["schedules", "list"]).ok();
    assert!(table.contains("NEXT") && table.contains("weekly-backup"), "{table}");

    run(&cfg, &["schedules", "disable", "weekly-backup"]).ok();
    let table = run(&cfg, &["schedules", "list"]).ok();
    let line = table.lines().find(|l| l.starts_with("weekly-backup")).unwrap();
    assert!(line.ends_with("disabled"), "{line}");
    run(&cfg, &["schedules", "enable", "weekly-backup"]).ok();
    run(&cfg, &["schedules", "remove", "weekly-backup"]).ok();
    assert_eq!(json(&run(&cfg, &["schedules", "list", "--json"]).ok()).as_array().unwrap().len(), 2);
}

#[test]
fn bad_schedules_are_exit_2_and_unknown_ones_exit_3() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[schedule]]\nname = \"x\"\ncron = \"61 * * * *\"\nqueue = \"q\"\njob = \"j\"\n")
        .unwrap();
    let err = run(&cfg, &["scheduler", "--schedules", bad.to_str().unwrap()]).fails_with(2);
    assert!(err.contains("invalid cron expression"), "{err}");
    let err = run(&cfg, &["schedules", "apply", bad.to_str().unwrap()]).fails_with(2);
    assert!(err.contains("invalid cron expression"), "{err}");
    std::fs::write(&bad, "[[schedule]]\nname = \"x\"\ncron = \"* * * * *\"\ntime_zone = \"Mars/Olympus\"\nqueue = \"q\"\njob = \"j\"\n").unwrap();
    let err = run(&cfg, &["schedules", "apply", bad.to_str().unwrap()]).fails_with(2);
    assert!(err.contains("unknown time zone"), "{err}");
    run(&cfg, &["schedules", "apply", "/no/such/file.toml"]).fails_with(2);
    let err = run(&cfg, &["schedules", "disable", "nope"]).fails_with(3);
    assert!(err.contains("no schedule named"), "{err}");
    assert!(run(&cfg, &["schedules", "list"]).ok().contains("no schedules"));
}

#[test]
fn scheduler_enqueues_ticks_that_the_stock_worker_runs() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.toml");
    std::fs::write(
        &file,
        r#"
[[schedule]]
name = "every-second"
cron = "* * * * * *"
queue = "ops"
job = "command"
payload = { argv = ["sh", "-c", "echo tick"] }
"#,
    )
    .unwrap();
    let _worker = WorkerProcess::start(&cfg, "ops", &[]);
    let scheduler = quern(&cfg)
        .args(["scheduler", "--schedules", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let list = json(&run(&cfg, &["schedules", "list", "--json"]).ok());
        let s = list.as_array().and_then(|a| a.first()).cloned();
        if let Some(s) = s.filter(|s| s["runs"].as_u64() >= Some(2) && s["last_run"]["state"] == "completed")
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no completed ticks: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let job_id = status["last_job_id"].as_str().unwrap();
    assert!(job_id.starts_with("every-second@") && job_id.ends_with('Z'), "{job_id}");
    let job = json(&run(&cfg, &["job", "ops", job_id, "--json"]).ok());
    assert_eq!(job["result"]["stdout_tail"], "tick\n");

    std::process::Command::new("kill").args(["-TERM", &scheduler.id().to_string()]).status().unwrap();
    let out = scheduler.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("every-second@") && stderr.contains("enqueued"), "{stderr}");
}

#[test]
fn the_docker_compose_schedules_file_applies() {
    let cfg = config();
    let file = format!("{}/../examples/docker-schedules.toml", env!("CARGO_MANIFEST_DIR"));
    let out = run(&cfg, &["schedules", "apply", &file]).ok();
    assert!(out.contains("created:   heartbeat, signup-smoke-test"), "{out}");
}
