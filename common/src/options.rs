//! Per-job options, and their compact stored form.
//!
//! Only options that differ from the defaults are stored with a job (field `o`
//! of its hash, as JSON), which keeps a waiting job small. Producer and worker
//! share the defaults below, so a job means the same thing on both sides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, millis};
use crate::names;
use crate::{Error, Result};

/// Attempts a job gets unless told otherwise (the first run plus two retries).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Largest priority number (lowest priority). 0 is the default and the highest.
pub const MAX_PRIORITY: u32 = (1 << 21) - 1;
/// Longest delay accepted: about ten years.
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 512;
/// Longest concurrency key accepted, in bytes.
pub const MAX_CONCURRENCY_KEY_BYTES: usize = 256;
/// Longest idempotency window accepted: about ten years.
pub const MAX_IDEMPOTENCY_WINDOW: Duration = MAX_DELAY;

/// An idempotency key and how long it holds (see [`JobOptions::idempotency_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key: any text of 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes,
    /// unique per queue.
    pub key: String,
    /// How long after the first add the key keeps deduplicating.
    pub window: Duration,
}

/// How a job is to be run: id, delay, priority, attempts, backoff, timeout.
///
/// ```
/// use std::time::Duration;
/// use quern_common::{Backoff, JobOptions};
///
/// let opts = JobOptions::new()
///     .job_id("invoice-2026-11-42")
///     .delay(Duration::from_secs(30))
///     .priority(5)
///     .attempts(5)
///     .backoff(Backoff::exponential(Duration::from_secs(2), Duration::from_secs(600)))
///     .timeout(Duration::from_secs(20));
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// Explicit job id. Adding a job whose id exists already is a no-op that
    /// returns the existing id, so retried requests do not enqueue twice.
    pub job_id: Option<String>,
    /// Run no earlier than this long after the add (measured on Redis' clock).
    pub delay: Duration,
    /// Lower runs first; 0 (the default) is the highest. Jobs of one priority
    /// run in the order they were added.
    pub priority: u32,
    /// Attempts in all, including the first (at least 1).
    pub attempts: u32,
    /// Wait between a failed attempt and the next one.
    pub backoff: Backoff,
    /// Longest a single attempt may run; `None` means no limit.
    pub timeout: Option<Duration>,
    /// An idempotency key with its window: see [`JobOptions::idempotency_key`].
    pub idempotency: Option<Idempotency>,
    /// A concurrency key: see [`JobOptions::concurrency_key`].
    pub concurrency_key: Option<String>,
    /// Add nothing when the concurrency key is busy: see
    /// [`JobOptions::skip_if_key_busy`].
    pub skip_if_key_busy: bool,
    /// The trace the job belongs to, as a W3C `traceparent`
    /// (`00-<trace id>-<parent span id>-<flags>`): a worker built with the
    /// feature `otel` runs each attempt in a span continuing it. The
    /// producer's feature `otel` fills it from the current span.
    pub trace_parent: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            job_id: None,
            delay: Duration::ZERO,
            priority: 0,
            attempts: DEFAULT_ATTEMPTS,
            backoff: Backoff::default(),
            timeout: None,
            idempotency: None,
            concurrency_key: None,
            skip_if_key_busy: false,
            trace_parent: None,
        }
    }
}

/// Whether `text` is a W3C `traceparent` of version 00: `00-` then 32 hex
/// digits (not all zero), `-`, 16 hex digits (not all zero), `-`, 2 hex digits.
pub fn is_trace_parent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

