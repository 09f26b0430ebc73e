//! Durable steps and sleeps of one attempt, as data: what the job stored
//! before (read on the first step or sleep, so a job without steps pays
//! nothing), which calls this attempt made, and the divergence check. The
//! calls themselves (`JobContext::step`, `sleep`) are in `durable.rs`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use quern_common::Backoff;
use quern_common::moves::StepLimits;
use quern_common::steps::{StepRecord, step_key};

/// What a worker does when a job's code no longer matches its stored steps:
/// it calls a step or sleep that was never stored while stored ones were
/// not reached (a deploy renamed, removed or reordered steps while the job
/// slept or waited for a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Divergence {
    /// Log a warning (once per attempt) and run on: the new step runs; the
    /// stored ones not reached stay in the job's timeline (the default).
    #[default]
    WarnAndRunOn,
    /// Fail the job permanently with the error "steps changed: ...": it goes
    /// to the dead-letter list with its steps kept. `quern dlq retry
    /// --from-step` reruns it from a chosen step.
    DeadLetter,
}

/// Retries of one step inside its attempt, for a step that calls a flaky
/// service: a retryable error runs the step again after `backoff`, up to
/// `attempts` runs in all, before it fails the attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRetry {
    /// Runs of the step per attempt (at least 1).
    pub attempts: u32,
    /// Delay before run n+1 (`delay_for(n)`).
    pub backoff: Backoff,
}

impl StepRetry {
    /// Up to `attempts` runs, `backoff` between them.
    pub fn new(attempts: u32, backoff: Backoff) -> Self {
        Self { attempts: attempts.max(1), backoff }
    }

    /// The delay before run `after + 1`.
    pub(crate) fn delay_after(&self, after: u32) -> Duration {
        self.backoff.delay_for(after)
    }
}

/// The step settings a worker gives each attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepRules {
    pub(crate) divergence: Divergence,
    pub(crate) limits: StepLimits,
    /// The worker's lease: how long storing a step's result is retried
    /// through a Redis outage (after that the lease is gone anyway).
    pub(crate) lease: Duration,
}

/// Steps a job may store by default.
pub const DEFAULT_MAX_STEPS: u32 = 1000;
/// Bytes a job's stored steps may take by default (1 MiB).
pub const DEFAULT_MAX_STEP_BYTES: u64 = 1024 * 1024;

impl Default for StepRules {
    fn default() -> Self {
        Self {
            divergence: Divergence::default(),
            limits: StepLimits { max_steps: DEFAULT_MAX_STEPS, max_bytes: DEFAULT_MAX_STEP_BYTES },
            lease: Duration::from_secs(30),
        }
    }
}

/// The steps of one attempt.
#[derive(Debug, Default)]
pub(crate) struct StepBook {
    /// The job's stored records by key; `None` until the first step or sleep.
    stored: Option<HashMap<String, StepRecord>>,
    /// Calls made so far this attempt, by step name.
    calls: HashMap<String, u32>,
    /// Stored finished records this attempt has reached.
    reached: HashSet<String>,
    /// Whether a divergence was reported this attempt.
    diverged: bool,
}

/// What a step or sleep call found.
pub(crate) enum Found {
    /// A finished record: use it, do not run the step.
    Finished(StepRecord),
    /// Nothing finished: run it. `diverged` names stored steps not reached,
    /// the first time this attempt finds any.
    Run { diverged: Option<Vec<String>> },
}

impl StepBook {
    pub(crate) fn is_loaded(&self) -> bool {
        self.stored.is_some()
    }

    /// Take the job hash's fields (`HGETALL`); unreadable records are
    /// returned as problems, and count as not stored.
    pub(crate) fn load(&mut self, fields: &HashMap<String, String>) -> Vec<String> {
        let (records, problems) = StepRecord::from_hash(fields);
        self.stored = Some(records.into_iter().map(|r| (r.key(), r)).collect());
        problems
    }

    /// The next call of step `name`: its key and what is stored for it.
    pub(crate) fn next_call(&mut self, name: &str) -> (String, Found) {
        let n = self.calls.entry(name.to_owned()).or_insert(0);
        *n += 1;
        let key = step_key(name, *n);
        let stored = self.stored.get_or_insert_with(HashMap::new);
        if let Some(record) = stored.get(&key).filter(|r| r.outcome.is_finished()) {
            let record = record.clone();
            self.reached.insert(key.clone());
            return (key, Found::Finished(record));
        }
        let mut not_reached: Vec<&StepRecord> =
            stored.values().filter(|r| r.outcome.is_finished() && !self.reached.contains(&r.key())).collect();
        let diverged = if not_reached.is_empty() || self.diverged {
            None
        } else {
            self.diverged = true;
            not_reached.sort_by_key(|r| r.seq);
            Some(not_reached.iter().map(|r| r.key()).collect())
        };
        (key, Found::Run { diverged })
    }

    /// Step `key` is now stored as `record` (by this attempt or, rarely, found there).
    pub(crate) fn stored(&mut self, record: StepRecord) {
        self.reached.insert(record.key());
        self.stored.get_or_insert_with(HashMap::new).insert(record.key(), record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(records: &[(&str, &str)]) -> StepBook {
        let fields: HashMap<String, String> =
            records.iter().map(|(k, v)| (format!("s:{k}"), (*v).to_owned())).collect();
        let mut b = StepBook::default();
        assert!(b.load(&fields).is_empty());
        b
    }

    #[test]
    fn stored_steps_replay_by_name_and_occurrence() {
        let mut b = book(&[("a#1", "1 1 5 1 ok\n1"), ("a#2", "2 1 5 1 ok\n2"), ("b#1", "3 1 5 1 failed\nx")]);
        assert!(matches!(b.next_call("a"), (k, Found::Finished(r)) if k == "a#1" && r.value == "1"));
        assert!(matches!(b.next_call("a"), (k, Found::Finished(r)) if k == "a#2" && r.value == "2"));
        assert!(
            matches!(b.next_call("b"), (k, Found::Run { diverged: None }) if k == "b#1"),
            "failed steps run again"
        );
    }

    #[test]
    fn a_new_step_before_stored_ones_are_reached_is_a_divergence_told_once() {
        let mut b = book(&[("a#1", "1 1 5 1 ok\n1"), ("b#1", "2 1 5 1 ok\n2")]);
        match b.next_call("renamed") {
            (_, Found::Run { diverged: Some(keys) }) => assert_eq!(keys, ["a#1", "b#1"]),
            _ => panic!("expected a divergence"),
        }
        assert!(matches!(b.next_call("other"), (_, Found::Run { diverged: None })));
    }
}
