//! The error type shared by quern's crates, its classification by
//! [`ErrorKind`], and the one place where the codes returned by the Lua
//! scripts are mapped to typed outcomes.

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
    /// The sentinels of a `redis+sentinel://` URL monitor no master of that name.
    #[error("the sentinels of {url} know no master named {master:?} (check the name in the URL)")]
    UnknownSentinelMaster {
        /// The URL given, with any password masked.
        url: String,
        /// The master name asked for.
        master: String,
    },
    /// Fewer replicas than asked acknowledged a write in time (see
    /// [`crate::ReplicaAcks`]). The write was applied on the master: only its
    /// durability across a failover is in doubt.
    #[error(
        "the write was applied on the Redis master, but only {acked} of {wanted} replica(s) acknowledged it within {timeout:?}; a failover now could lose it (retrying an add with an explicit job id is safe; an add with a generated id would be added again)"
    )]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that acknowledged in time.
        acked: u32,
        /// How long the call waited for them.
        timeout: Duration,
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
    /// A job's stored result cannot be read as the type the caller asked
    /// for (see `Queue::wait_for` in quern-producer).
    #[error("the result of job {id:?} of queue {queue:?} does not fit the type asked for: {reason}")]
    ResultMismatch {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// What serde said.
        reason: String,
    },
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
    /// The job has no stored durable step of that key (`<name>#<occurrence>`).
    #[error("job {id:?} of queue {queue:?} has no stored step {step:?} (its steps: {stored})")]
    UnknownStep {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// The step asked for.
        step: String,
        /// The steps it has, comma-separated ("none" when it has none).
        stored: String,
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
    /// A local operating-system operation failed (listening for a signal,
    /// setting up a client, starting a process).
    #[error("cannot {what}: {reason}")]
    Io {
        /// What was attempted, e.g. "listen for SIGTERM".
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A task this call depends on has stopped (its Tokio runtime shut down,
    /// or it was cancelled); the call cannot complete.
    #[error("{0}")]
    Stopped(String),
}

/// What sort of failure an [`Error`] is: what a caller can do about it.
///
/// [`Error::kind`] maps every error to one kind; the CLI's exit codes and the
/// `is_*` helpers of [`Error`] follow from it. The enum is exhaustive on
/// purpose: code that maps kinds (such as the CLI's exit codes) matches every
/// kind, so a new kind cannot slip through unclassified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input must change: a name, option, payload or URL that quern
    /// refuses. Retrying the same call fails the same way.
    InvalidInput,
    /// The queue or job does not exist.
    NotFound,
    /// The job is not in a state the action applies to: not dead-lettered,
    /// not delayed, finished already, or running.
    WrongState,
    /// Someone else holds what the call needs: the job's lease was taken
    /// over, or the queue is in use.
    Conflict,
    /// Redis cannot be reached or cannot serve now: the connection failed,
    /// timed out or dropped, or the server is loading its data or failing
    /// over (`LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`:
    /// a master demoted by a failover; a cluster's `MOVED`/`ASK` the client
    /// could not follow yet), or fewer replicas than asked
    /// acknowledged a write in time. The only kind worth retrying as is.
    Unavailable,
    /// Redis refused the credentials or the command (`NOPERM`, failed `AUTH`,
    /// a command of a script that the caller's ACL rules do not allow).
    Denied,
    /// Redis refused the command for another reason (out of memory,
    /// read-only replica, a script error, ...).
    Server,
    /// Something quern did not expect: a reply it cannot read, a task that
    /// stopped, a bug.
    Internal,
    /// A local operating-system operation failed (e.g. installing a signal
    /// handler).
    Io,
}

impl Error {
    /// What sort of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. }
            | Error::InvalidQueueName { .. }
            | Error::InvalidJobName { .. }
            | Error::InvalidJobId { .. }
            | Error::InvalidOptions(_)
            | Error::PayloadTooLarge { .. }
            | Error::InvalidPayload(_)
            | Error::ResultMismatch { .. }
            | Error::UnknownSentinelMaster { .. } => ErrorKind::InvalidInput,
            Error::JobNotFound { .. } | Error::UnknownQueue(_) | Error::UnknownStep { .. } => {
                ErrorKind::NotFound
            }
            Error::JobActive { .. }
            | Error::NotDeadLettered { .. }
            | Error::NotDelayed { .. }
            | Error::Finished { .. } => ErrorKind::WrongState,
            Error::LeaseLost { .. } | Error::QueueInUse { .. } => ErrorKind::Conflict,
            Error::Connect { .. } | Error::Timeout(_) | Error::NotReplicated { .. } => ErrorKind::Unavailable,
            Error::Redis(e) => redis_kind(e),
            // A record in Redis that is not what quern writes: not the caller's input.
            Error::Protocol(_) | Error::Stopped(_) | Error::UnreadableJob { .. } => ErrorKind::Internal,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// True when trying the same call again later may succeed: Redis could
    /// not be reached or could not serve yet ([`ErrorKind::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// True when Redis could not be reached or could not serve, including too
    /// few replica acknowledgements ([`ErrorKind::Unavailable`]; today the
    /// same as [`Error::is_retryable`]).
    pub fn is_connection_error(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// True for input the caller must change (names, options, payload, URL):
    /// [`ErrorKind::InvalidInput`].
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }
}

/// The kind of an error from the Redis client:
/// - no connection, a timeout, a dropped connection, and the server replies
///   that say "not now" (`LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
///   and `READONLY`: a failover demoted the server, and a connection through
///   Sentinel finds the new master; a cluster's `MOVED`/`ASK` the client
///   could not follow yet, and no connection to the slot's node):
///   [`ErrorKind::Unavailable`];
/// - failed authentication, `NOPERM`, and a command of a script that the
///   caller's ACL rules refuse: [`ErrorKind::Denied`];
/// - an invalid client configuration (from the URL): [`ErrorKind::InvalidInput`];
/// - a reply the client cannot parse or convert, or a client-side failure:
///   [`ErrorKind::Internal`];
/// - every other error reply of the server (`ERR`, `OOM`, `READONLY`,
///   `NOSCRIPT`, script errors, ...): [`ErrorKind::Server`].
///
/// (A `READONLY` from a URL that names a replica for good repeats on every
/// retry: the error says so.)
fn redis_kind(e: &redis::RedisError) -> ErrorKind {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    // A command a script runs is checked against the caller's ACL rules too;
    // Redis refuses it with a plain error, not `NOPERM`.
    if e.detail().is_some_and(|d| d.contains("can't run this command or subcommand")) {
        return ErrorKind::Denied;
    }
    match e.kind() {
        // `MOVED`/`ASK` that reach the caller: the cluster client could not
        // follow them yet (the new owner not reachable, the slot map still
        // changing during a failover or a resharding); later it can.
        K::Server(
            S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly | S::Moved | S::Ask,
        )
        | K::ClusterConnectionNotFound => ErrorKind::Unavailable,
        K::AuthenticationFailed | K::Server(S::NoPerm) => ErrorKind::Denied,
        K::InvalidClientConfig => ErrorKind::InvalidInput,
        K::Parse | K::UnexpectedReturnType | K::Client => ErrorKind::Internal,
        K::Server(_) | K::Extension => ErrorKind::Server,
        // Sentinel look-ups are turned into quern's own errors; kinds added
        // by later versions.
        _ => ErrorKind::Internal,
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

    fn every_variant() -> Vec<(Error, ErrorKind)> {
        let (queue, id) = (|| "q".to_owned(), || "1".to_owned());
        let s = || "x".to_owned();
        vec![
            (Error::Connect { url: s(), reason: s() }, ErrorKind::Unavailable),
            (Error::InvalidUrl { url: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::Redis(io_error(std::io::ErrorKind::ConnectionRefused)), ErrorKind::Unavailable),
            (Error::Timeout(Duration::from_secs(1)), ErrorKind::Unavailable),
            (Error::InvalidQueueName { name: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::InvalidJobName { name: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::InvalidJobId { id: s(), reason: s() }, ErrorKind::InvalidInput),
            (Error::InvalidOptions(s()), ErrorKind::InvalidInput),
            (Error::PayloadTooLarge { size: 2, limit: 1 }, ErrorKind::InvalidInput),
            (Error::InvalidPayload(s()), ErrorKind::InvalidInput),
            (Error::ResultMismatch { queue: queue(), id: id(), reason: s() }, ErrorKind::InvalidInput),
            (Error::JobNotFound { queue: queue(), id: id() }, ErrorKind::NotFound),
            (Error::JobActive { queue: queue(), id: id() }, ErrorKind::WrongState),
            (Error::LeaseLost { queue: queue(), id: id() }, ErrorKind::Conflict),
            (Error::NotDeadLettered { queue: queue(), id: id() }, ErrorKind::WrongState),
            (
                Error::NotDelayed { queue: queue(), id: id(), state: crate::JobState::Waiting },
                ErrorKind::WrongState,
            ),
            (
                Error::Finished { queue: queue(), id: id(), state: crate::JobState::Completed },
                ErrorKind::WrongState,
            ),
            (Error::QueueInUse { queue: queue(), running: 1, workers: 0 }, ErrorKind::Conflict),
            (Error::UnknownQueue(queue()), ErrorKind::NotFound),
            (Error::Protocol(s()), ErrorKind::Internal),
            (Error::UnreadableJob { queue: s(), id: s(), problem: s() }, ErrorKind::Internal),
            (Error::Io { what: s(), reason: s() }, ErrorKind::Io),
            (Error::Stopped(s()), ErrorKind::Internal),
            (Error::UnknownSentinelMaster { url: s(), master: s() }, ErrorKind::InvalidInput),
            (
                Error::NotReplicated { wanted: 1, acked: 0, timeout: Duration::from_millis(1) },
                ErrorKind::Unavailable,
            ),
        ]
    }

    #[test]
    fn a_command_of_a_script_refused_by_the_acl_is_denied() {
        let refused = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "The user executing the script can't run this command or subcommand script: f, on @user_function:1"
                .to_owned(),
        ));
        assert_eq!(Error::Redis(refused).kind(), ErrorKind::Denied);
    }

    fn io_error(kind: std::io::ErrorKind) -> redis::RedisError {
        std::io::Error::new(kind, "test").into()
    }

    fn server_error(kind: redis::ErrorKind, text: &'static str) -> redis::RedisError {
        (kind, text).into()
    }

    #[test]
    fn every_variant_has_its_kind() {
        for (error, kind) in every_variant() {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
    }

    #[test]
    fn the_helpers_follow_the_kind() {
        for (error, kind) in every_variant() {
            assert_eq!(error.is_retryable(), kind == ErrorKind::Unavailable, "{error:?}");
            assert_eq!(error.is_connection_error(), kind == ErrorKind::Unavailable, "{error:?}");
            assert_eq!(error.is_invalid_input(), kind == ErrorKind::InvalidInput, "{error:?}");
        }
    }

    #[test]
    fn redis_errors_by_kind() {
        use redis::{ErrorKind as K, ServerErrorKind as S};
        let cases = [
            (io_error(std::io::ErrorKind::ConnectionReset), ErrorKind::Unavailable),
            (io_error(std::io::ErrorKind::TimedOut), ErrorKind::Unavailable),
            (io_error(std::io::ErrorKind::UnexpectedEof), ErrorKind::Unavailable),
            (server_error(K::Server(S::BusyLoading), "loading"), ErrorKind::Unavailable),
            (server_error(K::Server(S::TryAgain), "try again"), ErrorKind::Unavailable),
            (server_error(K::Server(S::ClusterDown), "down"), ErrorKind::Unavailable),
            (server_error(K::Server(S::MasterDown), "down"), ErrorKind::Unavailable),
            (server_error(K::Server(S::Moved), "14700 127.0.0.1:7000"), ErrorKind::Unavailable),
            (server_error(K::Server(S::Ask), "14700 127.0.0.1:7000"), ErrorKind::Unavailable),
            (server_error(K::ClusterConnectionNotFound, "no node"), ErrorKind::Unavailable),
            (server_error(K::AuthenticationFailed, "auth"), ErrorKind::Denied),
            (server_error(K::Server(S::NoPerm), "noperm"), ErrorKind::Denied),
            (server_error(K::InvalidClientConfig, "config"), ErrorKind::InvalidInput),
            (server_error(K::UnexpectedReturnType, "type"), ErrorKind::Internal),
            (server_error(K::Server(S::ResponseError), "ERR"), ErrorKind::Server),
            (server_error(K::Server(S::ReadOnly), "readonly"), ErrorKind::Unavailable),
            (server_error(K::Server(S::NoScript), "noscript"), ErrorKind::Server),
        ];
        for (e, kind) in cases {
            let error = Error::Redis(e);
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_retryable(), kind == ErrorKind::Unavailable, "{error:?}");
        }
    }
}
