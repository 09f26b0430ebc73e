//! The worker's fetch loop: one round trip acknowledges what finished and asks
//! for as many jobs as there are free slots.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use quern_common::keys::QueueKeys;
use quern_common::options::RunOptions;
use quern_common::scripts::{self, FetchReply, LeasedJob, ScriptCall, ScriptName};
use quern_common::{Error, RedisConfig, Result, ScriptCode, SelfHealingConnection};
use redis::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::builder::{Retention, WorkerBuilder};
use crate::handler::{ErasedHandler, HandlerFuture, JobContext};
use crate::maintenance;
use crate::waker::{self, Waker, Woken};
use quern_common::process::instance_id as new_worker_id;
use quern_common::process::{ShutdownHandle, ShutdownSignals};

/// Due delayed jobs promoted per fetch call at most.
pub(crate) const PROMOTE_LIMIT: usize = 1000;
/// Jobs asked for per fetch call at most (bounds one call's work).
const FETCH_LIMIT: usize = 1000;
/// Round trips (acknowledgements + fetch) in flight at once.
const MAX_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) max_stalls: u32,
    pub(crate) reap_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) idle_block: Duration,
    pub(crate) retention: Retention,
    pub(crate) events_max_len: u64,
}

/// State shared by the fetch loop, the waker and the maintenance tasks.
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) keys: QueueKeys,
    pub(crate) conn: SelfHealingConnection,
    pub(crate) config: RedisConfig,
    pub(crate) settings: Settings,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// Jobs this worker holds a lease on: id -> (token, lease-lost flag).
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    token: String,
    lease_lost: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn call(&self, name: ScriptName) -> ScriptCall {
        ScriptCall::new(name, &self.keys, self.settings.events_max_len)
    }

    pub(crate) fn held_leases(&self) -> Vec<(String, String)> {
        let held = self.held.lock().expect("held lock");
        held.iter().map(|(id, h)| (id.clone(), h.token.clone())).collect()
    }

    /// What this worker reports in the queue's list of live workers.
    pub(crate) fn report(&self, stopping: bool) -> String {
        let running = self.held.lock().expect("held lock").len();
        serde_json::json!({
            "concurrency": self.settings.concurrency,
            "running": running,
            "stopping": stopping,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string()
    }

    /// How long one registration as a live worker holds: three reaper
    /// passes, and the time a pass may take.
    pub(crate) fn registration_ttl(&self) -> Duration {
        self.settings.reap_interval * 3 + self.config.response_timeout
    }

    pub(crate) fn lease_flag(&self, id: &str) -> Option<Arc<AtomicBool>> {
        self.held.lock().expect("held lock").get(id).map(|h| h.lease_lost.clone())
    }
}

/// A worker serving one queue. Build it with [`Worker::builder`], then call
/// [`Worker::run`] or [`Worker::run_until`].
pub struct Worker {
    shared: Arc<Shared>,
    shutdown: ShutdownHandle,
    shutdown_rx: watch::Receiver<bool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .field("queue", &self.shared.keys.name())
            .finish()
    }
}

