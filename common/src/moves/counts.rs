//! `scripts/counts.lua`: one consistent snapshot of a queue's counts.

use redis::Value;

use super::Move;
use crate::scripts::reply::{fixed, int};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{QueueCounts, Result};

/// Count the queue's jobs per state.
#[derive(Debug, Clone, Copy)]
pub struct Counts;

impl Move for Counts {
    const SCRIPT: ScriptName = ScriptName::Counts;
    type Reply = QueueCounts;

    fn args(&self, _call: &mut ScriptCall) {}

    fn parse(&self, reply: Value) -> Result<QueueCounts> {
        let [waiting, delayed, active, completed, failed, paused, waiting_children] = fixed(reply, "counts")?;
        let n = |v: &Value| int(v).map(|x| x.max(0) as u64);
        Ok(QueueCounts {
            waiting: n(&waiting)?,
            delayed: n(&delayed)?,
            active: n(&active)?,
            completed: n(&completed)?,
            failed: n(&failed)?,
            paused: int(&paused)? == 1,
            waiting_children: n(&waiting_children)?,
        })
    }
}
