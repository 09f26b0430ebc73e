//! Shared pieces of quern used by the producer, the worker, the scheduler and
//! the CLI: the Redis key layout, the job model and its options, the backoff
//! schedule, the error type and its kinds, the connection settings, the Lua
//! scripts that perform every state move atomically ([`scripts`]), the typed
//! request and reply of each move ([`moves`]), and the process plumbing
//! (signals, shutdown handle, instance ids, waiting for Redis) that the
//! worker, the scheduler and the CLI share.
//!
//! Most users never depend on this crate directly: `quern-producer` and
//! `quern-worker` re-export what their APIs expose.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod connection;
pub mod duration;
pub mod error;
pub mod events;
pub mod fields;
pub mod flow;
pub mod job;
pub mod keys;
pub mod moves;
pub mod names;
mod new_job;
mod open_enum;
pub mod options;
pub mod outcome;
pub mod process;
pub mod rate_limit;
mod replica_acks;
pub mod scripts;
pub mod stats;
pub mod steps;
#[cfg(feature = "throwaway-redis")]
pub mod throwaway_redis;

pub use backoff::Backoff;
pub use connection::{RedisConfig, SelfHealingConnection, TlsFiles};
pub use error::{Error, ErrorKind, Result, ScriptCode};
pub use events::{Event, EventKind};
pub use flow::{ChildInfo, ChildStatus, FlowJob, FlowJobAdded, OnChildFailure, ParentInfo};
pub use job::{Attempt, JobEntry, JobInfo, JobState, QueueCounts, UnreadableJob, WorkerInfo};
pub use keys::QueueKeys;
pub use moves::QueueScripts;
pub use new_job::{Added, NewJob};
pub use options::{Idempotency, JobOptions};
pub use outcome::{AttemptOutcome, FailureKind};
pub use process::ShutdownHandle;
pub use rate_limit::RateLimit;
pub use replica_acks::ReplicaAcks;
pub use stats::{Histogram, QueueStats};
