//! `scripts/remove.lua`: delete one job that is not running.

use redis::Value;

use super::Move;
use crate::scripts::reply::code;
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Result, ScriptCode};

/// Remove job `id`.
#[derive(Debug, Clone, Copy)]
pub struct Remove<'a> {
    /// Job id.
    pub id: &'a str,
}

impl Move for Remove<'_> {
    const SCRIPT: ScriptName = ScriptName::Remove;
    /// `Ok`, `NotFound` or `JobActive`.
    type Reply = ScriptCode;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.id);
    }

    fn parse(&self, reply: Value) -> Result<ScriptCode> {
        code(&reply)
    }
}
