//! The schedule model: what to enqueue, when, and what to do about missed and
//! overlapping ticks.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use quern_common::options::RunOptions;
use quern_common::{JobOptions, QueueKeys, names};
use serde::{Deserialize, Serialize};

use crate::cron::CronSpec;
use crate::{Error, Result};

/// Longest schedule name accepted (it is part of job ids and keys).
pub const MAX_SCHEDULE_NAME: usize = 128;
/// Largest `catch_up` bound accepted.
pub const MAX_CATCH_UP: u32 = 1000;
/// Misfire grace unless told otherwise: a tick enqueued up to this late is
/// simply late (a leader takeover, a slow loop), not missed.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// What to do with ticks that were due more than the misfire grace ago
/// (typically because no scheduler was running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MisfirePolicy {
    /// Drop them; record how many were missed (the schedule is flagged).
    #[default]
    Skip,
    /// Enqueue the latest missed tick once, drop the others.
    RunOnce,
    /// Enqueue up to `max` of the missed ticks (the latest ones, oldest first),
    /// drop the rest.
    CatchUp {
        /// Most missed ticks enqueued after one outage.
        max: u32,
    },
}

/// What to do when a tick is due while the previous tick's job has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// Enqueue anyway.
    #[default]
    Allow,
    /// Skip the tick while the previous tick's job is still waiting, delayed or
    /// active (checked atomically with the enqueue).
    Skip,
}

/// A schedule: a cron expression in a time zone that enqueues one job per tick.
///
/// ```
/// use quern_scheduler::{Schedule, MisfirePolicy, OverlapPolicy};
///
/// let s = Schedule::new("settlement", "0 2 * * *", "billing", "settle")
///     .time_zone("Europe/Berlin")
///     .payload(serde_json::json!({"region": "eu"}))
///     .misfire(MisfirePolicy::RunOnce)
///     .overlap(OverlapPolicy::Skip);
/// assert!(s.validate().is_ok());
/// assert_eq!(
///     s.job_id(chrono::DateTime::parse_from_rfc3339("2026-11-23T01:00:00Z").unwrap().into()),
///     "settlement@2026-11-23T01:00:00Z"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Unique name; part of every tick's job id (`<name>@<UTC instant>`).
    pub name: String,
    /// Cron expression, 5 fields or 6 (seconds first).
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    pub time_zone: String,
    /// Queue the jobs go to.
    pub queue: String,
    /// Name of the job (selects the worker's handler).
    pub job_name: String,
    /// Payload of every tick's job, as JSON text.
    pub payload: String,
    /// Options of every tick's job. `job_id` must be unset: the scheduler
    /// derives ids from the tick.
    pub options: JobOptions,
    /// What to do with ticks missed during an outage.
    pub misfire: MisfirePolicy,
    /// How late a tick may be enqueued before it counts as missed.
    pub misfire_grace: Duration,
    /// What to do while the previous tick's job is unfinished.
    pub overlap: OverlapPolicy,
    /// Disabled schedules enqueue nothing; ticks while disabled are not misfires.
    pub enabled: bool,
    /// When not empty, each tick enqueues this chain instead of one job: the
    /// links run in order, each once the one before it completed (see
    /// [`Schedule::chain`]); `job_name` and `payload` are the last link's.
    pub chain: Vec<ChainLink>,
}

/// One link of a schedule's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// Job name (selects the worker's handler).
    pub job: String,
    /// Payload as JSON text.
    pub payload: String,
}

/// The most links a schedule's chain may have.
pub const MAX_CHAIN_LINKS: usize = 100;

