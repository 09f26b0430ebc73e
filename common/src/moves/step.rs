//! `scripts/step.lua`: the lease holder stores the outcome of a durable step.

use redis::Value;

use super::Move;
use crate::scripts::reply::{fixed, string};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Error, Result};

/// How a durable step ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// It returned a result (JSON).
    Ok,
    /// It failed permanently (the value is the error message).
    Failed,
}

/// The limits on the durable steps one job may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// Most step records (steps and sleeps) per job.
    pub max_steps: u32,
    /// Most bytes the records may take per job.
    pub max_bytes: u64,
}

/// Store step `key` of job `id` under the lease `token`.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Job id.
    pub id: &'a str,
    /// The attempt's lease token.
    pub token: &'a str,
    /// `<name>#<occurrence>`.
    pub key: &'a str,
    /// How it ended.
    pub end: StepEnd,
    /// How long it ran (ms).
    pub took_ms: u64,
    /// Its result (JSON) or error message.
    pub value: &'a str,
    /// The limits to hold the job to.
    pub limits: StepLimits,
}

/// What became of a step or sleep record (`scripts/step.lua`,
/// `scripts/sleep.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepReply {
    /// Stored (a step); the detail is its sequence number.
    Stored(String),
    /// The sleep was stored and the job moved to delayed, due at this Unix ms.
    Sleeping(u64),
    /// The sleep was stored, but its wake time (Unix ms) has passed: the job
    /// runs on under its lease.
    Awake(u64),
    /// A finished record was there already (this stored record): use it.
    AlreadyStored(String),
    /// The caller does not hold the job's lease: nothing was stored.
    LeaseLost,
    /// No such job.
    NotFound,
    /// Storing it would break the job's step limits (why).
    Limit(String),
}

impl StepReply {
    pub(crate) fn parse(reply: Value, script: &str) -> Result<Self> {
        let [status, detail] = fixed(reply, script)?;
        let (status, detail) = (string(&status)?, string(&detail)?);
        let ms = |d: &str| {
            d.parse::<u64>().map_err(|_| Error::Protocol(format!("{script} returned the wake time {d:?}")))
        };
        Ok(match status.as_str() {
            "ok" => StepReply::Stored(detail),
            "sleeping" => StepReply::Sleeping(ms(&detail)?),
            "awake" => StepReply::Awake(ms(&detail)?),
            "stored" => StepReply::AlreadyStored(detail),
            "lost" => StepReply::LeaseLost,
            "gone" => StepReply::NotFound,
            "limit" => StepReply::Limit(detail),
            other => return Err(Error::Protocol(format!("{script} returned the status {other:?}"))),
        })
    }
}

impl Move for Step<'_> {
    const SCRIPT: ScriptName = ScriptName::Step;
    type Reply = StepReply;

    fn args(&self, call: &mut ScriptCall) {
        let end = match self.end {
            StepEnd::Ok => "ok",
            StepEnd::Failed => "failed",
        };
        call.arg(self.id)
            .arg(self.token)
            .arg(self.key)
            .arg(end)
            .arg(self.took_ms)
            .arg(self.value)
            .arg(self.limits.max_steps)
            .arg(self.limits.max_bytes);
    }

    fn parse(&self, reply: Value) -> Result<StepReply> {
        StepReply::parse(reply, "step")
    }
}
