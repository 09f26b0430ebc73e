//! `scripts/progress.lua`: the lease holder records how far its attempt came.

use redis::Value;

use super::Move;
use crate::scripts::reply::code;
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Result, ScriptCode};

/// Record `json` as the progress of job `id`'s attempt under `token`.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Job id.
    pub id: &'a str,
    /// The attempt's lease token.
    pub token: &'a str,
    /// The progress (JSON text).
    pub json: &'a str,
}

impl Move for Progress<'_> {
    const SCRIPT: ScriptName = ScriptName::Progress;
    /// `Ok`, `LeaseLost` (not the lease holder) or `NotFound`.
    type Reply = ScriptCode;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.id).arg(self.token).arg(self.json);
    }

    fn parse(&self, reply: Value) -> Result<ScriptCode> {
        code(&reply)
    }
}
