//! Handlers: typed functions per job name, and the context and error they use.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use quern_common::moves::{LeasedJob, Progress};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::QueueClient;
use crate::steps::{StepBook, StepRules};

/// What a handler knows about the job it runs.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    /// To record progress as the lease holder.
    client: QueueClient,
    id: String,
    name: String,
    token: String,
    attempt: u32,
    max_attempts: u32,
    lease_lost: Arc<AtomicBool>,
    /// This attempt's durable steps (see `steps.rs`).
    steps: Mutex<StepBook>,
    rules: StepRules,
    /// Up once a sleep moved the job to delayed: the attempt is over.
    slept: Arc<AtomicBool>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("queue", &self.queue())
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("attempt", &self.inner.attempt)
            .finish()
    }
}

/// The longest progress value a handler may record (as JSON text).
pub const MAX_PROGRESS_BYTES: usize = 4096;

impl JobContext {
    pub(crate) fn new(
        client: QueueClient,
        job: &LeasedJob,
        max_attempts: u32,
        lease_lost: Arc<AtomicBool>,
        rules: StepRules,
        slept: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                client,
                id: job.id.clone(),
                name: job.name.clone(),
                token: job.token.clone(),
                attempt: job.attempt,
                max_attempts,
                lease_lost,
                steps: Mutex::new(StepBook::default()),
                rules,
                slept,
            }),
        }
    }

    /// Record how far this attempt has come: any JSON value (a percentage,
    /// `{"done": 120, "of": 400}`, a stage name), up to 4 KiB. It shows in
    /// `quern job`, in [`quern_common::JobInfo::progress`] and as a `progress`
    /// event. Only the lease holder records: once the lease is lost this
    /// fails with [`quern_common::Error::LeaseLost`] and records nothing.
    pub async fn progress<T: Serialize + ?Sized>(&self, value: &T) -> quern_common::Result<()> {
        let json = serde_json::to_string(value)
            .map_err(|e| quern_common::Error::InvalidPayload(format!("progress is not JSON: {e}")))?;
        if json.len() > MAX_PROGRESS_BYTES {
            return Err(quern_common::Error::InvalidPayload(format!(
                "progress of {} bytes; at most {MAX_PROGRESS_BYTES}",
                json.len()
            )));
        }
        let inner = &self.inner;
        let code = inner.client.run(&Progress { id: &inner.id, token: &inner.token, json: &json }).await?;
        match code.to_error(inner.client.queue(), &inner.id) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        self.inner.client.queue()
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This attempt's lease token (fencing token). Pass it to downstream
    /// systems that can reject writes carrying an older token.
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Attempts the job is allowed.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// True once the worker learned that its lease on this job was taken over
    /// (it was too slow to renew it). The job may be running elsewhere now;
    /// long handlers should check this and stop early. The result of this
    /// attempt will be discarded.
    pub fn is_lease_lost(&self) -> bool {
        self.inner.lease_lost.load(Ordering::Relaxed)
    }

    pub(crate) fn client(&self) -> &QueueClient {
        &self.inner.client
    }

    /// This attempt's durable steps (held briefly, never across an await).
    pub(crate) fn step_book(&self) -> std::sync::MutexGuard<'_, StepBook> {
        self.inner.steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn step_rules(&self) -> &StepRules {
        &self.inner.rules
    }

    /// The job went to sleep: this attempt is over, whatever the handler
    /// returns, and its lease was given up (so a renewal that finds it gone
    /// before the attempt is settled does not warn that it was lost).
    pub(crate) fn mark_slept(&self) {
        self.inner.slept.store(true, Ordering::Relaxed);
        self.inner.lease_lost.store(true, Ordering::Relaxed);
    }
}

