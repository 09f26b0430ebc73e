//! The registry of Lua scripts. Each file in `scripts/` performs one atomic
//! state move; `scripts/prelude.lua` is prepended to every one of them.
//!
//! Scripts are called by SHA (`EVALSHA`); when Redis answers `NOSCRIPT` (after
//! a restart or a `SCRIPT FLUSH`) the script is loaded and the call sent again.
//! A call that got `NOSCRIPT` never ran, so sending it again is always safe.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisError, ToRedisArgs, Value};

use crate::keys::QueueKeys;
use crate::{Error, Result};

macro_rules! lua {
    ($file:literal) => {
        concat!(
            include_str!("../../scripts/prelude.lua"),
            "\n",
            include_str!(concat!("../../scripts/", $file))
        )
    };
}

/// One script per state move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScriptName {
    /// Add one or many jobs.
    Add,
    /// Lease a batch of jobs to a worker.
    Fetch,
    /// Acknowledge a batch of completed jobs.
    Complete,
    /// Record a failed attempt: retry later or dead-letter.
    Fail,
    /// Renew every lease a worker holds.
    Renew,
    /// Recover expired leases and trim old completed jobs.
    Reap,
    /// Hand leased jobs back without using up an attempt.
    Release,
    /// Remove a job that is not active.
    Remove,
    /// Count jobs per state.
    Counts,
    /// Retry or purge dead-lettered jobs.
    DeadLetter,
    /// Pause or resume a queue.
    Pause,
    /// Enqueue one scheduler tick at most once (watermark in the queue's slot).
    Tick,
}

impl ScriptName {
    /// Every script.
    pub const ALL: [ScriptName; 12] = [
        ScriptName::Add,
        ScriptName::Fetch,
        ScriptName::Complete,
        ScriptName::Fail,
        ScriptName::Renew,
        ScriptName::Reap,
        ScriptName::Release,
        ScriptName::Remove,
        ScriptName::Counts,
        ScriptName::DeadLetter,
        ScriptName::Pause,
        ScriptName::Tick,
    ];

    /// The script's file name without `.lua`.
    pub fn file_stem(self) -> &'static str {
        match self {
            ScriptName::Add => "add",
            ScriptName::Fetch => "fetch",
            ScriptName::Complete => "complete",
            ScriptName::Fail => "fail",
            ScriptName::Renew => "renew",
            ScriptName::Reap => "reap",
            ScriptName::Release => "release",
            ScriptName::Remove => "remove",
            ScriptName::Counts => "counts",
            ScriptName::DeadLetter => "dead_letter",
            ScriptName::Pause => "pause",
            ScriptName::Tick => "tick",
        }
    }

    /// The full source (prelude included).
    pub fn source(self) -> &'static str {
        match self {
            ScriptName::Add => lua!("add.lua"),
            ScriptName::Fetch => lua!("fetch.lua"),
            ScriptName::Complete => lua!("complete.lua"),
            ScriptName::Fail => lua!("fail.lua"),
            ScriptName::Renew => lua!("renew.lua"),
            ScriptName::Reap => lua!("reap.lua"),
            ScriptName::Release => lua!("release.lua"),
            ScriptName::Remove => lua!("remove.lua"),
            ScriptName::Counts => lua!("counts.lua"),
            ScriptName::DeadLetter => lua!("dead_letter.lua"),
            ScriptName::Pause => lua!("pause.lua"),
            ScriptName::Tick => lua!("tick.lua"),
        }
    }

    /// The SHA1 Redis knows the script by.
    pub fn sha(self) -> &'static str {
        static SHAS: LazyLock<Vec<(ScriptName, redis::Script)>> =
            LazyLock::new(|| ScriptName::ALL.iter().map(|n| (*n, redis::Script::new(n.source()))).collect());
        SHAS.iter().find(|(n, _)| *n == self).map(|(_, s)| s.get_hash()).expect("every script is registered")
    }
}

/// Events kept in a queue's stream unless configured otherwise (approximate trim).
pub const DEFAULT_EVENTS_MAX_LEN: u64 = 10_000;

/// A prepared call of one script on one queue.
#[derive(Debug, Clone)]
pub struct ScriptCall {
    name: ScriptName,
    cmd: Cmd,
}

