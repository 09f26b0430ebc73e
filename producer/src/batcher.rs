//! Combining concurrent `add` calls into one script call.
//!
//! Web handlers add one job each, many at a time. Sent one by one, every add
//! pays the fixed cost of a script call in Redis (argument tables, the Lua
//! prelude, the clock read, the wake-up check), which is most of its cost.
//! Here the adds of one `Queue` (and its clones) go through a single sender
//! task: while one call is in flight, the adds that arrive meanwhile wait and
//! then leave together as one bulk call. A lone add leaves at once, so no
//! delay is ever added; under load, batches grow by themselves.
//!
//! When adds come one at a time (the last call carried a single job and none
//! is in flight), the caller sends its own add instead of handing it to the
//! sender task: one task switch less on the way to Redis, which is most of an
//! idle queue's add-to-start latency after the round trips.
//!
//! Each job is still added atomically and gets its own outcome; a batch is one
//! script call, so it is applied entirely or (on a connection error) not at
//! all, exactly like a single add.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quern_common::moves::Add;
use quern_common::moves::Move;
use quern_common::scripts::run_pipelined_acked;
use quern_common::{Added, Error, NewJob, QueueScripts, ReplicaAcks, Result, SelfHealingConnection};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most jobs sent in one call (bounds the work of one script call).
const MAX_JOBS: usize = 1000;
/// Most payload bytes sent in one call (a few large jobs go alone).
const MAX_BYTES: usize = 1 << 20;

struct Pending {
    job: NewJob,
    reply: oneshot::Sender<Result<Added>>,
}

/// The sending side; the task ends when every handle is dropped.
pub(crate) struct AddBatcher {
    tx: mpsc::UnboundedSender<Pending>,
    lane: Arc<Lane>,
}

/// Where adds go, the one call in flight, and whether adds arrive one at a time.
struct Lane {
    conn: SelfHealingConnection,
    scripts: QueueScripts,
    /// Replicas each call waits for (a `WAIT` in the same pipeline).
    replica_acks: Option<ReplicaAcks>,
    /// Held while a call is in flight.
    sending: Mutex<()>,
    /// The last call carried a single job.
    solo: AtomicBool,
}

impl AddBatcher {
    /// Start the sender task on the current Tokio runtime.
    pub(crate) fn start(
        conn: SelfHealingConnection,
        scripts: QueueScripts,
        replica_acks: Option<ReplicaAcks>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            conn,
            scripts,
            replica_acks,
            sending: Mutex::new(()),
            solo: AtomicBool::new(true),
        });
        tokio::spawn(send_loop(lane.clone(), rx));
        Self { tx, lane }
    }

    /// Add one (already validated) job.
    pub(crate) async fn add(&self, job: NewJob) -> Result<Added> {
        if self.lane.solo.load(Ordering::Relaxed)
            && let Ok(_in_flight) = self.lane.sending.try_lock()
        {
            let mut added = self.lane.send(std::slice::from_ref(&job)).await?;
            return added.pop().ok_or_else(|| Error::Protocol("add returned no outcome".into()));
        }
        let (reply, outcome) = oneshot::channel();
        self.tx.send(Pending { job, reply }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Stopped("the queue's sender task has stopped (its Tokio runtime shut down?)".into())
}

impl Lane {
    /// Add validated jobs in one script call (and a `WAIT` after it, with
    /// replica acknowledgements: the jobs are added even when it fails).
    async fn send(&self, jobs: &[NewJob]) -> Result<Vec<Added>> {
        let add = Add { jobs };
        let Some(acks) = &self.replica_acks else {
            return self.scripts.run(&mut self.conn.clone(), &add).await;
        };
        let call = self.scripts.call(&add);
        let (mut results, acked) =
            run_pipelined_acked(&mut self.conn.clone(), std::slice::from_ref(&call), Some(acks)).await?;
        let reply = results.pop().ok_or_else(|| Error::Protocol("add returned no reply".into()))??;
        let added = add.parse(reply)?;
        acked?;
        Ok(added)
    }
}

async fn send_loop(lane: Arc<Lane>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        let _in_flight = lane.sending.lock().await;
        let mut bytes = first.job.payload_len();
        batch.push(first);
        while batch.len() < MAX_JOBS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.job.payload_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        lane.solo.store(batch.len() == 1, Ordering::Relaxed);
        let (jobs, replies): (Vec<NewJob>, Vec<_>) = batch.drain(..).map(|p| (p.job, p.reply)).unzip();
        match lane.send(&jobs).await {
            Ok(added) if added.len() == replies.len() => {
                for (reply, added) in replies.into_iter().zip(added) {
                    let _ = reply.send(Ok(added));
                }
            }
            Ok(added) => {
                let e =
                    Error::Protocol(format!("add returned {} outcomes for {} jobs", added.len(), jobs.len()));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