impl Schedule {
    /// A schedule with defaults: UTC, payload `null`, default job options,
    /// misfire `skip` with 60 s grace, overlap `allow`, enabled.
    pub fn new(
        name: impl Into<String>,
        cron: impl Into<String>,
        queue: impl Into<String>,
        job_name: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            cron: cron.into(),
            time_zone: "UTC".into(),
            queue: queue.into(),
            job_name: job_name.into(),
            payload: "null".into(),
            options: JobOptions::default(),
            misfire: MisfirePolicy::default(),
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            overlap: OverlapPolicy::default(),
            enabled: true,
            chain: Vec::new(),
        }
    }

    /// Enqueue a chain on each tick instead of one job: `links` run in
    /// order, each only once the one before it completed; a link that fails
    /// for good dead-letters the rest. The tick's job id is the last link's;
    /// link n of the others is `<tick job id>#<n>` (from 1), so a tick still
    /// enqueues at most once. Sets `job_name` and `payload` to the last link's.
    pub fn chain(mut self, links: Vec<ChainLink>) -> Self {
        if let Some(last) = links.last() {
            self.job_name = last.job.clone();
            self.payload = last.payload.clone();
        }
        self.chain = links;
        self
    }

    /// Set the time zone (IANA name).
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        self.time_zone = zone.into();
        self
    }

    /// Set the payload.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload.to_string();
        self
    }

    /// Set the job options (`job_id` must stay unset).
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }

    /// Set the misfire policy.
    pub fn misfire(mut self, policy: MisfirePolicy) -> Self {
        self.misfire = policy;
        self
    }

    /// Set the misfire grace.
    pub fn misfire_grace(mut self, grace: Duration) -> Self {
        self.misfire_grace = grace;
        self
    }

    /// Set the overlap policy.
    pub fn overlap(mut self, policy: OverlapPolicy) -> Self {
        self.overlap = policy;
        self
    }

    /// Enable or disable.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Check every field; the error names the field and the problem.
    /// Returns the parsed cron expression.
    pub fn validate(&self) -> Result<CronSpec> {
        let bad = |reason: String| Error::InvalidSchedule { name: self.name.clone(), reason };
        validate_schedule_name(&self.name)?;
        QueueKeys::new("quern", &self.queue).map_err(|e| bad(format!("queue: {e}")))?;
        names::validate_job_name(&self.job_name).map_err(|e| bad(format!("job: {e}")))?;
        self.options.validate().map_err(|e| bad(format!("job options: {e}")))?;
        if self.options.job_id.is_some() {
            return Err(bad("job options set a job id; the scheduler derives ids from the tick".into()));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&self.payload)
            .map_err(|e| bad(format!("payload is not valid JSON: {e}")))?;
        if let MisfirePolicy::CatchUp { max } = self.misfire
            && (max == 0 || max > MAX_CATCH_UP)
        {
            return Err(bad(format!("catch_up max must be 1 to {MAX_CATCH_UP}, got {max}")));
        }
        if self.misfire_grace > Duration::from_secs(7 * 24 * 3600) {
            return Err(bad("misfire grace must be at most 7 days".into()));
        }
        if !self.chain.is_empty() {
            if self.chain.len() > MAX_CHAIN_LINKS {
                return Err(bad(format!(
                    "a chain has at most {MAX_CHAIN_LINKS} links, got {}",
                    self.chain.len()
                )));
            }
            if !self.options.delay.is_zero() {
                return Err(bad("a chain takes no delay".into()));
            }
            for (n, link) in self.chain.iter().enumerate() {
                names::validate_job_name(&link.job)
                    .map_err(|e| bad(format!("chain link {}: job: {e}", n + 1)))?;
                serde_json::from_str::<serde::de::IgnoredAny>(&link.payload)
                    .map_err(|e| bad(format!("chain link {}: payload is not valid JSON: {e}", n + 1)))?;
            }
            let last = &self.chain[self.chain.len() - 1];
            if last.job != self.job_name || last.payload != self.payload {
                return Err(bad(
                    "job and payload must be the chain's last link's (use Schedule::chain)".into()
                ));
            }
        }
        CronSpec::parse(&self.name, &self.cron, &self.time_zone)
    }

    /// The job id of the tick at `tick`: `<name>@<RFC 3339 UTC>`, with
    /// milliseconds only when the tick has them.
    pub fn job_id(&self, tick: DateTime<Utc>) -> String {
        tick_job_id(&self.name, tick)
    }

    pub(crate) fn to_stored(&self, since_ms: i64) -> StoredSchedule {
        StoredSchedule {
            cron: self.cron.clone(),
            tz: self.time_zone.clone(),
            queue: self.queue.clone(),
            job: self.job_name.clone(),
            payload: self.payload.clone(),
            opts: self.options.encode_stored(),
            prio: self.options.priority,
            delay_ms: self.options.delay.as_millis() as u64,
            misfire: match self.misfire {
                MisfirePolicy::Skip => "skip",
                MisfirePolicy::RunOnce => "run_once",
                MisfirePolicy::CatchUp { .. } => "catch_up",
            }
            .into(),
            catch_up_max: match self.misfire {
                MisfirePolicy::CatchUp { max } => max,
                _ => 0,
            },
            grace_ms: self.misfire_grace.as_millis() as u64,
            overlap: matches!(self.overlap, OverlapPolicy::Skip),
            enabled: self.enabled,
            since_ms,
            chain: self.chain.iter().map(|l| (l.job.clone(), l.payload.clone())).collect(),
        }
    }

    pub(crate) fn from_stored(name: &str, s: &StoredSchedule) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt { name: name.to_owned(), reason };
        let run = RunOptions::decode(&s.opts).map_err(|e| corrupt(e.to_string()))?;
        let mut options = JobOptions::new()
            .attempts(run.attempts)
            .backoff(run.backoff)
            .priority(s.prio)
            .delay(Duration::from_millis(s.delay_ms));
        options.timeout = run.timeout;
        Ok(Self {
            name: name.to_owned(),
            cron: s.cron.clone(),
            time_zone: s.tz.clone(),
            queue: s.queue.clone(),
            job_name: s.job.clone(),
            payload: s.payload.clone(),
            options,
            misfire: match s.misfire.as_str() {
                "skip" => MisfirePolicy::Skip,
                "run_once" => MisfirePolicy::RunOnce,
                "catch_up" => MisfirePolicy::CatchUp { max: s.catch_up_max },
                other => return Err(corrupt(format!("unknown misfire policy {other:?}"))),
            },
            misfire_grace: Duration::from_millis(s.grace_ms),
            overlap: if s.overlap { OverlapPolicy::Skip } else { OverlapPolicy::Allow },
            enabled: s.enabled,
            chain: s
                .chain
                .iter()
                .map(|(job, payload)| ChainLink { job: job.clone(), payload: payload.clone() })
                .collect(),
        })
    }
}

