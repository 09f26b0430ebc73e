//! The CLI through Redis Sentinel: `REDIS_URL=redis+sentinel://...` finds the
//! master for every subcommand, including `quern worker`.

mod support;

use quern_tests::config_for;
use quern_tests::sentinel::SentinelSet;
use support::{WorkerProcess, run, wait_finished};

#[test]
fn the_cli_enqueues_and_runs_jobs_through_the_sentinels() {
    let set = SentinelSet::start();
    let cfg = config_for(&set.url());
    let id = run(&cfg, &["enqueue", "q", "command", "--payload", r#"{"argv":["true"]}"#]).ok();
    let _worker = WorkerProcess::start(&cfg, "q", &[]);
    let job = wait_finished(&cfg, "q", id.trim());
    assert_eq!(job["state"], "completed", "{job}");

    // A master name the sentinels do not know is a usage error, password masked.
    let ports = set.sentinel_ports();
    let wrong = config_for(&format!("redis+sentinel://u:s3cret@127.0.0.1:{}/nope", ports[0]));
    let err = run(&wrong, &["stats", "q"]).fails_with(2);
    assert!(err.contains("nope") && !err.contains("s3cret"), "{err}");
}

#[test]
fn bench_measures_adds_and_drains_with_replica_acknowledgements() {
    // The README's reproduction: a master with one replica.
    let set = SentinelSet::start();
    let master = SentinelSet::server_url(set.master_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["--redis-url", &master, "bench", "--jobs", "500", "--only", "enqueue_single,drain"])
        .args(["--replica-acks", "1"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run quern bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(support::json).collect();
    let scenarios: Vec<&str> = lines.iter().filter_map(|l| l["scenario"].as_str()).collect();
    assert_eq!(scenarios, ["enqueue_single", "drain"]);
    assert!(lines.iter().all(|l| l["replica_acks"] == 1), "{stdout}");
}
