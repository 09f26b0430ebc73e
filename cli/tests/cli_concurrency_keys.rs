//! Concurrency keys with real `quern worker` processes: a ledger of every
//! run's start and end per key shows never more than the key's limit at
//! once, also when a worker holding a key is killed with SIGKILL; a key with
//! many jobs does not starve a key with one; `quern keys` shows and sets it.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use quern_tests::{RedisConfig, config};
use support::{WorkerProcess, json, quern, run};

/// A `command` job of `key` that appends `start`/`end` lines (key, run pid,
/// nanoseconds) to `ledger` around a sleep of `ms`.
fn enqueue_run(cfg: &RedisConfig, queue: &str, key: Option<&str>, ledger: &Path, ms: u64) -> String {
    let tag = key.unwrap_or("-");
    let script = format!(
        "echo \"start {tag} $$ $(date +%s%N)\" >> {l}; sleep {s}; echo \"end {tag} $$ $(date +%s%N)\" >> {l}",
        l = ledger.display(),
        s = ms as f64 / 1000.0
    );
    let payload = serde_json::json!({ "argv": ["sh", "-c", script] }).to_string();
    let mut args = vec!["enqueue", queue, "command", "--payload", &payload];
    if let Some(key) = key {
        args.extend(["--concurrency-key", key]);
    }
    run(cfg, &args).ok().trim().to_owned()
}

/// The most runs of each key that overlapped, from the ledger. A run that
/// has a start but no end (none here: killed workers' programs run on)
/// counts as running to the end.
fn peak_per_key(ledger: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut points: Vec<(u128, i32, String)> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, key, _pid, ns] = parts[..] else { panic!("bad ledger line {line:?}") };
        let at: u128 = ns.parse().unwrap();
        // Ends sort before starts at the same instant: back to back is not overlap.
        points.push((at, if what == "end" { 0 } else { 1 }, key.to_owned()));
    }
    points.sort();
    let (mut now, mut peak) = (HashMap::<String, i64>::new(), HashMap::<String, usize>::new());
    for (_, start, key) in points {
        let n = now.entry(key.clone()).or_default();
        *n += if start == 1 { 1 } else { -1 };
        let p = peak.entry(key).or_default();
        *p = (*p).max(*n as usize);
    }
    peak
}

fn starts(ledger: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    text.lines().filter(|l| l.starts_with("start")).map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect()
}

fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn completed(cfg: &RedisConfig, queue: &str) -> u64 {
    json(&run(cfg, &["stats", queue, "--json"]).ok())[queue]["completed"].as_u64().unwrap_or(0)
}

fn worker(cfg: &RedisConfig, queue: &str, lease: &str) -> Child {
    quern(cfg)
        .args(["worker", queue, "--concurrency", "4", "--lease", lease, "--shutdown-grace", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quern worker")
}

#[test]
fn many_workers_never_run_more_of_a_key_than_its_limit() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    run(&cfg, &["keys", "q", "--limit", "2"]).ok();
    run(&cfg, &["keys", "q", "b", "--limit", "1"]).ok();
    for _ in 0..8 {
        enqueue_run(&cfg, "q", Some("a"), &ledger, 150);
        enqueue_run(&cfg, "q", Some("b"), &ledger, 100);
        enqueue_run(&cfg, "q", None, &ledger, 50);
    }
    let shown = json(&run(&cfg, &["keys", "q", "--json"]).ok());
    assert_eq!(shown["limit"], 2);
    assert_eq!(shown["overrides"][0]["key"], "b");
    let workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::start(&cfg, "q", &[])).collect();
    until("every job to complete", Duration::from_secs(60), || completed(&cfg, "q") == 24);
    drop(workers);
    let peak = peak_per_key(&ledger);
    assert!(peak["a"] <= 2, "a ran {} at once (limit 2)", peak["a"]);
    assert_eq!(peak["b"], 1, "b ran {} at once (limit 1)", peak["b"]);
    assert!(peak["-"] >= 2, "jobs without a key are not limited: {peak:?}");
    assert_eq!(starts(&ledger).len(), 24, "each job ran once");
    let after = json(&run(&cfg, &["keys", "q", "--json"]).ok());
    assert_eq!(after["busy"], serde_json::json!([]), "no slot left taken");
}

