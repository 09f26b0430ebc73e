//! Running schedulers inside a test and reading what they enqueued.

use std::collections::HashMap;
use std::time::Duration;

use quern_common::{QueueKeys, RedisConfig};
use quern_scheduler::{Scheduler, SchedulerBuilder, ShutdownHandle, TickEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A scheduler running on its own task, reporting every tick it handles.
pub struct RunningScheduler {
    shutdown: ShutdownHandle,
    task: JoinHandle<quern_scheduler::Result<()>>,
    events: mpsc::UnboundedReceiver<TickEvent>,
    seen: Vec<TickEvent>,
    leader: std::sync::Arc<std::sync::atomic::AtomicBool>,
    skew: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl RunningScheduler {
    /// Build the scheduler from `builder` and start it.
    pub async fn start(builder: SchedulerBuilder) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let scheduler: Scheduler = builder.events(tx).build().await.expect("build the scheduler");
        let shutdown = scheduler.shutdown_handle();
        let leader = scheduler.leader_flag();
        let skew = scheduler.clock_skew_ms();
        let task = tokio::spawn(scheduler.run_until(std::future::pending::<()>()));
        Self { shutdown, task, events, seen: Vec::new(), leader, skew }
    }

    /// Whether it is the leader now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Its local clock minus Redis time, as it last measured (ms).
    pub fn clock_skew_ms(&self) -> i64 {
        self.skew.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every tick event received so far.
    pub fn events(&mut self) -> &[TickEvent] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Stop it (gracefully, within 10 s) and return every event it sent.
    pub async fn stop(mut self) -> Vec<TickEvent> {
        self.shutdown.shutdown();
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("scheduler ended with an error: {e}"),
            Ok(Err(e)) => panic!("scheduler task failed: {e}"),
            Err(_) => panic!("scheduler did not stop within 10 s"),
        }
        self.events();
        self.seen
    }

    /// Kill it without a graceful stop (the lease is left to expire).
    pub fn abort(mut self) -> Vec<TickEvent> {
        self.task.abort();
        self.events();
        self.seen
    }
}

/// Every job hash id in `queue` (whatever its state), read from the keys.
pub async fn job_ids(config: &RedisConfig, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new(&config.prefix, queue).expect("queue keys");
    let mut conn = crate::raw_connection(config).await;
    let pattern = format!("{}*", keys.job_prefix());
    let found: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.expect("KEYS");
    let mut ids: Vec<String> = found.into_iter().map(|k| k[keys.job_prefix().len()..].to_owned()).collect();
    ids.sort();
    ids
}

/// The `added` events of `queue`'s stream: one per job actually created.
pub async fn added_events(config: &RedisConfig, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new(&config.prefix, queue).expect("queue keys");
    let mut conn = crate::raw_connection(config).await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(keys.events())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    entries
        .into_iter()
        .filter(|(_, f)| f.get("ev").is_some_and(|e| e == "added"))
        .filter_map(|(_, f)| f.get("id").cloned())
        .collect()
}

/// A `scheduler_proc` process whose stdout lines are collected as they come.
pub struct SchedulerProcess {
    child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
}

impl SchedulerProcess {
    /// Start `binary` (the `scheduler_proc` bin) on `config`'s Redis and prefix.
    pub async fn start(binary: &std::path::Path, config: &RedisConfig, extra: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(binary)
            .arg(format!("--redis-url={}", config.url))
            .arg(format!("--prefix={}", config.prefix))
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start scheduler_proc");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push((std::time::Instant::now(), line));
            }
        });
        let this = Self { child, lines };
        crate::eventually(Duration::from_secs(10), "scheduler_proc ready", || async {
            this.lines().iter().any(|l| l.starts_with("ready ")).then_some(())
        })
        .await;
        this
    }

    /// Its stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    /// When the first line equal to `line` was printed, if it was.
    pub fn when(&self, line: &str) -> Option<std::time::Instant> {
        self.lines.lock().unwrap().iter().find(|(_, l)| l == line).map(|(t, _)| *t)
    }

    /// Its `tick <outcome> <job-id> <lateness-ms>` lines as (outcome, id, lateness ms).
    pub fn ticks(&self) -> Vec<(String, String, u64)> {
        parse_ticks(&self.lines())
    }

    /// Whether it currently says it is the leader.
    pub fn is_leader(&self) -> bool {
        self.lines().iter().rev().find(|l| *l == "leader" || *l == "follower").is_some_and(|l| l == "leader")
    }

    /// SIGTERM, then wait (10 s at most) for a clean exit that printed `stopped`.
    pub async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
        let exit =
            tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("exits").unwrap();
        assert!(exit.success(), "scheduler_proc exit: {exit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = self.lines();
        assert_eq!(lines.last().map(String::as_str), Some("stopped"), "{lines:?}");
        lines
    }

    /// SIGKILL: no goodbye, the lease is left to expire.
    pub async fn kill9(mut self) -> Vec<String> {
        self.child.kill().await.expect("kill -9");
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.lines()
    }
}

/// Parse a tick job id `<schedule>@<RFC 3339>` into the tick's Unix second.
pub fn tick_second(id: &str) -> i64 {
    let (_, t) = id.split_once('@').expect("a tick id is <schedule>@<instant>");
    chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339 tick").timestamp()
}

/// Check that `ids` are one tick per second without a gap or a repeat; returns
/// the number of ticks.
pub fn assert_consecutive_seconds(ids: &[String]) -> usize {
    let mut secs: Vec<i64> = ids.iter().map(|i| tick_second(i)).collect();
    secs.sort();
    for w in secs.windows(2) {
        assert!(w[1] != w[0], "tick {} enqueued twice: {ids:?}", w[0]);
        assert!(w[1] == w[0] + 1, "ticks {} .. {} missing: {ids:?}", w[0] + 1, w[1] - 1);
    }
    secs.len()
}

/// The `tick <outcome> <job-id> <lateness-ms>` lines of a `scheduler_proc` as
/// (outcome, id, lateness ms).
pub fn parse_ticks(lines: &[String]) -> Vec<(String, String, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("tick ")?.split(' ');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect()
}
