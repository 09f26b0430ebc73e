//! The scheduler process: holds the leader lease, finds due ticks by Redis
//! time and enqueues each through the tick script, at most once ever.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quern_common::SelfHealingConnection;
use quern_common::moves::{DEFAULT_EVENTS_MAX_LEN, Move, Tick, TickAction, TickStatus};
use quern_common::process::{ShutdownHandle, ShutdownSignals, instance_id, retry_until_ready};
use quern_common::scripts::{self, ScriptCall, ScriptName};
use quern_common::{Backoff, QueueKeys, QueueScripts, RedisConfig};
use tokio::sync::{mpsc, watch};

use crate::clock::{SystemClock, WallClock};
use crate::cron::CronSpec;
use crate::lease::LeaderLease;
use crate::schedule::{MisfirePolicy, OverlapPolicy, Schedule, StoredSchedule, tick_job_id};
use crate::store::{Schedules, leader_key, state_key, version_key};
use crate::{Error, Result};

/// Leader lease unless told otherwise: a standby takes over at most this long
/// after the leader dies.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Tick script calls sent in one round trip.
const BATCH: usize = 500;
/// Most missed ticks counted after an outage (the count is a lower bound past it).
const MISSED_COUNT_CAP: usize = 100_000;
/// Most due ticks of one schedule handled in one pass.
const DUE_CAP: usize = 10_000;

/// What happened to one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// Its job was enqueued (by this scheduler).
    Enqueued,
    /// Skipped: the previous tick's job was still waiting, delayed or active.
    SkippedOverlap,
    /// Another scheduler (or an earlier run) handled it already.
    AlreadyHandled,
    /// A job with its id existed already; nothing was added.
    AlreadyExists,
    /// Dropped by the misfire policy, along with the earlier missed ticks
    /// counted in `ticks`.
    Missed {
        /// Ticks dropped in this outage, this one included.
        ticks: u64,
    },
}

/// A report of one handled tick (for logs, tests and benchmarks).
#[derive(Debug, Clone)]
pub struct TickEvent {
    /// The schedule.
    pub schedule: String,
    /// The tick's due time.
    pub tick: DateTime<Utc>,
    /// The tick's job id.
    pub job_id: String,
    /// What happened.
    pub outcome: TickOutcome,
    /// How late it was handled, by Redis time (handled minus due).
    pub lateness: Duration,
    /// True for a tick past its misfire grace that the misfire policy
    /// (`run_once`, `catch_up`) chose to enqueue.
    pub caught_up: bool,
}

/// Settings of a [`Scheduler`].
pub struct SchedulerBuilder {
    config: RedisConfig,
    file: Option<PathBuf>,
    prune: bool,
    lease: Duration,
    leader_election: bool,
    clock: Arc<dyn WallClock>,
    id: Option<String>,
    reload_interval: Duration,
    events: Option<mpsc::UnboundedSender<TickEvent>>,
    events_max_len: u64,
}

impl SchedulerBuilder {
    /// Apply this TOML file (upsert) when the scheduler starts.
    pub fn schedules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// With a schedules file: remove stored schedules the file does not list.
    pub fn prune(mut self, prune: bool) -> Self {
        self.prune = prune;
        self
    }

    /// The leader lease (default 10 s, at least 300 ms). It is renewed every
    /// third of it; a standby takes over at most this long after the leader dies.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// With `false`, run without the leader lease: every such scheduler
    /// enqueues. Ticks still go out at most once (the watermark sees to it);
    /// this exists to prove that, and costs Redis work per extra scheduler.
    pub fn leader_election(mut self, on: bool) -> Self {
        self.leader_election = on;
        self
    }

    /// The local wall clock (only compared with Redis time to report skew).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The scheduler's id (default `host:pid:random`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How often stored definitions are checked for changes (default 1 s).
    pub fn reload_interval(mut self, every: Duration) -> Self {
        self.reload_interval = every;
        self
    }

    /// Send a [`TickEvent`] for every handled tick.
    pub fn events(mut self, sender: mpsc::UnboundedSender<TickEvent>) -> Self {
        self.events = Some(sender);
        self
    }

