//! `quern bench` on a database it does not own: it refuses, and never deletes
//! a key it did not write; on an empty one it prints the five scenarios and
//! leaves nothing behind.

use std::process::Command;

use quern_tests::{TestRedis, config_for, raw_connection};
use redis::AsyncCommands;

fn quern(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quern"))
        .arg("--redis-url")
        .arg(url)
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .expect("run quern")
}

#[tokio::test]
async fn refuses_a_database_holding_foreign_keys_and_leaves_them_alone() {
    let server = TestRedis::start();
    let mut conn = raw_connection(&config_for(&server.url())).await;
    let _: () = conn.set("customer:42", "precious").await.unwrap();

    let out = quern(&server.url(), &["bench", "--jobs", "200"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bench must refuse; stderr: {stderr}");
    assert!(stderr.contains("refusing to benchmark"), "unclear message: {stderr}");
    assert!(out.stdout.is_empty(), "no scenario may run: {}", String::from_utf8_lossy(&out.stdout));

    let kept: Option<String> = conn.get("customer:42").await.unwrap();
    assert_eq!(kept.as_deref(), Some("precious"));
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 1);
}

#[tokio::test]
async fn prints_every_scenario_and_removes_its_own_keys() {
    let server = TestRedis::start();
    let out = quern(&server.url(), &["bench", "--jobs", "300", "--concurrency", "8"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));

    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("each stdout line is JSON")).collect();
    let scenarios: Vec<&str> = lines.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    assert_eq!(
        scenarios,
        ["enqueue_single", "enqueue_bulk", "memory_waiting", "drain", "keyed_drain", "latency"]
    );
    for line in &lines {
        assert_eq!(line["system"], "quern");
        match line["scenario"].as_str().unwrap() {
            "memory_waiting" => assert!(line["redis_bytes_per_job"].as_f64().unwrap() > 0.0),
            "latency" => {
                let (p50, p99) = (line["p50_ms"].as_f64().unwrap(), line["p99_ms"].as_f64().unwrap());
                assert!(p50 > 0.0 && p50 <= p99, "{line}");
            }
            _ => {
                assert_eq!(line["jobs"], 300);
                assert!(line["jobs_per_s"].as_f64().unwrap() > 0.0, "{line}");
                assert!(line["redis_cpu_us_per_job"].as_f64().unwrap() >= 0.0, "{line}");
            }
        }
    }

    let mut conn = raw_connection(&config_for(&server.url())).await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 0, "bench left keys behind");
}

#[tokio::test]
async fn the_steps_scenario_runs_only_when_named_and_removes_its_own_keys() {
    let server = TestRedis::start();
    let out = quern(&server.url(), &["bench", "--jobs", "200", "--concurrency", "8", "--only", "steps"]);
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("each stdout line is JSON")).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let line = &lines[0];
    assert_eq!((line["system"].as_str(), line["scenario"].as_str()), (Some("quern"), Some("steps")));
    assert_eq!((line["jobs"].as_u64(), line["steps_per_job"].as_u64()), (Some(200), Some(5)));
    assert!(line["jobs_per_s"].as_f64().unwrap() > 0.0 && line["redis_cpu_us_per_job"].as_f64().is_some());
    let mut conn = raw_connection(&config_for(&server.url())).await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 0, "bench left keys behind");
}
