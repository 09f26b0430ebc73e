//! The error type shared by quern's crates, and the one place where the codes
//! returned by the Lua scripts are mapped to typed outcomes.

use std::time::Duration;

/// Result with quern's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a queue.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first connection to Redis could not be made.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL tried, with any password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The Redis URL itself is malformed.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given, with any password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Redis command failed (connection lost, server error, ...).
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A queue name that quern does not accept.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A job name that quern does not accept.
    #[error("invalid job name {name:?}: {reason}")]
    InvalidJobName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// An explicit job id that quern does not accept.
    #[error("invalid job id {id:?}: {reason}")]
    InvalidJobId {
        /// The id given.
        id: String,
        /// Why it is refused.
        reason: String,
    },
    /// Job options or settings out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The serialized payload is over the configured limit.
    #[error("payload is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the serialized payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The payload could not be serialized to JSON, or is not valid JSON.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// No such job in the queue.
    #[error("job {id:?} not found in queue {queue:?}")]
    JobNotFound {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// The job is active, so it cannot be removed now.
    #[error("job {id:?} in queue {queue:?} is active; remove it once it has finished")]
    JobActive {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// The worker's lease on the job was taken over; its write was discarded.
    #[error(
        "lease lost on job {id:?} in queue {queue:?}: the job was recovered or taken over, this write was discarded"
    )]
    LeaseLost {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// The job is not in the dead-letter list.
    #[error("job {id:?} is not in the dead-letter list of queue {queue:?}")]
    NotDeadLettered {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// The job is not delayed (it is waiting, running or finished).
    #[error("job {id:?} of queue {queue:?} is not delayed (it is {state})")]
    NotDelayed {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// The state it is in.
        state: crate::JobState,
    },
    /// The job has finished already (completed, or in the dead-letter list).
    #[error("job {id:?} of queue {queue:?} has finished already (it is {state})")]
    Finished {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// The state it is in.
        state: crate::JobState,
    },
    /// The queue has running jobs or live workers, and deleting it was not forced.
    #[error(
        "queue {queue:?} is in use: {running} running job(s), {workers} live worker(s); stop them first, or force it"
    )]
    QueueInUse {
        /// The queue.
        queue: String,
        /// Jobs running.
        running: u64,
        /// Workers listed as live.
        workers: u64,
    },
    /// The job's stored record cannot be read as a job (no state, an unknown
    /// state, no name, or not a hash); see [`crate::job::UnreadableJob`].
    #[error("job {id:?} of queue {queue:?} is unreadable: {problem}")]
    UnreadableJob {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// What is wrong with the record.
        problem: String,
    },
    /// No producer or worker ever used this queue.
    #[error("unknown queue {0:?}: no producer or worker has used it under this prefix")]
    UnknownQueue(String),
    /// Redis answered something quern did not expect (a bug, or a foreign key).
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

impl Error {
    /// True when trying the same call again later may succeed: connection
    /// problems, timeouts, a server still loading its data.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout(_) => true,
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::MasterDown
                        )
                    )
            }
            _ => false,
        }
    }

    /// True when the error says Redis could not be reached at all.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout(_) => true,
            Error::Redis(e) => {
                e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
            }
            _ => false,
        }
    }

    /// True for input the caller must change (names, options, payload).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidQueueName { .. }
                | Error::InvalidJobName { .. }
                | Error::InvalidJobId { .. }
                | Error::InvalidOptions(_)
                | Error::PayloadTooLarge { .. }
                | Error::InvalidPayload(_)
                | Error::InvalidUrl { .. }
        )
    }
}

/// Result codes the Lua scripts return (see `scripts/prelude.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptCode {
    /// The move happened.
    Ok,
    /// Already done with this same token (a repeated acknowledgement).
    Duplicate,
    /// The job was moved to the dead-letter list.
    Dead,
    /// The token does not match: the lease was lost.
    LeaseLost,
    /// No such job.
    NotFound,
    /// The job is active.
    JobActive,
    /// The job is not in the state the call needs.
    WrongState,
}

impl ScriptCode {
    /// Map a script's integer reply.
    pub fn from_code(code: i64) -> Result<Self> {
        Ok(match code {
            1 => ScriptCode::Ok,
            2 => ScriptCode::Duplicate,
            3 => ScriptCode::Dead,
            -1 => ScriptCode::LeaseLost,
            -2 => ScriptCode::NotFound,
            -3 => ScriptCode::JobActive,
            -4 => ScriptCode::WrongState,
            other => {
                return Err(Error::Protocol(format!("unknown script result code {other}")));
            }
        })
    }

    /// The integer the scripts use for this code.
    pub fn code(self) -> i64 {
        match self {
            ScriptCode::Ok => 1,
            ScriptCode::Duplicate => 2,
            ScriptCode::Dead => 3,
            ScriptCode::LeaseLost => -1,
            ScriptCode::NotFound => -2,
            ScriptCode::JobActive => -3,
            ScriptCode::WrongState => -4,
        }
    }

    /// The error this code stands for, about job `id` of `queue`; `None` for
    /// the successful codes.
    pub fn to_error(self, queue: &str, id: &str) -> Option<Error> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        match self {
            ScriptCode::Ok | ScriptCode::Duplicate | ScriptCode::Dead => None,
            ScriptCode::LeaseLost => Some(Error::LeaseLost { queue, id }),
            ScriptCode::NotFound => Some(Error::JobNotFound { queue, id }),
            ScriptCode::JobActive => Some(Error::JobActive { queue, id }),
            ScriptCode::WrongState => Some(Error::NotDeadLettered { queue, id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [1, 2, 3, -1, -2, -3, -4] {
            assert_eq!(ScriptCode::from_code(code).unwrap().code(), code);
        }
        assert!(matches!(ScriptCode::from_code(7), Err(Error::Protocol(_))));
    }

    #[test]
    fn error_codes_map_to_typed_errors() {
        assert!(matches!(ScriptCode::LeaseLost.to_error("q", "1"), Some(Error::LeaseLost { .. })));
        assert!(matches!(ScriptCode::NotFound.to_error("q", "1"), Some(Error::JobNotFound { .. })));
        assert!(matches!(ScriptCode::JobActive.to_error("q", "1"), Some(Error::JobActive { .. })));
        assert!(matches!(ScriptCode::WrongState.to_error("q", "1"), Some(Error::NotDeadLettered { .. })));
        assert!(ScriptCode::Ok.to_error("q", "1").is_none());
    }

    #[test]
    fn classification() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!Error::InvalidOptions("x".into()).is_retryable());
        assert!(Error::PayloadTooLarge { size: 2, limit: 1 }.is_invalid_input());
    }
}
