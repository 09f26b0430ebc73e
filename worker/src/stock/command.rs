//! The `command` job kind: run a program, without a shell unless argv asks for one.
//!
//! - Exit code 0 completes the job; its result holds the exit code, the run
//!   time and the last 512 bytes of stdout and of stderr.
//! - A non-zero exit or a death by signal is a failed attempt (retried after
//!   the job's backoff) whose message carries the exit code and the last
//!   2 KiB of stderr and of stdout.
//! - A program that cannot be started (not found, not executable, bad `cwd`)
//!   fails permanently: retrying cannot fix it.
//! - The program runs in a process group of its own. On timeout, the payload's
//!   `timeout` or the job's, the whole group gets SIGTERM, then SIGKILL after
//!   `kill_grace`, so children it started die with it. The same happens when
//!   the attempt's lease is lost (the job was cancelled, or taken over after a
//!   stall).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::tail;
use crate::{JobContext, JobError};

/// Bytes of stdout and stderr kept in a failed attempt's error message.
pub const OUTPUT_TAIL_BYTES: usize = 2048;
/// Bytes of stdout and stderr kept in a completed job's result (completed
/// jobs are kept by the thousand, so this stays small).
pub const RESULT_TAIL_BYTES: usize = 512;
/// Time between SIGTERM and SIGKILL unless the payload says otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// How long to keep reading output after the program exited, in case a
/// child it left behind still holds the pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The payload of a `command` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandJob {
    /// Program and arguments, e.g. `["pg_dump", "-Fc", "app"]`. Use
    /// `["sh", "-c", "..."]` to get a shell.
    pub argv: Vec<String>,
    /// Variables added to the worker's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Longest run, e.g. `"10m"`; then the process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "quern_common::duration::text_opt")]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL on timeout (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "quern_common::duration::text_opt")]
    pub kill_grace: Option<Duration>,
}

/// What a successful command left behind (stored as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Always 0 for a completed job.
    pub exit_code: i32,
    /// Run time in milliseconds.
    pub duration_ms: u64,
    /// The last bytes of stdout.
    pub stdout_tail: String,
    /// The last bytes of stderr.
    pub stderr_tail: String,
}

/// Signals the process group when dropped before [`GroupGuard::disarm`]: the
/// handler future is dropped when the job's own timeout fires or the worker
/// gives up on it, and the program must not outlive that.
struct GroupGuard {
    pgid: Option<Pid>,
    grace: Duration,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let grace = self.grace;
            let _ = killpg(pgid, Signal::SIGTERM);
            // Drop cannot wait: a short-lived thread sends the SIGKILL.
            std::thread::spawn(move || {
                std::thread::sleep(grace);
                let _ = killpg(pgid, Signal::SIGKILL);
            });
        }
    }
}

/// Run the command. Errors are failed attempts (see the module docs). The
/// process group is killed on timeout, and when the attempt's lease is lost
/// (`quern cancel`, or another worker took the job over after a stall): the
/// attempt's result would be refused anyway.
pub async fn run(job: &CommandJob, ctx: &JobContext) -> Result<CommandOutput, JobError> {
    let Some((program, args)) = job.argv.split_first() else {
        return Err(JobError::permanent("argv is empty: give at least the program to run"));
    };
    let grace = job.kill_grace.unwrap_or(DEFAULT_KILL_GRACE);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&job.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &job.cwd {
        cmd.current_dir(cwd);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, job, e))?;
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let mut guard = GroupGuard { pgid, grace };
    let stdout = tokio::spawn(read_tail(child.stdout.take()));
    let stderr = tokio::spawn(read_tail(child.stderr.take()));

    let limit = job.timeout;
    let stop = tokio::select! {
        status = child.wait() => Ok(status),
        _ = tokio::time::sleep(limit.unwrap_or(Duration::from_secs(86_400))), if limit.is_some() => {
            Err(format!("timed out after {:?}", limit.unwrap_or_default()))
        }
        _ = lease_lost(ctx) => Err("lease lost (the job was cancelled, or taken over after a stall)".to_owned()),
    };
    let status = match stop {
        Ok(status) => status,
        Err(why) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
                // Give the group the grace period (less if the leader exits),
                // then SIGKILL whatever is left: members may ignore SIGTERM
                // or outlive the leader.
                let _ = tokio::time::timeout(grace, child.wait()).await;
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            guard.disarm();
            let (out, err) = collect(stdout, stderr).await;
            return Err(JobError::retryable(format!(
                "{why}: killed the process group{}",
                describe_output(&out, &err)
            )));
        }
    }
    .map_err(|e| JobError::retryable(format!("waiting for {program:?} failed: {e}")))?;
    guard.disarm();
    let (out, err) = collect(stdout, stderr).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    match status.code() {
        Some(0) => Ok(CommandOutput {
            exit_code: 0,
            duration_ms,
            stdout_tail: tail(out.as_bytes(), RESULT_TAIL_BYTES),
            stderr_tail: tail(err.as_bytes(), RESULT_TAIL_BYTES),
        }),
        Some(code) => Err(JobError::retryable(format!("exit code {code}{}", describe_output(&out, &err)))),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            Err(JobError::retryable(format!("killed by signal {signal}{}", describe_output(&out, &err))))
        }
    }
}

fn spawn_error(program: &str, job: &CommandJob, e: std::io::Error) -> JobError {
    use std::io::ErrorKind;
    let where_ = job.cwd.as_ref().map(|c| format!(" in {}", c.display())).unwrap_or_default();
    let message = format!("cannot start {program:?}{where_}: {e}");
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
            JobError::permanent(message)
        }
        _ => JobError::retryable(message),
    }
}

/// Read a stream to its end, keeping only its last bytes.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else { return Vec::new() };
    let mut kept = Vec::with_capacity(OUTPUT_TAIL_BYTES);
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_TAIL_BYTES {
                    kept.drain(..kept.len() - OUTPUT_TAIL_BYTES);
                }
            }
        }
    }
}

/// The output tails, waiting a little for readers that a leftover child keeps busy.
async fn collect(
    stdout: tokio::task::JoinHandle<Vec<u8>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
) -> (String, String) {
    async fn one(task: tokio::task::JoinHandle<Vec<u8>>) -> String {
        let abort = task.abort_handle();
        match tokio::time::timeout(DRAIN_AFTER_EXIT, task).await {
            Ok(Ok(bytes)) => tail(&bytes, OUTPUT_TAIL_BYTES),
            Ok(Err(_)) => String::new(),
            Err(_) => {
                abort.abort();
                "(output not collected: a child process still holds the pipe open)".into()
            }
        }
    }
    tokio::join!(one(stdout), one(stderr))
}

fn describe_output(stdout: &str, stderr: &str) -> String {
    let mut text = String::new();
    for (name, tail) in [("stderr", stderr), ("stdout", stdout)] {
        let tail = tail.trim_end();
        if !tail.is_empty() {
            text.push_str(&format!("\n--- {name} (tail) ---\n{tail}"));
        }
    }
    text
}

/// Resolves once the attempt's lease is lost (checked every 200 ms; the
/// worker learns of it at its next renewal).
async fn lease_lost(ctx: &JobContext) {
    while !ctx.is_lease_lost() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
