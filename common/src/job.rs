//! What a job looks like to someone inspecting it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::options::RunOptions;
use crate::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run, waiting for a worker.
    Waiting,
    /// Waiting for its delay (or retry backoff) to pass.
    Delayed,
    /// Leased by a worker and running.
    Active,
    /// Finished successfully.
    Completed,
    /// Failed for good; listed in the dead-letter list.
    Failed,
}

impl JobState {
    /// All states, in lifecycle order.
    pub const ALL: [JobState; 5] =
        [JobState::Waiting, JobState::Delayed, JobState::Active, JobState::Completed, JobState::Failed];

    /// The state's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            Error::InvalidOptions(format!(
                "unknown job state {s:?}; expected waiting, delayed, active, completed or failed"
            ))
        })
    }
}

/// One attempt of a job, as kept in its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Attempt number (1 for the first); absent for operator actions.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// What happened: `completed`, `running`, `error`, `permanent`, `timeout`,
    /// `panic`, `stalled` (lease expired), `released` (worker shut down),
    /// `cancelled` (by an operator) or `retried` (moved back from the
    /// dead-letter list).
    #[serde(rename = "out")]
    pub outcome: String,
    /// When the attempt started (Unix ms, Redis clock).
    #[serde(rename = "st", default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When it ended (Unix ms, Redis clock).
    #[serde(rename = "fin", default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// The worker that ran it.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The lease (fencing) token the attempt ran under: ties each attempt to
    /// the handler executions that used it (a handler can read it with
    /// `JobContext::token`).
    #[serde(rename = "tk", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The error message, if it failed.
    #[serde(rename = "err", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    /// How long the attempt ran, if it has both ends.
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.finished_at_ms?.saturating_sub(self.started_at_ms?))
    }
}

/// A job as stored in Redis, for inspection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The queue.
    pub queue: String,
    /// The job id.
    pub id: String,
    /// The job name (selects the handler).
    pub name: String,
    /// The payload, as JSON text.
    pub payload: String,
    /// Current state.
    pub state: JobState,
    /// Priority (0 is the highest).
    pub priority: u32,
    /// Attempts started so far in this round (stalls and releases do not count).
    pub attempts_made: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Times its lease expired.
    pub stalls: u32,
    /// When it was added (Unix ms, Redis clock).
    pub created_at_ms: u64,
    /// When its latest attempt started.
    pub started_at_ms: Option<u64>,
    /// When it completed or failed for good.
    pub finished_at_ms: Option<u64>,
    /// The worker that ran its latest attempt.
    pub worker: Option<String>,
    /// The last error message.
    pub last_error: Option<String>,
    /// The handler's result, as JSON text (completed jobs).
    pub result: Option<String>,
    /// How far the running attempt has come, or the last attempt of a job
    /// no longer running, as its handler recorded it (JSON text).
    pub progress: Option<String>,
    /// Every attempt, oldest first (the latest 25 failures and interruptions,
    /// then the running or successful attempt).
    pub history: Vec<Attempt>,
}

impl JobInfo {
    /// Build from the fields of a job hash (`HGETALL`). `None` if the hash is empty.
    pub fn from_hash(queue: &str, id: &str, mut h: HashMap<String, String>) -> Result<Option<Self>> {
        if h.is_empty() {
            return Ok(None);
        }
        let bad = |what: &str| Error::Protocol(format!("job {id:?} of queue {queue:?}: {what}"));
        let num = |h: &HashMap<String, String>, k: &str| -> Result<Option<u64>> {
            h.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<u64>().map_err(|_| bad(&format!("field {k} is not a number: {v:?}"))))
                .transpose()
        };
        let state: JobState = h.get("s").ok_or_else(|| bad("no state"))?.parse()?;
        let run = RunOptions::decode(h.get("o").map(String::as_str).unwrap_or(""))?;
        let mut history: Vec<Attempt> = match h.get("h") {
            Some(raw) => serde_json::from_str(raw).map_err(|e| bad(&format!("history: {e}")))?,
            None => Vec::new(),
        };
        let attempts_made = num(&h, "at")?.unwrap_or(0) as u32;
        let started_at_ms = num(&h, "st")?;
        let finished_at_ms = num(&h, "fin")?;
        let worker = h.remove("w");
        let current = match state {
            JobState::Active => Some("running"),
            JobState::Completed => Some("completed"),
            _ => None,
        };
        if let Some(outcome) = current {
            history.push(Attempt {
                number: Some(attempts_made),
                outcome: outcome.to_owned(),
                started_at_ms,
                finished_at_ms: if state == JobState::Completed { finished_at_ms } else { None },
                worker: worker.clone(),
                token: h.get("tk").filter(|t| !t.is_empty()).cloned(),
                error: None,
            });
        }
        Ok(Some(JobInfo {
            queue: queue.to_owned(),
            id: id.to_owned(),
            name: h.remove("n").ok_or_else(|| bad("no name"))?,
            payload: take_payload(&mut h),
            state,
            priority: num(&h, "p")?.unwrap_or(0) as u32,
            attempts_made,
            max_attempts: run.attempts,
            stalls: num(&h, "stl")?.unwrap_or(0) as u32,
            created_at_ms: num(&h, "t")?.unwrap_or(0),
            started_at_ms,
            finished_at_ms,
            worker,
            last_error: h.remove("e"),
            result: h.remove("r"),
            progress: progress_of(state, h.get("tk").map(String::as_str), h.get("pg").map(String::as_str)),
            history,
        }))
    }
}

