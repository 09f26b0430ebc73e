//! `scripts/promote.lua`: make delayed jobs waiting now.

use redis::Value;

use super::Move;
use crate::Result;
use crate::scripts::reply::strings;
use crate::scripts::{ScriptCall, ScriptName};

/// Promote delayed jobs `ids`, or with none the earliest due.
#[derive(Debug, Clone, Copy)]
pub struct Promote<'a> {
    /// Jobs moved by this call at most.
    pub batch: usize,
    /// The jobs (ids that are not delayed are skipped).
    pub ids: &'a [&'a str],
}

impl Move for Promote<'_> {
    const SCRIPT: ScriptName = ScriptName::Promote;
    /// The ids promoted.
    type Reply = Vec<String>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.batch);
        for id in self.ids {
            call.arg(*id);
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>> {
        strings(reply)
    }
}
