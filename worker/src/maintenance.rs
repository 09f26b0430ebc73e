//! Periodic work beside the fetch loop: renewing leases and reaping stalled jobs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quern_common::scripts::{self, ScriptCall, ScriptName};
use rand::Rng;
use redis::Value;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::runtime::Shared;

/// Leases renewed per script call.
const RENEW_CHUNK: usize = 1000;
/// Expired leases handled per reaper call.
const REAP_BATCH: usize = 1000;

/// Renew every lease this worker holds, every third of the lease, one call per
/// 1,000 leases. Runs until aborted (after the last job is settled).
pub(crate) fn spawn_renewer(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(shared.settings.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = renew_all(&shared).await {
                warn!(worker = %shared.id, error = %e, "renewing leases failed; retrying at the next tick");
            }
        }
    })
}

async fn renew_all(shared: &Shared) -> quern_common::Result<()> {
    renew(shared, shared.held_leases(), "").await
}

/// Claim a job taken from the hand-off list (see [`crate::waker`]): record
/// it as this worker's and extend its short lease to the full lease, in the
/// background. A lost lease is flagged like the renewer's.
pub(crate) fn claim_handed_over(shared: Arc<Shared>, lease: (String, String)) {
    tokio::spawn(async move {
        if let Err(e) = renew(&shared, vec![lease], &shared.id).await {
            warn!(worker = %shared.id, error = %e, "claiming a handed-over job failed; the renewer retries");
        }
    });
}

/// Renew the leases `(id, token)` to the full lease, flagging the lost ones;
/// `claimer` (unless '') is recorded as the jobs' worker.
async fn renew(shared: &Shared, held: Vec<(String, String)>, claimer: &str) -> quern_common::Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    let mut conn = shared.conn.clone();
    for chunk in held.chunks(RENEW_CHUNK) {
        let mut call = shared.call(ScriptName::Renew);
        call.arg(shared.settings.lease.as_millis() as u64).arg(claimer);
        for (id, token) in chunk {
            call.arg(id).arg(token);
        }
        let lost: Vec<String> = call.run(&mut conn).await?;
        flag_lost(shared, lost);
    }
    Ok(())
}

/// Mark the leases of jobs `lost` as lost, so their handlers can tell.
fn flag_lost(shared: &Shared, lost: Vec<String>) {
    for id in lost {
        let newly_lost = shared.lease_flag(&id).is_some_and(|flag| !flag.swap(true, Ordering::Relaxed));
        if newly_lost {
            warn!(worker = %shared.id, job = %id, "lease lost: the job was recovered or taken over; its result will be discarded");
        }
    }
}

/// Run the reaper at once (which lists the worker as live), then every
/// `reap_interval` (with a random start, so workers do not all reap at the
/// same instant). Runs until aborted.
pub(crate) fn spawn_reaper(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = reap(&shared).await {
            warn!(worker = %shared.id, error = %e, "reaper failed; retrying at the next tick");
        }
        let every = shared.settings.reap_interval;
        let offset = every.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = reap(&shared).await {
                warn!(worker = %shared.id, error = %e, "reaper failed; retrying at the next tick");
            }
        }
    })
}

/// One reaper pass (several calls while batches come back full).
pub(crate) async fn reap(shared: &Shared) -> quern_common::Result<()> {
    let mut conn = shared.conn.clone();
    let max_age = shared.settings.retention.max_age.map_or(0, |d| d.as_millis().max(1) as u64);
    loop {
        let mut call: ScriptCall = shared.call(ScriptName::Reap);
        call.arg(shared.settings.max_stalls).arg(REAP_BATCH).arg(max_age);
        // Each pass also lists this worker as live.
        call.arg(&shared.id).arg(shared.report(false)).arg(shared.registration_ttl().as_millis() as u64);
        let reply: Value = call.run(&mut conn).await?;
        let parts = scripts::array(reply)?;
        let [recovered, dead, trimmed] = <[Value; 3]>::try_from(parts)
            .map_err(|p| quern_common::Error::Protocol(format!("reap returned {p:?}")))?;
        let recovered: Vec<String> =
            scripts::array(recovered)?.iter().map(scripts::string).collect::<Result<_, _>>()?;
        let dead: Vec<String> =
            scripts::array(dead)?.iter().map(scripts::string).collect::<Result<_, _>>()?;
        let trimmed = scripts::int(&trimmed)?;
        if !recovered.is_empty() {
            info!(worker = %shared.id, jobs = ?recovered, "recovered stalled jobs (lease expired) to waiting");
        }
        if !dead.is_empty() {
            error!(worker = %shared.id, jobs = ?dead, "stalled too often: moved to the dead-letter list");
        }
        if recovered.len() + dead.len() < REAP_BATCH && (trimmed as usize) < REAP_BATCH {
            return Ok(());
        }
    }
}
