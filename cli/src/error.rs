//! The CLI's failures and the exit code each one maps to.
//!
//! Exit codes (documented in `quern --help` and the README):
//! - `0`: success;
//! - `1`: operational failure (Redis unreachable, a command failed, a job
//!   record that cannot be read);
//! - `2`: usage or bad input (unknown flag, malformed duration, invalid JSON,
//!   a name or option out of range);
//! - `3`: not found (unknown queue, no such job, or a job not in a state the
//!   command applies to: not dead-lettered, not delayed, finished already,
//!   running);
//! - `4` to `7`: `quern enqueue --wait` only, how the job ended when it did
//!   not complete: dead-lettered (4), cancelled (5), removed (6), still not
//!   ended when the wait was over (7).
//!
//! An error from the quern libraries gets its code from its
//! [`ErrorKind`] (see [`exit_code_of`]).

use std::fmt;

use quern_common::ErrorKind;

/// Exit code: operational failure.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: usage or bad input.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the queue or job does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 3;

/// Exit code of `enqueue --wait`: the job was dead-lettered.
pub(crate) const EXIT_DEAD_LETTERED: u8 = 4;
/// Exit code of `enqueue --wait`: the job was cancelled.
pub(crate) const EXIT_CANCELLED: u8 = 5;
/// Exit code of `enqueue --wait`: the job is gone (removed, or trimmed).
pub(crate) const EXIT_REMOVED: u8 = 6;
/// Exit code of `enqueue --wait`: the job had not ended in time.
pub(crate) const EXIT_TIMED_OUT: u8 = 7;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The input must change (exit 2).
    Usage(String),
    /// Something operational went wrong (exit 1).
    Failed(String),
    /// The thing asked for does not exist (exit 3).
    NotFound(String),
    /// An error from the quern libraries; its kind picks the exit code.
    Quern(quern_common::Error),
    /// The failures were printed as they happened (a command over many
    /// ids); exit with this code, printing nothing more.
    Reported(u8),
}

impl CliError {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILURE,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Quern(e) => exit_code_of(e.kind()),
            CliError::Reported(code) => *code,
        }
    }

    /// A failure described by `message`, with the exit code of `kind`.
    pub(crate) fn of_kind(kind: ErrorKind, message: String) -> Self {
        match exit_code_of(kind) {
            EXIT_USAGE => CliError::Usage(message),
            EXIT_NOT_FOUND => CliError::NotFound(message),
            _ => CliError::Failed(message),
        }
    }
}

/// The exit code of an error of `kind`: bad input 2, not found or in the
/// wrong state 3, everything else 1.
pub(crate) fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => EXIT_USAGE,
        ErrorKind::NotFound | ErrorKind::WrongState => EXIT_NOT_FOUND,
        ErrorKind::Conflict
        | ErrorKind::Unavailable
        | ErrorKind::Denied
        | ErrorKind::Server
        | ErrorKind::Internal
        | ErrorKind::Io => EXIT_FAILURE,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) | CliError::NotFound(m) => f.write_str(m),
            CliError::Quern(e) if e.is_connection_error() => write!(
                f,
                "{e}\nhint: is Redis running there? Point quern at it with --redis-url or REDIS_URL"
            ),
            CliError::Quern(e) => write!(f, "{e}"),
            CliError::Reported(code) => write!(f, "failed (exit code {code}); see above"),
        }
    }
}

impl From<quern_common::Error> for CliError {
    fn from(e: quern_common::Error) -> Self {
        CliError::Quern(e)
    }
}

impl From<redis::RedisError> for CliError {
    fn from(e: redis::RedisError) -> Self {
        CliError::Quern(e.into())
    }
}

/// Result of a CLI command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_kind() {
        let s = || "x".to_owned();
        let cases = [
            (quern_common::Error::InvalidOptions(s()), EXIT_USAGE),
            (quern_common::Error::UnknownQueue(s()), EXIT_NOT_FOUND),
            (quern_common::Error::JobNotFound { queue: s(), id: s() }, EXIT_NOT_FOUND),
            (quern_common::Error::NotDeadLettered { queue: s(), id: s() }, EXIT_NOT_FOUND),
            (quern_common::Error::JobActive { queue: s(), id: s() }, EXIT_NOT_FOUND),
            (
                quern_common::Error::UnknownStep { queue: s(), id: s(), step: s(), stored: s() },
                EXIT_NOT_FOUND,
            ),
            (quern_common::Error::QueueInUse { queue: s(), running: 1, workers: 1 }, EXIT_FAILURE),
            (quern_common::Error::Timeout(std::time::Duration::from_secs(1)), EXIT_FAILURE),
            (quern_common::Error::Protocol(s()), EXIT_FAILURE),
            (quern_common::Error::Io { what: s(), reason: s() }, EXIT_FAILURE),
        ];
        for (e, code) in cases {
            assert_eq!(CliError::Quern(e.clone()).exit_code(), code, "{e:?}");
            assert_eq!(CliError::of_kind(e.kind(), e.to_string()).exit_code(), code, "{e:?}");
        }
    }
}
