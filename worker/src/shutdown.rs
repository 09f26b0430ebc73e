//! Asking a running worker to stop.

use tokio::sync::watch;

/// Asks a [`Worker`](crate::Worker) to shut down gracefully. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: watch::Sender<bool>,
}

impl ShutdownHandle {
    pub(crate) fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, rx)
    }

    /// Stop fetching, let running jobs finish within the grace period, hand the
    /// rest back, then let `run` return.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        *self.tx.borrow()
    }
}