#[test]
fn a_killed_worker_holding_a_key_frees_it_with_its_lease_and_never_doubles_it() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    run(&cfg, &["keys", "k", "--limit", "1"]).ok();
    for _ in 0..4 {
        enqueue_run(&cfg, "k", Some("s"), &ledger, 700);
    }
    let before = json(&run(&cfg, &["keys", "k", "--json"]).ok());
    assert_eq!(before["busy"][0]["waiting"], 4, "{before}");
    let mut first = worker(&cfg, "k", "1500ms");
    until("the first run to start", Duration::from_secs(15), || starts(&ledger).len() == 1);
    let second = worker(&cfg, "k", "1500ms");
    first.kill().unwrap();
    first.wait().unwrap();
    until("every job to complete", Duration::from_secs(60), || completed(&cfg, "k") == 4);
    let mut second = second;
    second.kill().unwrap();
    second.wait().unwrap();
    let peak = peak_per_key(&ledger);
    assert_eq!(peak["s"], 1, "one run of key s at a time, kill -9 included: {peak:?}");
    assert_eq!(starts(&ledger).len(), 5, "the killed run ran again");
    let after = json(&run(&cfg, &["keys", "k", "--json"]).ok());
    assert_eq!(after["busy"], serde_json::json!([]), "nothing left running or waiting");
}

#[test]
fn a_key_with_many_waiting_jobs_does_not_starve_a_key_with_one() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    run(&cfg, &["keys", "f", "--limit", "1"]).ok();
    for _ in 0..30 {
        enqueue_run(&cfg, "f", Some("big"), &ledger, 100);
    }
    enqueue_run(&cfg, "f", Some("small"), &ledger, 10);
    let _worker = WorkerProcess::start(&cfg, "f", &[]);
    until("the small key's job to run", Duration::from_secs(20), || {
        starts(&ledger).contains(&"small".into())
    });
    let order = starts(&ledger);
    let before = order.iter().position(|k| k == "small").unwrap();
    assert!(before <= 2, "the small key ran after {before} runs of the big one: {order:?}");
}

#[test]
fn keys_shows_sets_and_removes_limits_and_job_shows_the_keys() {
    let cfg = config();
    let id = run(&cfg, &["enqueue", "ops", "n", "--concurrency-key", "merchant-7"]).ok().trim().to_owned();
    let text = run(&cfg, &["keys", "ops"]).ok();
    assert!(text.contains("per-key limit off") && text.contains("merchant-7"), "{text}");
    run(&cfg, &["enqueue", "idle", "n"]).ok();
    assert!(run(&cfg, &["keys", "idle"]).ok().contains("no busy keys"), "a queue without keyed jobs");
    assert!(run(&cfg, &["keys", "ops", "--limit", "3"]).ok().contains("per-key limit 3"));
    assert!(run(&cfg, &["keys", "ops", "merchant-7", "--limit", "1"]).ok().contains("limit 1"));
    let shown = json(&run(&cfg, &["keys", "ops", "--json"]).ok());
    assert_eq!((shown["limit"].as_u64(), shown["overrides"][0]["limit"].as_u64()), (Some(3), Some(1)));
    run(&cfg, &["keys", "ops", "merchant-7", "--off"]).ok();
    run(&cfg, &["keys", "ops", "--off"]).ok();
    let shown = json(&run(&cfg, &["keys", "ops", "--json"]).ok());
    assert_eq!(
        (shown["limit"].clone(), shown["overrides"].clone()),
        (serde_json::Value::Null, serde_json::json!([]))
    );
    run(&cfg, &["keys", "ops", "--limit", "0"]).fails_with(2);
    let job = json(&run(&cfg, &["job", "ops", &id, "--json"]).ok());
    assert_eq!(job["concurrency_key"], "merchant-7");
    assert!(run(&cfg, &["job", "ops", &id]).ok().contains("merchant-7"));
}