/// How an attempt ended.
enum Outcome {
    Completed(Option<String>),
    Failed { kind: &'static str, message: String, permanent: bool },
}

struct Finished {
    id: String,
    token: String,
    attempt: u32,
    run: RunOptions,
    outcome: Outcome,
}

/// Acknowledgements and failures waiting for the next round trip.
#[derive(Default)]
struct Outbox {
    /// id, token, result JSON ('' = none)
    completed: Vec<(String, String, String)>,
    /// id, token, kind, message, retry delay ms (-1: dead-letter)
    failed: Vec<(String, String, &'static str, String, i64)>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.completed.is_empty() && self.failed.is_empty()
    }
    fn len(&self) -> usize {
        self.completed.len() + self.failed.len()
    }
    fn merge(&mut self, other: Outbox) {
        self.completed.extend(other.completed);
        self.failed.extend(other.failed);
    }
}

/// The result of one round trip. When the whole pipeline failed (connection
/// trouble), `unsent` gives the acknowledgements and failures back for a retry;
/// a repeated acknowledgement is harmless (the scripts answer DUPLICATE).
struct RoundTrip {
    wanted: usize,
    fetched: Result<Option<FetchReply>>,
    unsent: Outbox,
}

/// One pipelined round trip: acknowledge, record failures, fetch `want` jobs.
async fn round_trip(shared: Arc<Shared>, want: usize, outbox: Outbox) -> RoundTrip {
    let mut calls = Vec::with_capacity(2 + outbox.failed.len());
    if !outbox.completed.is_empty() {
        let keep = match shared.settings.retention.max_count {
            None => -1,
            Some(n) => n.min(i64::MAX as u64) as i64,
        };
        let mut call = shared.call(ScriptName::Complete);
        call.arg(keep);
        for (id, token, result) in &outbox.completed {
            call.arg(id).arg(token).arg(result);
        }
        calls.push(call);
    }
    for (id, token, kind, message, delay) in &outbox.failed {
        let mut call = shared.call(ScriptName::Fail);
        call.arg(id).arg(token).arg(message).arg(*kind).arg(*delay);
        calls.push(call);
    }
    if want > 0 {
        let mut call = shared.call(ScriptName::Fetch);
        call.arg(want).arg(shared.settings.lease.as_millis() as u64).arg(&shared.id).arg(PROMOTE_LIMIT);
        call.arg(waker::parking(&shared)).arg(waker::parking_ttl(&shared).as_millis() as u64);
        calls.push(call);
    }
    let results = match scripts::run_pipelined(&mut shared.conn.clone(), &calls).await {
        Ok(r) => r,
        Err(e) => return RoundTrip { wanted: want, fetched: Err(e), unsent: outbox },
    };
    // From here on every call ran (or failed on its own): nothing is resent.
    let mut results = results.into_iter();
    if !outbox.completed.is_empty() {
        match results.next().expect("one result per call").and_then(scripts::array) {
            Ok(codes) => {
                for ((id, _, _), code) in outbox.completed.iter().zip(codes) {
                    report_code(&shared.id, "acknowledge", id, &code);
                }
            }
            Err(e) => {
                error!(worker = %shared.id, error = %e, "acknowledging completed jobs failed; they will be recovered as stalled")
            }
        }
    }
    for (id, ..) in &outbox.failed {
        match results.next().expect("one result per call") {
            Ok(code) => report_code(&shared.id, "record failure of", id, &code),
            Err(e) => {
                error!(worker = %shared.id, job = %id, error = %e, "recording a failed attempt failed; the job will be recovered as stalled")
            }
        }
    }
    let fetched = if want == 0 {
        Ok(None)
    } else {
        results.next().expect("one result per call").and_then(scripts::parse_fetch).map(Some)
    };
    RoundTrip { wanted: want, fetched, unsent: Outbox::default() }
}

/// How a stopping worker is listed among the queue's live workers.
enum Listed {
    /// Still, as stopping, until its grace period ends.
    Stopping,
    /// No more: it is done.
    Leaving,
}

/// When the next delayed job falls due, from a fetch reply that came back short.
fn due_at(next_delayed_ms: Option<u64>) -> Option<Instant> {
    next_delayed_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

fn report_code(worker: &str, what: &str, id: &str, code: &Value) {
    match scripts::int(code).and_then(ScriptCode::from_code) {
        Ok(ScriptCode::Ok | ScriptCode::Dead | ScriptCode::Duplicate) => {}
        Ok(ScriptCode::LeaseLost) => warn!(
            worker = %worker, job = %id,
            "lease lost: could not {what} the job, another worker holds it now; this result was discarded"
        ),
        Ok(other) => warn!(worker = %worker, job = %id, code = ?other, "could not {what} the job"),
        Err(e) => error!(worker = %worker, job = %id, error = %e, "unexpected reply"),
    }
}

impl Worker {
    /// Configure a worker for `queue` on the Redis of `config`.
    pub fn builder(config: &RedisConfig, queue: &str) -> WorkerBuilder {
        WorkerBuilder::new(config, queue)
    }

    pub(crate) fn new(
        config: RedisConfig,
        keys: QueueKeys,
        conn: SelfHealingConnection,
        settings: Settings,
        handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    ) -> Self {
        let (shutdown, shutdown_rx) = ShutdownHandle::new();
        let shared = Arc::new(Shared {
            id: new_worker_id(),
            keys,
            conn,
            config,
            settings,
            handlers,
            held: Mutex::new(HashMap::new()),
        });
        Self { shared, shutdown, shutdown_rx }
    }

    /// This worker's unique id (`host:pid:random`), recorded with every attempt.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The queue served.
    pub fn queue(&self) -> &str {
        self.shared.keys.name()
    }

    /// A handle to ask this worker to shut down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Run until SIGTERM or SIGINT (or a [`ShutdownHandle`]), then shut down
    /// gracefully. Returns `Ok(())` after a clean shutdown, an `Io` error at
    /// once when it cannot listen for the signals.
    pub async fn run(self) -> Result<()> {
        let handle = self.shutdown.clone();
        let mut signals = ShutdownSignals::install()?;
        tokio::spawn(async move {
            info!("{} received: shutting down", signals.recv().await);
            handle.shutdown();
        });
        self.spawn_loop().await
    }

    /// Run until `stop` completes (or a [`ShutdownHandle`] is used), then shut
    /// down gracefully.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let handle = self.shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            handle.shutdown();
        });
        self.spawn_loop().await
    }

    /// Run the fetch loop as a task of its own, so it runs on the runtime's
    /// worker threads beside its connections' tasks even when the caller is
    /// `block_on` (the body of `#[tokio::main]`): on the thread of
    /// `block_on`, every reply from Redis needs a wake-up of another thread
    /// (on our 2-core VM a reply on one connection woke a `BLPOP` on another
    /// after ~0.21 ms at p50 when awaited in `block_on`, ~0.09 ms in a task).
    /// Dropping the returned future stops the loop, as before.
    async fn spawn_loop(self) -> Result<()> {
        struct AbortOnDrop(tokio::task::JoinHandle<Result<()>>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(tokio::spawn(self.run_loop()));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Stopped(format!("the worker's fetch loop was cancelled: {e}"))),
        }
    }

    async fn run_loop(self) -> Result<()> {
        let shared = self.shared.clone();
        let mut shutdown_rx = self.shutdown_rx.clone();
        info!(worker = %shared.id, queue = %shared.keys.name(), concurrency = shared.settings.concurrency, "worker started");
        let renewer = maintenance::spawn_renewer(shared.clone());
        let reaper = maintenance::spawn_reaper(shared.clone());
        let mut waker = Waker::new(shared.clone());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut outbox = Outbox::default();
        // At most two round trips in flight: completions pile up meanwhile and go
        // out together in the next one, so batches grow with the load, and the
        // second keeps Redis busy while the worker handles the first one's
        // reply (one alone leaves Redis idle for that time).
        let mut in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = RoundTrip> + Send>>> =
            FuturesUnordered::new();
        // Slots promised to the fetches in flight (the waker keeps count of
        // those promised to its own).
        let mut reserved = 0usize;
        let mut need_fetch = true;
        // When to ask Redis to end the armed wait early (a delayed job fell due,
        // or the worker is stopping); repeated until the wait ends.
        let mut unblock_at: Option<Instant> = None;
        let mut next_delayed: Option<Instant> = None;
        let mut grace_deadline: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let mut retry = Duration::from_millis(50);
        // A fetch that came back short registered this worker as parked (see
        // scripts/fetch.lua); set when a fetch ends, cleared by unparking.
        let mut maybe_parked = false;

        loop {
            while let Ok(f) = done_rx.try_recv() {
                self.settle(f, &mut outbox);
            }
            while jobs.try_join_next().is_some() {}
            let stopping = *shutdown_rx.borrow();
            if stopping && grace_deadline.is_none() {
                info!(worker = %shared.id, running = jobs.len(), grace = ?shared.settings.shutdown_grace, "shutting down: no new jobs");
                grace_deadline = Some(Instant::now() + shared.settings.shutdown_grace);
                if waker.armed().is_none() {
                    waker.stop();
                } else {
                    unblock_at = Some(Instant::now());
                }
                reaper.abort();
            }
            // A stopping worker takes no hand-offs: unpark as soon as no fetch
            // is in flight (one could park it again), not at exit, or an add
            // would hand a job to it that waits out the grace period.
            if stopping && maybe_parked && reserved == 0 {
                maybe_parked = false;
                self.unpark(Listed::Stopping).await;
            }
            if in_flight.len() < MAX_IN_FLIGHT && retry_at.is_none_or(|t| Instant::now() >= t) {
                retry_at = None;
                let concurrency = shared.settings.concurrency;
                let want = if stopping || !need_fetch { 0 } else { self.free_slots(&jobs, reserved, &waker) };
                // A second round trip only for a worthwhile batch: many small
                // calls would cost Redis more per job than they save.
                let worthwhile = in_flight.is_empty() || want + outbox.len() >= (concurrency / 4).max(1);
                if (want > 0 || !outbox.is_empty()) && worthwhile {
                    reserved += want;
                    in_flight.push(Box::pin(round_trip(shared.clone(), want, std::mem::take(&mut outbox))));
                }
            }
            if in_flight.is_empty()
                && stopping
                && jobs.is_empty()
                && outbox.is_empty()
                && waker.armed().is_none()
            {
                break;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                Some(rt) = in_flight.next(), if !in_flight.is_empty() => {
                    reserved -= rt.wanted;
                    maybe_parked |= rt.wanted > 0;
                    match rt.fetched {
                        Ok(fetched) => {
                            retry = Duration::from_millis(50);
                            if let Some(f) = fetched {
                                let got = f.jobs.len();
                                for job in f.jobs {
                                    self.spawn_job(&mut jobs, job, done_tx.clone());
                                }
                                if f.paused || got < rt.wanted {
                                    need_fetch = false;
                                    next_delayed = due_at(f.next_delayed_ms);
                                    if !stopping {
                                        self.wait_for_work(&mut waker, &jobs, reserved, f.paused);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            warn!(worker = %shared.id, error = %e, retry_in = ?retry, "round trip to Redis failed");
                            outbox.merge(rt.unsent);
                            retry_at = Some(Instant::now() + retry);
                            retry = (retry * 2).min(Duration::from_secs(5));
                            if stopping && grace_deadline.is_some_and(|d| Instant::now() >= d) && jobs.is_empty() {
                                error!(worker = %shared.id, "Redis unreachable at shutdown: unacknowledged jobs will be recovered when their leases expire");
                                break;
                            }
                        }
                    }
                }
                Some(f) = done_rx.recv() => self.settle(f, &mut outbox),
                woken = waker.woken(), if waker.armed().is_some() => {
                    unblock_at = None;
                    match woken {
                        Woken::Job(job) if stopping => self.hand_back(vec![job]).await,
                        Woken::Job(job) => {
                            maintenance::claim_handed_over(shared.clone(), (job.id.clone(), job.token.clone()));
                            self.spawn_job(&mut jobs, job, done_tx.clone());
                            // The add handed it over because nothing else was
                            // waiting: wait again while slots are free; once
                            // they are all taken, fetch when one frees up.
                            if self.free_slots(&jobs, reserved, &waker) > 0 {
                                self.wait_for_work(&mut waker, &jobs, reserved, false);
                            } else {
                                need_fetch = true;
                            }
                        }
                        Woken::Marker | Woken::Nothing => need_fetch = !stopping,
                    }
                }
                // End the armed wait (a delayed job fell due: fetch to promote
                // it; or the worker is stopping). Repeated, as the BLPOP may
                // not have reached Redis yet.
                _ = tokio::time::sleep_until(unblock_at.unwrap_or(far)), if unblock_at.is_some() && waker.armed().is_some() => {
                    if let Some(id) = waker.client_id() {
                        waker::unblock(&mut shared.conn.clone(), id).await;
                    }
                    unblock_at = Some(Instant::now() + Duration::from_millis(10));
                }
                _ = tokio::time::sleep_until(next_delayed.unwrap_or(far)), if next_delayed.is_some() && !stopping => {
                    next_delayed = None;
                    if waker.armed().is_some() {
                        unblock_at = Some(Instant::now());
                    } else {
                        need_fetch = true;
                    }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
                _ = shutdown_rx.changed(), if !stopping => {}
                _ = tokio::time::sleep_until(grace_deadline.unwrap_or(far)), if grace_deadline.is_some() && in_flight.is_empty() => {
                    waker.stop();
                    self.abandon(&mut jobs, &mut done_rx, &mut outbox).await;
                    break;
                }
            }
        }
        renewer.abort();
        reaper.abort();
        self.unpark(Listed::Leaving).await;
        info!(worker = %shared.id, "worker stopped");
        Ok(())
    }

    /// Slots neither running a job nor promised to a fetch (in flight, or
    /// the waker's), at most one call's worth.
    fn free_slots(&self, jobs: &JoinSet<()>, reserved: usize, waker: &Waker) -> usize {
        let promised = jobs.len() + reserved + waker.armed().unwrap_or(0);
        self.shared.settings.concurrency.saturating_sub(promised).min(FETCH_LIMIT)
    }

    /// The queue has no more for this worker: wait for a producer's wake-up,
    /// with a fetch for the free slots behind it (none while paused: the wait
    /// only listens). Nothing to do if a wait is armed already.
    fn wait_for_work(&self, waker: &mut Waker, jobs: &JoinSet<()>, reserved: usize, paused: bool) {
        if waker.armed().is_none() {
            let want = if paused { 0 } else { self.free_slots(jobs, reserved, waker) };
            waker.arm(want);
        }
    }

    /// Hand leases `(id, token)` back to waiting, unrun and without using an
    /// attempt (leases lost meanwhile are skipped). Returns how many went back.
    async fn release(&self, leases: &[(String, String)]) -> Result<i64> {
        let mut call = self.shared.call(ScriptName::Release);
        for (id, token) in leases {
            call.arg(id).arg(token);
        }
        call.run(&mut self.shared.conn.clone()).await
    }

    /// Stop taking hand-offs; when no other worker is parked, the jobs still
    /// waiting on the hand-off list go back to waiting. The worker stays
    /// listed as live while it stops, or leaves the list.
    async fn unpark(&self, listed: Listed) {
        let shared = &self.shared;
        let mut call = shared.call(ScriptName::Unpark);
        call.arg(waker::parking(shared)).arg(&shared.id);
        match listed {
            // Its reaper no longer refreshes the listing: cover the grace period.
            Listed::Stopping => {
                let hold = shared.settings.shutdown_grace + shared.registration_ttl();
                call.arg(hold.as_millis() as u64).arg(shared.report(true))
            }
            Listed::Leaving => call.arg(0),
        };
        match call.run::<i64, _>(&mut self.shared.conn.clone()).await {
            Ok(0) => {}
            Ok(n) => {
                info!(worker = %self.shared.id, released = n, "returned jobs handed over to no worker to waiting")
            }
            Err(e) => warn!(
                worker = %self.shared.id, error = %e,
                "unparking failed; the parking lapses on its own and unclaimed jobs are recovered when their leases expire"
            ),
        }
    }

    /// Give jobs leased while stopping back to the queue.
    async fn hand_back(&self, leased: Vec<LeasedJob>) {
        if leased.is_empty() {
            return;
        }
        let leases: Vec<(String, String)> = leased.into_iter().map(|j| (j.id, j.token)).collect();
        match self.release(&leases).await {
            Ok(n) => {
                info!(worker = %self.shared.id, released = n, "handed jobs fetched while stopping back to waiting")
            }
            Err(e) => warn!(
                worker = %self.shared.id, error = %e,
                "handing back jobs fetched while stopping failed; they will be recovered when their leases expire"
            ),
        }
    }

    fn spawn_job(&self, jobs: &mut JoinSet<()>, job: LeasedJob, done: mpsc::UnboundedSender<Finished>) {
        let shared = &self.shared;
        let run = RunOptions::decode(&job.options).unwrap_or_else(|e| {
            warn!(job = %job.id, error = %e, "unreadable job options; running with the defaults");
            RunOptions::default()
        });
        let lease_lost = Arc::new(AtomicBool::new(false));
        shared
            .held
            .lock()
            .expect("held lock")
            .insert(job.id.clone(), Held { token: job.token.clone(), lease_lost: lease_lost.clone() });
        let ctx = JobContext::new(
            shared.clone(),
            &job.id,
            &job.name,
            &job.token,
            job.attempt,
            run.attempts,
            lease_lost,
        );
        let started = match shared.handlers.get(&job.name) {
            Some(handler) => handler.start(ctx, &job.payload),
            None => {
                let mut known: Vec<&str> = shared.handlers.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(crate::JobError::permanent(format!(
                    "no handler for job name {:?} on this worker (it handles: {})",
                    job.name,
                    known.join(", ")
                )))
            }
        };
        let LeasedJob { id, token, attempt, .. } = job;
        jobs.spawn(async move {
            let outcome = match started {
                Ok(fut) => run_attempt(fut, run.timeout).await,
                Err(e) => {
                    Outcome::Failed { kind: "permanent", message: e.message().to_owned(), permanent: true }
                }
            };
            let _ = done.send(Finished { id, token, attempt, run, outcome });
        });
    }

    /// Turn a finished attempt into an acknowledgement or a failure record.
    fn settle(&self, f: Finished, outbox: &mut Outbox) {
        self.shared.held.lock().expect("held lock").remove(&f.id);
        match f.outcome {
            Outcome::Completed(result) => outbox.completed.push((f.id, f.token, result.unwrap_or_default())),
            Outcome::Failed { kind, message, permanent } => {
                let last = f.attempt >= f.run.attempts;
                let delay = if permanent || last {
                    -1
                } else {
                    f.run.backoff.delay_for(f.attempt).as_millis().min(i64::MAX as u128) as i64
                };
                if delay < 0 {
                    warn!(job = %f.id, attempt = f.attempt, error = %message, "job failed for good: dead-lettered");
                } else {
                    debug!(job = %f.id, attempt = f.attempt, error = %message, retry_in_ms = delay, "attempt failed");
                }
                outbox.failed.push((f.id, f.token, kind, message, delay));
            }
        }
    }

    /// The grace period ended: stop the jobs still running and hand them back.
    async fn abandon(
        &self,
        jobs: &mut JoinSet<()>,
        done: &mut mpsc::UnboundedReceiver<Finished>,
        outbox: &mut Outbox,
    ) {
        jobs.abort_all();
        while jobs.join_next().await.is_some() {}
        while let Ok(f) = done.try_recv() {
            self.settle(f, outbox);
        }
        let leftover: Vec<(String, String)> = {
            let mut held = self.shared.held.lock().expect("held lock");
            held.drain().map(|(id, h)| (id, h.token)).collect()
        };
        for attempt in 0..3 {
            let mut ok = true;
            if !outbox.is_empty() {
                let rt = round_trip(self.shared.clone(), 0, std::mem::take(outbox)).await;
                if rt.fetched.is_err() {
                    outbox.merge(rt.unsent);
                    ok = false;
                }
            }
            if ok && !leftover.is_empty() {
                match self.release(&leftover).await {
                    Ok(n) => {
                        info!(worker = %self.shared.id, released = n, "handed unfinished jobs back to waiting")
                    }
                    Err(e) => {
                        warn!(worker = %self.shared.id, error = %e, "releasing unfinished jobs failed");
                        ok = false;
                    }
                }
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        error!(worker = %self.shared.id, "could not hand unfinished jobs back; they will be recovered when their leases expire");
    }
}

/// Run one attempt with the job's timeout, catching panics.
async fn run_attempt(fut: HandlerFuture, timeout: Option<Duration>) -> Outcome {
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return Outcome::Failed {
                    kind: "timeout",
                    message: format!("timed out after {limit:?}"),
                    permanent: false,
                };
            }
        },
        None => guarded.await,
    };
    match result {
        Ok(Ok(value)) => Outcome::Completed(value),
        Ok(Err(e)) => Outcome::Failed {
            kind: if e.is_permanent() { "permanent" } else { "error" },
            message: e.message().to_owned(),
            permanent: e.is_permanent(),
        },
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_owned());
            Outcome::Failed { kind: "panic", message: format!("handler panicked: {text}"), permanent: false }
        }
    }
}
