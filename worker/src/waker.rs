//! Blocking for new work on a connection of its own.
//!
//! When its last fetch came back short, the worker is parked: that fetch
//! registered it (see `scripts/fetch.lua`), and the worker now blocks with
//! `BLPOP` on two lists: the queue's hand-off list and its wake-up list. A
//! producer adding one job to a queue with nothing waiting leases the job to
//! the parked workers and puts it on the hand-off list (`scripts/add.lua`), so
//! the `BLPOP` reply carries the job itself: one script call between the add
//! and the handler, no fetch. Other work (a batch, a retry, a due delayed job)
//! pushes a marker on the wake-up list, and the worker fetches. The idle block
//! bounds how long a lost marker can delay work (the parking lapses soon after
//! it), and the connection's response timeout (block plus the usual timeout)
//! bounds how long a dead socket can go unnoticed.
//!
//! A handed-over job is leased for a short time only (twice the response
//! timeout, at most the worker's lease) until the worker that takes it claims
//! it and extends the lease: if the reply is lost (the connection went silent
//! while blocked) or the parked worker died, the reaper returns the job to
//! waiting within seconds, and without counting a stall.
//!
//! When a delayed job falls due, the worker asks Redis to unblock the wait
//! (`CLIENT UNBLOCK`) and fetches, which promotes it. To stop, it does the
//! same, hands back a job the wait took, if any, and unparks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use quern_common::moves::LeasedJob;
use quern_common::process::ready_backoff;
use quern_common::{RedisConfig, Result, SelfHealingConnection};
use redis::aio::MultiplexedConnection;
use tracing::{debug, warn};

/// What one armed wait ended with.
pub(crate) enum Woken {
    /// A job handed over by an add, leased to this worker until claimed.
    Job(LeasedJob),
    /// A wake-up marker: there is work to fetch.
    Marker,
    /// The idle block ran out, the wait was unblocked, or it failed.
    Nothing,
}

type WaitFuture = Pin<Box<dyn Future<Output = WaitEnd> + Send>>;

/// How a blocking wait ended, and the connection to reuse for the next one.
struct WaitEnd {
    conn: Option<MultiplexedConnection>,
    failed: bool,
    woken: Woken,
}

/// What a blocking wait needs: where to connect, the two lists, how long
/// one wait blocks at most, and who waits (for the logs).
pub(crate) struct WaitSpec {
    pub(crate) config: RedisConfig,
    /// The queue's hand-off list.
    pub(crate) handoff: String,
    /// The queue's wake-up list.
    pub(crate) wake: String,
    pub(crate) idle_block: Duration,
    pub(crate) worker: String,
}

/// The blocking wait is a future the fetch loop polls itself (not a task of
/// its own), so the reply wakes the fetch loop directly: one task switch less
/// between a job's add and its handler.
pub(crate) struct Waker {
    spec: Arc<WaitSpec>,
    conn: Option<MultiplexedConnection>,
    wait: Option<WaitFuture>,
    /// Slots promised to the armed wait until it ends (a hand-off fills one).
    want: usize,
    /// Waits that failed in a row; a failed wait sleeps before it ends, by
    /// the process-wide ready backoff (100 ms doubling to 5 s).
    failures: u32,
    /// Redis client id of the blocking connection (-1: not connected).
    client_id: Arc<AtomicI64>,
}

impl Waker {
    pub(crate) fn new(spec: WaitSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            conn: None,
            wait: None,
            want: 0,
            failures: 0,
            client_id: Arc::new(AtomicI64::new(-1)),
        }
    }

    /// Start one blocking wait that may take a handed-over job into one of
    /// `want` free slots (0: it only listens for markers, as on a paused
    /// queue, which hands nothing over), unless one is armed already.
    pub(crate) fn arm(&mut self, want: usize) {
        if self.wait.is_some() {
            return;
        }
        let retry = ready_backoff().delay_for(self.failures + 1);
        let wait = blocking_wait(self.spec.clone(), self.conn.take(), retry, self.client_id.clone());
        self.want = want;
        self.wait = Some(Box::pin(wait));
    }

    /// The slots promised to the armed wait, if one is armed.
    pub(crate) fn armed(&self) -> Option<usize> {
        self.wait.is_some().then_some(self.want)
    }

    /// Wait for the armed wait to end (hand-off, marker, idle timeout or
    /// unblock); gives what it took, and releases the slots promised to it.
    /// Cancel-safe: the wait goes on if this future is dropped.
    pub(crate) async fn woken(&mut self) -> Woken {
        let Some(wait) = self.wait.as_mut() else {
            return std::future::pending().await;
        };
        let end = wait.await;
        self.wait = None;
        self.conn = end.conn;
        self.failures = if end.failed { self.failures.saturating_add(1) } else { 0 };
        end.woken
    }

    /// The Redis client id of the blocking connection, once connected.
    pub(crate) fn client_id(&self) -> Option<i64> {
        let id = self.client_id.load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }

    /// Drop the wait under way, if any, with its connection.
    pub(crate) fn stop(&mut self) {
        self.wait = None;
        self.conn = None;
    }
}

