//! Background work beside the fetch loop, each a small part with `start`
//! and `shutdown`: the renewer keeps the worker's leases alive (and claims
//! handed-over jobs), the reaper recovers crashed workers' jobs and keeps
//! this worker listed as live.

use std::sync::Arc;
use std::time::Duration;

use quern_common::moves::{Reap, Registration, Renew};
use rand::Rng;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::client::QueueClient;
use crate::leases::LeaseTable;

/// Leases renewed per script call.
const RENEW_CHUNK: usize = 1000;
/// Expired leases handled per reaper call.
const REAP_BATCH: usize = 1000;

/// A running background part; stops when shut down or dropped.
pub(crate) struct Running(JoinHandle<()>);

impl Running {
    /// Stop it now.
    pub(crate) fn shutdown(&self) {
        self.0.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How this worker appears in the queue's list of live workers.
#[derive(Clone)]
pub(crate) struct Presence {
    pub(crate) concurrency: usize,
    pub(crate) leases: Arc<LeaseTable>,
    /// How long one listing holds: three reaper passes, and the time a pass may take.
    pub(crate) ttl: Duration,
}

impl Presence {
    /// What the worker reports: slots, running jobs, whether it is stopping, version.
    pub(crate) fn report(&self, stopping: bool) -> String {
        serde_json::json!({
            "concurrency": self.concurrency,
            "running": self.leases.len(),
            "stopping": stopping,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string()
    }
}

/// Renews every lease the worker holds, every third of the lease, one call
/// per 1,000 leases; flags the lost ones.
#[derive(Clone)]
pub(crate) struct Renewer {
    pub(crate) client: QueueClient,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) lease: Duration,
}

impl Renewer {
    pub(crate) fn start(&self) -> Running {
        let this = self.clone();
        Running(tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.lease / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.renew(this.leases.snapshot(), None).await {
                    warn!(worker = %this.client.worker(), error = %e, "renewing leases failed; retrying at the next tick");
                }
            }
        }))
    }

    /// Claim a job taken from the hand-off list: record it as this worker's
    /// and extend its short lease to the full lease, in the background. A
    /// lost lease is flagged like a renewal's.
    pub(crate) fn claim(&self, id: String, token: String) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.renew(vec![(id, token)], Some(this.client.worker())).await {
                warn!(worker = %this.client.worker(), error = %e, "claiming a handed-over job failed; the renewer retries");
            }
        });
    }

    async fn renew(&self, held: Vec<(String, String)>, claimer: Option<&str>) -> quern_common::Result<()> {
        for chunk in held.chunks(RENEW_CHUNK) {
            let lost = self.client.run(&Renew { lease: self.lease, claimer, leases: chunk }).await?;
            for id in self.leases.flag_lost(&lost) {
                warn!(worker = %self.client.worker(), job = %id, "lease lost: the job was recovered or taken over; its result will be discarded");
            }
        }
        Ok(())
    }
}

/// Recovers expired leases (any worker may: the reap script is atomic and
/// idempotent) and trims old completed jobs; each pass also lists the
/// worker as live.
#[derive(Clone)]
pub(crate) struct Reaper {
    pub(crate) client: QueueClient,
    pub(crate) presence: Presence,
    pub(crate) every: Duration,
    pub(crate) max_stalls: u32,
    pub(crate) max_age: Option<Duration>,
}

impl Reaper {
    /// Reap at once (which lists the worker as live), then every `every`,
    /// from a random start so workers do not all reap at the same instant.
    pub(crate) fn start(&self) -> Running {
        let this = self.clone();
        Running(tokio::spawn(async move {
            this.pass_logged().await;
            let offset = this.every.mul_f64(rand::rng().random_range(0.0..1.0));
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(this.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.pass_logged().await;
            }
        }))
    }

    async fn pass_logged(&self) {
        if let Err(e) = self.pass().await {
            warn!(worker = %self.client.worker(), error = %e, "reaper failed; retrying at the next tick");
        }
    }

    /// One pass: calls while batches come back full, then, when the reaper
    /// saw flow records waiting, relays them (outcomes of this queue's
    /// children to parents in other queues, cascades and stops).
    pub(crate) async fn pass(&self) -> quern_common::Result<()> {
        let flow_pending = loop {
            let report = self.presence.report(false);
            let registration =
                Registration { worker: self.client.worker(), report: &report, ttl: self.presence.ttl };
            let reaped = self
                .client
                .run(&Reap {
                    max_stalls: self.max_stalls,
                    batch: REAP_BATCH,
                    max_age: self.max_age,
                    registration: Some(registration),
                })
                .await?;
            if !reaped.recovered.is_empty() {
                info!(worker = %self.client.worker(), jobs = ?reaped.recovered, "recovered stalled jobs (lease expired) to waiting");
            }
            if !reaped.dead.is_empty() {
                error!(worker = %self.client.worker(), jobs = ?reaped.dead, "stalled too often: moved to the dead-letter list");
            }
            if !reaped.is_full(REAP_BATCH) {
                break reaped.flow_pending;
            }
        };
        if flow_pending == 0 {
            return Ok(());
        }
        let relayed =
            quern_common::flow::relay_outbox(&mut self.client.conn(), self.client.scripts()).await?;
        if relayed.moved > 0 {
            tracing::debug!(worker = %self.client.worker(), records = relayed.moved, "relayed flow outcomes to parents in other queues");
        }
        Ok(())
    }
}
