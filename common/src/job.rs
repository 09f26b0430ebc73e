//! What a job looks like to someone inspecting it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::options::RunOptions;
use crate::outcome::AttemptOutcome;
use crate::steps::StepRecord;
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
    /// A flow's parent waiting for its children to end (see `scripts/flow.lua`).
    WaitingChildren,
}

impl JobState {
    /// All states: the lifecycle of a plain job, then a flow parent's wait.
    pub const ALL: [JobState; 6] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::WaitingChildren,
    ];

    /// The state's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::WaitingChildren => "waiting-children",
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
                "unknown job state {s:?}; expected waiting-children, waiting, delayed, active, completed or failed"
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
    /// What happened.
    #[serde(rename = "out")]
    pub outcome: AttemptOutcome,
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
///
/// Reading is tolerant: a field that cannot be read (a timestamp or counter
/// that is not a number, unreadable history or options) does not hide the
/// rest of the job. It is left at its default (`0`, `None`, no history, the
/// default options a worker would fall back to) and named in
/// [`problems`](JobInfo::problems). A record that cannot be a job at all is an
/// [`UnreadableJob`] instead.
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
    /// When it was added (Unix ms, Redis clock); 0 if its record holds no
    /// readable time (then named in `problems`).
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
    /// Its concurrency key, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Its idempotency key, if it was added with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Every attempt, oldest first (the latest 25 failures and interruptions,
    /// then the running or successful attempt).
    pub history: Vec<Attempt>,
    /// Its parent, when it is a child in a flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::ParentInfo>,
    /// Its children, when it is a flow's parent, with how each ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<crate::ChildInfo>,
    /// The job's durable steps and sleeps, in the order they were stored
    /// (see `JobContext::step` in quern-worker); empty for a job without
    /// steps, and then left out of its JSON. The JSON shows a result's size
    /// (`result_bytes`), not the result.
    #[serde(serialize_with = "crate::steps::serialize_steps", skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// What could not be read from the stored record, one sentence per field
    /// naming the field and its value (e.g. `field t (created) is not a
    /// number: "yesterday"`). Empty for a healthy job, and then left out of
    /// its JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A record listed as a job that cannot be read as one: its hash has no
/// state, an unknown state or no name, is not a hash, or is missing while
/// its id is still listed in a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("job {id:?} of queue {queue:?} is unreadable: {problem}")]
pub struct UnreadableJob {
    /// The queue.
    pub queue: String,
    /// The job id.
    pub id: String,
    /// What is wrong (serialized as `unreadable`).
    #[serde(rename = "unreadable")]
    pub problem: String,
}

impl UnreadableJob {
    /// Record `id` of `queue` as unreadable because of `problem`.
    pub fn new(queue: &str, id: &str, problem: impl Into<String>) -> Self {
        Self { queue: queue.to_owned(), id: id.to_owned(), problem: problem.into() }
    }

    /// An id listed in `state` whose job hash does not exist.
    pub fn missing(queue: &str, id: &str, listed_as: JobState) -> Self {
        Self::new(queue, id, format!("listed as {listed_as} but its job hash is missing"))
    }
}

impl From<UnreadableJob> for Error {
    fn from(u: UnreadableJob) -> Self {
        Error::UnreadableJob { queue: u.queue, id: u.id, problem: u.problem }
    }
}

/// One entry of a job listing ([`JobInfo`] or [`UnreadableJob`]): listings
/// show every job they can read, possibly with
/// [`problems`](JobInfo::problems), and mark each record they cannot instead
/// of failing as a whole. Serializes as the job, or as
/// `{"queue", "id", "unreadable"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// Nearly every entry is a job: boxing it would cost each an allocation to
// save space only on the rare unreadable one.
#[allow(clippy::large_enum_variant)]
pub enum JobEntry {
    /// A job, readable at least in part.
    Job(JobInfo),
    /// A record that cannot be read as a job.
    Unreadable(UnreadableJob),
}

