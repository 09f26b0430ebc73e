//! Scheduler lateness benchmark (not a test).
//!
//! `cargo run --release -p quern-tests --bin scheduler_bench -- [--schedules=10000] [--seconds=61] [--queues=10]`
//!
//! Starts a throwaway redis-server, stores N schedules spread over Q queues and
//! runs one scheduler (leader lease on) in two phases of `--seconds` each:
//! - `spread`: schedule i fires once a minute at second i mod 60 (N/60 ticks a second);
//! - `burst`: every schedule fires at second 0 of each minute (N ticks at once).
//!
//! For every enqueued tick it records the lateness measured by Redis' clock
//! inside the tick script (enqueue time minus due time) and prints p50, p90,
//! p99 and max per phase (ticks due in the first 2 s are left out: they may
//! have been due before the scheduler started).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quern_scheduler::{Schedule, Scheduler, Schedules, TickOutcome};
use quern_tests::{RedisConfig, TestRedis};
use tokio::sync::mpsc;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn phase(
    config: &RedisConfig,
    name: &str,
    n: usize,
    queues: usize,
    seconds: u64,
    cron: impl Fn(usize) -> String,
) {
    let schedules = Schedules::connect(config).await.expect("connect");
    let list: Vec<Schedule> = (0..n)
        .map(|i| {
            Schedule::new(format!("{name}-{i:05}"), cron(i), format!("q{}", i % queues), "tick")
                .payload(serde_json::json!({"i": i}))
        })
        .collect();
    let loaded = Instant::now();
    let report = schedules.apply(&list, true).await.expect("apply");
    eprintln!(
        "[{name}] stored {} schedules ({} pruned) in {:?}",
        report.created.len() + report.updated.len() + report.unchanged.len(),
        report.pruned.len(),
        loaded.elapsed()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler::builder(config).events(tx).build().await.expect("build");
    let stop = scheduler.shutdown_handle();
    // Ticks due in the first 2 s may have been due before the scheduler
    // started (after the schedules were stored): start-up, not steady state.
    let steady_from = chrono::Utc::now() + chrono::Duration::seconds(2);
    let task = tokio::spawn(scheduler.run_until(std::future::pending::<()>()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.shutdown();
    task.await.expect("join").expect("scheduler");
    let mut late = Vec::new();
    let mut others: HashMap<String, usize> = HashMap::new();
    while let Ok(e) = rx.try_recv() {
        match e.outcome {
            TickOutcome::Enqueued if e.tick >= steady_from => late.push(e.lateness.as_millis() as u64),
            TickOutcome::Enqueued => *others.entry("start-up".into()).or_default() += 1,
            other => *others.entry(format!("{other:?}")).or_default() += 1,
        }
    }
    late.sort_unstable();
    println!(
        "{name:6} schedules={n} queues={queues} run={seconds}s enqueued={} lateness_ms p50={} p90={} p99={} max={} other={others:?}",
        late.len(),
        percentile(&late, 0.50),
        percentile(&late, 0.90),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0),
    );
}

#[tokio::main]
async fn main() {
    let mut values = HashMap::new();
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            Some((k, v)) => {
                values.insert(k.to_owned(), v.to_owned());
            }
            None => {
                eprintln!("unexpected argument {arg:?} (expected --name=value)");
                std::process::exit(2);
            }
        }
    }
    let get = |k: &str, d: usize| values.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, seconds, queues) =
        (get("schedules", 10_000), get("seconds", 61) as u64, get("queues", 10).max(1));
    let redis = TestRedis::start();
    let config = RedisConfig::new(redis.url()).prefix("bench");
    phase(&config, "spread", n, queues, seconds, |i| format!("{} * * * * *", i % 60)).await;
    phase(&config, "burst", n, queues, seconds, |_| "0 * * * * *".to_owned()).await;
}
