//! A real scheduler process for the scheduler tests.
//!
//! `scheduler_proc --redis-url=URL --prefix=P [--lease-ms=N] [--no-lease] [--id=ID]`
//! runs a scheduler until SIGTERM/SIGINT. On stdout it prints `ready <id>`,
//! `leader` each time it becomes leader, `follower` when it stops being one,
//! one `tick <outcome> <job-id> <lateness-ms>` line per handled tick, and
//! `stopped` after a clean shutdown. Logs go to stderr.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quern_common::RedisConfig;
use quern_scheduler::{Scheduler, TickOutcome};
use tokio::sync::mpsc;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn,quern_scheduler=info")
        .init();
    let mut values = HashMap::new();
    let mut no_lease = false;
    for arg in std::env::args().skip(1) {
        if arg == "--no-lease" {
            no_lease = true;
        } else if let Some((k, v)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            values.insert(k.to_owned(), v.to_owned());
        } else {
            eprintln!("unexpected argument {arg:?}");
            std::process::exit(2);
        }
    }
    let (Some(url), Some(prefix)) = (values.get("redis-url"), values.get("prefix")) else {
        eprintln!("--redis-url and --prefix are required");
        std::process::exit(2);
    };
    let lease = Duration::from_millis(values.get("lease-ms").and_then(|v| v.parse().ok()).unwrap_or(2000));
    let config = RedisConfig::new(url)
        .prefix(prefix.clone())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut builder = Scheduler::builder(&config).lease(lease).leader_election(!no_lease).events(tx);
    if let Some(id) = values.get("id") {
        builder = builder.id(id.clone());
    }
    let scheduler = match builder.build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    say(&format!("ready {}", scheduler.id()));
    let leader = scheduler.leader_flag();
    let watcher = tokio::spawn(async move {
        let mut was = false;
        loop {
            let now = leader.load(Ordering::SeqCst);
            if now != was {
                say(if now { "leader" } else { "follower" });
                was = now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let run = tokio::spawn(scheduler.run());
    // The channel closes when the scheduler is dropped, at the end of run.
    while let Some(e) = rx.recv().await {
        let outcome = match e.outcome {
            TickOutcome::Enqueued => "enqueued".to_owned(),
            TickOutcome::SkippedOverlap => "overlap".to_owned(),
            TickOutcome::AlreadyHandled => "stale".to_owned(),
            TickOutcome::AlreadyExists => "exists".to_owned(),
            TickOutcome::Missed { ticks } => format!("missed:{ticks}"),
        };
        say(&format!("tick {outcome} {} {}", e.job_id, e.lateness.as_millis()));
    }
    let run = run.await;
    // No leader/follower line after "stopped" (the last line, tests rely on it).
    watcher.abort();
    let _ = watcher.await;
    match run {
        Ok(Ok(())) => say("stopped"),
        Ok(Err(e)) => {
            eprintln!("scheduler failed: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("scheduler task failed: {e}");
            std::process::exit(1);
        }
    }
}
