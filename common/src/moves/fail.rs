//! `scripts/fail.lua`: record a failed attempt in the job's history, then
//! schedule its retry or dead-letter it.

use std::time::Duration;

use redis::Value;

use super::{Move, millis};
use crate::outcome::FailureKind;
use crate::scripts::reply::code;
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Result, ScriptCode};

/// Record that the attempt of job `id` under lease `token` failed.
#[derive(Debug, Clone, Copy)]
pub struct Fail<'a> {
    /// Job id.
    pub id: &'a str,
    /// The attempt's lease token.
    pub token: &'a str,
    /// The error message kept with the attempt.
    pub message: &'a str,
    /// Why it failed.
    pub kind: FailureKind,
    /// Run it again after this delay (`None`: dead-letter it). The worker
    /// decides from the job's attempts, backoff and the error.
    pub retry_in: Option<Duration>,
}

impl Move for Fail<'_> {
    const SCRIPT: ScriptName = ScriptName::Fail;
    /// `Ok` (retry scheduled), `Dead` (dead-lettered), `Duplicate`,
    /// `LeaseLost` or `NotFound`.
    type Reply = ScriptCode;

    fn args(&self, call: &mut ScriptCall) {
        let delay = self.retry_in.map_or(-1, |d| millis(d).min(i64::MAX as u64) as i64);
        call.arg(self.id).arg(self.token).arg(self.message).arg(self.kind.as_str()).arg(delay);
    }

    fn parse(&self, reply: Value) -> Result<ScriptCode> {
        code(&reply)
    }
}