impl JobOptions {
    /// The defaults: generated id, no delay, priority 0, 3 attempts,
    /// exponential backoff from 1 s to 1 h with 25 % jitter, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set an explicit, idempotent job id.
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }

    /// Set the delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Set the priority (lower runs first).
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Set the number of attempts.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Set the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Set the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Deduplicate by `key` for `window`: an add of a job with the same key
    /// to the same queue less than `window` after the first one adds nothing
    /// and answers the first job's id ([`crate::Added::deduplicated`]),
    /// whatever became of that job since (completed, trimmed, removed,
    /// dead-lettered). Independent of [`JobOptions::job_id`] and of how long
    /// finished jobs are kept; the key is stored on its own and expires with
    /// the window (measured on Redis' clock).
    pub fn idempotency_key(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.idempotency = Some(Idempotency { key: key.into(), window });
        self
    }

    /// Run under concurrency key `key`: when the queue has a per-key limit
    /// (or `key` has its own), at most that many jobs of the key run at
    /// once, across all workers. A job whose key is at its limit waits aside
    /// without blocking other jobs, and runs when a job of its key ends.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// With a concurrency key: add nothing when the key is busy (a job of it
    /// running, holding a singleton key between attempts, or waiting aside
    /// for the key) and answer [`crate::Added::skipped`], instead of queueing
    /// behind it. Meant for singleton keys ("run the settlement unless one is
    /// under way"); jobs of the key that no worker has met yet are not seen.
    pub fn skip_if_key_busy(mut self) -> Self {
        self.skip_if_key_busy = true;
        self
    }

    /// Set the trace the job continues (a W3C `traceparent`).
    pub fn trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_parent = Some(traceparent.into());
        self
    }

    /// Check every option; the error names the one out of range.
    pub fn validate(&self) -> Result<()> {
        if let Some(id) = &self.job_id {
            names::validate_job_id(id)?;
        }
        let bad = |msg: String| Err(Error::InvalidOptions(msg));
        if self.attempts == 0 || self.attempts > MAX_ATTEMPTS {
            return bad(format!("attempts must be 1 to {MAX_ATTEMPTS}, got {}", self.attempts));
        }
        if self.priority > MAX_PRIORITY {
            return bad(format!("priority must be 0 to {MAX_PRIORITY}, got {}", self.priority));
        }
        if self.delay > MAX_DELAY {
            return bad(format!("delay {:?} is longer than the limit of {MAX_DELAY:?}", self.delay));
        }
        if self.timeout.is_some_and(|t| t < Duration::from_millis(1)) {
            return bad("timeout must be at least 1 ms".into());
        }
        if let Some(key) = &self.concurrency_key {
            if key.is_empty() || key.len() > MAX_CONCURRENCY_KEY_BYTES {
                return bad(format!(
                    "concurrency key must be 1 to {MAX_CONCURRENCY_KEY_BYTES} bytes, got {}",
                    key.len()
                ));
            }
            if key.contains('\n') {
                return bad("a concurrency key cannot hold a newline".into());
            }
        } else if self.skip_if_key_busy {
            return bad("skip_if_key_busy needs a concurrency key".into());
        }
        if let Some(Idempotency { key, window }) = &self.idempotency {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return bad(format!(
                    "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}",
                    key.len()
                ));
            }
            if *window < Duration::from_millis(1) || *window > MAX_IDEMPOTENCY_WINDOW {
                return bad(format!(
                    "idempotency window must be 1 ms to {MAX_IDEMPOTENCY_WINDOW:?}, got {window:?}"
                ));
            }
        }
        if let Some(tp) = self.trace_parent.as_deref().filter(|tp| !is_trace_parent(tp)) {
            return bad(format!(
                "trace parent {tp:?} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lower case)"
            ));
        }
        self.backoff.validate().map_err(Error::InvalidOptions)
    }

    /// The stored form of the options the worker needs; empty when all are defaults.
    pub fn encode_stored(&self) -> String {
        let stored = StoredOptions {
            attempts: (self.attempts != DEFAULT_ATTEMPTS).then_some(self.attempts),
            backoff: (self.backoff != Backoff::default()).then_some(self.backoff),
            timeout: self.timeout,
            trace_parent: self.trace_parent.clone(),
        };
        if stored.attempts.is_none()
            && stored.backoff.is_none()
            && stored.timeout.is_none()
            && stored.trace_parent.is_none()
        {
            String::new()
        } else {
            serde_json::to_string(&stored).expect("options serialize")
        }
    }
}

/// The options a worker runs a job with, decoded from its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Attempts in all.
    pub attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// The trace the job continues (a W3C `traceparent`), if any.
    pub trace_parent: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { attempts: DEFAULT_ATTEMPTS, backoff: Backoff::default(), timeout: None, trace_parent: None }
    }
}

impl RunOptions {
    /// Decode the stored form (empty: defaults).
    pub fn decode(stored: &str) -> Result<Self> {
        if stored.is_empty() {
            return Ok(Self::default());
        }
        let s: StoredOptions = serde_json::from_str(stored)
            .map_err(|e| Error::Protocol(format!("stored job options {stored:?}: {e}")))?;
        Ok(Self {
            attempts: s.attempts.unwrap_or(DEFAULT_ATTEMPTS),
            backoff: s.backoff.unwrap_or_default(),
            timeout: s.timeout,
            trace_parent: s.trace_parent,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredOptions {
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    backoff: Option<Backoff>,
    #[serde(rename = "to", default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    timeout: Option<Duration>,
    #[serde(rename = "tp", default, skip_serializing_if = "Option::is_none")]
    trace_parent: Option<String>,
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parents_are_checked_and_stored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_trace_parent(tp));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!is_trace_parent(bad), "{bad}");
        }
        let opts = JobOptions::new().trace_parent(tp);
        assert!(opts.validate().is_ok());
        assert_eq!(RunOptions::decode(&opts.encode_stored()).unwrap().trace_parent.as_deref(), Some(tp));
        assert!(JobOptions::new().trace_parent("nope").validate().is_err());
    }

    #[test]
    fn defaults_store_nothing() {
        assert_eq!(JobOptions::new().encode_stored(), "");
        assert_eq!(RunOptions::decode("").unwrap(), RunOptions::default());
    }

    #[test]
    fn stored_options_round_trip() {
        let o = JobOptions::new().attempts(7).backoff(Backoff::None).timeout(Duration::from_millis(2500));
        let s = o.encode_stored();
        assert_eq!(s, r#"{"a":7,"b":{"k":"none"},"to":2500}"#);
        let r = RunOptions::decode(&s).unwrap();
        assert_eq!((r.attempts, r.backoff, r.timeout), (7, Backoff::None, Some(Duration::from_millis(2500))));
    }

    #[test]
    fn validation_names_the_bad_option() {
        let err = JobOptions::new().attempts(0).validate().unwrap_err().to_string();
        assert!(err.contains("attempts"), "{err}");
        let err = JobOptions::new().priority(MAX_PRIORITY + 1).validate().unwrap_err().to_string();
        assert!(err.contains("priority"), "{err}");
        assert!(JobOptions::new().job_id("12").validate().is_err());
        assert!(JobOptions::new().timeout(Duration::ZERO).validate().is_err());
        let err = JobOptions::new().idempotency_key("", Duration::from_secs(1)).validate().unwrap_err();
        assert!(err.to_string().contains("idempotency key"), "{err}");
        let err = JobOptions::new().idempotency_key("k", Duration::ZERO).validate().unwrap_err();
        assert!(err.to_string().contains("idempotency window"), "{err}");
    }
}
