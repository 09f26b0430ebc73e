//! `scripts/renew.lua`: extend every lease a worker holds in one call; with
//! a claimer, also how a worker claims a job handed over to it.

use std::time::Duration;

use redis::Value;

use super::{Move, millis};
use crate::Result;
use crate::scripts::reply::strings;
use crate::scripts::{ScriptCall, ScriptName};

/// Renew `leases` (`(id, token)`) to `lease` from now.
#[derive(Debug, Clone, Copy)]
pub struct Renew<'a> {
    /// The new lease length.
    pub lease: Duration,
    /// A worker to record as the jobs' worker (claiming hand-offs); `None`
    /// for a plain renewal.
    pub claimer: Option<&'a str>,
    /// `(id, token)` of each lease.
    pub leases: &'a [(String, String)],
}

impl Move for Renew<'_> {
    const SCRIPT: ScriptName = ScriptName::Renew;
    /// The ids whose lease is lost (token taken over, job gone or no longer active).
    type Reply = Vec<String>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(millis(self.lease)).arg(self.claimer.unwrap_or(""));
        for (id, token) in self.leases {
            call.arg(id).arg(token);
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>> {
        strings(reply)
    }
}
