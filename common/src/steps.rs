//! Durable steps: the records a job's steps and sleeps leave in its hash.
//!
//! A step's record is field `s:<name>#<occurrence>` of the job hash (see
//! `scripts/step.lua`), valued `<seq> <attempt> <finished ms> <took ms>
//! <outcome>` newline value. Living in the job hash, the records go
//! wherever the job goes: a plain job has none and pays nothing for them.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::{Error, Result};

/// The job hash field prefix of step records (`STEP_FIELD` in `scripts/prelude.lua`).
pub const STEP_FIELD_PREFIX: &str = "s:";

/// The name sleeps are recorded under (user step names may not start with `~`).
pub const SLEEP_STEP: &str = "~sleep";

/// The longest step name, in bytes.
pub const MAX_STEP_NAME_BYTES: usize = 100;

/// Check a step name: 1 to 100 bytes, no `#` (it separates the occurrence),
/// no control characters, not starting with `~` (reserved for sleeps).
pub fn validate_step_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_STEP_NAME_BYTES {
        "it is longer than 100 bytes"
    } else if name.contains('#') {
        "it contains '#', which separates a step's name from its occurrence"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else if name.starts_with('~') {
        "names starting with '~' are reserved (sleeps are recorded as '~sleep')"
    } else {
        return Ok(());
    };
    Err(Error::InvalidOptions(format!("invalid step name {name:?}: {why}")))
}

/// The key of occurrence `occurrence` (1 for the first) of step `name`.
pub fn step_key(name: &str, occurrence: u32) -> String {
    format!("{name}#{occurrence}")
}

/// A step key as an operator writes it: `NAME` (its first occurrence) or
/// `NAME#N`.
pub fn parse_step_ref(text: &str) -> Result<String> {
    let (name, occurrence) = match text.rsplit_once('#') {
        Some((name, n)) => {
            let n: u32 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::InvalidOptions(format!(
                    "invalid step {text:?}: after '#' comes the occurrence, a number from 1"
                ))
            })?;
            (name, n)
        }
        None => (text, 1),
    };
    if name != SLEEP_STEP {
        validate_step_name(name)?;
    }
    Ok(step_key(name, occurrence))
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// It returned a result, which later attempts get without running it.
    Ok,
    /// It failed permanently (the job was dead-lettered); it runs again if
    /// the job is retried.
    Failed,
    /// A sleep: the job slept until the wake time.
    Sleep,
    /// An outcome this version does not know (written by a newer one).
    #[serde(untagged)]
    Other(String),
}

impl StepOutcome {
    fn parse(s: &str) -> Self {
        match s {
            "ok" => StepOutcome::Ok,
            "failed" => StepOutcome::Failed,
            "sleep" => StepOutcome::Sleep,
            other => StepOutcome::Other(other.to_owned()),
        }
    }

    /// Whether later attempts skip the step (its record stands for it).
    pub fn is_finished(&self) -> bool {
        matches!(self, StepOutcome::Ok | StepOutcome::Sleep)
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Failed => "failed",
            StepOutcome::Sleep => "sleep",
            StepOutcome::Other(s) => s,
        })
    }
}

/// One stored step of a job: an entry of its step timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// The step's name (`~sleep` for sleeps).
    pub name: String,
    /// Which call of that name it was (1 for the first).
    pub occurrence: u32,
    /// Its place among the job's stored steps (1 for the first stored).
    pub seq: u64,
    /// The attempt that ran it.
    pub attempt: u32,
    /// When it started (Unix ms: Redis' clock at the end, less how long it took).
    pub started_at_ms: u64,
    /// How long it ran (ms, as its worker measured).
    pub took_ms: u64,
    /// How it ended.
    pub outcome: StepOutcome,
    /// The stored value: the result (JSON) of an `ok` step, the error of a
    /// failed one, the wake time (Unix ms) of a sleep.
    #[serde(skip)]
    pub value: String,
}

impl StepRecord {
    /// The step's key, `<name>#<occurrence>`.
    pub fn key(&self) -> String {
        step_key(&self.name, self.occurrence)
    }

