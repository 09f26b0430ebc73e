//! Blocking for new work on a connection of its own.
//!
//! When its last fetch came back short, the worker arms the waker with the
//! number of free slots. The waker sends `BLPOP` on the queue's wake-up list
//! and, in the same pipeline, a fetch for those slots: Redis holds the fetch
//! behind the blocked `BLPOP` and runs it the moment a producer's marker
//! unblocks it, so a job added to an idle queue reaches a handler after one
//! round trip instead of two. The idle block bounds how long a lost marker can
//! delay work, and the connection's response timeout (block plus the usual
//! timeout) bounds how long a dead socket can go unnoticed.
//!
//! That fetch leases its jobs for a short time only (twice the response
//! timeout, at most the worker's lease), and the worker extends them to the
//! full lease once their reply arrives: if the reply is lost (the connection
//! went silent while blocked), the reaper recovers those jobs within seconds,
//! not after a whole lease.
//!
//! When a delayed job falls due, the worker asks Redis to unblock the wait
//! (`CLIENT UNBLOCK`), so the queued fetch runs at once and promotes it. To
//! stop, it does the same, and hands the jobs that fetch leased, if any, back
//! to the queue: nothing is left leased to nobody.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use quern_common::Result;
use quern_common::scripts::{self, FetchReply, ScriptName};
use redis::aio::MultiplexedConnection;
use tracing::{debug, warn};

use crate::runtime::{PROMOTE_LIMIT, Shared};

/// What one armed wait ended with: the pipelined fetch's reply, or `None` when
/// no fetch was sent or it failed (the worker then fetches on its own).
pub(crate) type Woken = Option<FetchReply>;

type WaitFuture = Pin<Box<dyn Future<Output = WaitEnd> + Send>>;

/// How a blocking wait ended, and the connection to reuse for the next one.
struct WaitEnd {
    conn: Option<MultiplexedConnection>,
    failed: bool,
    woken: Woken,
}

/// The blocking wait is a future the fetch loop polls itself (not a task of
/// its own), so the reply wakes the fetch loop directly: one task switch less
/// between a job's add and its handler.
pub(crate) struct Waker {
    shared: Arc<Shared>,
    conn: Option<MultiplexedConnection>,
    wait: Option<WaitFuture>,
    /// Slots the armed wait's fetch may fill (promised to it until it ends).
    want: usize,
    retry: Duration,
    /// Redis client id of the blocking connection (-1: not connected).
    client_id: Arc<AtomicI64>,
}

impl Waker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            conn: None,
            wait: None,
            want: 0,
            retry: Duration::from_millis(100),
            client_id: Arc::new(AtomicI64::new(-1)),
        }
    }

    /// Start one blocking wait that fetches up to `want` jobs when it ends
    /// (0: it only listens), unless one is armed already.
    pub(crate) fn arm(&mut self, want: usize) {
        if self.wait.is_some() {
            return;
        }
        let wait =
            blocking_wait(self.shared.clone(), self.conn.take(), want, self.retry, self.client_id.clone());
        self.want = want;
        self.wait = Some(Box::pin(wait));
    }

    /// The slots promised to the armed wait, if one is armed.
    pub(crate) fn armed(&self) -> Option<usize> {
        self.wait.is_some().then_some(self.want)
    }

    /// Wait for the armed wait to end (marker, idle timeout or unblock); gives
    /// the slots it had been promised and what its fetch leased.
    /// Cancel-safe: the wait goes on if this future is dropped.
    pub(crate) async fn woken(&mut self) -> (usize, Woken) {
        let Some(wait) = self.wait.as_mut() else {
            return std::future::pending().await;
        };
        let end = wait.await;
        self.wait = None;
        self.conn = end.conn;
        self.retry = if end.failed {
            (self.retry * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_millis(100)
        };
        (self.want, end.woken)
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

/// The lease of jobs fetched by a wake-up, until the worker extends it.
pub(crate) fn wake_lease(shared: &Shared) -> Duration {
    (shared.config.response_timeout * 2).max(Duration::from_millis(200)).min(shared.settings.lease)
}

/// Ask Redis to end the blocking wait of client `id` now (the pipelined
/// fetch then runs). Returns whether a blocked wait was found; a wait whose
/// `BLPOP` has not reached Redis yet is not, so callers repeat this until the
/// wait ends.
pub(crate) async fn unblock(conn: &mut impl redis::aio::ConnectionLike, id: i64) -> bool {
    let n: redis::RedisResult<i64> = redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async(conn).await;
    n.unwrap_or(0) == 1
}

async fn connect(shared: &Shared, block: Duration, client_id: &AtomicI64) -> Result<MultiplexedConnection> {
    let mut conn = shared.config.connect_dedicated(block).await?;
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
    client_id.store(id, Ordering::Relaxed);
    Ok(conn)
}

async fn blocking_wait(
    shared: Arc<Shared>,
    conn: Option<MultiplexedConnection>,
    want: usize,
    retry: Duration,
    client_id: Arc<AtomicI64>,
) -> WaitEnd {
    let block = shared.settings.idle_block;
    let mut conn = match conn {
        Some(c) => c,
        None => match connect(&shared, block, &client_id).await {
            Ok(c) => c,
            Err(e) => {
                warn!(worker = %shared.id, error = %e, "cannot open the blocking connection; retrying");
                tokio::time::sleep(retry).await;
                return WaitEnd { conn: None, failed: true, woken: None };
            }
        },
    };
    let mut pipe = redis::pipe();
    pipe.cmd("BLPOP").arg(shared.keys.wake()).arg(block.as_secs_f64());
    if want > 0 {
        let mut fetch = shared.call(ScriptName::Fetch);
        fetch.arg(want).arg(wake_lease(&shared).as_millis() as u64).arg(&shared.id).arg(PROMOTE_LIMIT);
        pipe.add_command(fetch.command().clone());
    }
    let replies: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
        pipe.ignore_errors().query_async(&mut conn).await;
    match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            let marker = replies.next();
            debug!(worker = %shared.id, woken = matches!(marker, Some(Ok(redis::Value::Array(_)))), "blocking wait ended");
            // A failed fetch (say NOSCRIPT after a Redis restart) leased
            // nothing: the worker's own fetch loads the script and retries.
            let woken = replies.next().and_then(|r| r.ok()).and_then(|v| scripts::parse_fetch(v).ok());
            WaitEnd { conn: Some(conn), failed: false, woken }
        }
        Err(e) => {
            // A dead or timed-out socket: drop it and reconnect next time. Jobs
            // the fetch may have leased are reaped once their short lease ends.
            warn!(worker = %shared.id, error = %e, "blocking wait failed; reconnecting");
            client_id.store(-1, Ordering::Relaxed);
            tokio::time::sleep(retry).await;
            WaitEnd { conn: None, failed: true, woken: None }
        }
    }
}
