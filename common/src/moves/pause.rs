//! `scripts/pause.lua`: stop or restart handing out a queue's jobs.

use redis::Value;

use super::Move;
use crate::Result;
use crate::scripts::{ScriptCall, ScriptName};

/// Pause (`paused: true`) or resume the queue.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    /// True to pause, false to resume.
    pub paused: bool,
}

impl Move for Pause {
    const SCRIPT: ScriptName = ScriptName::Pause;
    type Reply = ();

    fn args(&self, call: &mut ScriptCall) {
        call.arg(if self.paused { "1" } else { "0" });
    }

    fn parse(&self, _reply: Value) -> Result<()> {
        Ok(())
    }
}
