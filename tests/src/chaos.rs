//! Fault-tolerance test kit: the `chaos` job, the execution ledger, and real
//! worker processes (`chaos_worker`) to start, kill, pause and stop.
//!
//! The worker binary lives in this crate (`src/bin/chaos_worker.rs`); tests
//! find it with `env!("CARGO_BIN_EXE_chaos_worker")`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What a `chaos` job does: sleep, then fail while its attempt number is at
/// most `fail_attempts`, else succeed. Deterministic, so a test knows each
/// job's fate in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosJob {
    /// Milliseconds the handler sleeps before deciding.
    pub sleep_ms: u64,
    /// Attempts that fail (0: the job always succeeds).
    pub fail_attempts: u32,
}

/// What a `workflow` job does: `steps` durable steps (`step-1`, `step-2`,
/// ...), each appending `step <job id> <step> <pid> <token>` to the ledger
/// (its side effect) before sleeping `step_ms`; after step `sleep_after`, a
/// durable sleep of `sleep_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowJob {
    /// How many steps.
    pub steps: u32,
    /// Milliseconds each step takes.
    pub step_ms: u64,
    /// Sleep after this step (0: never).
    pub sleep_after: u32,
    /// How long the sleep lasts.
    pub sleep_ms: u64,
}

/// One run of a workflow step, as a `workflow` job recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    /// The job id.
    pub job_id: String,
    /// The step's name.
    pub step: String,
    /// The worker process.
    pub pid: u32,
    /// The lease token of the attempt that ran it.
    pub token: String,
}

/// The step runs in a ledger (lines starting with `step `).
pub fn read_step_runs(path: &Path) -> Result<Vec<StepRun>, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("step ")) {
        let parts: Vec<&str> = line.split(' ').collect();
        let [_, job_id, step, pid, token] = parts[..] else {
            return Err(format!("malformed step line {line:?}"));
        };
        let pid = pid.parse().map_err(|_| format!("bad pid in {line:?}"))?;
        runs.push(StepRun { job_id: job_id.into(), step: step.into(), pid, token: token.into() });
    }
    Ok(runs)
}

/// One execution of a handler, as the worker recorded it before doing the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The job id.
    pub job_id: String,
    /// The lease (fencing) token the execution ran under.
    pub token: String,
    /// The worker process.
    pub pid: u32,
    /// The attempt number the worker was given.
    pub attempt: u32,
}

