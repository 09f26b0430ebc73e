//! The registry of Lua scripts. Each file in `scripts/` performs one atomic
//! state move; `scripts/prelude.lua` is put in front of every one of them,
//! with only the helper blocks the script uses (see [`with_prelude`]).
//!
//! Scripts are called by SHA (`EVALSHA`); when Redis answers `NOSCRIPT` (after
//! a restart or a `SCRIPT FLUSH`) the script is loaded and the call sent again.
//! A call that got `NOSCRIPT` never ran, so sending it again is always safe.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisError, ToRedisArgs, Value};

use crate::keys::QueueKeys;
use crate::{Error, Result};

const PRELUDE: &str = include_str!("../../scripts/prelude.lua");

macro_rules! lua {
    ($file:literal) => {
        include_str!(concat!("../../scripts/", $file))
    };
}

/// `body` with the prelude in front: its header (everything above the first
/// `-- @block` line), then those of its blocks that `body` needs. A block is
/// needed when `body`, or a block needed, mentions a name listed on its
/// `-- @block` line; blocks only use blocks above them, so one pass from the
/// last block up finds them all. Defining unused helpers cost about 20,000
/// Redis instructions per call.
pub fn with_prelude(prelude: &str, body: &str) -> String {
    let mut parts = prelude.split("\n-- @block ");
    let header = parts.next().unwrap_or_default();
    let blocks: Vec<(Vec<&str>, &str)> = parts
        .map(|block| {
            let (names, _) = block.split_once('\n').unwrap_or((block, ""));
            (names.split_whitespace().collect(), block)
        })
        .collect();
    let mut needed = vec![false; blocks.len()];
    let mut text = body.to_owned();
    for (i, (names, block)) in blocks.iter().enumerate().rev() {
        if names.iter().any(|n| mentions(&text, n)) {
            needed[i] = true;
            text.push_str(block);
        }
    }
    let mut out = String::from(header);
    for (i, (_, block)) in blocks.iter().enumerate() {
        if needed[i] {
            out.push_str("\n-- @block ");
            out.push_str(block);
        }
    }
    out.push('\n');
    out.push_str(body);
    out
}

/// Whether `text` holds `name` as a whole Lua identifier.
fn mentions(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
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
    /// Renew every lease a worker holds, or claim jobs taken from the
    /// hand-off list (recording the worker).
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
    /// Stop taking hand-offs; return unclaimed ones when no worker is parked.
    Unpark,
}

impl ScriptName {
    /// Every script.
    pub const ALL: [ScriptName; 13] = [
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
        ScriptName::Unpark,
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
            ScriptName::Unpark => "unpark",
        }
    }

    /// The full source (prelude included).
    pub fn source(self) -> &'static str {
        static SOURCES: LazyLock<Vec<(ScriptName, String)>> =
            LazyLock::new(|| ScriptName::ALL.iter().map(|n| (*n, with_prelude(PRELUDE, n.body()))).collect());
        SOURCES.iter().find(|(n, _)| *n == self).map(|(_, s)| s.as_str()).expect("every script is registered")
    }

    /// The script's own file, without the prelude.
    fn body(self) -> &'static str {
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
            ScriptName::Unpark => lua!("unpark.lua"),
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

    /// The `EVALSHA` command, to send in a pipeline of one's own (a script
    /// missing from Redis' cache then fails with `NOSCRIPT`).
    pub fn command(&self) -> &Cmd {
        &self.cmd
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

/// Largest value Redis keeps in a hash's compact listpack encoding
/// (`hash-max-listpack-value`); payloads are stored in pieces of this size.
pub const PAYLOAD_PIECE: usize = 64;

/// Cut a payload for `add.lua`: a payload of 65 to 128 bytes becomes two
/// pieces of at most [`PAYLOAD_PIECE`] bytes, cut at a character boundary;
/// any other payload (or one whose cut would leave a piece too long) is sent
/// whole as the head with an empty tail, and the script stores it itself.
pub fn split_payload(data: &str) -> (&str, &str) {
    if data.len() <= PAYLOAD_PIECE || data.len() > 2 * PAYLOAD_PIECE {
        return (data, "");
    }
    let mut cut = PAYLOAD_PIECE;
    while !data.is_char_boundary(cut) {
        cut -= 1;
    }
    if data.len() - cut > PAYLOAD_PIECE {
        return (data, "");
    }
    data.split_at(cut)
}

/// One job leased by a fetch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    /// Job id.
    pub id: String,
    /// Fencing token of this lease.
    pub token: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Job name.
    pub name: String,
    /// Payload (JSON text).
    pub payload: String,
    /// Stored options ('' = defaults).
    pub options: String,
}

