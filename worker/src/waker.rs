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
//! To stop, the worker asks Redis to unblock the wait (`CLIENT UNBLOCK`), so
//! the queued fetch runs at once and its jobs, if any, come back to the worker,
//! which hands them back to the queue: nothing is left leased to nobody.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use quern_common::Result;
use quern_common::scripts::{self, FetchReply, ScriptName};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::runtime::{PROMOTE_LIMIT, Shared};

/// What one armed wait ended with: the pipelined fetch's reply, or `None` when
/// no fetch was sent or it failed (the worker then fetches on its own).
pub(crate) type Woken = Option<FetchReply>;

pub(crate) struct Waker {
    arm: mpsc::Sender<usize>,
    woke: mpsc::Receiver<Woken>,
    task: JoinHandle<()>,
    /// Redis client id of the blocking connection (-1: not connected).
    client_id: Arc<AtomicI64>,
}

impl Waker {
    pub(crate) fn spawn(shared: Arc<Shared>) -> Self {
        let (arm, arm_rx) = mpsc::channel(1);
        let (woke_tx, woke) = mpsc::channel(1);
        let client_id = Arc::new(AtomicI64::new(-1));
        let task = tokio::spawn(block_loop(shared, arm_rx, woke_tx, client_id.clone()));
        Self { arm, woke, task, client_id }
    }

    /// Start one blocking wait that fetches up to `want` jobs when it ends.
    /// The caller arms at most one wait at a time.
    pub(crate) fn arm(&self, want: usize) {
        let _ = self.arm.try_send(want);
    }

    /// Wait for the armed wait to end (marker, idle timeout or unblock).
    pub(crate) async fn woken(&mut self) -> Woken {
        match self.woke.recv().await {
            Some(woken) => woken,
            None => std::future::pending().await,
        }
    }

    /// Ask Redis to end the blocking wait now (the pipelined fetch then runs).
    /// Returns whether a blocked wait was found; a wait whose `BLPOP` has not
    /// reached Redis yet is not, so callers repeat this until the wait ends.
    pub(crate) async fn unblock(&self, conn: &mut impl redis::aio::ConnectionLike) -> bool {
        let id = self.client_id.load(Ordering::Relaxed);
        if id < 0 {
            return false;
        }
        let n: redis::RedisResult<i64> = redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async(conn).await;
        n.unwrap_or(0) == 1
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The lease of jobs fetched by a wake-up, until the worker extends it.
pub(crate) fn wake_lease(shared: &Shared) -> Duration {
    (shared.config.response_timeout * 2).max(Duration::from_millis(200)).min(shared.settings.lease)
}

async fn connect(shared: &Shared, block: Duration, client_id: &AtomicI64) -> Result<MultiplexedConnection> {
    let mut conn = shared.config.connect_dedicated(block).await?;
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
    client_id.store(id, Ordering::Relaxed);
    Ok(conn)
}

async fn block_loop(
    shared: Arc<Shared>,
    mut arm: mpsc::Receiver<usize>,
    woke: mpsc::Sender<Woken>,
    client_id: Arc<AtomicI64>,
) {
    let block = shared.settings.idle_block;
    let mut conn: Option<MultiplexedConnection> = None;
    let mut retry = Duration::from_millis(100);
    while let Some(want) = arm.recv().await {
        if conn.is_none() {
            match connect(&shared, block, &client_id).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(worker = %shared.id, error = %e, "cannot open the blocking connection; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    let _ = woke.try_send(None);
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let mut pipe = redis::pipe();
        pipe.cmd("BLPOP").arg(shared.keys.wake()).arg(block.as_secs_f64());
        if want > 0 {
            let mut fetch = shared.call(ScriptName::Fetch);
            fetch.arg(want).arg(wake_lease(&shared).as_millis() as u64).arg(&shared.id).arg(PROMOTE_LIMIT);
            pipe.add_command(fetch.command().clone());
        }
        let replies: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
            pipe.ignore_errors().query_async(c).await;
        let woken = match replies {
            Ok(replies) => {
                retry = Duration::from_millis(100);
                let mut replies = replies.into_iter();
                let marker = replies.next();
                debug!(worker = %shared.id, woken = matches!(marker, Some(Ok(redis::Value::Array(_)))), "blocking wait ended");
                // A failed fetch (say NOSCRIPT after a Redis restart) leased
                // nothing: the worker's own fetch loads the script and retries.
                replies.next().and_then(|r| r.ok()).and_then(|v| scripts::parse_fetch(v).ok())
            }
            Err(e) => {
                // A dead or timed-out socket: drop it and reconnect next time.
                // Any jobs the fetch may have leased are recovered by the reaper.
                warn!(worker = %shared.id, error = %e, "blocking wait failed; reconnecting");
                conn = None;
                client_id.store(-1, Ordering::Relaxed);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                None
            }
        };
        let _ = woke.try_send(woken);
    }
}
