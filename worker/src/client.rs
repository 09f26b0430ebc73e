//! The worker's client of its queue: one multiplexed connection, the queue's
//! moves and the worker's id. Cheap to clone.

use std::sync::Arc;

use quern_common::moves::Move;
use quern_common::scripts::{self, ScriptCall};
use quern_common::{QueueScripts, Result, SelfHealingConnection};
use redis::Value;

#[derive(Clone)]
pub(crate) struct QueueClient {
    inner: Arc<Inner>,
}

struct Inner {
    conn: SelfHealingConnection,
    scripts: QueueScripts,
    worker: String,
}

impl QueueClient {
    pub(crate) fn new(conn: SelfHealingConnection, scripts: QueueScripts, worker: String) -> Self {
        Self { inner: Arc::new(Inner { conn, scripts, worker }) }
    }

    /// This worker's id (`host:pid:random`).
    pub(crate) fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        self.inner.scripts.queue()
    }

    /// A handle on the multiplexed connection.
    pub(crate) fn conn(&self) -> SelfHealingConnection {
        self.inner.conn.clone()
    }

    /// Run state move `m`.
    pub(crate) async fn run<M: Move>(&self, m: &M) -> Result<M::Reply> {
        self.inner.scripts.run(&mut self.conn(), m).await
    }

    /// The call of `m`, for a pipeline.
    pub(crate) fn call<M: Move>(&self, m: &M) -> ScriptCall {
        self.inner.scripts.call(m)
    }

    /// Send calls in one round trip (see [`scripts::run_pipelined`]).
    pub(crate) async fn pipelined(&self, calls: &[ScriptCall]) -> Result<Vec<Result<Value>>> {
        scripts::run_pipelined(&mut self.conn(), calls).await
    }
}
