//! A queue's events stream: every script that moves jobs appends what it did
//! (`XADD`, trimmed to about `events_max_len` entries), timed by Redis' clock.
//! This module reads it.

use redis::Value;
use serde::Serialize;

use crate::open_enum::open_enum;
use crate::{Error, Result};

open_enum! {
    /// What an entry of the events stream tells (its `ev` field).
    pub enum EventKind {
        /// Jobs were added (`id`, or `count`, `first` and `last`).
        Added = "added",
        /// An add was deduplicated by its idempotency key (`id` = the first
        /// job's id, `key`): nothing was added.
        Deduplicated = "deduplicated",
        /// A concurrency-key limit was set or removed (`key`: '' for the
        /// queue's limit; `limit`: '' when removed).
        KeyLimit = "key_limit",
        /// Jobs were leased to a worker (`ids`, `worker`).
        Active = "active",
        /// Jobs completed (`ids`).
        Completed = "completed",
        /// An attempt failed and the job will run again (`id`, `error`, `delay` ms).
        Retrying = "retrying",
        /// A job failed for good: dead-lettered (`id`, `error`).
        Failed = "failed",
        /// An operator cancelled a job (`id`, `error` = the reason).
        Cancelled = "cancelled",
        /// A handler recorded progress (`id`, `progress`).
        Progress = "progress",
        /// A running job stored a durable step (`id`, `step`: `<name>#<occurrence>`,
        /// `outcome`: ok or failed).
        Step = "step",
        /// A job went to sleep: delayed until its wake time, holding no
        /// worker (`id`, `step`: `~sleep#<occurrence>`, `until`: Unix ms).
        Sleeping = "sleeping",
        /// Leases expired (`recovered` ids back to waiting, `failed` ids dead-lettered).
        Stalled = "stalled",
        /// Jobs went back to waiting unrun (`ids`): a worker stopped, or a
        /// hand-off was not taken.
        Released = "released",
        /// A job was removed (`id`).
        Removed = "removed",
        /// Flow children ended and their parents recorded them: `ids` (the
        /// parents), `children` (each `<queue>/<id>`) and `outcomes` (ok,
        /// failed, ignored or removed), comma-separated lists in the same
        /// order; the completions of one call write one such event per
        /// parent.
        ChildFinished = "child_finished",
        /// A flow's parent saw its last child end and became waiting (`id`).
        ChildrenDone = "children_done",
        /// A flow child's parent field could not be read (`id`, `error`):
        /// its parent was not told.
        FlowError = "flow_error",
        /// Delayed jobs were made waiting now (`ids`).
        Promoted = "promoted",
        /// The queue was paused.
        Paused = "paused",
        /// The queue was resumed.
        Resumed = "resumed",
        /// The rate limit was set or removed (`rate`: `<max> <window ms>`, or empty).
        Limit = "limit",
        /// Dead-lettered jobs were moved back to waiting (`ids`).
        DeadLetterRetry = "dead_letter_retry",
        /// Dead-lettered jobs were deleted (`ids`).
        DeadLetterPurge = "dead_letter_purge",
        /// Ids listed as waiting had no job behind them (a corrupt or
        /// hand-edited queue); a fetch dropped them from the list (`ids`).
        Dropped = "dropped",
        /// An operator acted on the queue through the dashboard (`actor`:
        /// who; `action`: what, e.g. `retry`, `pause`; then `id` or `ids`, or
        /// `filter` and `count` for actions on every match). The move itself
        /// writes its own event just before.
        Operator = "operator",
    }
}

/// One entry of a queue's events stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The stream entry's id (`<ms>-<seq>`): read on after it to get what
    /// followed.
    pub id: String,
    /// When it happened (Redis time, ms since the Unix epoch).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The details, in the order written: `id` or `ids` (comma-separated),
    /// and per kind `worker`, `error`, `delay`, `count`, `recovered`, ...
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// The value of detail `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The job ids the event is about (from `id`, `ids`, or a stall's
    /// `recovered` and `failed`).
    pub fn job_ids(&self) -> Vec<&str> {
        ["id", "ids", "recovered", "failed"]
            .iter()
            .filter_map(|name| self.field(name))
            .flat_map(|list| list.split(',').filter(|id| !id.is_empty()))
            .collect()
    }
}

