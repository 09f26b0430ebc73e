//! The scheduler's error type, classified with quern's [`ErrorKind`].

pub use quern_common::ErrorKind;

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
    /// What sort of failure this is: a bad definition or schedules file is
    /// [`ErrorKind::InvalidInput`], an unknown schedule [`ErrorKind::NotFound`],
    /// an unreadable stored schedule [`ErrorKind::Internal`]; errors from
    /// Redis or a queue keep their own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSchedule { .. }
            | Error::InvalidCron { .. }
            | Error::UnknownTimeZone { .. }
            | Error::ScheduleFile { .. } => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Corrupt { .. } => ErrorKind::Internal,
            Error::Queue(e) => e.kind(),
        }
    }

    /// True when the same call may succeed later (Redis unreachable, timeout):
    /// [`ErrorKind::Unavailable`].
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// True when the error is about the input (a bad definition or file):
    /// [`ErrorKind::InvalidInput`].
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }
}

impl quern_common::process::RetryableError for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Queue(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        let s = || "x".to_owned();
        let cases = [
            (Error::InvalidSchedule { name: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::InvalidCron { name: s(), expression: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::UnknownTimeZone { name: s(), zone: s() }, ErrorKind::InvalidInput),
            (Error::ScheduleFile { path: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::NotFound(s()), ErrorKind::NotFound),
            (Error::Corrupt { name: s(), reason: s() }, ErrorKind::Internal),
            (
                Error::Queue(quern_common::Error::Timeout(std::time::Duration::from_secs(1))),
                ErrorKind::Unavailable,
            ),
            (Error::Queue(quern_common::Error::UnknownQueue(s())), ErrorKind::NotFound),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_retryable(), kind == ErrorKind::Unavailable, "{error:?}");
            assert_eq!(error.is_invalid_input(), kind == ErrorKind::InvalidInput, "{error:?}");
        }
    }
}
