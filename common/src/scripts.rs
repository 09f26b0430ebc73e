//! The registry of Lua scripts. Each file in `scripts/` performs one atomic
//! state move; `scripts/prelude.lua` holds the helpers they share.
//!
//! On Redis 7.0 and later the scripts are one Redis Function library
//! ([`library_source`]): the prelude once, each script a function, called
//! with `FCALL`. Helpers are then defined once, when the library is loaded,
//! not on every call, and the library's Lua heap is about 40% smaller than
//! the same scripts loaded one by one, which makes the Lua GC step Redis
//! runs on every 50th script call cheaper. The library's name carries a hash
//! of its text, so versions of quern sharing a Redis each use their own.
//!
//! Where `FCALL` is refused (Redis 6.2 answers "unknown command"; an ACL may
//! answer `NOPERM`) or the library cannot be loaded, this process falls back
//! to `EVALSHA`: each script with the prelude blocks it uses in front (see
//! [`with_prelude`]).
//!
//! When Redis has forgotten the library or a script (a restart without
//! persistence, `FUNCTION FLUSH`, `SCRIPT FLUSH`), it answers "Function not
//! found" or `NOSCRIPT`; the call is loaded and sent again. Such a call never
//! ran, so sending it again is always safe.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Set or remove the queue's rate limit.
    Limit,
    /// Make delayed jobs waiting now.
    Promote,
    /// Record a running job's progress.
    Progress,
    /// Stop a job for good: revoke its lease, dead-letter it.
    Cancel,
    /// Delete a queue with its jobs and keys, in bounded calls.
    Obliterate,
}

impl ScriptName {
    /// Every script.
    pub const ALL: [ScriptName; 18] = [
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
        ScriptName::Limit,
        ScriptName::Promote,
        ScriptName::Progress,
        ScriptName::Cancel,
        ScriptName::Obliterate,
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
            ScriptName::Limit => "limit",
            ScriptName::Promote => "promote",
            ScriptName::Progress => "progress",
            ScriptName::Cancel => "cancel",
            ScriptName::Obliterate => "obliterate",
        }
    }

    /// The full source for `EVALSHA` (the prelude blocks it uses included).
    pub fn source(self) -> &'static str {
        static SOURCES: LazyLock<Vec<(ScriptName, String)>> = LazyLock::new(|| {
            ScriptName::ALL
                .iter()
                .map(|n| (*n, with_prelude(PRELUDE, &format!("{BIND}{}", n.body()))))
                .collect()
        });
        SOURCES.iter().find(|(n, _)| *n == self).map(|(_, s)| s.as_str()).expect("every script is registered")
    }

    /// The name of the script's function in the library (`FCALL`).
    pub fn function_name(self) -> &'static str {
        static NAMES: LazyLock<Vec<(ScriptName, String)>> = LazyLock::new(|| {
            ScriptName::ALL.iter().map(|n| (*n, format!("{}_{}", library_name(), n.file_stem()))).collect()
        });
        NAMES.iter().find(|(n, _)| *n == self).map(|(_, s)| s.as_str()).expect("every script is registered")
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
            ScriptName::Limit => lua!("limit.lua"),
            ScriptName::Promote => lua!("promote.lua"),
            ScriptName::Progress => lua!("progress.lua"),
            ScriptName::Cancel => lua!("cancel.lua"),
            ScriptName::Obliterate => lua!("obliterate.lua"),
        }
    }

    /// The SHA1 Redis knows the script by.
    pub fn sha(self) -> &'static str {
        static SHAS: LazyLock<Vec<(ScriptName, redis::Script)>> =
            LazyLock::new(|| ScriptName::ALL.iter().map(|n| (*n, redis::Script::new(n.source()))).collect());
        SHAS.iter().find(|(n, _)| *n == self).map(|(_, s)| s.get_hash()).expect("every script is registered")
    }
}

/// The first line of every script's body: point the prelude's names at the
/// call's keys and arguments.
const BIND: &str = "bind(KEYS, ARGV)\n";

/// The name of the Function library: `quern_` and a hash of the scripts' text.
pub fn library_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let all: String = std::iter::once(PRELUDE).chain(ScriptName::ALL.iter().map(|n| n.body())).collect();
        format!("quern_{}", &redis::Script::new(&all).get_hash()[..12])
    });
    &NAME
}