/// The job id of schedule `name`'s tick at `tick`.
pub fn tick_job_id(name: &str, tick: DateTime<Utc>) -> String {
    let format =
        if tick.timestamp_subsec_millis() == 0 { SecondsFormat::Secs } else { SecondsFormat::Millis };
    format!("{name}@{}", tick.to_rfc3339_opts(format, true))
}

/// A schedule name: 1 to 128 characters from `A-Z a-z 0-9 _ - .`.
pub fn validate_schedule_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("the name is empty".to_owned())
    } else if name.len() > MAX_SCHEDULE_NAME {
        Some(format!("the name is longer than {MAX_SCHEDULE_NAME} bytes"))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| format!("the name contains {c:?}; use letters, digits, '_', '-' and '.'"))
    };
    match reason {
        Some(reason) => Err(Error::InvalidSchedule { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// The form a schedule is stored in (JSON in the schedules hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSchedule {
    pub(crate) cron: String,
    pub(crate) tz: String,
    pub(crate) queue: String,
    pub(crate) job: String,
    pub(crate) payload: String,
    #[serde(default)]
    pub(crate) opts: String,
    #[serde(default)]
    pub(crate) prio: u32,
    #[serde(default)]
    pub(crate) delay_ms: u64,
    pub(crate) misfire: String,
    #[serde(default)]
    pub(crate) catch_up_max: u32,
    pub(crate) grace_ms: u64,
    #[serde(default)]
    pub(crate) overlap: bool,
    pub(crate) enabled: bool,
    /// Redis time (ms) from which ticks count: creation, last change or
    /// re-enabling. Ticks before it are neither enqueued nor missed.
    pub(crate) since_ms: i64,
    /// The chain's links (job name, payload), if the schedule enqueues one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) chain: Vec<(String, String)>,
}

impl StoredSchedule {
    /// Same definition, ignoring `since_ms`.
    pub(crate) fn same_definition(&self, other: &StoredSchedule) -> bool {
        let mut a = self.clone();
        a.since_ms = other.since_ms;
        a == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quern_common::Backoff;

    #[test]
    fn validation_names_the_problem() {
        let ok = Schedule::new("nightly", "0 2 * * *", "billing", "settle");
        assert!(ok.validate().is_ok());
        let e = Schedule::new("", "0 2 * * *", "billing", "settle").validate().unwrap_err().to_string();
        assert!(e.contains("name is empty"), "{e}");
        let e = Schedule::new("a b", "0 2 * * *", "billing", "settle").validate().unwrap_err().to_string();
        assert!(e.contains("' '"), "{e}");
        let e = Schedule::new("n", "0 2 * * *", "bad queue", "settle").validate().unwrap_err().to_string();
        assert!(e.contains("queue"), "{e}");
        let e = Schedule::new("n", "0 2 * * *", "q", "").validate().unwrap_err().to_string();
        assert!(e.contains("job"), "{e}");
        let e = Schedule::new("n", "0 2 * *", "q", "j").validate().unwrap_err();
        assert!(matches!(e, Error::InvalidCron { .. }), "{e}");
        let e = Schedule::new("n", "0 2 * * *", "q", "j").time_zone("Berlin").validate().unwrap_err();
        assert!(matches!(e, Error::UnknownTimeZone { .. }), "{e}");
        let e = Schedule::new("n", "0 2 * * *", "q", "j")
            .misfire(MisfirePolicy::CatchUp { max: 0 })
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("catch_up"), "{e}");
        let e = Schedule::new("n", "0 2 * * *", "q", "j")
            .options(JobOptions::new().job_id("x1"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("job id"), "{e}");
        let mut s = Schedule::new("n", "0 2 * * *", "q", "j");
        s.payload = "{nope".into();
        assert!(s.validate().unwrap_err().to_string().contains("payload"));
    }

    #[test]
    fn stored_form_round_trips() {
        let s = Schedule::new("n", "*/5 * * * * *", "q", "j")
            .time_zone("Europe/Berlin")
            .payload(serde_json::json!({"a": [1, 2]}))
            .options(
                JobOptions::new()
                    .attempts(7)
                    .priority(3)
                    .delay(Duration::from_secs(2))
                    .timeout(Duration::from_secs(9))
                    .backoff(Backoff::fixed(Duration::from_secs(4))),
            )
            .misfire(MisfirePolicy::CatchUp { max: 5 })
            .misfire_grace(Duration::from_secs(3))
            .overlap(OverlapPolicy::Skip)
            .enabled(false);
        let stored = s.to_stored(42);
        let json = serde_json::to_string(&stored).unwrap();
        let back: StoredSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(Schedule::from_stored("n", &back).unwrap(), s);
    }

    #[test]
    fn job_ids_are_readable_utc_instants() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T03:00:00+01:00").unwrap().with_timezone(&Utc);
        assert_eq!(tick_job_id("settlement", t), "settlement@2026-11-23T02:00:00Z");
        assert!(names::validate_job_id(&tick_job_id("settlement", t)).is_ok());
    }
}