impl ScriptCall {
    /// A call of `name` on the queue of `keys`; the events stream of that
    /// queue is trimmed to about `events_max_len` entries (0 disables events).
    pub fn new(name: ScriptName, keys: &QueueKeys, events_max_len: u64) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(name.sha()).arg(keys.script_keys().len());
        for k in keys.script_keys() {
            cmd.arg(k);
        }
        cmd.arg(keys.job_prefix()).arg(events_max_len);
        Self { name, cmd }
    }

    /// A call of `name` on the queue of `keys` with extra keys of that same
    /// queue after the standard ones (they are `KEYS[10]` and on in the script).
    pub fn with_extra_keys(
        name: ScriptName,
        keys: &QueueKeys,
        extra: &[String],
        events_max_len: u64,
    ) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(name.sha()).arg(keys.script_keys().len() + extra.len());
        for k in keys.script_keys().iter().chain(extra) {
            cmd.arg(k);
        }
        cmd.arg(keys.job_prefix()).arg(events_max_len);
        Self { name, cmd }
    }

    /// Append an argument.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// The script called.
    pub fn name(&self) -> ScriptName {
        self.name
    }

    /// Run the call, loading the script first if Redis does not know it.
    pub async fn run<T: FromRedisValue, C: ConnectionLike + Send>(&self, conn: &mut C) -> Result<T> {
        match self.cmd.query_async::<T>(conn).await {
            Err(e) if is_noscript(&e) => {
                load(conn, self.name).await?;
                Ok(self.cmd.query_async::<T>(conn).await?)
            }
            other => Ok(other?),
        }
    }
}

/// Run several calls in one round trip (a pipeline, not a transaction).
/// Returns one result per call, in order. An `Err` for the whole batch means the
/// connection failed, and then any of the calls may or may not have run.
pub async fn run_pipelined<C: ConnectionLike + Send>(
    conn: &mut C,
    calls: &[ScriptCall],
) -> Result<Vec<Result<Value>>> {
    let mut results = send(conn, calls.iter()).await?;
    let missing: Vec<usize> =
        (0..calls.len()).filter(|&i| matches!(&results[i], Err(e) if is_noscript(e))).collect();
    if !missing.is_empty() {
        for name in ScriptName::ALL {
            if missing.iter().any(|&i| calls[i].name == name) {
                load(conn, name).await?;
            }
        }
        let again = send(conn, missing.iter().map(|&i| &calls[i])).await?;
        for (i, r) in missing.into_iter().zip(again) {
            results[i] = r;
        }
    }
    Ok(results.into_iter().map(|r| r.map_err(Error::from)).collect())
}

async fn send<'a, C: ConnectionLike + Send>(
    conn: &mut C,
    calls: impl Iterator<Item = &'a ScriptCall>,
) -> Result<Vec<std::result::Result<Value, RedisError>>> {
    let mut pipe = redis::pipe();
    for c in calls {
        pipe.add_command(c.cmd.clone());
    }
    Ok(pipe.ignore_errors().query_async(conn).await?)
}

/// Load one script into Redis' script cache.
pub async fn load<C: ConnectionLike + Send>(conn: &mut C, name: ScriptName) -> Result<()> {
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(name.source()).query_async(conn).await?;
    if sha != name.sha() {
        return Err(Error::Protocol(format!("SCRIPT LOAD of {} returned sha {sha}", name.file_stem())));
    }
    Ok(())
}

/// Load every script (workers do this at start, so the first calls do not miss).
pub async fn load_all<C: ConnectionLike + Send>(conn: &mut C) -> Result<()> {
    for name in ScriptName::ALL {
        load(conn, name).await?;
    }
    Ok(())
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Read an integer reply of a script.
pub fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(Error::Protocol(format!("expected an integer from a script, got {other:?}"))),
    }
}

/// Read a string reply of a script (bulk or simple string, or an integer).
pub fn string(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map_err(|_| Error::Protocol("a script returned text that is not UTF-8".into())),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!("expected a string from a script, got {other:?}"))),
    }
}

/// Read an array reply of a script (`nil` and an empty table both give `[]`).
pub fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("expected an array from a script, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_has_the_prelude_and_a_distinct_sha() {
        let mut shas = std::collections::HashSet::new();
        for n in ScriptName::ALL {
            assert!(n.source().contains("local function now_ms()"), "{}", n.file_stem());
            assert!(shas.insert(n.sha()), "{}", n.file_stem());
        }
    }
}
