//! `scripts/obliterate.lua`: delete a queue, its jobs and its keys, in
//! calls of bounded size.

use redis::Value;

use super::Move;
use crate::Result;
use crate::open_enum::open_enum;
use crate::scripts::reply::{fixed, int, string};
use crate::scripts::{ScriptCall, ScriptName};

/// One call: delete at most `batch` jobs.
#[derive(Debug, Clone, Copy)]
pub struct Obliterate {
    /// Jobs (and idempotency keys) deleted by this call at most.
    pub batch: usize,
    /// Go ahead even with running jobs or live workers.
    pub force: bool,
    /// The flow outbox was relayed and what is left cannot be read: delete it.
    pub drop_unreadable: bool,
}

open_enum! {
    /// Where deleting the queue stands after one call.
    pub enum ObliterateStatus {
        /// Nothing was done: jobs are running or workers are live, and it was not forced.
        Busy = "busy",
        /// Call again: jobs remain.
        More = "more",
        /// Every job is gone; relay the flow outbox
        /// ([`crate::flow::relay_outbox`]), then call again.
        Relay = "relay",
        /// Every key of the queue is gone.
        Done = "done",
    }
}

/// What one call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObliterateReply {
    /// Where it stands.
    pub status: ObliterateStatus,
    /// Jobs deleted by this call.
    pub deleted: u64,
}

impl Move for Obliterate {
    const SCRIPT: ScriptName = ScriptName::Obliterate;
    type Reply = ObliterateReply;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.batch).arg(if self.force { "1" } else { "0" }).arg(if self.drop_unreadable {
            "1"
        } else {
            "0"
        });
    }

    fn parse(&self, reply: Value) -> Result<ObliterateReply> {
        let [status, deleted] = fixed(reply, "obliterate")?;
        Ok(ObliterateReply {
            status: ObliterateStatus::parse(&string(&status)?),
            deleted: int(&deleted)?.max(0) as u64,
        })
    }
}
