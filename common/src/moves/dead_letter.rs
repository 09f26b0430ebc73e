//! `scripts/dead_letter.lua`: retry or purge dead-lettered jobs.

use redis::Value;

use super::Move;
use crate::Result;
use crate::scripts::reply::strings;
use crate::scripts::{ScriptCall, ScriptName};

/// What to do with dead-lettered jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Make them waiting again with a fresh attempt budget (history and
    /// finished durable steps kept).
    Retry,
    /// Delete them.
    Purge,
}

impl DeadLetterAction {
    /// The action as the script takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterAction::Retry => "retry",
            DeadLetterAction::Purge => "purge",
        }
    }
}

/// Act on dead-lettered jobs `ids`, or with none on the oldest `batch`.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Retry or purge.
    pub action: DeadLetterAction,
    /// Entries handled at most when no ids are given.
    pub batch: usize,
    /// The jobs (ids not in the dead-letter list are skipped).
    pub ids: &'a [&'a str],
    /// With [`DeadLetterAction::Retry`]: forget this durable step
    /// (`<name>#<occurrence>`) and every step stored after it, so they run
    /// again; jobs without that step are skipped. `None`: keep every
    /// finished step (the job resumes after them).
    pub from_step: Option<&'a str>,
}

impl Move for DeadLetter<'_> {
    const SCRIPT: ScriptName = ScriptName::DeadLetter;
    /// The ids acted on.
    type Reply = Vec<String>;

    fn args(&self, call: &mut ScriptCall) {
        match (self.action, self.from_step) {
            (DeadLetterAction::Retry, Some(step)) => {
                call.arg("retry_from").arg(self.batch).arg(step);
            }
            (action, _) => {
                call.arg(action.as_str()).arg(self.batch);
            }
        }
        for id in self.ids {
            call.arg(*id);
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>> {
        strings(reply)
    }
}
