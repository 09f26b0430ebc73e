//! Blocking for new work on a connection of its own.
//!
//! When its last fetch came back short, the worker arms the waker, which blocks
//! on the queue's wake-up list (`BLPOP`) until a producer pushes a marker or
//! the idle block ends, then reports once. The idle block bounds how long a lost
//! marker can delay work, and the connection's response timeout (block plus
//! the usual timeout) bounds how long a dead socket can go unnoticed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::runtime::Shared;

pub(crate) struct Waker {
    arm: mpsc::Sender<()>,
    woke: mpsc::Receiver<()>,
    task: JoinHandle<()>,
}

impl Waker {
    pub(crate) fn spawn(shared: Arc<Shared>) -> Self {
        let (arm, arm_rx) = mpsc::channel(1);
        let (woke_tx, woke) = mpsc::channel(1);
        let task = tokio::spawn(block_loop(shared, arm_rx, woke_tx));
        Self { arm, woke, task }
    }

    /// Start one blocking wait, unless one is under way.
    pub(crate) fn arm(&self) {
        let _ = self.arm.try_send(());
    }

    /// Wait for the armed wait to end (marker or idle timeout).
    pub(crate) async fn woken(&mut self) {
        if self.woke.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
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

async fn block_loop(shared: Arc<Shared>, mut arm: mpsc::Receiver<()>, woke: mpsc::Sender<()>) {
    let block = shared.settings.idle_block;
    let mut conn: Option<MultiplexedConnection> = None;
    let mut retry = Duration::from_millis(100);
    while arm.recv().await.is_some() {
        if conn.is_none() {
            match shared.config.connect_dedicated(block).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(worker = %shared.id, error = %e, "cannot open the blocking connection; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    let _ = woke.try_send(());
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let reply: redis::RedisResult<Option<(String, String)>> =
            redis::cmd("BLPOP").arg(shared.keys.wake()).arg(block.as_secs_f64()).query_async(c).await;
        match reply {
            Ok(marker) => {
                retry = Duration::from_millis(100);
                debug!(worker = %shared.id, woken = marker.is_some(), "blocking wait ended");
            }
            Err(e) => {
                // A dead or timed-out socket: drop it and reconnect next time.
                warn!(worker = %shared.id, error = %e, "blocking wait failed; reconnecting");
                conn = None;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
        let _ = woke.try_send(());
    }
}
