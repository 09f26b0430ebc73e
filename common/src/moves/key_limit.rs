//! `scripts/key_limit.lua`: set or remove a concurrency-key limit, and make
//! the key(s) with held jobs ready, so fetch serves them under the new limit.

use redis::Value;

use super::Move;
use crate::Result;
use crate::scripts::reply::int;
use crate::scripts::{ScriptCall, ScriptName};

/// Set the limit of one key, or the queue's (for every key without its own).
#[derive(Debug, Clone, Copy)]
pub struct KeyLimit<'a> {
    /// The key; `None` for the queue's limit.
    pub key: Option<&'a str>,
    /// The limit; `None` removes it (ignored with `singleton`).
    pub limit: Option<u32>,
    /// The singleton mode instead of a limit: one job at a time, which keeps
    /// the key across its retries' backoff.
    pub singleton: bool,
}

impl Move for KeyLimit<'_> {
    const SCRIPT: ScriptName = ScriptName::KeyLimit;
    /// Keys made ready.
    type Reply = u64;

    fn args(&self, call: &mut ScriptCall) {
        let limit = match (self.singleton, self.limit) {
            (true, _) => "s".to_owned(),
            (false, Some(l)) => l.to_string(),
            (false, None) => String::new(),
        };
        call.arg(self.key.unwrap_or("")).arg(limit);
    }

    fn parse(&self, reply: Value) -> Result<u64> {
        Ok(int(&reply)?.max(0) as u64)
    }
}