/// How a worker registers as parked when a fetch comes back short.
#[derive(Debug, Clone)]
pub(crate) struct ParkingSpec {
    /// `<hand-off lease ms> <worker id>`: the lease of a job handed over by
    /// an add, until the worker claims it, is twice the response timeout
    /// (at least 200 ms, at most the worker's lease).
    pub(crate) member: String,
    /// How long a parking holds: past the end of the blocking wait that follows it.
    pub(crate) ttl: Duration,
}

impl ParkingSpec {
    pub(crate) fn new(
        worker: &str,
        lease: Duration,
        idle_block: Duration,
        response_timeout: Duration,
    ) -> Self {
        let handoff_lease = (response_timeout * 2).max(Duration::from_millis(200)).min(lease);
        Self { member: format!("{} {worker}", handoff_lease.as_millis()), ttl: idle_block + response_timeout }
    }
}

impl Waker {
    /// Ask Redis to end the armed wait now, through `conn` (to the node
    /// that serves the queue, on a cluster). Returns whether a blocked wait
    /// was found; a wait whose `BLPOP` has not reached Redis yet is not, so
    /// callers repeat this until the wait ends.
    pub(crate) fn unblock(&self, conn: SelfHealingConnection) -> impl Future<Output = bool> + Send + 'static {
        let (id, key) = (self.client_id(), self.spec.handoff.clone());
        async move {
            let Some(id) = id else {
                return false;
            };
            let mut cmd = redis::cmd("CLIENT");
            cmd.arg("UNBLOCK").arg(id);
            matches!(conn.send_to_node_of(&key, cmd).await, Ok(redis::Value::Int(1)))
        }
    }
}

async fn connect(spec: &WaitSpec, client_id: &AtomicI64) -> Result<MultiplexedConnection> {
    let mut conn = spec.config.connect_dedicated(&spec.handoff, spec.idle_block).await?;
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
    client_id.store(id, Ordering::Relaxed);
    Ok(conn)
}

async fn blocking_wait(
    spec: Arc<WaitSpec>,
    conn: Option<MultiplexedConnection>,
    retry: Duration,
    client_id: Arc<AtomicI64>,
) -> WaitEnd {
    let mut conn = match conn {
        Some(c) => c,
        None => match connect(&spec, &client_id).await {
            Ok(c) => c,
            Err(e) => {
                warn!(worker = %spec.worker, error = %e, "cannot open the blocking connection; retrying");
                tokio::time::sleep(retry).await;
                return WaitEnd { conn: None, failed: true, woken: Woken::Nothing };
            }
        },
    };
    let reply: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
        .arg(&spec.handoff)
        .arg(&spec.wake)
        .arg(spec.idle_block.as_secs_f64())
        .query_async(&mut conn)
        .await;
    match reply {
        Ok(Some((list, item))) if list == spec.handoff => match LeasedJob::from_handoff(&item) {
            Ok(job) => {
                debug!(worker = %spec.worker, job = %job.id, "took a handed-over job");
                WaitEnd { conn: Some(conn), failed: false, woken: Woken::Job(job) }
            }
            Err(e) => {
                // Not ours to run: its lease runs out and the reaper returns it.
                warn!(worker = %spec.worker, error = %e, "skipping an unreadable hand-off record");
                WaitEnd { conn: Some(conn), failed: false, woken: Woken::Marker }
            }
        },
        Ok(Some(_)) => WaitEnd { conn: Some(conn), failed: false, woken: Woken::Marker },
        Ok(None) => WaitEnd { conn: Some(conn), failed: false, woken: Woken::Nothing },
        Err(e) => {
            // A dead or timed-out socket: drop it and reconnect next time. A job
            // handed over meanwhile is returned by the reaper once its short
            // lease ends.
            warn!(worker = %spec.worker, error = %e, "blocking wait failed; reconnecting");
            client_id.store(-1, Ordering::Relaxed);
            tokio::time::sleep(retry).await;
            WaitEnd { conn: None, failed: true, woken: Woken::Nothing }
        }
    }
}
