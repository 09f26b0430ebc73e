//! `scripts/limit.lua`: set or remove a queue's rate limit.

use redis::Value;

use super::Move;
use crate::scripts::{ScriptCall, ScriptName};
use crate::{RateLimit, Result};

/// Set the queue's rate limit (`None` removes it); a fresh window starts.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// The new limit.
    pub limit: Option<RateLimit>,
}

impl Move for Limit {
    const SCRIPT: ScriptName = ScriptName::Limit;
    type Reply = ();

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.limit.map(|l| l.to_field()).unwrap_or_default());
    }

    fn parse(&self, _reply: Value) -> Result<()> {
        Ok(())
    }
}