/// The reply of `fetch.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReply {
    /// The queue is paused.
    pub paused: bool,
    /// Time until the next delayed job is due, when the batch came back short.
    pub next_delayed_ms: Option<u64>,
    /// The jobs leased, in order.
    pub jobs: Vec<LeasedJob>,
}

/// Items before the first job in a fetch reply: paused, next due, token.
const FETCH_HEADER: usize = 3;
/// Items per job in a fetch reply: id, attempt, name, payload head, payload
/// rest, options. The token is sent once (one per call) and a payload stored in
/// pieces comes back as two parts, so Redis never builds the joined text.
const FETCH_PER_JOB: usize = 6;

/// Parse the reply of `fetch.lua`.
pub fn parse_fetch(reply: Value) -> Result<FetchReply> {
    let items = array(reply)?;
    if items.len() < FETCH_HEADER || !(items.len() - FETCH_HEADER).is_multiple_of(FETCH_PER_JOB) {
        return Err(Error::Protocol(format!("fetch returned {} items", items.len())));
    }
    let mut items = items.into_iter();
    let paused = int(&items.next().unwrap_or(Value::Nil))? == 1;
    let next = int(&items.next().unwrap_or(Value::Nil))?;
    let token = string(&items.next().unwrap_or(Value::Nil))?;
    let rest: Vec<Value> = items.collect();
    let mut jobs = Vec::with_capacity(rest.len() / FETCH_PER_JOB);
    for j in rest.chunks(FETCH_PER_JOB) {
        let mut payload = string(&j[3])?;
        payload.push_str(&string(&j[4])?);
        jobs.push(LeasedJob {
            id: string(&j[0])?,
            token: token.clone(),
            attempt: int(&j[1])?.clamp(1, i64::from(u32::MAX)) as u32,
            name: string(&j[2])?,
            payload,
            options: string(&j[5])?,
        });
    }
    Ok(FetchReply { paused, next_delayed_ms: u64::try_from(next).ok(), jobs })
}