impl JobEntry {
    /// Read the fields of a job hash (`HGETALL`). `None` if the hash is empty
    /// (the job does not exist).
    pub fn from_hash(queue: &str, id: &str, h: HashMap<String, String>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(match JobInfo::read(queue, id, h) {
            Ok(job) => JobEntry::Job(job),
            Err(unreadable) => JobEntry::Unreadable(unreadable),
        })
    }

    /// The job id.
    pub fn id(&self) -> &str {
        match self {
            JobEntry::Job(j) => &j.id,
            JobEntry::Unreadable(u) => &u.id,
        }
    }

    /// The job, if it could be read.
    pub fn job(&self) -> Option<&JobInfo> {
        match self {
            JobEntry::Job(j) => Some(j),
            JobEntry::Unreadable(_) => None,
        }
    }

    /// The job if it could be read, else what is wrong with the record.
    pub fn into_result(self) -> std::result::Result<JobInfo, UnreadableJob> {
        match self {
            JobEntry::Job(j) => Ok(j),
            JobEntry::Unreadable(u) => Err(u),
        }
    }
}

/// A stored value for a problem message: quoted, cut to 60 characters.
fn shown(value: &str) -> String {
    const MAX: usize = 60;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// Reads the fields of one job hash, noting each that cannot be read.
struct FieldReader<'a> {
    h: &'a HashMap<String, String>,
    problems: Vec<String>,
}

impl FieldReader<'_> {
    /// A number field (`what` names it for people); absent or empty is `None`.
    fn num<T: TryFrom<u64>>(&mut self, key: &str, what: &str) -> Option<T> {
        let v = self.h.get(key).filter(|v| !v.is_empty())?;
        match v.parse::<u64>() {
            Ok(n) => match T::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problems.push(format!("field {key} ({what}) is out of range: {}", shown(v)));
                    None
                }
            },
            Err(_) => {
                self.problems.push(format!("field {key} ({what}) is not a number: {}", shown(v)));
                None
            }
        }
    }

    /// The attempt history: every entry that reads.
    fn history(&mut self) -> Vec<Attempt> {
        let Some(raw) = self.h.get("h") else { return Vec::new() };
        let entries: Vec<serde_json::Value> = match serde_json::from_str(raw) {
            Ok(entries) => entries,
            Err(e) => {
                self.problems.push(format!("field h (history) is not a JSON list ({e}): {}", shown(raw)));
                return Vec::new();
            }
        };
        let mut history = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let text = entry.to_string();
            match serde_json::from_value::<Attempt>(entry) {
                Ok(a) => history.push(a),
                Err(e) => self.problems.push(format!(
                    "history entry {} is unreadable ({e}): {}",
                    i + 1,
                    shown(&text)
                )),
            }
        }
        history
    }

    /// The run options; the defaults (as a worker would use) if unreadable.
    fn options(&mut self) -> RunOptions {
        let raw = self.h.get("o").map(String::as_str).unwrap_or("");
        RunOptions::decode(raw).unwrap_or_else(|_| {
            self.problems.push(format!(
                "field o (options) is not readable job options, so the defaults are shown: {}",
                shown(raw)
            ));
            RunOptions::default()
        })
    }
}

impl JobInfo {
    /// Build from the fields of a job hash (`HGETALL`). `None` if the hash is
    /// empty; [`Error::UnreadableJob`] if it cannot be a job at all (no
    /// state, an unknown state, no name). Other fields that cannot be read
    /// are named in [`problems`](JobInfo::problems). [`JobEntry::from_hash`]
    /// gives the same without the error.
    pub fn from_hash(queue: &str, id: &str, h: HashMap<String, String>) -> Result<Option<Self>> {
        match JobEntry::from_hash(queue, id, h) {
            None => Ok(None),
            Some(entry) => entry.into_result().map(Some).map_err(Error::from),
        }
    }

