//! `scripts/complete.lua`: acknowledge a batch of finished jobs, storing
//! their results and trimming the completed list to the retention count.

use redis::Value;

use super::Move;
use crate::scripts::reply::codes;
use crate::scripts::{ScriptCall, ScriptName};
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
        call.arg(keep);
        for ack in self.acks {
            call.arg(&ack.id).arg(&ack.token).arg(&ack.result);
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<ScriptCode>> {
        codes(reply)
    }
}
