//! `scripts/complete.lua`: acknowledge a batch of finished jobs, storing
//! their results and trimming the completed list to the retention count.

use redis::Value;

use super::Move;
use crate::scripts::reply::codes;
use crate::scripts::{ScriptCall, ScriptName};
use crate::stats::{RUN_BUCKET_FIELDS, WAIT_BUCKET_FIELDS, bucket_of};
use crate::{Result, ScriptCode};

/// One acknowledgement: the job, the lease it ran under and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Job id.
    pub id: String,
    /// The attempt's lease token.
    pub token: String,
    /// The handler's result as JSON ('' = none).
    pub result: String,
    /// How long the attempt ran, ms (the worker's clock, from the lease to
    /// the handler's end): counted in the queue's run time histogram.
    pub run_ms: u64,
    /// How long the job waited, ms (Redis' clock, from its add to the start
    /// of this attempt): counted in the wait time histogram.
    pub wait_ms: u64,
}

/// Acknowledge `acks`, keeping at most `keep` completed jobs.
#[derive(Debug, Clone, Copy)]
pub struct Complete<'a> {
    /// Completed jobs kept (`None`: all; `Some(0)`: deleted at once).
    pub keep: Option<u64>,
    /// The jobs that completed.
    pub acks: &'a [Ack],
}

impl Move for Complete<'_> {
    const SCRIPT: ScriptName = ScriptName::Complete;
    /// One code per job: `Ok`, `Duplicate` (acknowledged already with this
    /// token), `LeaseLost` or `NotFound`.
    type Reply = Vec<ScriptCode>;

    fn args(&self, call: &mut ScriptCall) {
        let keep = self.keep.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        // The sums over all acks: the script takes off those it refuses, so
        // a job it accepts costs it no number conversion.
        let run_sum: u64 = self.acks.iter().map(|a| a.run_ms).sum();
        let wait_sum: u64 = self.acks.iter().map(|a| a.wait_ms).sum();
        call.arg(keep).arg(run_sum).arg(wait_sum);
        for ack in self.acks {
            call.arg(&ack.id)
                .arg(&ack.token)
                .arg(&ack.result)
                .arg(RUN_BUCKET_FIELDS[bucket_of(ack.run_ms)])
                .arg(WAIT_BUCKET_FIELDS[bucket_of(ack.wait_ms)])
                .arg(ack.run_ms)
                .arg(ack.wait_ms);
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<ScriptCode>> {
        codes(reply)
    }
}