/// The Function library (`FUNCTION LOAD`): the prelude once, then every
/// script as a function of its own.
pub fn library_source() -> &'static str {
    static SOURCE: LazyLock<String> = LazyLock::new(|| {
        let mut text = format!("#!lua name={}\n{PRELUDE}\n", library_name());
        for n in ScriptName::ALL {
            text.push_str(&format!(
                "redis.register_function('{}', function(KEYS, ARGV)\n{BIND}{}\nend)\n",
                n.function_name(),
                n.body()
            ));
        }
        text
    });
    &SOURCE
}

/// Set once a Redis refused `FCALL` or the library: from then on this process
/// calls scripts with `EVALSHA`, which every supported Redis runs.
static FUNCTIONS_REFUSED: AtomicBool = AtomicBool::new(false);

fn refuse_functions() {
    FUNCTIONS_REFUSED.store(true, Ordering::Relaxed);
}

/// Whether this process calls scripts as Redis Functions (`FCALL`); false
/// once a server refused them (then `EVALSHA`).
pub fn calls_functions() -> bool {
    !FUNCTIONS_REFUSED.load(Ordering::Relaxed)
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
        Self::with_extra_keys(name, keys, &[], events_max_len)
    }

    /// A call of `name` on the queue of `keys` with extra keys of that same
    /// queue after the standard ones (they are `KEYS[10]` and on in the script).
    pub fn with_extra_keys(
        name: ScriptName,
        keys: &QueueKeys,
        extra: &[String],
        events_max_len: u64,
    ) -> Self {
        let mut cmd = if calls_functions() {
            let mut c = redis::cmd("FCALL");
            c.arg(name.function_name());
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(name.sha());
            c
        };
        cmd.arg(keys.script_keys().len() + extra.len());
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

    /// The command (`FCALL` or `EVALSHA`), to send in a pipeline of one's own
    /// (a library or script missing from Redis then fails the call).
    pub fn command(&self) -> &Cmd {
        &self.cmd
    }

    /// The command as this process calls scripts now: the one built, or the
    /// same call as `EVALSHA` if `FCALL` was refused since.
    fn current(&self) -> Cow<'_, Cmd> {
        let is_fcall = self.cmd.args_iter().next().is_some_and(|a| matches!(a, redis::Arg::Simple(b"FCALL")));
        if !is_fcall || calls_functions() {
            return Cow::Borrowed(&self.cmd);
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.name.sha());
        for a in self.cmd.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = a {
                cmd.arg(bytes);
            }
        }
        Cow::Owned(cmd)
    }

    /// Run the call, loading the library or script first if Redis does not
    /// know it, and falling back to `EVALSHA` if `FCALL` is refused.
    pub async fn run<T: FromRedisValue, C: ConnectionLike + Send>(&self, conn: &mut C) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.current().query_async::<T>(conn).await {
                Err(e) if attempt < 4 => match Repair::for_error(self.name, &e) {
                    Some(repair) => repair.apply(conn).await?,
                    None => return Err(e.into()),
                },
                other => return Ok(other?),
            }
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
    let mut results = send(conn, calls.iter().map(|c| c.current())).await?;
    for _ in 0..3 {
        let mut again = Vec::new();
        let mut repairs = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            if let Err(e) = &results[i]
                && let Some(repair) = Repair::for_error(call.name, e)
            {
                again.push(i);
                if !repairs.contains(&repair) {
                    repairs.push(repair);
                }
            }
        }
        if again.is_empty() {
            break;
        }
        // Once each: many calls missing the library need one load.
        for repair in repairs {
            repair.apply(conn).await?;
        }
        let replies = send(conn, again.iter().map(|&i| calls[i].current())).await?;
        for (i, r) in again.into_iter().zip(replies) {
            results[i] = r;
        }
    }
    Ok(results.into_iter().map(|r| r.map_err(Error::from)).collect())
}

/// What lets a call that failed succeed when sent again. Such a call never
/// ran; other errors are the call's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// `NOSCRIPT`: load the script.
    LoadScript(ScriptName),
    /// "Function not found": load the library (if the server refuses it,
    /// the call goes again as `EVALSHA`, and loads its script on `NOSCRIPT`).
    LoadLibrary,
    /// `FCALL` refused: call scripts with `EVALSHA` from now on.
    FallBack,
}