/// A failed attempt, as a handler reports it.
///
/// Any `std::error::Error` converts into a retryable `JobError`, so `?` works
/// in handlers; use [`JobError::permanent`] for failures that retrying cannot
/// fix (bad input, a 4xx from an API).
///
/// [`JobContext::sleep`] also ends an attempt through a `JobError`: one that
/// says the job is asleep ([`JobError::is_sleeping`]). Pass it on with `?`.
pub struct JobError {
    message: String,
    kind: ErrorKindOfJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKindOfJob {
    Retryable,
    Permanent,
    Sleeping,
}

impl JobError {
    /// A failure worth retrying (after the job's backoff, while attempts remain).
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self { message: message.to_string(), kind: ErrorKindOfJob::Retryable }
    }

    /// A failure that retrying cannot fix: the job goes to the dead-letter list now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self { message: message.to_string(), kind: ErrorKindOfJob::Permanent }
    }

    /// The job went to sleep: the attempt ends here, and the job runs again
    /// at its wake time.
    pub(crate) fn sleeping(wake_at_ms: u64) -> Self {
        Self { message: format!("asleep until {wake_at_ms} (Unix ms)"), kind: ErrorKindOfJob::Sleeping }
    }

    /// The message stored with the attempt.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the job should skip its remaining attempts.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKindOfJob::Permanent
    }

    /// Whether this is not a failure but [`JobContext::sleep`] ending the
    /// attempt: the job sleeps, holding no worker, and runs again (without
    /// spending an attempt) at its wake time. A handler must return it (`?`)
    /// rather than carry on.
    pub fn is_sleeping(&self) -> bool {
        self.kind == ErrorKindOfJob::Sleeping
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::retryable(message)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKindOfJob::Retryable => "retryable",
            ErrorKindOfJob::Permanent => "permanent",
            ErrorKindOfJob::Sleeping => "sleeping",
        };
        write!(f, "JobError({kind}: {})", self.message)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A handler's result serialized to JSON (`None` for `null`, which is not stored).
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Option<String>, JobError>> + Send>>;

/// The handlers of a worker, by job name.
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    by_name: HashMap<String, Arc<dyn ErasedHandler>>,
}

impl Handlers {
    pub(crate) fn insert(&mut self, name: String, handler: Arc<dyn ErasedHandler>) {
        self.by_name.insert(name, handler);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Start the handler of `ctx`'s job name on `payload`; a job name
    /// without a handler fails permanently, naming those there are.
    pub(crate) fn start(&self, ctx: JobContext, payload: &str) -> Result<HandlerFuture, JobError> {
        match self.by_name.get(ctx.name()) {
            Some(handler) => handler.start(ctx, payload),
            None => {
                let mut known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(JobError::permanent(format!(
                    "no handler for job name {:?} on this worker (it handles: {})",
                    ctx.name(),
                    known.join(", ")
                )))
            }
        }
    }
}

/// A handler with its payload type erased.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decode the payload and start the handler; a payload that does not
    /// decode is a permanent failure.
    fn start(&self, ctx: JobContext, payload: &str) -> Result<HandlerFuture, JobError>;
}

pub(crate) struct TypedHandler<F, T, R, Fut> {
    f: F,
    _types: PhantomData<fn(T) -> (R, Fut)>,
}

impl<F, T, R, Fut> TypedHandler<F, T, R, Fut> {
    pub(crate) fn new(f: F) -> Self {
        Self { f, _types: PhantomData }
    }
}

impl<F, T, R, Fut> ErasedHandler for TypedHandler<F, T, R, Fut>
where
    F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
{
    fn start(&self, ctx: JobContext, payload: &str) -> Result<HandlerFuture, JobError> {
        let input: T = serde_json::from_str(payload).map_err(|e| {
            JobError::permanent(format!(
                "payload does not match the handler of job name {:?} (expected {}): {e}",
                ctx.name(),
                std::any::type_name::<T>()
            ))
        })?;
        let fut = (self.f)(ctx, input);
        Ok(Box::pin(async move {
            let value = fut.await?;
            let json = serde_json::to_string(&value)
                .map_err(|e| JobError::permanent(format!("the handler's result does not serialize: {e}")))?;
            Ok((json != "null").then_some(json))
        }))
    }
}