/// The recorded progress (`<token> <JSON>`), unless it belongs to an
/// earlier attempt than the one running.
fn progress_of(state: JobState, token: Option<&str>, stored: Option<&str>) -> Option<String> {
    let (by, progress) = stored?.split_once(' ')?;
    (state != JobState::Active || token == Some(by)).then(|| progress.to_owned())
}

/// How many jobs a queue holds in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Ready to run.
    pub waiting: u64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: u64,
    /// Running.
    pub active: u64,
    /// Finished and kept.
    pub completed: u64,
    /// Failed for good: the size of the dead-letter list.
    pub failed: u64,
    /// Whether the queue is paused.
    pub paused: bool,
}

impl QueueCounts {
    /// The count for one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
        }
    }
}

/// The payload of a job hash: whole in `d`, or in pieces `d`, `d2` .. `dN`
/// with `dn` = N (see `put_payload` in scripts/prelude.lua: pieces of at most
/// 64 bytes keep the hash in Redis's compact encoding).
fn take_payload(h: &mut HashMap<String, String>) -> String {
    let mut payload = h.remove("d").unwrap_or_default();
    let pieces = h.remove("dn").and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
    for i in 2..=pieces {
        payload.push_str(&h.remove(&format!("d{i}")).unwrap_or_default());
    }
    payload
}

/// A live worker of a queue, as it last reported (workers report with each
/// reaper pass, every few seconds, and leave the list when they stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// Its id: `host:pid:random`.
    pub id: String,
    /// Its job slots.
    pub concurrency: u64,
    /// Jobs it was running at its last report.
    pub running: u64,
    /// Shutting down: finishing its jobs, taking no new ones.
    pub stopping: bool,
    /// The quern version it runs.
    pub version: String,
    /// When it was first seen (Redis time, ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// When it last reported (Redis time, ms since the Unix epoch).
    pub last_seen_ms: u64,
}

/// What a worker stores about itself (see `scripts/reap.lua`).
#[derive(Deserialize)]
struct Reported {
    concurrency: u64,
    running: u64,
    #[serde(default)]
    stopping: bool,
    #[serde(default)]
    version: String,
}

impl WorkerInfo {
    /// Read the stored `<first seen ms> <last seen ms> <report JSON>` of
    /// worker `id`; `None` if it is not that.
    pub fn from_stored(id: &str, stored: &str) -> Option<Self> {
        let mut parts = stored.splitn(3, ' ');
        let first_seen_ms = parts.next()?.parse().ok()?;
        let last_seen_ms = parts.next()?.parse().ok()?;
        let r: Reported = serde_json::from_str(parts.next()?).ok()?;
        Some(Self {
            id: id.to_owned(),
            concurrency: r.concurrency,
            running: r.running,
            stopping: r.stopping,
            version: r.version,
            first_seen_ms,
            last_seen_ms,
        })
    }

    /// The host it runs on (from its id).
    pub fn host(&self) -> &str {
        self.id.rsplitn(3, ':').nth(2).unwrap_or(&self.id)
    }

    /// Its process id (from its id).
    pub fn pid(&self) -> Option<u32> {
        self.id.rsplit(':').nth(1)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_completed_job_with_history() {
        let h: HashMap<String, String> = [
            ("n", "send"),
            ("d", "{}"),
            ("t", "1000"),
            ("s", "completed"),
            ("at", "2"),
            ("st", "5000"),
            ("fin", "5200"),
            ("w", "host:1:ab"),
            ("r", "\"ok\""),
            ("e", "boom"),
            ("h", r#"[{"n":1,"out":"error","st":1100,"fin":1200,"w":"host:1:ab","err":"boom"}]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let j = JobInfo::from_hash("q", "7", h).unwrap().unwrap();
        assert_eq!(j.state, JobState::Completed);
        assert_eq!(j.history.len(), 2);
        assert_eq!(j.history[0].outcome, "error");
        assert_eq!(j.history[1].outcome, "completed");
        assert_eq!(j.history[1].duration_ms(), Some(200));
        assert_eq!(j.max_attempts, 3);
    }

    #[test]
    fn empty_hash_is_none() {
        assert!(JobInfo::from_hash("q", "1", HashMap::new()).unwrap().is_none());
    }

    #[test]
    fn states_parse() {
        assert_eq!("failed".parse::<JobState>().unwrap(), JobState::Failed);
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn a_stored_worker_report_reads_back() {
        let stored =
            r#"1700000000000 1700000005000 {"concurrency":8,"running":3,"stopping":false,"version":"0.1.0"}"#;
        let w = WorkerInfo::from_stored("build-01:4242:0badc0de", stored).unwrap();
        assert_eq!((w.concurrency, w.running, w.stopping), (8, 3, false));
        assert_eq!((w.first_seen_ms, w.last_seen_ms), (1_700_000_000_000, 1_700_000_005_000));
        assert_eq!((w.host(), w.pid()), ("build-01", Some(4242)));
        assert_eq!(WorkerInfo::from_stored("x", "garbage"), None);
    }
}
