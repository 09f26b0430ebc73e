//! The CLI's failures and the exit code each one maps to.
//!
//! Exit codes (documented in `quern --help` and the README):
//! - `0`: success;
//! - `1`: operational failure (Redis unreachable, a command failed, a job
//!   record that cannot be read);
//! - `2`: usage or bad input (unknown flag, malformed duration, invalid JSON,
//!   a name or option out of range);
//! - `3`: not found (unknown queue, no such job, or a job not in a state the
//!   command applies to: not dead-lettered, not delayed, finished already).

use std::fmt;

/// Exit code: operational failure.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: usage or bad input.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the queue or job does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 3;

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
        use quern_common::Error as E;
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILURE,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Quern(e) if e.is_invalid_input() => EXIT_USAGE,
            CliError::Quern(
                E::JobNotFound { .. }
                | E::UnknownQueue(_)
                | E::NotDeadLettered { .. }
                | E::NotDelayed { .. }
                | E::Finished { .. },
            ) => EXIT_NOT_FOUND,
            CliError::Quern(_) => EXIT_FAILURE,
            CliError::Reported(code) => *code,
        }
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

/// Result of a CLI command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;
