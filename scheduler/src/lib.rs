//! quern's scheduler: cron schedules that enqueue jobs, where a tick can never
//! be enqueued twice and a tick that did not run is visible at once.
//!
//! - [`Schedule`]: name, cron expression (5 fields, or 6 with seconds), IANA
//!   time zone ([DST behaviour](crate::cron)), target queue, job name, payload,
//!   job options, [`MisfirePolicy`], [`OverlapPolicy`], enabled flag.
//! - [`Schedules`]: the client API to upsert, remove, enable/disable, list
//!   schedules stored in Redis, apply a TOML file ([`file`]) and read each
//!   schedule's [`ScheduleStatus`] (next fire time, last tick, last run's
//!   outcome, flags for failed or missed runs).
//! - [`Scheduler`]: run one or more; they elect a leader through a lease in
//!   Redis (`SET NX PX`, token-checked renew and release). A standby takes
//!   over within the lease after the leader dies; a leader that cannot renew
//!   stops enqueuing when its lease may have run out.
//!
//! # Why a tick runs at most once
//! The lease only keeps standbys quiet. Safety comes from the tick script,
//! which runs in the target queue's hash slot and atomically: refuses a tick
//! not yet due by Redis `TIME`; refuses a tick at or below the schedule's
//! watermark (kept in the queue's slot, `<prefix>:{queue}:sched:<name>`);
//! applies the overlap policy by reading the previous tick's job state;
//! adds the job with id `<schedule>@<UTC instant>` (e.g.
//! `settlement@2026-11-23T02:00:00Z`); and advances the watermark. So two
//! schedulers, a skewed local clock, a restart or a trimmed job can never
//! enqueue the same tick twice. Due times come from Redis time, never from
//! the local clock.
//!
//! # Misfires
//! A tick handled up to `misfire_grace` (default 60 s) late is just late
//! (leader takeover, slow pass). Older unhandled ticks (the scheduler was
//! down) are misfires: `skip` drops them, `run_once` enqueues the latest one,
//! `catch_up { max }` enqueues the latest `max` in order. Dropped ticks are
//! counted and flag the schedule until [acknowledged](Schedules::acknowledge_missed).
#![forbid(unsafe_code)]

pub mod clock;
pub mod cron;
pub mod error;
pub mod file;
mod lease;
mod runner;
pub mod schedule;
mod status;
mod store;

pub use clock::{ShiftedClock, SystemClock, WallClock};
pub use cron::CronSpec;
pub use error::{Error, ErrorKind, Result};
pub use file::{load_schedules_file, parse_schedules_toml};
pub use quern_common::process::ShutdownHandle;
pub use runner::{DEFAULT_LEASE, Scheduler, SchedulerBuilder, TickEvent, TickOutcome, run};
pub use schedule::{ChainLink, MAX_CHAIN_LINKS, MisfirePolicy, OverlapPolicy, Schedule, tick_job_id};
pub use status::{ChainProgress, Flag, RunOutcome, ScheduleStatus};
pub use store::{ApplyReport, Schedules, Upserted};