/// Parse a record of the hand-off list (written by `add.lua`): id, token,
/// attempt, name and options, each followed by a newline, then the payload
/// (which may hold newlines itself).
pub fn parse_handoff(record: &str) -> Result<LeasedJob> {
    let bad = || {
        Error::Protocol(format!(
            "malformed hand-off record {:?}",
            record.chars().take(80).collect::<String>()
        ))
    };
    let mut parts = record.splitn(6, '\n');
    let mut next = || parts.next().ok_or_else(bad);
    let (id, token, attempt, name, options, payload) = (next()?, next()?, next()?, next()?, next()?, next()?);
    Ok(LeasedJob {
        id: id.to_owned(),
        token: token.to_owned(),
        attempt: attempt.parse().map_err(|_| bad())?,
        name: name.to_owned(),
        payload: payload.to_owned(),
        options: options.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_has_the_prelude_and_a_distinct_sha() {
        let mut shas = std::collections::HashSet::new();
        for n in ScriptName::ALL {
            assert!(n.source().contains("local JOB_PREFIX = ARGV[1]"), "{}", n.file_stem());
            assert!(shas.insert(n.sha()), "{}", n.file_stem());
        }
    }

    #[test]
    fn the_active_pin_is_the_same_in_rust_and_lua_and_forces_skiplist_encoding() {
        let pin = crate::keys::ACTIVE_PIN;
        assert!(ScriptName::Fetch.source().contains(&format!("local ACTIVE_PIN = '{pin}'")));
        assert!(pin.len() > 64, "over zset-max-listpack-value (64 bytes)");
        assert!(crate::names::validate_job_id(pin).is_err(), "never a valid job id");
    }

    #[test]
    fn payloads_of_65_to_128_bytes_are_cut_in_two_at_a_character_boundary() {
        let short = "x".repeat(64);
        assert_eq!(split_payload(&short), (short.as_str(), ""));
        let long = "x".repeat(129);
        assert_eq!(split_payload(&long), (long.as_str(), ""));
        let two = "x".repeat(120);
        assert_eq!(split_payload(&two), (&two[..64], &two[64..]));
        // 'é' is two bytes: a cut at 64 would fall inside it at byte 63-64.
        let accented = format!("{}é{}", "x".repeat(63), "y".repeat(40));
        let (head, tail) = split_payload(&accented);
        assert_eq!((head.len(), format!("{head}{tail}")), (63, accented.clone()));
        // The cut moved back, leaving a tail over 64 bytes: sent whole.
        let tight = format!("{}é{}", "x".repeat(63), "y".repeat(63));
        assert_eq!(split_payload(&tight), (tight.as_str(), ""));
    }

    #[test]
    fn a_fetch_reply_is_parsed_and_pieced_payloads_are_joined() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Int(0),
            Value::Int(-1),
            bulk("7"),
            bulk("1"),
            Value::Int(1),
            bulk("job"),
            bulk("{\"a\":"),
            bulk("1}"),
            bulk(""),
            bulk("2"),
            Value::Int(3),
            bulk("other"),
            bulk("{}"),
            bulk(""),
            bulk("{\"t\":5}"),
        ]);
        let f = parse_fetch(reply).unwrap();
        assert!(!f.paused);
        assert_eq!(f.next_delayed_ms, None);
        assert_eq!(f.jobs.len(), 2);
        assert_eq!((f.jobs[0].id.as_str(), f.jobs[0].token.as_str(), f.jobs[0].attempt), ("1", "7", 1));
        assert_eq!(f.jobs[0].payload, "{\"a\":1}");
        assert_eq!((f.jobs[1].name.as_str(), f.jobs[1].payload.as_str()), ("other", "{}"));
        assert_eq!((f.jobs[1].attempt, f.jobs[1].options.as_str()), (3, "{\"t\":5}"));
        let empty = parse_fetch(Value::Array(vec![Value::Int(1), Value::Int(250), bulk("")])).unwrap();
        assert!(empty.paused && empty.jobs.is_empty());
        assert_eq!(empty.next_delayed_ms, Some(250));
        assert!(
            parse_fetch(Value::Array(vec![Value::Int(0), Value::Int(-1), bulk("1"), bulk("x")])).is_err()
        );
    }

    #[test]
    fn hand_off_records_keep_newlines_in_the_payload_and_refuse_short_ones() {
        let job = parse_handoff("7\n42\n1\nemail\n{\"attempts\":3}\n{\"a\":\n1}").unwrap();
        assert_eq!(job.id, "7");
        assert_eq!(job.token, "42");
        assert_eq!(job.attempt, 1);
        assert_eq!(job.name, "email");
        assert_eq!(job.options, "{\"attempts\":3}");
        assert_eq!(job.payload, "{\"a\":\n1}");
        assert!(parse_handoff("7\n42\n1\nemail\n").is_err());
        assert!(parse_handoff("7\n42\nx\nemail\n\n{}").is_err());
    }

    #[test]
    fn a_script_gets_the_prelude_blocks_it_uses_and_those_they_use() {
        let prelude = "local K = KEYS[1]\n-- @block a\nlocal function a() end\n-- @block b B2\nlocal B2 = 2\nlocal function b() a() end\n-- @block c\nlocal function c() end";
        let only_b = with_prelude(prelude, "return B2");
        assert!(only_b.starts_with("local K = KEYS[1]\n"));
        assert!(only_b.contains("function a()") && only_b.contains("function b()"), "b uses a: {only_b}");
        assert!(!only_b.contains("function c()"), "{only_b}");
        assert!(only_b.ends_with("\nreturn B2"));
        let none = with_prelude(prelude, "local abc = 1 -- also bc\nreturn abc");
        assert!(!none.contains("function"), "whole names only: {none}");
        assert_eq!(with_prelude(prelude, "return 1"), "local K = KEYS[1]\nreturn 1");
    }

    #[test]
    fn every_script_gets_the_helpers_it_calls() {
        let helpers =
            ["clock", "now_ms", "emit", "wake", "to_waiting", "push_history", "is_paused", "write_split_job"];
        for n in ScriptName::ALL {
            for h in helpers {
                if mentions(n.body(), &format!("{h}(")[..h.len()]) {
                    assert!(
                        n.source().contains(&format!("local function {h}(")),
                        "{} calls {h}",
                        n.file_stem()
                    );
                }
            }
        }
        assert!(!ScriptName::Renew.source().contains("local function write_job("));
        assert!(
            ScriptName::Add.source().contains("local function write_plain_job("),
            "write_split_job uses it"
        );
    }
}
