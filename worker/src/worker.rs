//! The worker: assembles its parts (the queue client, the lease table, the
//! fetch loop, the waker and the background parts) and runs them until
//! shut down.

use std::future::Future;
use std::sync::Arc;

use quern_common::keys::QueueKeys;
use quern_common::process::{ShutdownHandle, ShutdownSignals, instance_id};
use quern_common::{Error, QueueScripts, RedisConfig, Result, SelfHealingConnection};
use tokio::sync::watch;
use tracing::info;

use crate::builder::WorkerBuilder;
use crate::client::QueueClient;
use crate::fetch_loop::{FetchLoop, Parts};
use crate::handler::Handlers;
use crate::leases::LeaseTable;
use crate::maintenance::{Presence, Reaper, Renewer};
use crate::settings::Settings;
use crate::waker::{ParkingSpec, WaitSpec, Waker};

/// A worker serving one queue. Build it with [`Worker::builder`], then call
/// [`Worker::run`] or [`Worker::run_until`].
pub struct Worker {
    id: String,
    queue: String,
    shutdown: ShutdownHandle,
    fetch_loop: FetchLoop,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).field("queue", &self.queue).finish()
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
        handlers: Handlers,
    ) -> Self {
        let (shutdown, shutdown_rx): (ShutdownHandle, watch::Receiver<bool>) = ShutdownHandle::new();
        let id = instance_id();
        let queue = keys.name().to_owned();
        let waker = Waker::new(WaitSpec {
            config: config.clone(),
            handoff: keys.handoff().to_owned(),
            wake: keys.wake().to_owned(),
            idle_block: settings.idle_block,
            worker: id.clone(),
        });
        let parking = ParkingSpec::new(&id, settings.lease, settings.idle_block, config.response_timeout);
        let scripts = QueueScripts::new(keys, settings.events_max_len);
        let client = QueueClient::new(conn, scripts, id.clone(), settings.replica_acks);
        let leases = Arc::new(LeaseTable::default());
        let presence = Presence {
            concurrency: settings.concurrency,
            leases: leases.clone(),
            // Three reaper passes, and the time a pass may take.
            ttl: settings.reap_interval * 3 + config.response_timeout,
        };
        let renewer = Renewer { client: client.clone(), leases: leases.clone(), lease: settings.lease };
        let reaper = Reaper {
            client: client.clone(),
            presence: presence.clone(),
            every: settings.reap_interval,
            max_stalls: settings.max_stalls,
            max_age: settings.retention.max_age,
        };
        let fetch_loop = FetchLoop::new(Parts {
            client,
            settings,
            handlers,
            leases,
            renewer,
            reaper,
            presence,
            waker,
            parking,
            shutdown: shutdown_rx,
        });
        Self { id, queue, shutdown, fetch_loop }
    }

    /// This worker's unique id (`host:pid:random`), recorded with every attempt.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue served.
    pub fn queue(&self) -> &str {
        &self.queue
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
        let mut task = AbortOnDrop(tokio::spawn(self.fetch_loop.run()));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Stopped(format!("the worker's fetch loop was cancelled: {e}"))),
        }
    }
}
