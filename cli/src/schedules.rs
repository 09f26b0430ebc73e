//! `quern scheduler` (run the cron scheduler) and `quern schedules` (inspect
//! and manage the schedules stored in Redis).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quern_common::RedisConfig;
use quern_scheduler::{
    ChainProgress, Flag, MisfirePolicy, OverlapPolicy, RunOutcome, ScheduleStatus, Scheduler, Schedules,
    TickOutcome,
};
use serde_json::{Value, json};

use crate::duration::{format_duration, parse_duration};
use crate::error::{CliError, CliResult};
use crate::table::{Table, cell};

/// Options of `quern scheduler`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchedulerArgs {
    /// TOML schedules file applied (created or updated) when the scheduler starts.
    #[arg(long, value_name = "FILE")]
    pub(crate) schedules: Option<PathBuf>,
    /// Also remove stored schedules that the file does not list.
    #[arg(long, requires = "schedules")]
    pub(crate) prune: bool,
    /// Leader lease: a standby scheduler takes over within this long after the leader dies.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) lease: Duration,
}

/// Options of `quern schedules`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchedulesArgs {
    #[command(subcommand)]
    pub(crate) action: SchedulesAction,
}

/// What to do with the stored schedules.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SchedulesAction {
    /// Every schedule: next fire time, last tick, outcome of its last run, and
    /// flags (last run failed or dead, missed ticks, overdue). Exit code 0 even
    /// when some are flagged; use --json to check them from scripts.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Create or update the schedules of a TOML file without running a scheduler.
    Apply {
        /// The schedules file.
        file: PathBuf,
        /// Also remove stored schedules the file does not list.
        #[arg(long)]
        prune: bool,
    },
    /// Enable a schedule (ticks count from now: no misfires for the time it was off).
    Enable {
        /// The schedule's name.
        name: String,
    },
    /// Disable a schedule: it enqueues nothing until enabled again.
    Disable {
        /// The schedule's name.
        name: String,
    },
    /// Clear a schedule's missed-ticks flag once you have dealt with it.
    Ack {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule (jobs it enqueued stay).
    Remove {
        /// The schedule's name.
        name: String,
    },
}

impl From<quern_scheduler::Error> for CliError {
    fn from(e: quern_scheduler::Error) -> Self {
        match e {
            quern_scheduler::Error::Queue(e) => CliError::Quern(e),
            e => CliError::of_kind(e.kind(), e.to_string()),
        }
    }
}

/// `quern scheduler`.
pub(crate) async fn run_scheduler(config: &RedisConfig, args: SchedulerArgs) -> CliResult {
    if let Some(file) = &args.schedules {
        // Refuse a bad file before touching Redis, with exit code 2.
        let schedules = quern_scheduler::load_schedules_file(file)?;
        eprintln!("schedules file {}: {} schedule(s)", file.display(), schedules.len());
    }
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Scheduler::builder(config).lease(args.lease).prune(args.prune).events(events_tx);
    if let Some(file) = args.schedules {
        builder = builder.schedules_file(file);
    }
    let scheduler = builder.build().await?;
    eprintln!("quern scheduler {} started (leader lease {:?})", scheduler.id(), args.lease);
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let what = match e.outcome {
                TickOutcome::Enqueued => "enqueued".to_owned(),
                TickOutcome::SkippedOverlap => "skipped: the previous run is unfinished".to_owned(),
                TickOutcome::AlreadyHandled => continue,
                TickOutcome::AlreadyExists => "already enqueued".to_owned(),
                TickOutcome::Missed { ticks } => {
                    format!("missed ({ticks} tick(s) dropped by the misfire policy)")
                }
            };
            eprintln!("{} {} {what} (late {})", e.schedule, e.job_id, format_duration(e.lateness));
        }
    });
    scheduler.run().await?;
    eprintln!("scheduler stopped");
    Ok(())
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_else(|| "-".into())
}

fn outcome_text(o: &Option<RunOutcome>) -> String {
    match o {
        None => "-".into(),
        Some(RunOutcome::Pending) => "pending".into(),
        Some(RunOutcome::Running) => "running".into(),
        Some(RunOutcome::Completed) => "completed".into(),
        Some(RunOutcome::Failed { error }) => format!("retrying: {}", error.as_deref().unwrap_or("?")),
        Some(RunOutcome::Dead { error }) => format!("dead: {}", error.as_deref().unwrap_or("?")),
        Some(RunOutcome::Gone) => "gone (trimmed)".into(),
    }
}

fn outcome_json(o: &Option<RunOutcome>) -> Value {
    match o {
        None => Value::Null,
        Some(RunOutcome::Pending) => json!({ "state": "pending" }),
        Some(RunOutcome::Running) => json!({ "state": "running" }),
        Some(RunOutcome::Completed) => json!({ "state": "completed" }),
        Some(RunOutcome::Failed { error }) => json!({ "state": "retrying", "error": error }),
        Some(RunOutcome::Dead { error }) => json!({ "state": "dead", "error": error }),
        Some(RunOutcome::Gone) => json!({ "state": "gone" }),
    }
}

