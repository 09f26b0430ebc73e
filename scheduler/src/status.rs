//! Visibility: "did the 2 AM job run?" for every schedule.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use quern_common::QueueKeys;

use crate::schedule::Schedule;
use crate::store::{Schedules, redis_time_ms, state_key};
use crate::{Error, Result};

/// Extra time beyond a schedule's misfire grace before an unhandled tick
/// flags the schedule as overdue (a running scheduler is never this late).
const OVERDUE_SLACK_MS: i64 = 5_000;

/// What became of the job of a schedule's last enqueued tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Waiting for a worker (or for its delay).
    Pending,
    /// A worker is running it.
    Running,
    /// Finished successfully.
    Completed,
    /// An attempt failed; another attempt is scheduled.
    Failed {
        /// The last error.
        error: Option<String>,
    },
    /// Failed for good: it is in the dead-letter list.
    Dead {
        /// The last error.
        error: Option<String>,
    },
    /// The job is gone (trimmed after finishing, or removed).
    Gone,
}

/// How far the last tick's chain got (schedules that enqueue a chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProgress {
    /// Links in the chain.
    pub links: usize,
    /// Links completed (they complete in order).
    pub completed: usize,
    /// The first link dead-lettered (from 1), if any: the chain stopped there.
    pub failed: Option<usize>,
}

/// Why a schedule needs attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// The last run failed an attempt and is retrying.
    LastRunFailed,
    /// The last run is dead-lettered.
    LastRunDead,
    /// Ticks were missed (dropped by the misfire policy) and not yet acknowledged.
    Missed {
        /// How many.
        ticks: u64,
    },
    /// A tick is well past due and no scheduler handled it: is one running?
    Overdue {
        /// The oldest unhandled tick.
        since: DateTime<Utc>,
    },
}

/// The state of one schedule.
#[derive(Debug, Clone)]
pub struct ScheduleStatus {
    /// The definition.
    pub schedule: Schedule,
    /// The next tick to be enqueued (none while disabled).
    pub next_fire: Option<DateTime<Utc>>,
    /// The last tick handled (enqueued, or skipped for overlap or misfire).
    pub last_tick: Option<DateTime<Utc>>,
    /// The job id of the last enqueued tick.
    pub last_job_id: Option<String>,
    /// When (Redis time) the last tick's job was enqueued.
    pub last_enqueued_at: Option<DateTime<Utc>>,
    /// What became of the last enqueued tick's job.
    pub last_run: Option<RunOutcome>,
    /// Jobs enqueued by this schedule in all.
    pub runs: u64,
    /// Ticks missed and not acknowledged.
    pub missed_ticks: u64,
    /// The last missed tick.
    pub last_missed_tick: Option<DateTime<Utc>>,
    /// Ticks skipped because the previous job was unfinished.
    pub overlap_skips: u64,
    /// How far the last tick's chain got, for a schedule that enqueues one.
    pub chain: Option<ChainProgress>,
    /// Everything that needs attention; empty when all is well.
    pub flags: Vec<Flag>,
}

impl ScheduleStatus {
    /// True when the schedule needs attention.
    pub fn flagged(&self) -> bool {
        !self.flags.is_empty()
    }
}

