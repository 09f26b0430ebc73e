//! How attempts end: the kinds of failure a worker records, and the outcomes
//! kept in a job's attempt history.

use crate::open_enum::open_enum;

/// Why an attempt failed, as the worker records it (`fail.lua`'s kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The handler returned a retryable error.
    Error,
    /// The handler returned a permanent error (or could not start: no
    /// handler, a payload that does not fit): no retry.
    Permanent,
    /// The attempt ran past the job's timeout.
    Timeout,
    /// The handler panicked.
    Panic,
}

impl FailureKind {
    /// The kind as stored in the attempt history.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Permanent => "permanent",
            FailureKind::Timeout => "timeout",
            FailureKind::Panic => "panic",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

open_enum! {
    /// What became of one attempt (or operator action) in a job's history.
    pub enum AttemptOutcome {
        /// It succeeded.
        Completed = "completed",
        /// It is running now.
        Running = "running",
        /// The handler returned a retryable error.
        Error = "error",
        /// The handler failed for good.
        Permanent = "permanent",
        /// It ran past the job's timeout.
        Timeout = "timeout",
        /// The handler panicked.
        Panic = "panic",
        /// Its lease expired (the worker crashed, was killed or partitioned),
        /// or a job handed to a parked worker was not claimed in time.
        Stalled = "stalled",
        /// Its worker shut down before it finished and handed it back.
        Released = "released",
        /// An operator cancelled it.
        Cancelled = "cancelled",
        /// An operator moved it back from the dead-letter list.
        Retried = "retried",
        /// Not an attempt: the stored history was unreadable (a corrupt
        /// record) and was started afresh at this point.
        HistoryReset = "history_reset",
    }
}

impl From<FailureKind> for AttemptOutcome {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Error => AttemptOutcome::Error,
            FailureKind::Permanent => AttemptOutcome::Permanent,
            FailureKind::Timeout => AttemptOutcome::Timeout,
            FailureKind::Panic => AttemptOutcome::Panic,
        }
    }
}

impl AttemptOutcome {
    /// True for an attempt that failed (its handler's fault, not a stall,
    /// a release or an operator's action).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Error
                | AttemptOutcome::Permanent
                | AttemptOutcome::Timeout
                | AttemptOutcome::Panic
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_what_they_write_and_keep_unknown_ones() {
        for o in AttemptOutcome::KNOWN {
            assert_eq!(&AttemptOutcome::parse(o.as_str()), o);
        }
        for k in [FailureKind::Error, FailureKind::Permanent, FailureKind::Timeout, FailureKind::Panic] {
            assert_eq!(AttemptOutcome::from(k).as_str(), k.as_str());
        }
        let newer = AttemptOutcome::parse("paused-by-policy");
        assert_eq!(newer, AttemptOutcome::Other("paused-by-policy".into()));
        assert_eq!(serde_json::to_string(&newer).unwrap(), "\"paused-by-policy\"");
        let back: AttemptOutcome = serde_json::from_str("\"stalled\"").unwrap();
        assert_eq!(back, AttemptOutcome::Stalled);
    }
}