/// Parse the entries of an `XRANGE` or `XREVRANGE` reply, in reply order.
pub fn parse_entries(reply: Value) -> Result<Vec<Event>> {
    match reply {
        Value::Array(entries) => entries.into_iter().map(parse_entry).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(&other)),
    }
}

/// Parse the reply of an `XREAD` of one stream: nothing (`nil`) when the block
/// ran out. Takes both the RESP2 (array) and the RESP3 (map) form.
pub fn parse_read(reply: Value) -> Result<Vec<Event>> {
    let stream = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(mut streams) if streams.len() == 1 => match streams.pop() {
            Some(Value::Array(mut pair)) if pair.len() == 2 => pair.pop(),
            _ => None,
        },
        Value::Map(mut streams) if streams.len() == 1 => streams.pop().map(|(_, entries)| entries),
        other => return Err(bad(&other)),
    };
    parse_entries(stream.unwrap_or(Value::Nil))
}

fn parse_entry(entry: Value) -> Result<Event> {
    let Value::Array(mut parts) = entry else {
        return Err(bad(&entry));
    };
    let (Some(fields), Some(id)) = (parts.pop(), parts.pop()) else {
        return Err(Error::Protocol("an events stream entry without id or fields".into()));
    };
    let id = text(id)?;
    let at_ms = id.split('-').next().and_then(|ms| ms.parse().ok()).ok_or_else(|| {
        Error::Protocol(format!("an events stream entry id that is not <ms>-<seq>: {id:?}"))
    })?;
    let flat: Vec<String> = match fields {
        Value::Array(items) => items.into_iter().map(text).collect::<Result<_>>()?,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).map(text).collect::<Result<_>>()?,
        other => return Err(bad(&other)),
    };
    let mut pairs = flat.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone()));
    let kind = match pairs.next() {
        Some((k, v)) if k == "ev" => EventKind::parse(&v),
        _ => return Err(Error::Protocol(format!("events stream entry {id} has no 'ev' field first"))),
    };
    Ok(Event { id, at_ms, kind, fields: pairs.collect() })
}

fn text(v: Value) -> Result<String> {
    match v {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| Error::Protocol(e.to_string())),
        Value::SimpleString(s) => Ok(s),
        other => Err(bad(&other)),
    }
}

fn bad(v: &Value) -> Error {
    Error::Protocol(format!("unexpected events stream reply: {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    }

    #[test]
    fn entries_keep_their_order_and_details() {
        let reply = Value::Array(vec![
            entry("1700000000123-0", &["ev", "added", "id", "7"]),
            entry("1700000000125-1", &["ev", "stalled", "recovered", "3,4", "failed", ""]),
        ]);
        let events = parse_entries(reply).unwrap();
        assert_eq!(events[0].kind, EventKind::Added);
        assert_eq!(events[0].at_ms, 1_700_000_000_123);
        assert_eq!(events[0].job_ids(), ["7"]);
        assert_eq!(events[1].id, "1700000000125-1");
        assert_eq!(events[1].job_ids(), ["3", "4"]);
        assert_eq!(events[1].field("failed"), Some(""));
    }

    #[test]
    fn a_read_reply_of_either_protocol_and_a_timeout() {
        let entries = Value::Array(vec![entry("5-0", &["ev", "paused"])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("q:events"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("q:events"), entries)]);
        for reply in [resp2, resp3] {
            let events = parse_read(reply).unwrap();
            assert_eq!((&events[0].kind, events[0].at_ms), (&EventKind::Paused, 5));
        }
        assert!(parse_read(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn malformed_entries_are_protocol_errors() {
        let no_ev = Value::Array(vec![entry("1-0", &["id", "7"])]);
        assert!(matches!(parse_entries(no_ev), Err(Error::Protocol(_))));
        let bad_id = Value::Array(vec![entry("later", &["ev", "added"])]);
        assert!(matches!(parse_entries(bad_id), Err(Error::Protocol(_))));
    }
}
