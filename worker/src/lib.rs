//! Run quern jobs.
//!
//! A [`Worker`] serves one queue with a fixed number of job slots. Handlers are
//! registered per job name and receive the payload deserialized into their own
//! type. The runtime:
//!
//! - asks for as many jobs as it has free slots, in one script call, pipelined
//!   with the acknowledgements of the jobs that just finished;
//! - when the queue is empty, parks: it blocks on the queue's hand-off and
//!   wake-up lists on a connection of its own (no polling). A job added to the
//!   empty queue meanwhile is leased by the add itself and arrives with the
//!   block's reply, so it reaches a handler with one script call on its way;
//!   other work (batches, retries) wakes the worker to fetch. A timer ends the
//!   block when the next delayed job falls due;
//! - renews every lease it holds in one call, every third of the lease;
//! - runs the reaper that returns expired leases of crashed workers to `waiting`
//!   (any worker may run it; it is atomic and idempotent), and with each pass
//!   lists the worker among the queue's live workers (slots, running jobs);
//! - on a rate-limited queue, takes no more than the current window allows and
//!   fetches again when it closes;
//! - turns handler errors, panics and timeouts into failed attempts; retryable
//!   ones are retried after the job's backoff, the last one and permanent ones
//!   land in the dead-letter list;
//! - lets handlers record their progress ([`JobContext::progress`]);
//! - runs workflows: durable steps ([`JobContext::step`]) whose results are
//!   stored under the attempt's lease and returned to later runs without
//!   running the step again, and durable sleeps ([`JobContext::sleep`]) that
//!   park the job in `delayed` holding no worker (see the README's
//!   "Workflows");
//! - on SIGTERM/SIGINT (or [`ShutdownHandle::shutdown`]) stops fetching, lets
//!   running jobs finish within a grace period, and hands the rest back to
//!   `waiting` without using up an attempt.
//!
//! ```no_run
//! use quern_worker::{JobContext, JobError, RedisConfig, Worker};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Welcome { to: String }
//!
//! # async fn run() -> quern_worker::Result<()> {
//! let worker = Worker::builder(&RedisConfig::from_env(), "emails")
//!     .concurrency(20)
//!     .handler("welcome", |ctx: JobContext, job: Welcome| async move {
//!         if job.to.is_empty() {
//!             return Err(JobError::permanent("no recipient"));
//!         }
//!         println!("attempt {} of job {}: mail {}", ctx.attempt(), ctx.id(), job.to);
//!         Ok(())
//!     })
//!     .build()
//!     .await?;
//! worker.run().await
//! # }
//! ```
//!
//! With the feature `otel`, each attempt runs in a `tracing` span named
//! `quern.attempt` (fields `queue`, `job.id`, `job.name`, `attempt`) whose
//! parent is the trace the job was added in (its stored W3C traceparent, see
//! the producer's feature `otel`), so with `tracing-opentelemetry` installed
//! a request's trace shows its background work. Without the feature no span
//! is made.
#![forbid(unsafe_code)]

mod attempt;
mod builder;
mod client;
mod durable;
mod fetch_loop;
mod flows;
mod handler;
mod leases;
mod maintenance;
#[cfg(feature = "otel")]
mod otel;
mod outbox;
mod settings;
mod steps;
#[cfg(feature = "stock")]
pub mod stock;
mod waker;
mod worker;

pub use builder::WorkerBuilder;
pub use flows::{Child, ChildCounts};
pub use handler::{JobContext, JobError, MAX_PROGRESS_BYTES};
pub use quern_common::process::ShutdownHandle;
pub use quern_common::{Backoff, Error, JobOptions, RedisConfig, Result};
pub use quern_common::{ChildStatus, FlowJob, FlowJobAdded, NewJob, OnChildFailure};
pub use settings::Retention;
pub use steps::{DEFAULT_MAX_STEP_BYTES, DEFAULT_MAX_STEPS, Divergence, StepRetry};
pub use worker::Worker;