fn ms_to_utc(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

impl Schedules {
    /// The status of every schedule, sorted by name.
    pub async fn status(&self) -> Result<Vec<ScheduleStatus>> {
        let mut conn = self.conn();
        let now_ms = redis_time_ms(&mut conn).await?;
        let stored = self.load_stored().await?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let mut states_pipe = redis::pipe();
        for (s, _) in &stored {
            let keys = QueueKeys::new(self.prefix(), &s.queue)?;
            states_pipe.hgetall(state_key(&keys, &s.name));
        }
        let states: Vec<HashMap<String, String>> = states_pipe.query_async(&mut conn).await?;
        let mut jobs_pipe = redis::pipe();
        for ((s, _), st) in stored.iter().zip(&states) {
            let keys = QueueKeys::new(self.prefix(), &s.queue)?;
            let id = st.get("id").map(String::as_str).unwrap_or("");
            jobs_pipe.cmd("HMGET").arg(keys.job(id)).arg("s").arg("e");
        }
        let jobs: Vec<(Option<String>, Option<String>)> = jobs_pipe.query_async(&mut conn).await?;
        // The states of every link of the last tick's chain, in order.
        let mut chains_pipe = redis::pipe();
        for ((s, _), st) in stored.iter().zip(&states) {
            let keys = QueueKeys::new(self.prefix(), &s.queue)?;
            let id = st.get("id").map(String::as_str).unwrap_or("");
            let links = s.chain.len();
            let ids: Vec<String> = (1..=links)
                .map(|n| if n == links { keys.job(id) } else { keys.job(&format!("{id}#{n}")) })
                .collect();
            for key in &ids {
                chains_pipe.cmd("HGET").arg(key).arg("s");
            }
        }
        // Only HGET: the read-only operator's ACL role allows it.
        let chain_states: Vec<Option<String>> = if stored.iter().all(|(s, _)| s.chain.is_empty()) {
            Vec::new()
        } else {
            let raw: Vec<redis::Value> = chains_pipe.query_async(&mut conn).await?;
            raw.into_iter()
                .map(|v| match v {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .collect()
        };
        let mut chain_states = chain_states.into_iter();
        let now = ms_to_utc(now_ms).ok_or_else(|| Error::Queue(bad_time(now_ms)))?;
        let mut out = Vec::with_capacity(stored.len());
        for (((schedule, def), st), (state, error)) in stored.into_iter().zip(states).zip(jobs) {
            // A stored schedule that no longer validates (say, a zone dropped
            // from the tz database) is listed without fire times.
            let spec = schedule.validate().ok();
            let num = |f: &str| st.get(f).and_then(|v| v.parse::<i64>().ok());
            let watermark = num("wm");
            let last_job_id = st.get("id").cloned();
            let last_run = last_job_id.as_ref().map(|_| match state.as_deref() {
                Some("waiting" | "waiting-children") => RunOutcome::Pending,
                Some("delayed") if error.is_some() => RunOutcome::Failed { error: error.clone() },
                Some("delayed") => RunOutcome::Pending,
                Some("active") => RunOutcome::Running,
                Some("completed") => RunOutcome::Completed,
                Some("failed") => RunOutcome::Dead { error: error.clone() },
                _ => RunOutcome::Gone,
            });
            let chain = if schedule.chain.is_empty() {
                None
            } else {
                let links: Vec<Option<String>> = chain_states.by_ref().take(schedule.chain.len()).collect();
                last_job_id.as_ref().map(|_| ChainProgress {
                    links: links.len(),
                    completed: links.iter().filter(|s| s.as_deref() == Some("completed")).count(),
                    failed: links.iter().position(|s| s.as_deref() == Some("failed")).map(|n| n + 1),
                })
            };
            let handled_upto = watermark.unwrap_or(i64::MIN).max(def.since_ms);
            let mut flags = Vec::new();
            match &last_run {
                Some(RunOutcome::Failed { .. }) => flags.push(Flag::LastRunFailed),
                Some(RunOutcome::Dead { .. }) => flags.push(Flag::LastRunDead),
                _ => {}
            }
            let missed_ticks = num("missed").unwrap_or(0).max(0) as u64;
            if missed_ticks > 0 {
                flags.push(Flag::Missed { ticks: missed_ticks });
            }
            let mut next_fire = None;
            if let (true, Some(spec)) = (schedule.enabled, &spec) {
                let from = ms_to_utc(handled_upto).unwrap_or(now);
                if let Some(first) = spec.next_after(from)
                    && first.timestamp_millis()
                        < now_ms - schedule.misfire_grace.as_millis() as i64 - OVERDUE_SLACK_MS
                {
                    flags.push(Flag::Overdue { since: first });
                }
                next_fire = spec.next_after(from.max(now));
            }
            out.push(ScheduleStatus {
                next_fire,
                last_tick: watermark.and_then(ms_to_utc),
                last_job_id,
                last_enqueued_at: num("at").and_then(ms_to_utc),
                last_run,
                runs: num("runs").unwrap_or(0).max(0) as u64,
                missed_ticks,
                last_missed_tick: num("last_missed").and_then(ms_to_utc),
                overlap_skips: num("overlaps").unwrap_or(0).max(0) as u64,
                chain,
                flags,
                schedule,
            });
        }
        Ok(out)
    }
}

fn bad_time(ms: i64) -> quern_common::Error {
    quern_common::Error::Protocol(format!("Redis TIME {ms} ms is out of range"))
}