    /// Read a non-empty job hash.
    fn read(
        queue: &str,
        id: &str,
        mut h: HashMap<String, String>,
    ) -> std::result::Result<Self, UnreadableJob> {
        let unreadable = |problem: String| UnreadableJob::new(queue, id, problem);
        let state: JobState = match h.get("s") {
            None => return Err(unreadable("field s (state) is missing".into())),
            Some(s) => s
                .parse()
                .map_err(|_| unreadable(format!("field s (state) is not a job state: {}", shown(s))))?,
        };
        let Some(name) = h.remove("n") else {
            return Err(unreadable("field n (name) is missing".into()));
        };
        let mut r = FieldReader { h: &h, problems: Vec::new() };
        let run = r.options();
        let mut history = r.history();
        let attempts_made = r.num::<u32>("at", "attempts made").unwrap_or(0);
        let started_at_ms = r.num("st", "started");
        let finished_at_ms = r.num("fin", "finished");
        let priority = r.num::<u32>("p", "priority").unwrap_or(0);
        let stalls = r.num::<u32>("stl", "stalls").unwrap_or(0);
        let created_at_ms = r.num("t", "created").unwrap_or(0);
        let mut problems = r.problems;
        let worker = h.remove("w");
        let current = match state {
            JobState::Active => Some(AttemptOutcome::Running),
            JobState::Completed => Some(AttemptOutcome::Completed),
            _ => None,
        };
        if let Some(outcome) = current {
            history.push(Attempt {
                number: Some(attempts_made),
                outcome,
                started_at_ms,
                finished_at_ms: if state == JobState::Completed { finished_at_ms } else { None },
                worker: worker.clone(),
                token: h.get("tk").filter(|t| !t.is_empty()).cloned(),
                error: None,
            });
        }
        let payload = take_payload(&mut h, &mut problems);
        let (steps, step_problems) = StepRecord::from_hash(&h);
        problems.extend(step_problems);
        let parent = h.remove(crate::fields::PARENT).and_then(|p| {
            let parent = crate::ParentInfo::from_stored(queue, &p);
            if parent.is_none() {
                problems.push(format!("field pa (parent) is unreadable: {}", shown(&p)));
            }
            parent
        });
        let mut children = Vec::new();
        for child_ref in h.get("kl").map(|l| l.split('\n').collect::<Vec<_>>()).unwrap_or_default() {
            let stored = h.get(&format!("k:{child_ref}")).map(String::as_str).unwrap_or("?");
            match crate::ChildInfo::from_stored(child_ref, stored) {
                Some(child) => children.push(child),
                None => problems.push(format!(
                    "child {} has an unreadable outcome: {}",
                    shown(child_ref),
                    shown(stored)
                )),
            }
        }
        Ok(JobInfo {
            queue: queue.to_owned(),
            id: id.to_owned(),
            name,
            payload,
            state,
            priority,
            attempts_made,
            max_attempts: run.attempts,
            stalls,
            created_at_ms,
            started_at_ms,
            finished_at_ms,
            worker,
            last_error: h.remove("e"),
            result: h.remove("r"),
            concurrency_key: h.remove(crate::fields::CONCURRENCY_KEY),
            idempotency_key: h.remove(crate::fields::IDEMPOTENCY_KEY),
            progress: progress_of(state, h.get("tk").map(String::as_str), h.get("pg").map(String::as_str)),
            history,
            parent,
            children,
            steps,
            problems,
        })
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
    /// Flows' parents waiting for their children.
    pub waiting_children: u64,
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
            JobState::WaitingChildren => self.waiting_children,
        }
    }
}

