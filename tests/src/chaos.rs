//! Fault-tolerance test kit: the `chaos` job and its random plans, the
//! execution ledger, real worker processes (`chaos_worker`) to start, kill,
//! pause and stop, and the audit of a drained queue against plans and ledger
//! (shared by the chaos tests on one server and on a cluster).
//!
//! The worker binary lives in this crate (`src/bin/chaos_worker.rs`); tests
//! find it with `env!("CARGO_BIN_EXE_chaos_worker")`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use quern_common::{Backoff, Error, JobInfo, JobOptions, JobState, RedisConfig};
use quern_producer::{NewJob, Queue};
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

impl ChaosJob {
    /// A random plan: half the jobs sleep a few ms, the rest 30 ms, 120 ms
    /// or (2%) 1.5 s; 70% succeed at once, 15% fail once, 10% twice, and 5%
    /// fail every attempt (they must end dead-lettered).
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        let sleep_ms = match rng.random_range(0..100) {
            0..50 => rng.random_range(0..6),
            50..85 => 30,
            85..98 => 120,
            _ => 1500,
        };
        let fail_attempts = match rng.random_range(0..100) {
            0..70 => 0,
            70..85 => 1,
            85..95 => 2,
            _ => 99, // always fails: dead-lettered after its last attempt
        };
        ChaosJob { sleep_ms, fail_attempts }
    }
}

/// The seed of a chaos run: `QUERN_CHAOS_SEED` (to replay a run's plan and
/// chaos order) or the clock. Printed, so a failed run can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("QUERN_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u64
    });
    println!("chaos: seed {seed} (QUERN_CHAOS_SEED={seed} replays the plan)");
    seed
}

/// A `chaos` job with an explicit id (so an add sent twice adds it once),
/// `attempts` attempts and a fixed 50 ms backoff.
pub fn new_job(id: &str, plan: ChaosJob, attempts: u32) -> NewJob {
    NewJob::new("chaos", &plan).expect("a chaos plan serializes").options(
        JobOptions::new().job_id(id).attempts(attempts).backoff(Backoff::fixed(Duration::from_millis(50))),
    )
}