    /// Check the settings (and the schedules file, if any) and connect.
    pub async fn build(self) -> Result<Scheduler> {
        quern_common::names::validate_prefix(&self.config.prefix)?;
        if self.lease < Duration::from_millis(300) {
            return Err(Error::Queue(quern_common::Error::InvalidOptions(format!(
                "scheduler lease must be at least 300ms, got {:?}",
                self.lease
            ))));
        }
        if let Some(path) = &self.file {
            crate::file::load_schedules_file(path)?;
        }
        let conn = self.config.connect().await?;
        let id = self.id.clone().unwrap_or_else(instance_id);
        let (shutdown, stop_rx) = ShutdownHandle::new();
        Ok(Scheduler {
            lease: LeaderLease::new(leader_key(&self.config.prefix), &id, self.lease),
            store: Schedules::with_connection(conn.clone(), &self.config.prefix)?,
            conn,
            id,
            settings: self,
            leader: Arc::new(AtomicBool::new(false)),
            skew_ms: Arc::new(AtomicI64::new(0)),
            shutdown,
            stop_rx,
        })
    }
}

/// A scheduler. Run one or more anywhere; one is leader and enqueues.
///
/// ```no_run
/// # async fn demo() -> quern_scheduler::Result<()> {
/// let config = quern_common::RedisConfig::default();
/// let scheduler = quern_scheduler::Scheduler::builder(&config)
///     .schedules_file("schedules.toml")
///     .build()
///     .await?;
/// scheduler.run().await // until SIGINT or SIGTERM
/// # }
/// ```
pub struct Scheduler {
    settings: SchedulerBuilder,
    conn: SelfHealingConnection,
    store: Schedules,
    lease: LeaderLease,
    id: String,
    leader: Arc<AtomicBool>,
    skew_ms: Arc<AtomicI64>,
    shutdown: ShutdownHandle,
    stop_rx: watch::Receiver<bool>,
}

/// One schedule as the running scheduler sees it.
struct Entry {
    schedule: Schedule,
    stored: StoredSchedule,
    spec: CronSpec,
    /// The target queue's moves.
    scripts: QueueScripts,
    state_key: String,
    /// Last tick known handled (ms); `None` until read from the watermark.
    cursor: Option<i64>,
    next_due: Option<i64>,
}

/// One tick script call planned.
struct Planned {
    name: String,
    tick_ms: i64,
    missed: Option<u64>,
    /// Past its misfire grace, enqueued by the misfire policy.
    caught_up: bool,
}

impl Scheduler {
    /// Settings, starting from the defaults.
    pub fn builder(config: &RedisConfig) -> SchedulerBuilder {
        SchedulerBuilder {
            config: config.clone(),
            file: None,
            prune: false,
            lease: DEFAULT_LEASE,
            leader_election: true,
            clock: Arc::new(SystemClock),
            id: None,
            reload_interval: Duration::from_secs(1),
            events: None,
            events_max_len: DEFAULT_EVENTS_MAX_LEN,
        }
    }

    /// This scheduler's id (also stored in the lease).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A handle that stops the scheduler (it gives up the lease on the way out).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A flag that is true while this scheduler is the leader.
    pub fn leader_flag(&self) -> Arc<AtomicBool> {
        self.leader.clone()
    }

    /// The local clock minus Redis time, last measured (ms).
    pub fn clock_skew_ms(&self) -> Arc<AtomicI64> {
        self.skew_ms.clone()
    }

    /// Run until SIGINT or SIGTERM. Fails at once (an [`ErrorKind::Io`]
    /// error) when it cannot listen for them.
    ///
    /// [`ErrorKind::Io`]: crate::ErrorKind::Io
    pub async fn run(self) -> Result<()> {
        let mut signals = ShutdownSignals::install()?;
        self.run_until(async move {
            let signal = signals.recv().await;
            tracing::info!("{signal} received: stopping the scheduler");
        })
        .await
    }

    /// Run until `stop` completes (or the shutdown handle is used).
    pub async fn run_until<F: Future>(self, stop: F) -> Result<()> {
        let shutdown = self.shutdown.clone();
        let main = self.main_loop();
        tokio::pin!(main);
        tokio::pin!(stop);
        tokio::select! {
            r = &mut main => return r,
            _ = &mut stop => shutdown.shutdown(),
        }
        main.await
    }

