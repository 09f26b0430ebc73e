//! A worker's settings: plain data, checked once by the builder.

use std::time::Duration;

use quern_common::ReplicaAcks;
use quern_common::moves::DEFAULT_EVENTS_MAX_LEN;

use crate::steps::StepRules;

/// How long completed jobs are kept. The newest `max_count` are kept, and
/// those older than `max_age` are trimmed by the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many completed jobs (`None`: no count limit; `Some(0)`:
    /// delete a job as soon as it completes).
    pub max_count: Option<u64>,
    /// Trim completed jobs older than this (`None`: no age limit).
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    /// The newest 100,000 completed jobs, for at most 24 hours.
    fn default() -> Self {
        Self { max_count: Some(100_000), max_age: Some(Duration::from_secs(24 * 3600)) }
    }
}

impl Retention {
    /// Keep every completed job (memory grows with every job: for tests and benchmarks).
    pub fn keep_all() -> Self {
        Self { max_count: None, max_age: None }
    }

    /// Delete jobs as soon as they complete.
    pub fn delete_at_once() -> Self {
        Self { max_count: Some(0), max_age: None }
    }
}

/// Everything a worker was configured with (see [`crate::WorkerBuilder`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) max_stalls: u32,
    pub(crate) reap_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) idle_block: Duration,
    pub(crate) retention: Retention,
    pub(crate) events_max_len: u64,
    pub(crate) replica_acks: Option<ReplicaAcks>,
    pub(crate) steps: StepRules,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 10,
            lease: Duration::from_secs(30),
            max_stalls: 3,
            reap_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            idle_block: Duration::from_secs(5),
            retention: Retention::default(),
            events_max_len: DEFAULT_EVENTS_MAX_LEN,
            replica_acks: None,
            steps: StepRules::default(),
        }
    }
}

impl Settings {
    /// Why these settings cannot run, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(format!("concurrency must be 1 to 10000, got {}", self.concurrency));
        }
        if self.lease < Duration::from_millis(200) {
            return Err(format!("lease must be at least 200 ms, got {:?}", self.lease));
        }
        if self.reap_interval < Duration::from_millis(50) {
            return Err(format!("reap interval must be at least 50 ms, got {:?}", self.reap_interval));
        }
        if self.idle_block < Duration::from_millis(10) {
            return Err(format!("idle block must be at least 10 ms, got {:?}", self.idle_block));
        }
        let limits = self.steps.limits;
        if limits.max_steps == 0 || limits.max_bytes == 0 {
            return Err(format!(
                "step limits must be at least 1 step and 1 byte, got {} steps and {} bytes",
                limits.max_steps, limits.max_bytes
            ));
        }
        Ok(())
    }
}
