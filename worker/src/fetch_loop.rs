//! The worker's fetch loop: one round trip acknowledges what finished and
//! asks for as many jobs as there are free slots; when the queue has nothing,
//! the waker blocks for work. The loop's state lives in [`FetchLoop`], with
//! one method per event it reacts to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use quern_common::moves::{FetchReply, LeasedJob, Listing, Release, Unpark};
use quern_common::options::RunOptions;
use quern_common::{Backoff, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::attempt::{Finished, Outcome, run_attempt};
use crate::client::QueueClient;
use crate::handler::{Handlers, JobContext};
use crate::leases::LeaseTable;
use crate::maintenance::{Presence, Reaper, Renewer, Running};
use crate::outbox::{FetchAsk, Outbox, RoundTrip, round_trip};
use crate::settings::Settings;
use crate::steps::StepRules;
use crate::waker::{ParkingSpec, Waker, Woken};

/// Jobs asked for per fetch call at most (bounds one call's work).
const FETCH_LIMIT: usize = 1000;
/// Round trips (acknowledgements + fetch) in flight at once.
const MAX_IN_FLIGHT: usize = 2;

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = RoundTrip> + Send>>>;

/// What the fetch loop is built from.
pub(crate) struct Parts {
    pub(crate) client: QueueClient,
    pub(crate) settings: Settings,
    pub(crate) handlers: Handlers,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) renewer: Renewer,
    pub(crate) reaper: Reaper,
    pub(crate) presence: Presence,
    pub(crate) waker: Waker,
    pub(crate) parking: ParkingSpec,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// How a stopping worker is listed among the queue's live workers.
enum Listed {
    /// Still, as stopping, until its grace period ends.
    Stopping,
    /// No more: it is done.
    Leaving,
}

pub(crate) struct FetchLoop {
    client: QueueClient,
    settings: Settings,
    handlers: Handlers,
    leases: Arc<LeaseTable>,
    renewer: Renewer,
    reaper: Reaper,
    presence: Presence,
    waker: Waker,
    parking: ParkingSpec,
    shutdown: watch::Receiver<bool>,
    /// The attempts running, and the channel they report their end on.
    jobs: JoinSet<()>,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    outbox: Outbox,
    /// At most two round trips in flight: completions pile up meanwhile and
    /// go out together in the next one, so batches grow with the load, and
    /// the second keeps Redis busy while the worker handles the first one's
    /// reply (one alone leaves Redis idle for that time).
    in_flight: InFlight,
    /// Slots promised to the fetches in flight (the waker keeps count of
    /// those promised to its own).
    reserved: usize,
    need_fetch: bool,
    /// When to ask Redis to end the armed wait early (a delayed job fell due,
    /// or the worker is stopping); repeated until the wait ends.
    unblock_at: Option<Instant>,
    next_delayed: Option<Instant>,
    grace_deadline: Option<Instant>,
    /// After a failed round trip: not before this, with delays from `retry`.
    retry_at: Option<Instant>,
    retry: Backoff,
    retries: u32,
    /// A fetch that came back short registered this worker as parked (see
    /// scripts/fetch.lua); set when a fetch ends, cleared by unparking.
    maybe_parked: bool,
    stopping: bool,
    background: Vec<Running>,
}

impl FetchLoop {
    pub(crate) fn new(parts: Parts) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            client: parts.client,
            settings: parts.settings,
            handlers: parts.handlers,
            leases: parts.leases,
            renewer: parts.renewer,
            reaper: parts.reaper,
            presence: parts.presence,
            waker: parts.waker,
            parking: parts.parking,
            shutdown: parts.shutdown,
            jobs: JoinSet::new(),
            done_tx,
            done_rx,
            outbox: Outbox::default(),
            in_flight: FuturesUnordered::new(),
            reserved: 0,
            need_fetch: true,
            unblock_at: None,
            next_delayed: None,
            grace_deadline: None,
            retry_at: None,
            retry: Backoff::Exponential {
                base: Duration::from_millis(50),
                max: Duration::from_secs(5),
                jitter: 0.0,
            },
            retries: 0,
            maybe_parked: false,
            stopping: false,
            background: Vec::new(),
        }
    }

    /// Run until shut down and every job is settled (or the grace period ended).
    pub(crate) async fn run(mut self) -> Result<()> {
        info!(worker = %self.client.worker(), queue = %self.client.queue(), concurrency = self.settings.concurrency, "worker started");
        self.background = vec![self.renewer.start(), self.reaper.start()];
        loop {
            while let Ok(f) = self.done_rx.try_recv() {
                self.on_finished(f);
            }
            while self.jobs.try_join_next().is_some() {}
            if *self.shutdown.borrow() && self.grace_deadline.is_none() {
                self.on_shutdown();
            }
            // A stopping worker takes no hand-offs: unpark as soon as no fetch
            // is in flight (one could park it again), not at exit, or an add
            // would hand a job to it that waits out the grace period.
            if self.stopping && self.maybe_parked && self.reserved == 0 {
                self.maybe_parked = false;
                unpark(
                    &self.client,
                    &self.parking,
                    &self.presence,
                    Listed::Stopping,
                    self.settings.shutdown_grace,
                )
                .await;
            }
            self.start_round_trip();
            if self.in_flight.is_empty()
                && self.stopping
                && self.jobs.is_empty()
                && self.outbox.is_empty()
                && self.waker.armed().is_none()
            {
                break;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let stopping = self.stopping;
            tokio::select! {
                Some(rt) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if self.on_round_trip(rt) {
                        break;
                    }
                }
                Some(f) = self.done_rx.recv() => self.on_finished(f),
                woken = self.waker.woken(), if self.waker.armed().is_some() => self.on_woken(woken).await,
                _ = tokio::time::sleep_until(self.unblock_at.unwrap_or(far)), if self.unblock_at.is_some() && self.waker.armed().is_some() => {
                    self.on_unblock_due().await;
                }
                _ = tokio::time::sleep_until(self.next_delayed.unwrap_or(far)), if self.next_delayed.is_some() && !stopping => {
                    self.on_delayed_due();
                }
                _ = tokio::time::sleep_until(self.retry_at.unwrap_or(far)), if self.retry_at.is_some() => {}
                _ = self.shutdown.changed(), if !stopping => {}
                _ = tokio::time::sleep_until(self.grace_deadline.unwrap_or(far)), if self.grace_deadline.is_some() && self.in_flight.is_empty() => {
                    self.on_grace_over().await;
                    break;
                }
            }
        }
        for part in &self.background {
            part.shutdown();
        }
        unpark(&self.client, &self.parking, &self.presence, Listed::Leaving, self.settings.shutdown_grace)
            .await;
        info!(worker = %self.client.worker(), "worker stopped");
        Ok(())
    }

    /// Shutdown was asked for: no new jobs; the grace period starts.
    fn on_shutdown(&mut self) {
        self.stopping = true;
        info!(worker = %self.client.worker(), running = self.jobs.len(), grace = ?self.settings.shutdown_grace, "shutting down: no new jobs");
        self.grace_deadline = Some(Instant::now() + self.settings.shutdown_grace);
        if self.waker.armed().is_none() {
            self.waker.stop();
        } else {
            self.unblock_at = Some(Instant::now());
        }
        // The reaper stops listing the worker; unparking lists it as stopping.
        self.reaper_stop();
    }

    fn reaper_stop(&mut self) {
        if let Some(reaper) = self.background.get(1) {
            reaper.shutdown();
        }
    }

    /// Send the outbox and fetch for the free slots, when there is reason to.
    fn start_round_trip(&mut self) {
        if self.in_flight.len() >= MAX_IN_FLIGHT || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let want = if self.stopping || !self.need_fetch { 0 } else { self.free_slots() };
        // A second round trip only for a worthwhile batch: many small calls
        // would cost Redis more per job than they save.
        let worthwhile =
            self.in_flight.is_empty() || want + self.outbox.len() >= (self.settings.concurrency / 4).max(1);
        if (want > 0 || !self.outbox.is_empty()) && worthwhile {
            self.reserved += want;
            let ask = FetchAsk {
                want,
                lease: self.settings.lease,
                parking: self.parking.member.clone(),
                parking_ttl: self.parking.ttl,
                keep: self.settings.retention.max_count,
            };
            let outbox = std::mem::take(&mut self.outbox);
            self.in_flight.push(Box::pin(round_trip(self.client.clone(), ask, outbox)));
        }
    }

    /// A round trip came back. Returns true when the worker must give up
    /// (Redis unreachable past the grace period).
    fn on_round_trip(&mut self, rt: RoundTrip) -> bool {
        self.reserved -= rt.wanted;
        self.maybe_parked |= rt.wanted > 0;
        match rt.fetched {
            Ok(fetched) => {
                self.retries = 0;
                // Moves too few replicas acknowledged go again (harmless repeats).
                self.outbox.merge(rt.unsent);
                if let Some(f) = fetched {
                    self.on_fetched(f, rt.wanted);
                }
                false
            }
            Err(e) => {
                let delay = self.retry.delay_for(self.retries + 1);
                self.retries += 1;
                warn!(worker = %self.client.worker(), error = %e, retry_in = ?delay, "round trip to Redis failed");
                self.outbox.merge(rt.unsent);
                self.retry_at = Some(Instant::now() + delay);
                if self.stopping
                    && self.grace_deadline.is_some_and(|d| Instant::now() >= d)
                    && self.jobs.is_empty()
                {
                    error!(worker = %self.client.worker(), "Redis unreachable at shutdown: unacknowledged jobs will be recovered when their leases expire");
                    return true;
                }
                false
            }
        }
    }

    fn on_fetched(&mut self, f: FetchReply, wanted: usize) {
        if !f.dropped.is_empty() {
            warn!(worker = %self.client.worker(), jobs = ?f.dropped, "dropped ids listed as waiting that have no job (a corrupt or hand-edited queue)");
        }
        let got = f.jobs.len();
        for job in f.jobs {
            self.spawn_job(job);
        }
        if f.paused || got < wanted {
            self.need_fetch = false;
            self.next_delayed = f.next_delayed_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
            if !self.stopping {
                self.wait_for_work(f.paused);
            }
        }
    }

    /// The armed wait ended.
    async fn on_woken(&mut self, woken: Woken) {
        self.unblock_at = None;
        match woken {
            Woken::Job(job) if self.stopping => hand_back(&self.client, vec![job]).await,
            Woken::Job(job) => {
                self.renewer.claim(job.id.clone(), job.token.clone());
                self.spawn_job(job);
                // The add handed it over because nothing else was waiting:
                // wait again while slots are free; once they are all taken,
                // fetch when one frees up.
                if self.free_slots() > 0 {
                    self.wait_for_work(false);
                } else {
                    self.need_fetch = true;
                }
            }
            Woken::Marker | Woken::Nothing => self.need_fetch = !self.stopping,
        }
    }

    /// End the armed wait (a delayed job fell due: fetch to promote it; or
    /// the worker is stopping). Repeated, as the `BLPOP` may not have
    /// reached Redis yet.
    async fn on_unblock_due(&mut self) {
        self.waker.unblock(self.client.conn()).await;
        self.unblock_at = Some(Instant::now() + Duration::from_millis(10));
    }

    /// The next delayed job is due: fetch (which promotes it).
    fn on_delayed_due(&mut self) {
        self.next_delayed = None;
        if self.waker.armed().is_some() {
            self.unblock_at = Some(Instant::now());
        } else {
            self.need_fetch = true;
        }
    }

    fn on_finished(&mut self, f: Finished) {
        self.leases.let_go(&f.id);
        f.settle(&mut self.outbox);
    }

    /// Slots neither running a job nor promised to a fetch (in flight, or
    /// the waker's), at most one call's worth.
    fn free_slots(&self) -> usize {
        let promised = self.jobs.len() + self.reserved + self.waker.armed().unwrap_or(0);
        self.settings.concurrency.saturating_sub(promised).min(FETCH_LIMIT)
    }

    /// The queue has no more for this worker: wait for a producer's wake-up,
    /// with a fetch for the free slots behind it (none while paused: the wait
    /// only listens). Nothing to do if a wait is armed already.
    fn wait_for_work(&mut self, paused: bool) {
        if self.waker.armed().is_none() {
            let want = if paused { 0 } else { self.free_slots() };
            self.waker.arm(want);
        }
    }

    fn spawn_job(&mut self, job: LeasedJob) {
        let run = RunOptions::decode(&job.options).unwrap_or_else(|e| {
            warn!(job = %job.id, error = %e, "unreadable job options; running with the defaults");
            RunOptions::default()
        });
        let lease_lost = self.leases.hold(&job.id, &job.token);
        let slept = Arc::new(AtomicBool::new(false));
        let rules = StepRules { lease: self.settings.lease, ..self.settings.steps };
        let ctx = JobContext::new(self.client.clone(), &job, run.attempts, lease_lost, rules, slept.clone());
        let started = self.handlers.start(ctx, &job.payload);
        #[cfg(feature = "otel")]
        let span = crate::otel::attempt_span(self.client.queue(), &job, run.trace_parent.as_deref());
        let LeasedJob { id, token, attempt, waited_ms, .. } = job;
        let done = self.done_tx.clone();
        let leased = std::time::Instant::now();
        let task = async move {
            let mut outcome = match started {
                Ok(fut) => run_attempt(fut, run.timeout).await,
                Err(e) => Outcome::Failed {
                    kind: quern_common::FailureKind::Permanent,
                    message: e.message().to_owned(),
                },
            };
            // A handler that slept but did not return the sleep's error
            // still ends its attempt there: the job is delayed already.
            if slept.load(Ordering::Relaxed) {
                outcome = Outcome::Slept;
            }
            let run_ms = u64::try_from(leased.elapsed().as_millis()).unwrap_or(u64::MAX);
            let _ = done.send(Finished { id, token, attempt, run, outcome, run_ms, wait_ms: waited_ms });
        };
        #[cfg(feature = "otel")]
        let task = tracing::Instrument::instrument(task, span);
        self.jobs.spawn(task);
    }

    /// The grace period ended: stop the jobs still running and hand them back.
    async fn on_grace_over(&mut self) {
        self.waker.stop();
        self.jobs.abort_all();
        while self.jobs.join_next().await.is_some() {}
        while let Ok(f) = self.done_rx.try_recv() {
            f.settle(&mut self.outbox);
        }
        let leftover = self.leases.drain();
        for attempt in 0..3 {
            let mut ok = true;
            if !self.outbox.is_empty() {
                let ask = FetchAsk {
                    want: 0,
                    lease: self.settings.lease,
                    parking: self.parking.member.clone(),
                    parking_ttl: self.parking.ttl,
                    keep: self.settings.retention.max_count,
                };
                let rt = round_trip(self.client.clone(), ask, std::mem::take(&mut self.outbox)).await;
                if rt.fetched.is_err() || !rt.unsent.is_empty() {
                    self.outbox.merge(rt.unsent);
                    ok = false;
                }
            }
            if ok && !leftover.is_empty() {
                match release(&self.client, &leftover).await {
                    Ok(n) => {
                        info!(worker = %self.client.worker(), released = n, "handed unfinished jobs back to waiting")
                    }
                    Err(e) => {
                        warn!(worker = %self.client.worker(), error = %e, "releasing unfinished jobs failed");
                        ok = false;
                    }
                }
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        error!(worker = %self.client.worker(), "could not hand unfinished jobs back; they will be recovered when their leases expire");
    }
}

/// Hand leases `(id, token)` back to waiting, unrun and without using an
/// attempt (leases lost meanwhile are skipped). Returns how many went back.
async fn release(client: &QueueClient, leases: &[(String, String)]) -> Result<u64> {
    client.run_acked(&Release { leases }).await
}

/// Give jobs leased while stopping back to the queue.
async fn hand_back(client: &QueueClient, leased: Vec<LeasedJob>) {
    if leased.is_empty() {
        return;
    }
    let leases: Vec<(String, String)> = leased.into_iter().map(|j| (j.id, j.token)).collect();
    match release(client, &leases).await {
        Ok(n) => {
            info!(worker = %client.worker(), released = n, "handed jobs fetched while stopping back to waiting")
        }
        Err(e) => warn!(
            worker = %client.worker(), error = %e,
            "handing back jobs fetched while stopping failed; they will be recovered when their leases expire"
        ),
    }
}

/// Stop taking hand-offs; when no other worker is parked, the jobs still
/// waiting on the hand-off list go back to waiting. The worker stays
/// listed as live while it stops, or leaves the list.
async fn unpark(
    client: &QueueClient,
    parking: &ParkingSpec,
    presence: &Presence,
    listed: Listed,
    grace: Duration,
) {
    let worker = client.worker();
    let report = presence.report(true);
    let listing = match listed {
        // Its reaper no longer refreshes the listing: cover the grace period.
        Listed::Stopping => Listing::Stays { worker, hold: grace + presence.ttl, report: &report },
        Listed::Leaving => Listing::Leaves { worker },
    };
    match client.run(&Unpark { parking: &parking.member, listing }).await {
        Ok(0) => {}
        Ok(n) => {
            info!(worker = %worker, released = n, "returned jobs handed over to no worker to waiting")
        }
        Err(e) => warn!(
            worker = %worker, error = %e,
            "unparking failed; the parking lapses on its own and unclaimed jobs are recovered when their leases expire"
        ),
    }
}
