//! The worker's client of its queue: one multiplexed connection, the queue's
//! moves and the worker's id. Cheap to clone.

use std::sync::Arc;

use quern_common::moves::Move;
use quern_common::scripts::{self, ScriptCall};
use quern_common::{QueueScripts, ReplicaAcks, Result, SelfHealingConnection};
use redis::Value;

#[derive(Clone)]
pub(crate) struct QueueClient {
    inner: Arc<Inner>,
}

struct Inner {
    conn: SelfHealingConnection,
    scripts: QueueScripts,
    worker: String,
    /// Replicas the worker's state moves wait for, if any.
    replica_acks: Option<ReplicaAcks>,
}

impl QueueClient {
    pub(crate) fn new(
        conn: SelfHealingConnection,
        scripts: QueueScripts,
        worker: String,
        replica_acks: Option<ReplicaAcks>,
    ) -> Self {
        Self { inner: Arc::new(Inner { conn, scripts, worker, replica_acks }) }
    }

    /// The replica acknowledgements state moves wait for, if any.
    pub(crate) fn replica_acks(&self) -> Option<&ReplicaAcks> {
        self.inner.replica_acks.as_ref()
    }

    /// This worker's id (`host:pid:random`).
    pub(crate) fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// Key of the hash of job `id`.
    pub(crate) fn job_key(&self, id: &str) -> String {
        self.inner.scripts.keys().job(id)
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        self.inner.scripts.queue()
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        self.inner.scripts.keys().prefix()
    }

    /// How long the queue's events stream is kept.
    pub(crate) fn events_max_len(&self) -> u64 {
        self.inner.scripts.events_max_len()
    }

    /// A handle on the multiplexed connection.
    pub(crate) fn conn(&self) -> SelfHealingConnection {
        self.inner.conn.clone()
    }

    /// The queue's scripts.
    pub(crate) fn scripts(&self) -> &QueueScripts {
        &self.inner.scripts
    }

    /// Run state move `m`.
    pub(crate) async fn run<M: Move>(&self, m: &M) -> Result<M::Reply> {
        self.inner.scripts.run(&mut self.conn(), m).await
    }

    /// The call of `m`, for a pipeline.
    pub(crate) fn call<M: Move>(&self, m: &M) -> ScriptCall {
        self.inner.scripts.call(m)
    }

    /// Run state move `m`, then wait for the replica acknowledgements, if
    /// the worker asks for them (the move ran on the master either way).
    pub(crate) async fn run_acked<M: Move>(&self, m: &M) -> Result<M::Reply> {
        let Some(acks) = self.replica_acks() else {
            return self.run(m).await;
        };
        let (mut results, acked) = self.pipelined(&[self.call(m)], Some(acks)).await?;
        let reply = m.parse(results.pop().unwrap_or_else(|| Ok(Value::Nil))?)?;
        acked?;
        Ok(reply)
    }

    /// Send calls in one round trip, with a `WAIT` for `acks` after them (see
    /// [`scripts::run_pipelined_acked`]).
    pub(crate) async fn pipelined(
        &self,
        calls: &[ScriptCall],
        acks: Option<&ReplicaAcks>,
    ) -> Result<(Vec<Result<Value>>, Result<()>)> {
        scripts::run_pipelined_acked(&mut self.conn(), calls, acks).await
    }
}
