//! What a long-running quern process needs besides queues, written once for
//! the worker, the scheduler and the CLI: stopping on SIGTERM/SIGINT
//! ([`ShutdownSignals`], [`shutdown_signal`]), asking a running component to
//! stop ([`ShutdownHandle`]), naming the process ([`instance_id`]) and riding
//! out a Redis that is not up yet ([`retry_until_ready`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::{Backoff, Error, ErrorKind, Result};

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (what `kill`, systemd and container runtimes send).
    Terminate,
    /// SIGINT (Ctrl-C in a terminal).
    Interrupt,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        })
    }
}

/// Listeners for SIGTERM and SIGINT, installed at once so that a signal
/// arriving before the first [`ShutdownSignals::recv`] is not lost (and no
/// longer ends the process the default way).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Install the listeners. Fails with an [`ErrorKind::Io`] error when the
    /// operating system refuses, or outside a Tokio runtime with its I/O
    /// driver enabled.
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .map_err(|e| Error::Io { what: format!("listen for {name}"), reason: e.to_string() })
            };
            Ok(Self {
                term: listen(SignalKind::terminate(), "SIGTERM")?,
                int: listen(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Wait for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Terminate,
                _ = self.int.recv() => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Complete on the first SIGTERM or SIGINT, with which one it was; an
/// [`ErrorKind::Io`] error when the listeners cannot be installed. The
/// listeners are installed when the future is first polled; use
/// [`ShutdownSignals::install`] to install them earlier.
pub async fn shutdown_signal() -> Result<Signal> {
    Ok(ShutdownSignals::install()?.recv().await)
}

/// Asks a running component (a worker, a scheduler, a CLI command) to stop
/// gracefully. Cheap to clone; every clone stops the same component.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: watch::Sender<bool>,
}

impl ShutdownHandle {
    /// A new handle, and the receiver the component watches: it turns `true`
    /// once [`ShutdownHandle::shutdown`] is called.
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, rx)
    }

    /// Another receiver of the shutdown flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Ask for the shutdown: the component stops taking new work, finishes
    /// (or hands back) what it has, and its `run` returns.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        *self.tx.borrow()
    }

    /// Complete once shutdown is asked for (at once if it was already).
    pub async fn requested(&self) {
        let mut rx = self.tx.subscribe();
        // The sender is `self`, alive for as long as this future.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A new id for this process's worker or scheduler: `host:pid:random` (the
/// random part is 8 hex digits). Unique per call, so nothing depends on stable
/// names and a restarted process never inherits another one's jobs or lease.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{host}:{}:{suffix:08x}", std::process::id())
}

/// An error that says whether trying again later may help.
pub trait RetryableError: fmt::Display {
    /// True when the same call may succeed later.
    fn is_retryable(&self) -> bool;
}

impl RetryableError for Error {
    fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}

/// The delays [`retry_until_ready`] is usually given: from 100 ms, doubling up
/// to 5 s, with 25 % jitter.
pub fn ready_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5))
}

/// Run `attempt` until it succeeds, retrying while its error is retryable
/// (Redis not reachable yet, still loading, ...) after the delays of
/// `backoff` (the first failure waits `backoff.delay_for(1)`), and logging
/// each failure as a warning that starts with `what`.
///
/// Returns the first success, the first error that is not retryable, or
/// `Ok(None)` when `stop` completes while waiting to retry (an attempt under
/// way is not interrupted).
pub async fn retry_until_ready<T, E, F, Fut>(
    what: &str,
    backoff: Backoff,
    stop: impl Future<Output = ()>,
    mut attempt: F,
) -> std::result::Result<Option<T>, E>
where
    E: RetryableError,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    tokio::pin!(stop);
    let mut failures: u32 = 0;
    loop {
        match attempt().await {
            Ok(done) => return Ok(Some(done)),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = backoff.delay_for(failures);
                tracing::warn!("{what}: {e}; retrying in {delay:.1?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut stop => return Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;

    #[test]
    fn instance_ids_are_unique_and_name_the_process() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
        let random = a.rsplit(':').next().unwrap();
        assert!(random.len() == 8 && random.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[tokio::test]
    async fn shutdown_handle_reaches_every_receiver() {
        let (handle, mut rx) = ShutdownHandle::new();
        let mut other = handle.subscribe();
        assert!(!handle.is_shutting_down());
        let clone = handle.clone();
        let waiting = tokio::spawn(async move { clone.requested().await });
        handle.shutdown();
        assert!(handle.is_shutting_down());
        rx.wait_for(|s| *s).await.unwrap();
        other.wait_for(|s| *s).await.unwrap();
        waiting.await.unwrap();
    }

    fn no_jitter(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff::Exponential {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
            jitter: 0.0,
        }
    }

    #[tokio::test]
    async fn retries_a_retryable_error_with_growing_delays() {
        let calls = Mutex::new(Vec::new());
        let result = retry_until_ready("test", no_jitter(5, 20), std::future::pending(), || {
            calls.lock().unwrap().push(Instant::now());
            let n = calls.lock().unwrap().len();
            async move { if n < 5 { Err(Error::Timeout(Duration::from_millis(1))) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), Some(5));
        let calls = calls.into_inner().unwrap();
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, want) in gaps.iter().zip([5, 10, 20, 20]) {
            assert!(*gap >= Duration::from_millis(want), "{gaps:?}");
        }
    }

    #[tokio::test]
    async fn stops_on_an_error_that_is_not_retryable() {
        let calls = AtomicU32::new(0);
        let result: std::result::Result<Option<()>, Error> =
            retry_until_ready("test", no_jitter(1, 1), std::future::pending(), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::InvalidOptions("bad".into())) }
            })
            .await;
        assert!(matches!(result, Err(Error::InvalidOptions(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stop_ends_the_wait() {
        let calls = AtomicU32::new(0);
        let result: std::result::Result<Option<()>, Error> =
            retry_until_ready("test", no_jitter(60_000, 60_000), async {}, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::Timeout(Duration::from_millis(1))) }
            })
            .await;
        assert!(matches!(result, Ok(None)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
