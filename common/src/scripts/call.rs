//! Sending a script call: `FCALL` or `EVALSHA`, loading what Redis has
//! forgotten and sending the call again, alone or in a pipeline.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisError, ToRedisArgs, Value};

use super::ScriptName;
use super::source::library_source;
use crate::keys::QueueKeys;
use crate::{Error, ReplicaAcks, Result};

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
    Ok(run_pipelined_acked(conn, calls, None).await?.0)
}

/// [`run_pipelined`], with a `WAIT` for replica acknowledgements after the
/// calls in the same pipeline (`acks`; none: no `WAIT`). Returns the calls'
/// results and whether enough replicas acknowledged them; the calls ran on
/// the master either way.
pub async fn run_pipelined_acked<C: ConnectionLike + Send>(
    conn: &mut C,
    calls: &[ScriptCall],
    acks: Option<&ReplicaAcks>,
) -> Result<(Vec<Result<Value>>, Result<()>)> {
    let (mut results, mut acked) = send(conn, calls.iter().map(|c| c.current()), acks).await?;
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
        // The calls sent again get a `WAIT` of their own.
        let (replies, acked_again) = send(conn, again.iter().map(|&i| calls[i].current()), acks).await?;
        acked = acked.and(acked_again);
        for (i, r) in again.into_iter().zip(replies) {
            results[i] = r;
        }
    }
    Ok((results.into_iter().map(|r| r.map_err(Error::from)).collect(), acked))
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

/// Send `calls` in one pipeline, then `WAIT` if `acks`: the calls' replies
/// and the verdict of the `WAIT` (`Ok` without one).
async fn send<'a, C: ConnectionLike + Send>(
    conn: &mut C,
    calls: impl Iterator<Item = Cow<'a, Cmd>>,
    acks: Option<&ReplicaAcks>,
) -> Result<(Vec<std::result::Result<Value, RedisError>>, Result<()>)> {
    let mut pipe = redis::pipe();
    for c in calls {
        pipe.add_command(c.into_owned());
    }
    if let Some(acks) = acks {
        pipe.add_command(acks.command());
    }
    let mut replies: Vec<std::result::Result<Value, RedisError>> =
        pipe.ignore_errors().query_async(conn).await?;
    let acked = match acks {
        None => Ok(()),
        Some(acks) => match replies.pop() {
            Some(reply) => acks.verdict(reply),
            None => Err(Error::Protocol("no reply to WAIT".into())),
        },
    };
    Ok((replies, acked))
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
    for &name in ScriptName::ALL {
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