/// The payload of a job hash: whole in `d`, or in pieces `d`, `d2` .. `dN`
/// with `dn` = N (see `put_payload` in scripts/prelude.lua: pieces of at most
/// 64 bytes keep the hash in Redis's compact encoding). A piece count that is
/// not a number, or a missing piece, is noted in `problems`.
fn take_payload(h: &mut HashMap<String, String>, problems: &mut Vec<String>) -> String {
    let mut payload = h.remove("d").unwrap_or_default();
    let pieces = match h.remove("dn") {
        None => 1,
        Some(n) => n.parse::<u32>().unwrap_or_else(|_| {
            problems.push(format!("field dn (payload pieces) is not a number: {}", shown(&n)));
            1
        }),
    };
    for i in 2..=pieces {
        match h.remove(&format!("d{i}")) {
            Some(piece) => payload.push_str(&piece),
            None => problems.push(format!("payload piece d{i} of {pieces} is missing")),
        }
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

    fn hash(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bad_fields_are_problems_not_failures() {
        let h = hash(&[
            ("n", "send"),
            ("d", "{}"),
            ("t", "yesterday"),
            ("s", "failed"),
            ("at", "-1"),
            ("p", "99999999999"),
            ("o", "{not json"),
            ("e", "boom"),
            ("h", r#"[{"n":1,"out":"error","err":"boom"},{"n":"two"}]"#),
        ]);
        let j = JobInfo::from_hash("q", "7", h).unwrap().unwrap();
        assert_eq!(
            (j.name.as_str(), j.state, j.last_error.as_deref()),
            ("send", JobState::Failed, Some("boom"))
        );
        assert_eq!((j.created_at_ms, j.attempts_made, j.priority, j.max_attempts), (0, 0, 0, 3));
        assert_eq!(j.history.len(), 1, "the readable history entry is kept");
        assert_eq!(j.problems.len(), 5, "{:#?}", j.problems);
        assert!(j.problems.contains(&r#"field t (created) is not a number: "yesterday""#.to_owned()));
        assert!(j.problems.contains(&r#"field p (priority) is out of range: "99999999999""#.to_owned()));
        assert!(j.problems.iter().any(|p| p.starts_with("field o (options)") && p.contains("{not json")));
        assert!(j.problems.iter().any(|p| p.starts_with("history entry 2 is unreadable")));
        let json = serde_json::to_value(&j).unwrap();
        assert_eq!(json["problems"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn a_healthy_job_has_no_problems_in_its_json() {
        let j =
            JobInfo::from_hash("q", "1", hash(&[("n", "x"), ("s", "waiting"), ("t", "5")])).unwrap().unwrap();
        assert!(j.problems.is_empty());
        assert!(serde_json::to_value(&j).unwrap().get("problems").is_none());
    }

    #[test]
    fn unreadable_history_leaves_the_rest() {
        let h = hash(&[("n", "x"), ("s", "completed"), ("at", "1"), ("h", "{oops")]);
        let j = JobInfo::from_hash("q", "1", h).unwrap().unwrap();
        assert_eq!(j.history.len(), 1, "only the completed attempt");
        assert_eq!(j.problems.len(), 1);
        assert!(j.problems[0].starts_with("field h (history) is not a JSON list"), "{}", j.problems[0]);
    }

    #[test]
    fn records_without_state_or_name_are_unreadable() {
        for (fields, problem) in [
            (&[("n", "x")][..], "field s (state) is missing"),
            (&[("n", "x"), ("s", "zombie")][..], r#"field s (state) is not a job state: "zombie""#),
            (&[("s", "waiting"), ("d", "{}")][..], "field n (name) is missing"),
        ] {
            let entry = JobEntry::from_hash("q", "9", hash(fields)).unwrap();
            assert_eq!(entry, JobEntry::Unreadable(UnreadableJob::new("q", "9", problem)));
            assert_eq!(entry.id(), "9");
            let err = JobInfo::from_hash("q", "9", hash(fields)).unwrap_err();
            assert!(matches!(err, Error::UnreadableJob { .. }), "{err:?}");
            assert_eq!(err.to_string(), format!(r#"job "9" of queue "q" is unreadable: {problem}"#));
        }
        let json =
            serde_json::to_value(JobEntry::Unreadable(UnreadableJob::missing("q", "4", JobState::Failed)));
        assert_eq!(
            json.unwrap(),
            serde_json::json!({"queue": "q", "id": "4", "unreadable": "listed as failed but its job hash is missing"})
        );
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
