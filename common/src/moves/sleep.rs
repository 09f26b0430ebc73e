//! `scripts/sleep.lua`: the lease holder puts its job to sleep (active to
//! delayed, no attempt spent), recording the wake time as a durable step.

use redis::Value;

use super::Move;
use super::step::{StepLimits, StepReply};
use crate::Result;
use crate::scripts::{ScriptCall, ScriptName};

/// When a sleep ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeAt {
    /// This many ms from now, by Redis' clock.
    In(u64),
    /// At this Unix ms.
    At(u64),
}

/// Put job `id` to sleep under the lease `token`.
#[derive(Debug, Clone, Copy)]
pub struct Sleep<'a> {
    /// Job id.
    pub id: &'a str,
    /// The attempt's lease token.
    pub token: &'a str,
    /// `~sleep#<occurrence>`.
    pub key: &'a str,
    /// When it wakes.
    pub wake: WakeAt,
    /// The limits to hold the job to.
    pub limits: StepLimits,
}

impl Move for Sleep<'_> {
    const SCRIPT: ScriptName = ScriptName::Sleep;
    /// `Sleeping`, `Awake`, `AlreadyStored`, `LeaseLost`, `NotFound` or `Limit`.
    type Reply = StepReply;

    fn args(&self, call: &mut ScriptCall) {
        let (how, ms) = match self.wake {
            WakeAt::In(ms) => ("in", ms),
            WakeAt::At(ms) => ("at", ms),
        };
        call.arg(self.id)
            .arg(self.token)
            .arg(self.key)
            .arg(how)
            .arg(ms)
            .arg(self.limits.max_steps)
            .arg(self.limits.max_bytes);
    }

    fn parse(&self, reply: Value) -> Result<StepReply> {
        StepReply::parse(reply, "sleep")
    }
}
