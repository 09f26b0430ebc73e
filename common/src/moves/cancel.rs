//! `scripts/cancel.lua`: an operator stops a job for good.

use redis::Value;

use super::Move;
use crate::scripts::reply::code;
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Result, ScriptCode};

/// Cancel job `id` with `reason` as its error.
#[derive(Debug, Clone, Copy)]
pub struct Cancel<'a> {
    /// Job id.
    pub id: &'a str,
    /// Why (stored as the job's error).
    pub reason: &'a str,
}

impl Move for Cancel<'_> {
    const SCRIPT: ScriptName = ScriptName::Cancel;
    /// `Ok`, `NotFound` or `WrongState` (completed, or dead-lettered already).
    type Reply = ScriptCode;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.id).arg(self.reason);
    }

    fn parse(&self, reply: Value) -> Result<ScriptCode> {
        code(&reply)
    }
}