#[test]
fn metrics_count_the_keys_at_their_limit_per_queue() {
    let cfg = config();
    run(&cfg, &["keys", "m", "--limit", "1"]).ok();
    let payload = r#"{"argv":["sleep","5"]}"#;
    for key in ["a", "a", "b"] {
        run(&cfg, &["enqueue", "m", "command", "--payload", payload, "--concurrency-key", key]).ok();
    }
    run(&cfg, &["enqueue", "idle", "n"]).ok();
    let _worker = WorkerProcess::start(&cfg, "m", &[]);
    until("both keys to run", Duration::from_secs(15), || {
        json(&run(&cfg, &["stats", "m", "--json"]).ok())["m"]["active"] == 2
    });
    let text = run(&cfg, &["metrics", "--once"]).ok();
    assert!(text.lines().any(|l| l == r#"quern_queue_concurrency_keys_at_limit{queue="m"} 2"#), "{text}");
    assert!(text.lines().any(|l| l == r#"quern_queue_concurrency_keys_at_limit{queue="idle"} 0"#), "{text}");
    let table = run(&cfg, &["keys", "m"]).ok();
    assert!(table.contains("(full)"), "{table}");
    let shown = json(&run(&cfg, &["keys", "m", "--json"]).ok());
    let a = shown["busy"].as_array().unwrap().iter().find(|k| k["key"] == "a").unwrap().clone();
    assert_eq!((a["active"].as_u64(), a["waiting"].as_u64()), (Some(1), Some(1)), "{shown}");
}

#[test]
fn a_singleton_key_shows_its_holder_and_a_skipping_enqueue_adds_nothing_while_it_runs() {
    let cfg = config();
    assert!(run(&cfg, &["keys", "sg", "settle", "--singleton"]).ok().contains("singleton"));
    let payload = r#"{"argv":["sleep","3"]}"#;
    let id =
        run(&cfg, &["enqueue", "sg", "command", "--payload", payload, "--concurrency-key", "settle"]).ok();
    let id = id.trim();
    let _worker = WorkerProcess::start(&cfg, "sg", &[]);
    until("the settlement to run", Duration::from_secs(15), || {
        json(&run(&cfg, &["stats", "sg", "--json"]).ok())["sg"]["active"] == 1
    });
    let args = ["enqueue", "sg", "command", "--concurrency-key", "settle", "--skip-if-key-busy"];
    let skipped = run(&cfg, &args);
    assert!(skipped.stderr.contains(&format!("held by job {id}")), "{}", skipped.stderr);
    assert_eq!(skipped.code, 0);
    let stats = json(&run(&cfg, &["stats", "sg", "--json"]).ok());
    assert_eq!((stats["sg"]["waiting"].as_u64(), stats["sg"]["active"].as_u64()), (Some(0), Some(1)));
    let shown = json(&run(&cfg, &["keys", "sg", "--json"]).ok());
    assert_eq!(shown["overrides"][0]["singleton"], true);
    assert_eq!(shown["busy"][0]["holder"], id);
    run(&cfg, &["enqueue", "sg", "command", "--skip-if-key-busy"]).fails_with(2);
}

#[test]
fn a_redis_restart_keeps_the_limit_and_every_job() {
    let mut server = quern_tests::TestRedis::start_with(quern_tests::Persistence::AofAlways);
    let cfg = quern_tests::config_for(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    run(&cfg, &["keys", "r", "--limit", "1"]).ok();
    for _ in 0..6 {
        enqueue_run(&cfg, "r", Some("k"), &ledger, 300);
    }
    let workers = [worker(&cfg, "r", "5s"), worker(&cfg, "r", "5s")];
    until("the first run to start", Duration::from_secs(15), || !starts(&ledger).is_empty());
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    server.restart();
    until("every job to complete", Duration::from_secs(60), || {
        let r = run(&cfg, &["stats", "r", "--json"]);
        r.code == 0 && json(&r.stdout)["r"]["completed"] == 6
    });
    for mut w in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let peak = peak_per_key(&ledger);
    assert_eq!(peak["k"], 1, "one run of key k at a time across the restart: {peak:?}");
    let after = json(&run(&cfg, &["keys", "r", "--json"]).ok());
    assert_eq!(after["busy"], serde_json::json!([]), "no slot left taken");
}

#[test]
fn jobs_lists_the_waiting_jobs_of_one_key_a_page_at_a_time_and_keys_counts_them() {
    let cfg = config();
    let a1 = run(&cfg, &["enqueue", "kq", "n", "--concurrency-key", "a"]).ok().trim().to_owned();
    run(&cfg, &["enqueue", "kq", "n"]).ok();
    let a2 = run(&cfg, &["enqueue", "kq", "n", "--concurrency-key", "a"]).ok().trim().to_owned();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    let all = json(&run(&cfg, &["jobs", "kq", "--key", "a", "--json"]).ok());
    assert_eq!(
        (ids(&all), all["next_offset"].clone()),
        (vec![a1.clone(), a2.clone()], serde_json::Value::Null)
    );
    let first = json(&run(&cfg, &["jobs", "kq", "--key", "a", "--limit", "1", "--json"]).ok());
    assert_eq!(ids(&first), std::slice::from_ref(&a1));
    let next = first["next_offset"].as_u64().unwrap().to_string();
    let rest =
        json(&run(&cfg, &["jobs", "kq", "--key", "a", "--limit", "1", "--offset", &next, "--json"]).ok());
    assert_eq!((ids(&rest), rest["next_offset"].clone()), (vec![a2], serde_json::Value::Null));
    let table = run(&cfg, &["jobs", "kq", "--key", "a", "--limit", "1"]).ok();
    assert!(table.contains(&a1) && table.contains(&format!("more: --offset {next}")), "{table}");
    run(&cfg, &["jobs", "kq", "--key", "a", "--state", "active"]).fails_with(2);
    let keys = json(&run(&cfg, &["keys", "kq", "--json"]).ok());
    let a = &keys["busy"][0];
    assert_eq!((a["key"].as_str(), a["waiting"].as_u64(), a["held"].as_u64()), (Some("a"), Some(2), Some(0)));
}
