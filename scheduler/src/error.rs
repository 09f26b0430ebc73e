//! The scheduler's error type.

/// Result with the scheduler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong defining or running schedules.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schedule definition is invalid; `reason` names the field and the problem.
    #[error("invalid schedule {name:?}: {reason}")]
    InvalidSchedule {
        /// The schedule's name (may be empty: that is one of the errors).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?} in schedule {name:?}: {reason}")]
    InvalidCron {
        /// The schedule's name.
        name: String,
        /// The expression given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not an IANA time zone name.
    #[error(
        "unknown time zone {zone:?} in schedule {name:?}: use an IANA name such as \"UTC\" or \"Europe/Berlin\""
    )]
    UnknownTimeZone {
        /// The schedule's name.
        name: String,
        /// The zone given.
        zone: String,
    },
    /// The schedules file cannot be read or parsed.
    #[error("schedules file {path}: {reason}")]
    ScheduleFile {
        /// The file.
        path: String,
        /// What went wrong (with line and column for syntax errors).
        reason: String,
    },
    /// No schedule of that name is stored.
    #[error("no schedule named {0:?}")]
    NotFound(String),
    /// A stored schedule could not be decoded (written by another version?).
    #[error("stored schedule {name:?} cannot be read: {reason}")]
    Corrupt {
        /// The schedule's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Talking to Redis or to a queue failed.
    #[error(transparent)]
    Queue(#[from] quern_common::Error),
}

impl Error {
    /// True when the same call may succeed later (Redis unreachable, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Queue(e) if e.is_retryable())
    }

    /// True when the error is about the input (a bad definition or file).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidSchedule { .. }
                | Error::InvalidCron { .. }
                | Error::UnknownTimeZone { .. }
                | Error::ScheduleFile { .. }
        )
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Queue(e.into())
    }
}
