//! Enqueue and inspect quern jobs.
//!
//! A [`Queue`] is a cheap, cloneable handle (an `Arc` around one multiplexed,
//! self-healing Redis connection) meant to live in a web framework's shared
//! state. `add` is one round trip running one Lua script; it never waits for
//! a worker, and it fails within the configured response timeout when Redis
//! is down instead of hanging the request. Adds made concurrently on one
//! handle (and its clones) share script calls: while one call is in flight,
//! the adds that arrive meanwhile leave together as one bulk call, which more
//! than halves Redis CPU per job under load and never delays a lone add.
//!
//! ```no_run
//! use std::time::Duration;
//! use quern_producer::{JobOptions, Queue, RedisConfig};
//!
//! # async fn run() -> quern_producer::Result<()> {
//! let queue = Queue::connect(&RedisConfig::from_env(), "emails").await?;
//! let job = queue
//!     .add_with(
//!         "welcome",
//!         &serde_json::json!({ "to": "ada@example.com" }),
//!         JobOptions::new().job_id("welcome-ada").delay(Duration::from_secs(60)),
//!     )
//!     .await?;
//! println!("enqueued {} (new: {})", job.id, job.created);
//! # Ok(()) }
//! ```
//!
//! The same handle operates the queue: rate limits, promoting and cancelling
//! jobs, its live workers, and its events as they happen.
//!
//! It inspects jobs too: [`Queue::job`], and the listings [`Queue::jobs`] (by
//! state) and [`Queue::dead_letters`]. A corrupt record never hides the
//! others: a listing gives a [`JobEntry`] per id, either the job (with
//! [`JobInfo::problems`] naming fields that could not be read) or an
//! [`UnreadableJob`] saying what is wrong, including an id whose job hash is
//! missing.
//!
//! ```no_run
//! use std::time::Duration;
//! use quern_producer::{EventFollower, EventKind, Queue, RateLimit, RedisConfig};
//!
//! # async fn run(queue: Queue, id: &str) -> quern_producer::Result<()> {
//! queue.set_rate_limit(Some(RateLimit::new(100, Duration::from_secs(60))?)).await?;
//! queue.promote(id).await?;
//! queue.cancel(id, "customer deleted").await?;
//! println!("{} live workers", queue.workers().await?.len());
//! let mut events = EventFollower::connect(&RedisConfig::from_env(), &queue, None).await?;
//! for e in events.next().await? {
//!     if e.kind == EventKind::Failed {
//!         eprintln!("dead-lettered: {:?} ({:?})", e.job_ids(), e.field("error"));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! With the feature `otel`, `add`, `add_with` and `add_json` store the
//! current span's OpenTelemetry trace context (a W3C traceparent, in
//! [`JobOptions::trace_parent`]) with the job, unless the options name one;
//! a worker built with its feature `otel` continues that trace. `add_bulk`
//! stores what each job's options say.
#![forbid(unsafe_code)]

mod batcher;
mod events;
mod flow;
mod keys;
#[cfg(feature = "otel")]
mod otel;
mod queue;
mod wait;

pub use events::EventFollower;
pub use keys::{ConcurrencyKeys, KEY_SCAN_PAGE, KeyJobsPage, KeyOverride, KeyUse, MAX_KEY_LIMIT};
pub use quern_common::flow::{FlowJob, FlowJobAdded};
pub use quern_common::stats::{Histogram, QueueStats, Resolution, StatsPoint};
pub use quern_common::{
    Added, Attempt, AttemptOutcome, Backoff, ChildInfo, ChildStatus, Error, Event, EventKind, JobEntry,
    JobInfo, JobOptions, JobState, NewJob, OnChildFailure, ParentInfo, QueueCounts, RateLimit, RedisConfig,
    Result, SelfHealingConnection, UnreadableJob, WorkerInfo,
};
pub use queue::{Queue, QueueBuilder, known_queues};
pub use wait::JobOutcome;

/// Largest serialized payload accepted unless configured otherwise: 512 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 512 * 1024;