impl Repair {
    fn for_error(name: ScriptName, e: &RedisError) -> Option<Self> {
        if is_noscript(e) {
            Some(Repair::LoadScript(name))
        } else if is_function_missing(e) {
            Some(Repair::LoadLibrary)
        } else if is_fcall_refused(e) && calls_functions() {
            Some(Repair::FallBack)
        } else {
            None
        }
    }

    async fn apply<C: ConnectionLike + Send>(self, conn: &mut C) -> Result<()> {
        match self {
            Repair::LoadScript(name) => load_script(conn, name).await,
            Repair::LoadLibrary => load_library(conn).await.map(|_| ()),
            Repair::FallBack => {
                refuse_functions();
                Ok(())
            }
        }
    }
}

async fn send<'a, C: ConnectionLike + Send>(
    conn: &mut C,
    calls: impl Iterator<Item = Cow<'a, Cmd>>,
) -> Result<Vec<std::result::Result<Value, RedisError>>> {
    let mut pipe = redis::pipe();
    for c in calls {
        pipe.add_command(c.into_owned());
    }
    Ok(pipe.ignore_errors().query_async(conn).await?)
}

/// Make `name` callable: load the library (or, where functions are refused,
/// the script alone).
pub async fn load<C: ConnectionLike + Send>(conn: &mut C, name: ScriptName) -> Result<()> {
    if calls_functions() && load_library(conn).await? {
        return Ok(());
    }
    load_script(conn, name).await
}

/// Load every script (workers do this at start, so the first calls do not miss).
pub async fn load_all<C: ConnectionLike + Send>(conn: &mut C) -> Result<()> {
    if calls_functions() && load_library(conn).await? {
        return Ok(());
    }
    for name in ScriptName::ALL {
        load_script(conn, name).await?;
    }
    Ok(())
}

/// Load the Function library. Returns false, and makes this process call
/// scripts with `EVALSHA`, when the server refuses functions.
async fn load_library<C: ConnectionLike + Send>(conn: &mut C) -> Result<bool> {
    let loaded: redis::RedisResult<String> =
        redis::cmd("FUNCTION").arg("LOAD").arg(library_source()).query_async(conn).await;
    match loaded {
        Ok(_) => Ok(true),
        // Another process loaded the same text first.
        Err(e) if e.detail().is_some_and(|d| d.contains("already exists")) => Ok(true),
        Err(e) if is_fcall_refused(&e) => {
            refuse_functions();
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Load one script into Redis' script cache (for `EVALSHA`).
async fn load_script<C: ConnectionLike + Send>(conn: &mut C, name: ScriptName) -> Result<()> {
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(name.source()).query_async(conn).await?;
    if sha != name.sha() {
        return Err(Error::Protocol(format!("SCRIPT LOAD of {} returned sha {sha}", name.file_stem())));
    }
    Ok(())
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn is_function_missing(e: &RedisError) -> bool {
    e.detail().is_some_and(|d| d.starts_with("Function not found"))
}

/// Redis 6.2 does not know `FCALL` or `FUNCTION`; an ACL may forbid them.
fn is_fcall_refused(e: &RedisError) -> bool {
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    let about_functions = detail.contains("fcall") || detail.contains("function");
    detail.contains("unknown command") || (e.code() == Some("NOPERM") && about_functions)
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
            assert!(n.source().contains("local JOB_PREFIX, MAX_EVENTS\n"), "{}", n.file_stem());
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
    fn the_library_defines_the_helpers_once_and_registers_every_script() {
        let lib = library_source();
        assert!(lib.starts_with(&format!("#!lua name={}\n", library_name())));
        assert_eq!(lib.matches("local function clock(").count(), 1);
        for n in ScriptName::ALL {
            let head =
                format!("redis.register_function('{}', function(KEYS, ARGV)\n{BIND}", n.function_name());
            assert!(lib.contains(&head), "{} is registered", n.file_stem());
            assert!(
                n.source().contains(&format!("\n{BIND}")),
                "{} binds its keys for EVALSHA",
                n.file_stem()
            );
        }
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