    async fn main_loop(mut self) -> Result<()> {
        // Ride out a Redis that is not up yet; a bad schedules file is fatal.
        let mut stop = self.stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let backoff = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(5));
        let this = &self;
        if retry_until_ready("scheduler cannot start yet", backoff, stopped, || this.start_up())
            .await?
            .is_none()
        {
            return Ok(());
        }
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut version: Option<Option<i64>> = None;
        while !*self.stop_rx.borrow() {
            let wait = match self.pass(&mut entries, &mut version).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    Duration::from_millis(250)
                }
            };
            let mut stop = self.stop_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        self.leader.store(false, Ordering::SeqCst);
        if let Err(e) = self.lease.release(&mut self.conn.clone()).await {
            tracing::warn!(error = %e, "could not release the leader lease; it expires by itself");
        }
        Ok(())
    }

    /// Apply the schedules file, if any, and load the tick script.
    async fn start_up(&self) -> Result<()> {
        if let Some(path) = self.settings.file.clone() {
            let report = self.store.apply_file(&path, self.settings.prune).await?;
            tracing::info!(
                created = ?report.created, updated = ?report.updated, pruned = ?report.pruned,
                "applied schedules file {}", path.display()
            );
        }
        scripts::load(&mut self.conn.clone(), ScriptName::Tick).await?;
        Ok(())
    }

    /// One pass: lease, definitions, due ticks. Returns how long to wait.
    async fn pass(
        &mut self,
        entries: &mut HashMap<String, Entry>,
        version: &mut Option<Option<i64>>,
    ) -> Result<Duration> {
        let mut conn = self.conn.clone();
        let lease_len = self.settings.lease;
        if self.settings.leader_election {
            if self.lease.renew_in().is_zero()
                && let Err(e) = self.lease.refresh(&mut conn).await
            {
                if !self.lease.is_held() {
                    self.lose_leadership(entries);
                }
                return Err(e);
            }
            if !self.lease.is_held() {
                self.lose_leadership(entries);
                let left = self.lease.remaining(&mut conn).await?;
                return Ok((left + Duration::from_millis(5)).min(lease_len / 2));
            }
            if !self.leader.swap(true, Ordering::SeqCst) {
                tracing::info!(id = %self.id, "became the scheduler leader");
            }
        } else {
            self.leader.store(true, Ordering::SeqCst);
        }

        let (secs, micros, current): (i64, i64, Option<i64>) = {
            let ((s, us), v): ((i64, i64), Option<i64>) = redis::pipe()
                .cmd("TIME")
                .get(version_key(self.store.prefix()))
                .query_async(&mut conn)
                .await?;
            (s, us, v)
        };
        let now_ms = secs * 1000 + micros / 1000;
        let measured = Instant::now();
        self.skew_ms.store(self.settings.clock.now().timestamp_millis() - now_ms, Ordering::Relaxed);

        // Every write through `Schedules` bumps the version; nothing else needs a reload.
        if *version != Some(current) {
            self.reload(entries).await?;
            *version = Some(current);
        }
        self.init_cursors(entries).await?;

        let plan = plan_due(entries, now_ms);
        if !plan.is_empty() {
            self.execute(entries, &plan).await?;
        }
        // Only schedules just handled (or new) need their next due time again.
        for e in entries.values_mut() {
            let stale = e.next_due.is_none_or(|due| due <= now_ms);
            if let (true, Some(c)) = (stale, e.cursor) {
                e.next_due = e
                    .spec
                    .next_after(DateTime::from_timestamp_millis(c).unwrap_or_default())
                    .map(|t| t.timestamp_millis());
            }
        }

        let now_est = now_ms + measured.elapsed().as_millis() as i64;
        let next = entries.values().filter_map(|e| e.next_due).min();
        let mut wait = self.settings.reload_interval;
        if let Some(next) = next {
            // A tick still due now failed or was refused: retry soon, not in a hot loop.
            let until = if next <= now_ms { 50 } else { (next - now_est).max(0) as u64 };
            wait = wait.min(Duration::from_millis(until));
        }
        if self.settings.leader_election {
            wait = wait.min(self.lease.renew_in());
        }
        Ok(wait)
    }

    fn lose_leadership(&mut self, entries: &mut HashMap<String, Entry>) {
        if self.leader.swap(false, Ordering::SeqCst) {
            tracing::warn!(id = %self.id, "lost the scheduler lease; enqueuing stopped");
        }
        // A later leadership starts again from the watermarks in Redis.
        for e in entries.values_mut() {
            e.cursor = None;
            e.next_due = None;
        }
    }

    async fn reload(&mut self, entries: &mut HashMap<String, Entry>) -> Result<()> {
        let stored = self.store.load_stored().await?;
        let mut fresh = HashMap::with_capacity(stored.len());
        for (schedule, def) in stored {
            if !schedule.enabled {
                continue;
            }
            // Unchanged definitions keep their parsed form and their place.
            if let Some(old) = entries.remove(&schedule.name).filter(|old| old.stored == def) {
                fresh.insert(schedule.name.clone(), old);
                continue;
            }
            let spec = match schedule.validate() {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(schedule = %schedule.name, error = %e, "stored schedule is invalid; ignored");
                    continue;
                }
            };
            let keys = QueueKeys::new(self.store.prefix(), &schedule.queue)?;
            fresh.insert(
                schedule.name.clone(),
                Entry {
                    state_key: state_key(&keys, &schedule.name),
                    schedule,
                    stored: def,
                    spec,
                    scripts: QueueScripts::new(keys, self.settings.events_max_len),
                    cursor: None,
                    next_due: None,
                },
            );
        }
        *entries = fresh;
        Ok(())
    }

    /// Start schedules that have no cursor from their watermark in Redis.
    async fn init_cursors(&mut self, entries: &mut HashMap<String, Entry>) -> Result<()> {
        let names: Vec<String> =
            entries.iter().filter(|(_, e)| e.cursor.is_none()).map(|(n, _)| n.clone()).collect();
        for chunk in names.chunks(BATCH * 4) {
            let mut pipe = redis::pipe();
            for n in chunk {
                pipe.hget(&entries[n].state_key, "wm");
            }
            let marks: Vec<Option<i64>> = pipe.query_async(&mut self.conn.clone()).await?;
            for (n, wm) in chunk.iter().zip(marks) {
                let e = entries.get_mut(n).expect("present");
                let c = wm.unwrap_or(i64::MIN).max(e.stored.since_ms);
                e.cursor = Some(c);
            }
        }
        Ok(())
    }

    async fn execute(&mut self, entries: &mut HashMap<String, Entry>, plan: &[Planned]) -> Result<()> {
        for chunk in plan.chunks(BATCH) {
            if self.settings.leader_election && !self.lease.is_held() {
                // Not sure the lease is still ours: stop at once.
                self.lose_leadership(entries);
                return Ok(());
            }
            let job_ids: Vec<String> = chunk
                .iter()
                .map(|p| tick_job_id(&p.name, DateTime::from_timestamp_millis(p.tick_ms).unwrap_or_default()))
                .collect();
            let ticks: Vec<(Tick<'_>, &QueueScripts)> = chunk
                .iter()
                .zip(&job_ids)
                .map(|(p, job_id)| {
                    let e = &entries[&p.name];
                    let action = match p.missed {
                        Some(ticks) => TickAction::Miss { ticks },
                        None if !e.stored.chain.is_empty() => TickAction::EnqueueChain {
                            job_id,
                            queue: &e.schedule.queue,
                            links: &e.stored.chain,
                            options: &e.stored.opts,
                            priority: e.stored.prio,
                            skip_overlap: e.schedule.overlap == OverlapPolicy::Skip,
                        },
                        None => TickAction::Enqueue {
                            job_id,
                            name: &e.schedule.job_name,
                            payload: &e.schedule.payload,
                            options: &e.stored.opts,
                            priority: e.stored.prio,
                            delay_ms: e.stored.delay_ms,
                            skip_overlap: e.schedule.overlap == OverlapPolicy::Skip,
                        },
                    };
                    (Tick { state_key: &e.state_key, tick_ms: p.tick_ms, action }, &e.scripts)
                })
                .collect();
            let calls: Vec<ScriptCall> = ticks.iter().map(|(tick, on)| on.call(tick)).collect();
            let results = scripts::run_pipelined(&mut self.conn.clone(), &calls).await?;
            let replies: Vec<_> = ticks
                .iter()
                .zip(results)
                .map(|((tick, _), result)| result.and_then(|r| tick.parse(r)))
                .collect();
            drop(ticks);
            for (p, reply) in chunk.iter().zip(replies) {
                let e = entries.get_mut(&p.name).expect("planned from entries");
                let reply = match reply {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::warn!(schedule = %p.name, error = %err, "tick call failed; will retry");
                        continue;
                    }
                };
                let now = reply.now_ms;
                let outcome = match reply.status {
                    TickStatus::Added => TickOutcome::Enqueued,
                    TickStatus::Overlap => TickOutcome::SkippedOverlap,
                    TickStatus::Exists => TickOutcome::AlreadyExists,
                    TickStatus::Missed => TickOutcome::Missed { ticks: p.missed.unwrap_or(0) },
                    TickStatus::Stale => {
                        let wm: i64 = reply.detail.parse().unwrap_or(p.tick_ms);
                        e.cursor = Some(e.cursor.unwrap_or(i64::MIN).max(wm));
                        TickOutcome::AlreadyHandled
                    }
                    TickStatus::Early => continue,
                    other => {
                        return Err(Error::Queue(quern_common::Error::Protocol(format!(
                            "tick returned status {other:?}"
                        ))));
                    }
                };
                e.cursor = Some(e.cursor.unwrap_or(i64::MIN).max(p.tick_ms));
                if outcome == TickOutcome::Enqueued {
                    tracing::debug!(schedule = %p.name, tick = p.tick_ms, "enqueued");
                }
                if let Some(tx) = &self.settings.events {
                    let tick = DateTime::from_timestamp_millis(p.tick_ms).unwrap_or_default();
                    let _ = tx.send(TickEvent {
                        schedule: p.name.clone(),
                        job_id: tick_job_id(&p.name, tick),
                        tick,
                        outcome,
                        lateness: Duration::from_millis((now - p.tick_ms).max(0) as u64),
                        caught_up: p.caught_up,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The tick calls due at `now_ms`, per schedule in tick order: first one
/// `miss` record for ticks the misfire policy drops, then the ticks to enqueue.
fn plan_due(entries: &HashMap<String, Entry>, now_ms: i64) -> Vec<Planned> {
    let mut plan = Vec::new();
    let Some(now) = DateTime::from_timestamp_millis(now_ms) else { return plan };
    for (name, e) in entries {
        let (Some(cursor), Some(due)) = (e.cursor, e.next_due.or(Some(i64::MIN))) else { continue };
        if due > now_ms {
            continue;
        }
        let from = DateTime::from_timestamp_millis(cursor).unwrap_or_default();
        let cutoff_ms = now_ms - e.schedule.misfire_grace.as_millis() as i64;
        let cutoff = DateTime::from_timestamp_millis(cutoff_ms).unwrap_or(now);
        let mut recent_from = from;
        if cutoff > from {
            let missed = e.spec.fire_times_between(from, cutoff, MISSED_COUNT_CAP).len();
            if missed > 0 {
                let keep = match e.schedule.misfire {
                    MisfirePolicy::Skip => 0,
                    MisfirePolicy::RunOnce => 1,
                    MisfirePolicy::CatchUp { max } => max as usize,
                }
                .min(missed);
                let latest = e.spec.latest_between(from, cutoff, keep + 1);
                if missed > keep {
                    // latest[keep] is the newest dropped tick.
                    let dropped = latest.get(keep).copied().unwrap_or(cutoff);
                    plan.push(Planned {
                        name: name.clone(),
                        tick_ms: dropped.timestamp_millis(),
                        missed: Some((missed - keep) as u64),
                        caught_up: false,
                    });
                }
                for t in latest.iter().take(keep).rev() {
                    plan.push(Planned {
                        name: name.clone(),
                        tick_ms: t.timestamp_millis(),
                        missed: None,
                        caught_up: true,
                    });
                }
            }
            recent_from = cutoff;
        }
        for t in e.spec.fire_times_between(recent_from, now, DUE_CAP) {
            plan.push(Planned {
                name: name.clone(),
                tick_ms: t.timestamp_millis(),
                missed: None,
                caught_up: false,
            });
        }
    }
    plan
}

/// Run a scheduler with `config` until SIGINT/SIGTERM, applying `file` first
/// (and pruning stored schedules it does not list, with `prune`). This is
/// what `quern scheduler --schedules FILE` does.
pub async fn run(config: &RedisConfig, file: Option<PathBuf>, prune: bool) -> Result<()> {
    let mut builder = Scheduler::builder(config).prune(prune);
    if let Some(f) = file {
        builder = builder.schedules_file(f);
    }
    builder.build().await?.run().await
}
