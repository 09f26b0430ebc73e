//! Configuring a worker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quern_common::keys::QueueKeys;
use quern_common::moves::StepLimits;
use quern_common::scripts;
use quern_common::{Error, RedisConfig, ReplicaAcks, Result};
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handler::{Handlers, JobContext, JobError, TypedHandler};
use crate::settings::{Retention, Settings};
use crate::steps::Divergence;
use crate::worker::Worker;

/// Builds a [`Worker`]; see [`Worker::builder`].
pub struct WorkerBuilder {
    config: RedisConfig,
    queue: String,
    settings: Settings,
    handlers: Handlers,
}

impl WorkerBuilder {
    pub(crate) fn new(config: &RedisConfig, queue: &str) -> Self {
        Self {
            config: config.clone(),
            queue: queue.to_owned(),
            settings: Settings::default(),
            handlers: Handlers::default(),
        }
    }

    /// Job slots: how many jobs run at once (default 10).
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.settings.concurrency = slots;
        self
    }

    /// Lease length (default 30 s, at least 200 ms). The worker renews its
    /// leases every third of it; a job whose lease runs out is recovered by the
    /// reaper and may run again elsewhere. Short leases (down to about 1 s)
    /// recover a crashed worker's jobs sooner (within the lease plus one reap
    /// interval); keep the lease at least twice the Redis response timeout,
    /// so one renewal stuck until its timeout does not lose every lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// Times a job may stall (lose its lease) before it is dead-lettered (default 3).
    pub fn max_stalls(mut self, stalls: u32) -> Self {
        self.settings.max_stalls = stalls;
        self
    }

    /// How often this worker runs the reaper (default 5 s).
    pub fn reap_interval(mut self, every: Duration) -> Self {
        self.settings.reap_interval = every;
        self
    }

    /// How long running jobs may take to finish after shutdown was asked for
    /// (default 30 s); the rest are handed back to `waiting`.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// Longest single blocking wait for new work (default 5 s). Bounds how
    /// long a lost wake-up can delay a job, and how soon a dead connection is
    /// noticed while idle.
    pub fn idle_block(mut self, block: Duration) -> Self {
        self.settings.idle_block = block;
        self
    }

    /// How long completed jobs are kept (default: the newest 100,000, up to 24 h).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.settings.retention = retention;
        self
    }

    /// Approximate length of the queue's events stream (default 10,000; 0: no events).
    pub fn events_max_len(mut self, len: u64) -> Self {
        self.settings.events_max_len = len;
        self
    }

    /// Make the worker's state moves (acknowledging completed jobs, recording
    /// failures, handing jobs back at shutdown) wait until `replicas`
    /// replicas hold them, at most `timeout` (shorter than the Redis response
    /// timeout): a `WAIT` goes in the same pipeline. When fewer replicas
    /// acknowledge in time, the moves were applied on the master all the same;
    /// the worker logs it and sends them again with the next round trip (a
    /// repeated acknowledgement is harmless), until replicas acknowledge.
    /// Fetches and lease renewals do not wait: a fetch lost in a failover
    /// leaves the job waiting, to run again.
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.settings.replica_acks = Some(ReplicaAcks::new(replicas, timeout));
        self
    }

    /// What to do when a job's code no longer matches its stored durable
    /// steps (see [`Divergence`]; default: warn and run on).
    pub fn step_divergence(mut self, policy: Divergence) -> Self {
        self.settings.steps.divergence = policy;
        self
    }

    /// The most durable steps (sleeps included) one job may store, and the
    /// most bytes they may take (defaults: 1000 steps, 1 MiB). A step that
    /// would go over fails its job permanently with an error starting with
    /// "step limit:".
    pub fn step_limits(mut self, max_steps: u32, max_bytes: u64) -> Self {
        self.settings.steps.limits = StepLimits { max_steps, max_bytes };
        self
    }

    /// Run jobs named `name` with `handler`. The payload is deserialized into
    /// `T`; one that does not fit fails permanently. The result is stored as
    /// JSON with the completed job (`()` stores nothing).
    pub fn handler<F, T, R, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
    {
        self.handlers.insert(name.into(), Arc::new(TypedHandler::new(handler)));
        self
    }

    /// Check the settings, connect, load the scripts and register the queue.
    pub async fn build(self) -> Result<Worker> {
        self.settings.check().map_err(Error::InvalidOptions)?;
        if let Some(acks) = &self.settings.replica_acks {
            acks.check(self.config.response_timeout)?;
        }
        if self.handlers.is_empty() {
            return Err(Error::InvalidOptions("a worker needs at least one handler".into()));
        }
        let keys = QueueKeys::new(&self.config.prefix, &self.queue)?;
        let mut conn = self.config.connect().await?;
        scripts::load_all(&mut conn).await?;
        let _: i64 = conn.sadd(QueueKeys::registry(keys.prefix()), keys.name()).await?;
        Ok(Worker::new(self.config, keys, conn, self.settings, self.handlers))
    }
}
