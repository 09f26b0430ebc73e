//! `scripts/fetch.lua`: promote due delayed jobs, then lease up to K waiting
//! jobs to one worker (within the queue's rate limit); a short batch parks
//! the worker so adds may hand it a job.

use std::time::Duration;

use redis::Value;

use super::{LeasedJob, Move, millis};
use crate::scripts::reply::{array, int, string};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Error, Result};

/// Lease up to `want` jobs to `worker`.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    /// Jobs asked for (the worker's free slots).
    pub want: usize,
    /// Lease length.
    pub lease: Duration,
    /// The worker's id, recorded on each job.
    pub worker: &'a str,
    /// Due delayed jobs promoted by this call at most.
    pub promote_limit: usize,
    /// How the worker parks if the batch comes back short (`None`: it does not).
    pub parking: Option<Parking<'a>>,
}

/// How a worker waiting for work registers to take hand-offs.
#[derive(Debug, Clone, Copy)]
pub struct Parking<'a> {
    /// Its member in the parked set: `<hand-off lease ms> <worker id>`.
    pub member: &'a str,
    /// How long the registration holds.
    pub ttl: Duration,
}

/// What a fetch call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReply {
    /// The queue is paused.
    pub paused: bool,
    /// Time until the next delayed job is due or a used-up rate-limit window
    /// closes, when the batch came back short.
    pub next_delayed_ms: Option<u64>,
    /// The jobs leased, in order.
    pub jobs: Vec<LeasedJob>,
    /// Ids that were listed as waiting but had no job hash: taken off the
    /// list (and announced as a `dropped` event), not leased.
    pub dropped: Vec<String>,
}

impl FetchReply {
    /// The ids leased, in order.
    pub fn ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }
}

/// Items before the first job: paused, next due, token, dropped ids.
const HEADER: usize = 4;
/// Items per job: id, attempt, name, payload head, payload rest, options,
/// when it was added (Redis ms). The token is sent once (one per call) and a
/// payload stored in pieces comes back as two parts, so Redis never builds
/// the joined text.
const PER_JOB: usize = 7;

impl Move for Fetch<'_> {
    const SCRIPT: ScriptName = ScriptName::Fetch;
    type Reply = FetchReply;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.want).arg(millis(self.lease)).arg(self.worker).arg(self.promote_limit);
        if let Some(p) = self.parking {
            call.arg(p.member).arg(millis(p.ttl));
        }
    }

    fn parse(&self, reply: Value) -> Result<FetchReply> {
        let items = array(reply)?;
        if items.len() < HEADER || !(items.len() - HEADER).is_multiple_of(PER_JOB) {
            return Err(Error::Protocol(format!("fetch returned {} items", items.len())));
        }
        let (header, rest) = items.split_at(HEADER);
        let token = string(&header[2])?;
        let dropped = string(&header[3])?;
        // The token is '<counter>-<Redis ms of the fetch>': the jobs' start.
        let leased_at: Option<u64> = token.rsplit_once('-').and_then(|(_, ms)| ms.parse().ok());
        let mut jobs = Vec::with_capacity(rest.len() / PER_JOB);
        for j in rest.chunks(PER_JOB) {
            let added_at = string(&j[6])?.parse::<u64>().ok();
            let mut payload = string(&j[3])?;
            payload.push_str(&string(&j[4])?);
            jobs.push(LeasedJob {
                id: string(&j[0])?,
                token: token.clone(),
                attempt: int(&j[1])?.clamp(1, i64::from(u32::MAX)) as u32,
                name: string(&j[2])?,
                payload,
                options: string(&j[5])?,
                waited_ms: match (leased_at, added_at) {
                    (Some(leased), Some(added)) => leased.saturating_sub(added),
                    _ => 0,
                },
            });
        }
        Ok(FetchReply {
            paused: int(&header[0])? == 1,
            next_delayed_ms: u64::try_from(int(&header[1])?).ok(),
            jobs,
            dropped: dropped.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fetch() -> Fetch<'static> {
        Fetch { want: 2, lease: Duration::from_secs(1), worker: "w", promote_limit: 10, parking: None }
    }

    #[test]
    fn a_fetch_reply_is_parsed_and_pieced_payloads_are_joined() {
        let reply = Value::Array(vec![
            Value::Int(0),
            Value::Int(-1),
            bulk("7-1000"),
            bulk(""),
            bulk("1"),
            Value::Int(1),
            bulk("job"),
            bulk("{\"a\":"),
            bulk("1}"),
            bulk(""),
            bulk("400"),
            bulk("2"),
            Value::Int(3),
            bulk("other"),
            bulk("{}"),
            bulk(""),
            bulk("{\"t\":5}"),
            bulk(""),
        ]);
        let f = fetch().parse(reply).unwrap();
        assert!(!f.paused);
        assert_eq!(f.next_delayed_ms, None);
        assert_eq!(f.jobs.len(), 2);
        assert!(f.dropped.is_empty());
        assert_eq!((f.jobs[0].id.as_str(), f.jobs[0].token.as_str(), f.jobs[0].attempt), ("1", "7-1000", 1));
        // Waited from the add (400) to the fetch (the token's 1000); unknown: 0.
        assert_eq!((f.jobs[0].waited_ms, f.jobs[1].waited_ms), (600, 0));
        assert_eq!(f.jobs[0].payload, "{\"a\":1}");
        assert_eq!((f.jobs[1].name.as_str(), f.jobs[1].payload.as_str()), ("other", "{}"));
        assert_eq!((f.jobs[1].attempt, f.jobs[1].options.as_str()), (3, "{\"t\":5}"));
        let empty =
            fetch().parse(Value::Array(vec![Value::Int(1), Value::Int(250), bulk(""), bulk("4,9")])).unwrap();
        assert!(empty.paused && empty.jobs.is_empty());
        assert_eq!(empty.next_delayed_ms, Some(250));
        assert_eq!(empty.dropped, ["4", "9"]);
        let short = Value::Array(vec![Value::Int(0), Value::Int(-1), bulk("1"), bulk(""), bulk("x")]);
        assert!(fetch().parse(short).is_err());
    }
}
