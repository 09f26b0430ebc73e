//! `scripts/tick.lua`: enqueue one tick of a schedule at most once ever
//! (the schedule's watermark lives in the target queue's slot), or record
//! ticks the misfire policy dropped.

use redis::Value;

use super::Move;
use crate::open_enum::open_enum;
use crate::scripts::reply::{fixed, string};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Error, Result};

/// Handle the tick at `tick_ms` of the schedule whose state hash is `state_key`.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// The schedule's state hash in the target queue's slot
    /// (`<prefix>:{queue}:sched:<name>`; see [`crate::QueueKeys::custom`]).
    pub state_key: &'a str,
    /// The tick (ms since the Unix epoch, UTC).
    pub tick_ms: i64,
    /// Enqueue it, or record it missed.
    pub action: TickAction<'a>,
}

/// What to do with a tick.
#[derive(Debug, Clone, Copy)]
pub enum TickAction<'a> {
    /// Enqueue its job.
    Enqueue {
        /// The tick's job id (derived from the schedule and the tick).
        job_id: &'a str,
        /// Job name.
        name: &'a str,
        /// Payload (JSON text).
        payload: &'a str,
        /// Stored job options ('' = defaults).
        options: &'a str,
        /// Priority (0 = highest).
        priority: u32,
        /// Delay in ms.
        delay_ms: u64,
        /// Skip the tick while the previous tick's job is unfinished.
        skip_overlap: bool,
    },
    /// Enqueue a chain: `links` (job name, payload) run in order, each once
    /// the one before it completed. The last link gets `job_id`; link n of
    /// the others `<job_id>#<n>` (from 1).
    EnqueueChain {
        /// The tick's job id (the last link's).
        job_id: &'a str,
        /// The queue's name (the links' refs name it).
        queue: &'a str,
        /// The links: job name, payload (JSON text).
        links: &'a [(String, String)],
        /// Stored job options of every link ('' = defaults).
        options: &'a str,
        /// Priority of every link (0 = highest).
        priority: u32,
        /// Skip the tick while the previous tick's chain is unfinished.
        skip_overlap: bool,
    },
    /// Record that the misfire policy dropped it, with `ticks` missed in all.
    Miss {
        /// Ticks missed in this outage, this one included.
        ticks: u64,
    },
}

open_enum! {
    /// What became of a tick.
    pub enum TickStatus {
        /// Its job was enqueued.
        Added = "added",
        /// Skipped: the previous tick's job is still waiting, delayed or active.
        Overlap = "overlap",
        /// A job with its id existed already: nothing was added.
        Exists = "exists",
        /// Recorded as missed.
        Missed = "missed",
        /// At or below the watermark: handled before (by any scheduler).
        Stale = "stale",
        /// Not yet due by Redis' clock: nothing was done.
        Early = "early",
    }
}

/// The script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickReply {
    /// What became of the tick.
    pub status: TickStatus,
    /// Redis' clock (ms) when the call ran.
    pub now_ms: i64,
    /// Per status: the job id (added, overlap: the previous one, exists),
    /// the watermark (stale), the ticks missed (missed), Redis' clock (early).
    pub detail: String,
}

impl Move for Tick<'_> {
    const SCRIPT: ScriptName = ScriptName::Tick;
    type Reply = TickReply;

    fn extra_keys(&self) -> Vec<String> {
        vec![self.state_key.to_owned()]
    }

    fn args(&self, call: &mut ScriptCall) {
        match self.action {
            TickAction::Enqueue { job_id, name, payload, options, priority, delay_ms, skip_overlap } => {
                call.arg("enqueue")
                    .arg(self.tick_ms)
                    .arg(job_id)
                    .arg(name)
                    .arg(payload)
                    .arg(options)
                    .arg(priority)
                    .arg(delay_ms)
                    .arg(if skip_overlap { "skip" } else { "allow" });
            }
            TickAction::EnqueueChain { job_id, queue, links, options, priority, skip_overlap } => {
                call.arg("chain")
                    .arg(self.tick_ms)
                    .arg(job_id)
                    .arg(queue)
                    .arg(options)
                    .arg(priority)
                    .arg(if skip_overlap { "skip" } else { "allow" })
                    .arg(links.len());
                for (name, payload) in links {
                    call.arg(name).arg(payload);
                }
            }
            TickAction::Miss { ticks } => {
                call.arg("miss").arg(self.tick_ms).arg(ticks);
            }
        }
    }

    fn parse(&self, reply: Value) -> Result<TickReply> {
        let [status, now, detail] = fixed(reply, "tick")?;
        let now = string(&now)?;
        Ok(TickReply {
            status: TickStatus::parse(&string(&status)?),
            now_ms: now.parse().map_err(|_| Error::Protocol(format!("tick returned the clock {now:?}")))?,
            detail: string(&detail)?,
        })
    }
}