/// Read a ledger written by `chaos_worker` processes. Fails on a malformed
/// line (a torn write would show up here).
pub fn read_ledger(path: &Path) -> Result<Vec<Execution>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the ledger {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let bad = || format!("ledger line {} is malformed: {line:?}", n + 1);
            let mut parts = line.split(' ');
            let (Some(job_id), Some(token), Some(pid), Some(attempt), None) =
                (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            Ok(Execution {
                job_id: job_id.to_owned(),
                token: token.to_owned(),
                pid: pid.parse().map_err(|_| bad())?,
                attempt: attempt.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// Executions per job id.
pub fn executions_by_job(ledger: &[Execution]) -> BTreeMap<String, Vec<Execution>> {
    let mut by_job: BTreeMap<String, Vec<Execution>> = BTreeMap::new();
    for e in ledger {
        by_job.entry(e.job_id.clone()).or_default().push(e.clone());
    }
    by_job
}

/// Settings of one `chaos_worker` process (its command-line flags).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Redis URL.
    pub redis_url: String,
    /// Key prefix (`None`: quern's default).
    pub prefix: Option<String>,
    /// Queue served.
    pub queue: String,
    /// Ledger file.
    pub ledger: PathBuf,
    /// Job slots.
    pub concurrency: usize,
    /// Lease.
    pub lease: Duration,
    /// Reaper interval.
    pub reap_interval: Duration,
    /// Stalls allowed before dead-lettering.
    pub max_stalls: u32,
    /// Shutdown grace period.
    pub grace: Duration,
    /// Longest blocking wait for work.
    pub idle_block: Duration,
    /// Redis connect and response timeout.
    pub redis_timeout: Duration,
}

impl WorkerSettings {
    /// Short leases and a fast reaper, so faults resolve within seconds.
    pub fn new(redis_url: impl Into<String>, queue: impl Into<String>, ledger: impl Into<PathBuf>) -> Self {
        Self {
            redis_url: redis_url.into(),
            prefix: None,
            queue: queue.into(),
            ledger: ledger.into(),
            concurrency: 8,
            lease: Duration::from_millis(1000),
            reap_interval: Duration::from_millis(250),
            max_stalls: 3,
            grace: Duration::from_millis(1000),
            idle_block: Duration::from_millis(1000),
            redis_timeout: Duration::from_millis(1000),
        }
    }

    fn args(&self) -> Vec<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let mut args = vec![
            format!("--redis-url={}", self.redis_url),
            format!("--queue={}", self.queue),
            format!("--ledger={}", self.ledger.display()),
            format!("--concurrency={}", self.concurrency),
            format!("--lease-ms={}", ms(self.lease)),
            format!("--reap-interval-ms={}", ms(self.reap_interval)),
            format!("--max-stalls={}", self.max_stalls),
            format!("--grace-ms={}", ms(self.grace)),
            format!("--idle-block-ms={}", ms(self.idle_block)),
            format!("--redis-timeout-ms={}", ms(self.redis_timeout)),
        ];
        if let Some(prefix) = &self.prefix {
            args.push(format!("--prefix={prefix}"));
        }
        args
    }
}

/// A running `chaos_worker` process. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    pid: u32,
    id: String,
    log: PathBuf,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl WorkerProcess {
    /// Start `binary` with `settings`, its log (stderr) going to `log`; waits
    /// until the worker reports that it is ready.
    pub async fn start(binary: &Path, settings: &WorkerSettings, log: &Path) -> Result<Self, String> {
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .map_err(|e| format!("cannot open the worker log {}: {e}", log.display()))?;
        let mut child = Command::new(binary)
            .args(settings.args())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the worker exited at once")?;
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, mut stdout) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stdout.recv().await {
                if let Some(id) = line.strip_prefix("ready ") {
                    return Some(id.to_owned());
                }
            }
            None
        })
        .await;
        let id = match ready {
            Ok(Some(id)) => id,
            Ok(None) => {
                let status = child.wait().await.map_err(|e| e.to_string())?;
                return Err(format!("worker exited before it was ready ({status}); log:\n{}", tail(log)));
            }
            Err(_) => return Err(format!("worker not ready within 30 s; log:\n{}", tail(log))),
        };
        Ok(Self { child, pid, id, log: log.to_owned(), stdout })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker id (`host:pid:random`) it reported.
    pub fn worker_id(&self) -> &str {
        &self.id
    }

    /// Its log file (stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("kill -{signal} {} failed: {status}", self.pid)) }
    }

    /// `kill -9` and reap the process.
    pub async fn kill9(mut self) -> Result<(), String> {
        self.signal("KILL")?;
        self.child.wait().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Wait for the process to exit on its own, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                Err(format!("worker {} still running after {limit:?}; log:\n{}", self.pid, tail(&self.log)))
            }
        }
    }

    /// Whether it printed `stopped` (its clean-shutdown line). Call it after
    /// the process exited: it reads stdout to the end (at most 2 s), since the
    /// exit can be seen before the reader task has passed the last lines on.
    pub async fn said_stopped(&mut self) -> bool {
        let read_all = async {
            while let Some(line) = self.stdout.recv().await {
                if line == "stopped" {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(2), read_all).await.unwrap_or(false)
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Counts of ledger lines per (job, token): a token executed twice is a fencing failure.
pub fn repeated_tokens(ledger: &[Execution]) -> Vec<(String, String, usize)> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for e in ledger {
        *seen.entry((&e.job_id, &e.token)).or_default() += 1;
    }
    let mut out: Vec<(String, String, usize)> =
        seen.into_iter().filter(|(_, n)| *n > 1).map(|((j, t), n)| (j.to_owned(), t.to_owned(), n)).collect();
    out.sort();
    out
}