/// How far a chain got: `2/3 done`, or `link 2 of 3 failed`.
fn chain_text(c: &ChainProgress) -> String {
    match c.failed {
        Some(n) => format!("chain: link {n} of {} failed", c.links),
        None => format!("chain: {}/{} done", c.completed, c.links),
    }
}

/// The job column: the job name, or a chain's links in order.
fn job_text(d: &quern_scheduler::Schedule) -> String {
    if d.chain.is_empty() {
        d.job_name.clone()
    } else {
        d.chain.iter().map(|l| l.job.as_str()).collect::<Vec<_>>().join(" > ")
    }
}

fn flag_text(f: &Flag) -> String {
    match f {
        Flag::LastRunFailed => "LAST RUN FAILED".into(),
        Flag::LastRunDead => "LAST RUN DEAD".into(),
        Flag::Missed { ticks } => format!("MISSED {ticks}"),
        Flag::Overdue { since } => format!("OVERDUE since {} (is a scheduler running?)", time(Some(*since))),
    }
}

fn status_json(s: &ScheduleStatus) -> Value {
    let d = &s.schedule;
    let misfire = match d.misfire {
        MisfirePolicy::Skip => json!("skip"),
        MisfirePolicy::RunOnce => json!("run_once"),
        MisfirePolicy::CatchUp { max } => json!({ "catch_up": max }),
    };
    let overlap = match d.overlap {
        OverlapPolicy::Allow => "allow",
        OverlapPolicy::Skip => "skip",
    };
    json!({
        "name": d.name,
        "cron": d.cron,
        "time_zone": d.time_zone,
        "queue": d.queue,
        "job": d.job_name,
        "enabled": d.enabled,
        "misfire": misfire,
        "overlap": overlap,
        "next_fire": s.next_fire.map(|t| t.to_rfc3339()),
        "last_tick": s.last_tick.map(|t| t.to_rfc3339()),
        "last_job_id": s.last_job_id,
        "last_enqueued_at": s.last_enqueued_at.map(|t| t.to_rfc3339()),
        "last_run": outcome_json(&s.last_run),
        "runs": s.runs,
        "missed_ticks": s.missed_ticks,
        "overlap_skips": s.overlap_skips,
        "chain": s.chain.as_ref().map(|c| json!({ "links": c.links, "completed": c.completed, "failed_link": c.failed })),
        "flags": s.flags.iter().map(flag_text).collect::<Vec<_>>(),
    })
}

/// `quern schedules`.
pub(crate) async fn run_schedules(config: &RedisConfig, args: SchedulesArgs) -> CliResult {
    if let SchedulesAction::Apply { file, .. } = &args.action {
        quern_scheduler::load_schedules_file(file)?;
    }
    let store = Schedules::connect(config).await?;
    match args.action {
        SchedulesAction::List { json } => {
            let all = store.status().await?;
            if json {
                outln!("{}", Value::Array(all.iter().map(status_json).collect()));
            } else if all.is_empty() {
                outln!("no schedules under prefix {:?}", config.prefix);
            } else {
                let mut t = Table::new(&[
                    "NAME",
                    "CRON",
                    "TIME ZONE",
                    "QUEUE",
                    "JOB",
                    "NEXT",
                    "LAST TICK",
                    "LAST RUN",
                    "RUNS",
                    "FLAGS",
                ]);
                for s in &all {
                    let d = &s.schedule;
                    let flags = if !d.enabled {
                        "disabled".to_owned()
                    } else {
                        s.flags.iter().map(flag_text).collect::<Vec<_>>().join(", ")
                    };
                    t.row(vec![
                        d.name.clone(),
                        d.cron.clone(),
                        d.time_zone.clone(),
                        d.queue.clone(),
                        job_text(d),
                        time(s.next_fire),
                        time(s.last_tick),
                        match &s.chain {
                            Some(c) => {
                                cell(&format!("{} ({})", outcome_text(&s.last_run), chain_text(c)), 80)
                            }
                            None => cell(&outcome_text(&s.last_run), 60),
                        },
                        s.runs.to_string(),
                        flags,
                    ]);
                }
                out!("{}", t.render());
            }
        }
        SchedulesAction::Apply { file, prune } => {
            let report = store.apply_file(&file, prune).await?;
            let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
            outln!("created:   {}", list(&report.created));
            outln!("updated:   {}", list(&report.updated));
            outln!("unchanged: {}", list(&report.unchanged));
            if prune {
                outln!("pruned:    {}", list(&report.pruned));
            }
        }
        SchedulesAction::Enable { name } => {
            store.set_enabled(&name, true).await?;
            outln!("enabled schedule {name}");
        }
        SchedulesAction::Disable { name } => {
            store.set_enabled(&name, false).await?;
            outln!("disabled schedule {name}");
        }
        SchedulesAction::Ack { name } => {
            store.acknowledge_missed(&name).await?;
            outln!("cleared the missed-ticks flag of schedule {name}");
        }
        SchedulesAction::Remove { name } => {
            store.remove(&name).await?;
            outln!("removed schedule {name}");
        }
    }
    Ok(())
}
