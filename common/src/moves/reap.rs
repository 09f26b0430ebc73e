//! `scripts/reap.lua`: recover expired leases (back to waiting, or
//! dead-lettered after too many stalls), trim old completed jobs, and keep
//! the list of live workers.

use std::time::Duration;

use redis::Value;

use super::{Move, millis};
use crate::Result;
use crate::scripts::reply::{fixed, int, strings};
use crate::scripts::{ScriptCall, ScriptName};

/// One reaper call.
#[derive(Debug, Clone, Copy)]
pub struct Reap<'a> {
    /// Stalls allowed before a job is dead-lettered.
    pub max_stalls: u32,
    /// Expired leases and old completed jobs handled per call at most.
    pub batch: usize,
    /// Completed jobs older than this are trimmed (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// The calling worker, listed (again) as live.
    pub registration: Option<Registration<'a>>,
}

/// A worker listing itself among the queue's live workers.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The worker's id.
    pub worker: &'a str,
    /// What it reports (JSON: slots, running jobs, version, ...).
    pub report: &'a str,
    /// How long the listing holds without a refresh.
    pub ttl: Duration,
}

/// What one reaper call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapReply {
    /// Ids sent back to waiting.
    pub recovered: Vec<String>,
    /// Ids dead-lettered for stalling too often.
    pub dead: Vec<String>,
    /// Completed jobs trimmed by age.
    pub trimmed: u64,
    /// Flow records in the queue's outbox, stop list and cascade list,
    /// waiting for the relay (`quern_common::flow::relay_outbox`).
    pub flow_pending: u64,
}

impl ReapReply {
    /// Whether a batch came back full, so another call has more to do.
    pub fn is_full(&self, batch: usize) -> bool {
        self.recovered.len() + self.dead.len() >= batch || self.trimmed as usize >= batch
    }
}

impl Move for Reap<'_> {
    const SCRIPT: ScriptName = ScriptName::Reap;
    type Reply = ReapReply;

    fn args(&self, call: &mut ScriptCall) {
        let max_age = self.max_age.map_or(0, |d| millis(d).max(1));
        call.arg(self.max_stalls).arg(self.batch).arg(max_age);
        if let Some(r) = self.registration {
            call.arg(r.worker).arg(r.report).arg(millis(r.ttl));
        }
    }

    fn parse(&self, reply: Value) -> Result<ReapReply> {
        let [recovered, dead, trimmed, flow_pending] = fixed(reply, "reap")?;
        Ok(ReapReply {
            recovered: strings(recovered)?,
            dead: strings(dead)?,
            trimmed: int(&trimmed)?.max(0) as u64,
            flow_pending: int(&flow_pending)?.max(0) as u64,
        })
    }
}