    /// Read the record stored under `key` (`<name>#<occurrence>`).
    pub fn parse(key: &str, stored: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| format!("step record {key:?} is unreadable ({why})");
        let (name, occurrence) = key.rsplit_once('#').ok_or_else(|| bad("its key has no '#'"))?;
        let occurrence = occurrence.parse().map_err(|_| bad("its occurrence is not a number"))?;
        let (head, value) = stored.split_once('\n').ok_or_else(|| bad("no newline after its header"))?;
        let parts: Vec<&str> = head.split(' ').collect();
        let [seq, attempt, finished, took, outcome] = parts[..] else {
            return Err(bad("its header does not have five parts"));
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad("a number in its header is not a number"));
        let (finished, took) = (num(finished)?, num(took)?);
        Ok(StepRecord {
            name: name.to_owned(),
            occurrence,
            seq: num(seq)?,
            attempt: u32::try_from(num(attempt)?).map_err(|_| bad("its attempt is out of range"))?,
            started_at_ms: finished.saturating_sub(took),
            took_ms: took,
            outcome: StepOutcome::parse(outcome),
            value: value.to_owned(),
        })
    }

    /// Every step record among a job hash's fields, in the order they were
    /// stored, with one sentence per record that cannot be read.
    pub fn from_hash(h: &HashMap<String, String>) -> (Vec<StepRecord>, Vec<String>) {
        let mut steps = Vec::new();
        let mut problems = Vec::new();
        for (field, stored) in h {
            if let Some(key) = field.strip_prefix(STEP_FIELD_PREFIX) {
                match StepRecord::parse(key, stored) {
                    Ok(step) => steps.push(step),
                    Err(problem) => problems.push(problem),
                }
            }
        }
        steps.sort_by_key(|s| s.seq);
        problems.sort();
        (steps, problems)
    }

    /// Whether this is a sleep's record.
    pub fn is_sleep(&self) -> bool {
        self.name == SLEEP_STEP
    }

    /// The wake time of a sleep (Unix ms).
    pub fn wake_at_ms(&self) -> Option<u64> {
        (self.outcome == StepOutcome::Sleep).then(|| self.value.parse().ok()).flatten()
    }

    /// What the timeline shows after the outcome: the result's size, the
    /// error, or the wake time.
    pub fn detail(&self) -> String {
        match self.outcome {
            StepOutcome::Ok => format!("{} bytes", self.value.len()),
            StepOutcome::Sleep => format!("until {}", self.value),
            _ => self.value.clone(),
        }
    }
}

/// The step timeline as `quern job --json` and [`crate::JobInfo`]'s JSON
/// show it: a result's size rather than the result.
#[derive(Serialize)]
pub(crate) struct StepJson<'a> {
    #[serde(flatten)]
    step: &'a StepRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake_at_ms: Option<u64>,
}

impl<'a> From<&'a StepRecord> for StepJson<'a> {
    fn from(step: &'a StepRecord) -> Self {
        Self {
            step,
            result_bytes: (step.outcome == StepOutcome::Ok).then_some(step.value.len()),
            error: (step.outcome == StepOutcome::Failed).then_some(step.value.as_str()),
            wake_at_ms: step.wake_at_ms(),
        }
    }
}

/// Serialize a step timeline through [`StepJson`].
pub(crate) fn serialize_steps<S: serde::Serializer>(
    steps: &[StepRecord],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(steps.iter().map(StepJson::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_with_its_start_time() {
        let r = StepRecord::parse("settle#3", "4 2 10500 500 ok\n{\"n\":1}").unwrap();
        assert_eq!((r.name.as_str(), r.occurrence, r.seq, r.attempt), ("settle", 3, 4, 2));
        assert_eq!((r.started_at_ms, r.took_ms), (10_000, 500));
        assert_eq!(r.outcome, StepOutcome::Ok);
        assert_eq!(r.value, "{\"n\":1}");
        assert_eq!(r.key(), "settle#3");
    }

    #[test]
    fn unreadable_records_are_problems_not_failures() {
        let h: HashMap<String, String> =
            [("s:a#1", "1 1 5 1 ok\n1"), ("s:b#1", "garbage"), ("n", "job"), ("s:c#1", "2 1 9 0 sleep\n100")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let (steps, problems) = StepRecord::from_hash(&h);
        assert_eq!(steps.iter().map(StepRecord::key).collect::<Vec<_>>(), ["a#1", "c#1"]);
        assert_eq!(steps[1].wake_at_ms(), Some(100));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("b#1"), "{problems:?}");
    }

    #[test]
    fn step_names_and_references_are_checked() {
        assert!(validate_step_name("charge card").is_ok());
        for bad in ["", "a#b", "~x", "a\nb"] {
            assert!(validate_step_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_step_ref("settle").unwrap(), "settle#1");
        assert_eq!(parse_step_ref("settle#3").unwrap(), "settle#3");
        assert_eq!(parse_step_ref("~sleep#2").unwrap(), "~sleep#2");
        assert!(parse_step_ref("settle#0").is_err());
        assert!(parse_step_ref("settle#x").is_err());
    }
}
