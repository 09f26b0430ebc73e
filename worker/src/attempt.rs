//! One attempt of a job: run its handler with the job's timeout, catching
//! panics, and turn how it ended into what the queue is told.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use quern_common::FailureKind;
use quern_common::moves::Ack;
use quern_common::options::RunOptions;
use tracing::{debug, warn};

use crate::handler::HandlerFuture;
use crate::outbox::{Failure, Outbox};

/// How an attempt ended.
pub(crate) enum Outcome {
    /// The handler's result, as JSON (`None`: nothing to store).
    Completed(Option<String>),
    /// It failed; `kind` says how.
    Failed { kind: FailureKind, message: String },
    /// It went to sleep (`JobContext::sleep`): the sleep script moved the
    /// job to delayed and took back the lease, so there is nothing to tell.
    Slept,
}

/// An attempt that ended, on its way to the outbox.
pub(crate) struct Finished {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) attempt: u32,
    pub(crate) run: RunOptions,
    pub(crate) outcome: Outcome,
    /// How long it ran, ms (from the lease to the handler's end).
    pub(crate) run_ms: u64,
    /// How long the job waited before this attempt, ms (see `LeasedJob`).
    pub(crate) wait_ms: u64,
}

impl Finished {
    /// Put the acknowledgement or the failure record in `outbox`: a failure
    /// is retried after the job's backoff while attempts remain, unless
    /// permanent.
    pub(crate) fn settle(self, outbox: &mut Outbox) {
        match self.outcome {
            Outcome::Completed(result) => {
                outbox.completed.push(Ack {
                    id: self.id,
                    token: self.token,
                    result: result.unwrap_or_default(),
                    run_ms: self.run_ms,
                    wait_ms: self.wait_ms,
                });
            }
            Outcome::Failed { kind, message } => {
                let last = self.attempt >= self.run.attempts;
                let retry_in = (kind != FailureKind::Permanent && !last)
                    .then(|| self.run.backoff.delay_for(self.attempt));
                match retry_in {
                    None => {
                        warn!(job = %self.id, attempt = self.attempt, error = %message, "job failed for good: dead-lettered")
                    }
                    Some(delay) => {
                        debug!(job = %self.id, attempt = self.attempt, error = %message, retry_in = ?delay, "attempt failed")
                    }
                }
                outbox.failed.push(Failure { id: self.id, token: self.token, kind, message, retry_in });
            }
            Outcome::Slept => debug!(job = %self.id, attempt = self.attempt, "job asleep"),
        }
    }
}

/// Run one attempt with the job's timeout, catching panics.
pub(crate) async fn run_attempt(fut: HandlerFuture, timeout: Option<Duration>) -> Outcome {
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return Outcome::Failed {
                    kind: FailureKind::Timeout,
                    message: format!("timed out after {limit:?}"),
                };
            }
        },
        None => guarded.await,
    };
    match result {
        Ok(Ok(value)) => Outcome::Completed(value),
        Ok(Err(e)) if e.is_sleeping() => Outcome::Slept,
        Ok(Err(e)) => Outcome::Failed {
            kind: if e.is_permanent() { FailureKind::Permanent } else { FailureKind::Error },
            message: e.message().to_owned(),
        },
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_owned());
            Outcome::Failed { kind: FailureKind::Panic, message: format!("handler panicked: {text}") }
        }
    }
}