/// Add `jobs`, sending the batch again until Redis accepts it; returns each
/// refusal, with when it came. A refusal must be retryable and come within
/// `limit` (the producer says Redis is away; it does not hang).
pub async fn add_until_accepted(queue: &Queue, jobs: &[NewJob], limit: Duration) -> Vec<(Instant, Error)> {
    let mut refused = Vec::new();
    loop {
        let started = Instant::now();
        match queue.add_bulk(jobs).await {
            Ok(added) => {
                assert_eq!(added.len(), jobs.len());
                return refused;
            }
            Err(e) => {
                assert!(e.is_retryable(), "an outage must give a retryable error, got {e}");
                assert!(started.elapsed() < limit, "add_bulk took {:?} to fail: {e}", started.elapsed());
                refused.push((Instant::now(), e));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Redis' clock in milliseconds (of any node of a cluster: they share this machine's clock).
pub async fn redis_now_ms(cfg: &RedisConfig) -> u64 {
    let mut conn = crate::raw_connection(cfg).await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.expect("Redis TIME");
    secs * 1000 + micros / 1000
}

/// The `chaos_worker` processes of one queue: started with shared settings,
/// each logging to a file of its own in one directory.
#[derive(Debug)]
pub struct Fleet {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// The settings new workers get.
    pub settings: WorkerSettings,
    /// The workers running now.
    pub running: Vec<WorkerProcess>,
    started: usize,
    /// Worker id -> Redis time of its kill -9.
    pub killed: HashMap<String, u64>,
}

impl Fleet {
    /// A fleet of `binary` processes with `settings`, logs in `dir`; none started.
    pub fn new(binary: &Path, dir: tempfile::TempDir, settings: WorkerSettings) -> Self {
        Self {
            binary: binary.to_owned(),
            dir,
            settings,
            running: Vec::new(),
            started: 0,
            killed: HashMap::new(),
        }
    }

    /// Start a worker with the fleet's settings.
    pub async fn start_one(&mut self) {
        let w = self.start_with(&self.settings.clone()).await;
        self.running.push(w);
    }

    /// Start a worker with other settings; the caller keeps it.
    pub async fn start_with(&mut self, settings: &WorkerSettings) -> WorkerProcess {
        self.started += 1;
        let log = self.dir.path().join(format!("worker-{}.log", self.started));
        WorkerProcess::start(&self.binary, settings, &log).await.expect("start a chaos worker")
    }

    /// `kill -9` the running worker at `index` and note when (Redis time).
    pub async fn kill9(&mut self, index: usize, cfg: &RedisConfig) -> String {
        let w = self.running.remove(index);
        let id = w.worker_id().to_owned();
        w.kill9().await.expect("kill -9 a worker");
        self.killed.insert(id.clone(), redis_now_ms(cfg).await);
        id
    }

    /// SIGTERM every running worker; each must exit 0 within 10 s.
    pub async fn stop_all(&mut self) {
        for mut w in std::mem::take(&mut self.running) {
            w.signal("TERM").expect("SIGTERM a worker");
            let status = w.wait_exit(Duration::from_secs(10)).await.expect("the worker exits");
            assert!(status.success(), "worker {} exited with {status}; log:\n{}", w.worker_id(), w.log());
        }
    }

    /// Log lines of every worker that contain `text`.
    pub fn count_in_logs(&self, text: &str) -> usize {
        self.log_files()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default().matches(text).count())
            .sum()
    }

    /// The last lines of every worker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for path in self.log_files() {
            out.push_str(&format!("--- {}\n{}\n", path.display(), tail(&path)));
        }
        out
    }

    fn log_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Audit a drained queue: `plans` are its jobs (id and plan), `ledger` the
/// executions its workers recorded. Checks:
/// - every job is `completed` or `failed` and in the dead-letter list, as its
///   plan says (a job may also be dead-lettered for stalling too often, which
///   its error must say); none is missing; none is in the completed list twice;
/// - every execution's token has exactly one recorded outcome: the completing
///   token (the job's final token), or an entry of the job's history carrying
///   that token (`error`, `stalled`, `released`, ...);
/// - a job runs the same attempt number more than once only when all runs of
///   that attempt but at most one lost their lease (`stalled` or `released`);
/// - no token ever ran twice (fencing); no execution of an unknown job;
/// - the completing run is attempt `fail_attempts + 1`: stalls, releases and
///   Redis restarts never used up an attempt.
///
/// Returns the counts and every job as read.
pub async fn audit_queue(
    cfg: &RedisConfig,
    queue: &Queue,
    plans: &[(String, ChaosJob)],
    ledger: &[Execution],
    attempts: u32,
) -> (Audit, BTreeMap<String, JobInfo>) {
    use redis::AsyncCommands;
    let mut conn = crate::raw_connection(cfg).await;
    let keys = queue.keys().clone();
    let completed_list: Vec<String> = conn.lrange(keys.completed(), 0, -1).await.expect("the completed list");
    let dead_letters: Vec<String> =
        conn.zrange(keys.dead_letter(), 0, -1).await.expect("the dead-letter list");
    let mut seen = HashSet::new();
    for id in &completed_list {
        assert!(seen.insert(id.clone()), "job {id} is in the completed list twice");
    }
    let dead: HashSet<&String> = dead_letters.iter().collect();
    assert_eq!(dead.len(), dead_letters.len());

    let by_job = executions_by_job(ledger);
    assert_eq!(repeated_tokens(ledger), Vec::new(), "a lease token ran twice: fencing failed");

    let mut jobs: BTreeMap<String, JobInfo> = BTreeMap::new();
    for (id, _) in plans {
        let job = queue.job(id).await.expect("read a job").unwrap_or_else(|| panic!("job {id} is missing"));
        jobs.insert(id.clone(), job);
    }
    let unknown: Vec<&Execution> = ledger.iter().filter(|e| !jobs.contains_key(&e.job_id)).collect();
    assert!(unknown.is_empty(), "unknown jobs in the ledger: {unknown:?}");

    let mut audit = Audit { attempts, ..Audit::default() };
    for (id, plan) in plans {
        let runs: &[Execution] = by_job.get(id).map(Vec::as_slice).unwrap_or(&[]);
        audit.audit_job(id, &jobs[id], *plan, runs, &completed_list, &dead);
    }
    assert_eq!(audit.completed + audit.dead, plans.len());
    assert_eq!(audit.completed, completed_list.len(), "completed list and completed jobs differ");
    (audit, jobs)
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
    /// Replicas that must hold the worker's state moves, and the longest
    /// wait for them (`None`: no replica acknowledgements).
    pub replica_acks: Option<(u32, Duration)>,
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
            replica_acks: None,
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
        if let Some((replicas, timeout)) = self.replica_acks {
            args.push(format!("--replica-acks={replicas}"));
            args.push(format!("--replica-acks-timeout-ms={}", ms(timeout)));
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

/// The audit of one queue's jobs against their plans and the ledger, and
/// what it counted. See [`audit_queue`].
#[derive(Debug, Default)]
pub struct Audit {
    /// Attempts each job had.
    pub attempts: u32,
    /// Jobs completed.
    pub completed: usize,
    /// Jobs dead-lettered.
    pub dead: usize,
    /// Jobs dead-lettered for stalling too often.
    pub dead_for_stalls: usize,
    /// Attempts run again after a lost lease.
    pub duplicates: usize,
    /// Leases the reaper took back.
    pub stalled: usize,
    /// Jobs handed back at shutdown.
    pub released: usize,
}

impl Audit {
    /// Check one job (see the rules of [`audit_queue`]) and count it.
    pub fn audit_job(
        &mut self,
        id: &str,
        job: &JobInfo,
        plan: ChaosJob,
        runs: &[Execution],
        completed_list: &[String],
        dead: &HashSet<&String>,
    ) {
        let ctx = || format!("job {id} (plan {plan:?}), runs {runs:?}, job {job:#?}");
        assert!(
            job.history.len() < 25,
            "history may have been truncated; the audit needs all of it: {}",
            ctx()
        );
        self.stalled += job.history.iter().filter(|a| a.outcome == "stalled").count();
        self.released += job.history.iter().filter(|a| a.outcome == "released").count();
        let stalled_out = job.last_error.as_deref().is_some_and(|e| e.starts_with("stalled "));
        match job.state {
            JobState::Completed => {
                self.completed += 1;
                assert!(
                    plan.fail_attempts < self.attempts,
                    "a job planned to fail every attempt completed: {}",
                    ctx()
                );
                assert!(
                    completed_list.iter().any(|c| c == id) && !dead.contains(&id.to_owned()),
                    "{}",
                    ctx()
                );
            }
            JobState::Failed => {
                self.dead += 1;
                assert!(
                    dead.contains(&id.to_owned()),
                    "a failed job is not in the dead-letter list: {}",
                    ctx()
                );
                if stalled_out {
                    self.dead_for_stalls += 1;
                } else {
                    assert!(
                        plan.fail_attempts >= self.attempts,
                        "a job that should complete was dead-lettered: {}",
                        ctx()
                    );
                    let last = job.last_error.as_deref().unwrap_or("");
                    assert!(
                        last.contains(&format!("attempt {}", self.attempts)),
                        "dead-lettered before its last attempt: {}",
                        ctx()
                    );
                }
            }
            other => panic!("job {id} ended {other}, not completed or dead-lettered: {}", ctx()),
        }

        // The outcome of each token: the final one for a completed job, the
        // history entries for the rest.
        let mut outcome: HashMap<&str, &str> = HashMap::new();
        for a in &job.history {
            if a.outcome == "completed" || a.outcome == "running" {
                continue;
            }
            if let Some(tk) = a.token.as_deref() {
                assert!(
                    outcome.insert(tk, a.outcome.as_str()).is_none(),
                    "token {tk} has two outcomes: {}",
                    ctx()
                );
            }
        }
        if job.state == JobState::Completed {
            let last = job.history.last().unwrap();
            let tk =
                last.token.as_deref().unwrap_or_else(|| panic!("completed job without its token: {}", ctx()));
            assert!(outcome.insert(tk, "completed").is_none(), "{}", ctx());
            let completing = runs
                .iter()
                .find(|e| e.token == tk)
                .unwrap_or_else(|| panic!("the completing token {tk} is not in the ledger: {}", ctx()));
            assert_eq!(
                completing.attempt,
                plan.fail_attempts + 1,
                "the job completed on the wrong attempt: an attempt was used up by a stall, \
                 release or restart: {}",
                ctx()
            );
        }
        // Runs per attempt number. Ledger order is not lease order: a worker
        // frozen between fetching a job and starting its handler writes its
        // line after the run that replaced it. So the rule is order-free: of
        // the runs of one attempt, at most one ended with an accepted outcome
        // (completed, or a failure that counted); every other run lost its lease.
        let mut per_attempt: BTreeMap<u32, Vec<&Execution>> = BTreeMap::new();
        for e in runs {
            assert!(
                outcome.contains_key(e.token.as_str()),
                "execution with token {} has no recorded outcome: {}",
                e.token,
                ctx()
            );
            per_attempt.entry(e.attempt).or_default().push(e);
        }
        for (attempt, list) in per_attempt {
            self.duplicates += list.len() - 1;
            let accepted: Vec<(&str, &str)> = list
                .iter()
                .map(|e| (e.token.as_str(), outcome[e.token.as_str()]))
                .filter(|(_, out)| *out != "stalled" && *out != "released")
                .collect();
            assert!(
                accepted.len() <= 1,
                "attempt {attempt} ran {} times with accepted outcomes {accepted:?}: only runs that \
                 lost their lease may run again: {}",
                list.len(),
                ctx()
            );
        }
    }
}
