//! `scripts/release.lua`: hand leased jobs back to waiting without using up
//! an attempt (a stopping worker).

use redis::Value;

use super::Move;
use crate::Result;
use crate::scripts::reply::int;
use crate::scripts::{ScriptCall, ScriptName};

/// Hand `leases` (`(id, token)`) back.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// `(id, token)` of each lease; leases lost meanwhile are skipped.
    pub leases: &'a [(String, String)],
}

impl Move for Release<'_> {
    const SCRIPT: ScriptName = ScriptName::Release;
    /// How many jobs went back.
    type Reply = u64;

    fn args(&self, call: &mut ScriptCall) {
        for (id, token) in self.leases {
            call.arg(id).arg(token);
        }
    }

    fn parse(&self, reply: Value) -> Result<u64> {
        Ok(int(&reply)?.max(0) as u64)
    }
}
