//! `quern demo`: the whole system working on one screen.
//!
//! Uses `REDIS_URL` (or `--redis-url`), else a Redis answering on
//! 127.0.0.1:6379, else a throwaway `redis-server` it starts and stops itself.
//! Everything lives under the key prefix `quern-demo` (cleared at the start),
//! so other data on that Redis is never touched.
//!
//! For `--duration` it runs two in-process workers and a producer on queue
//! `demo`: ordinary jobs completing, a flaky webhook that fails three times
//! and is retried with growing backoff, a poisoned report that panics on every
//! attempt and lands in the dead-letter list, a delayed job, a stock
//! `command` job, a cron schedule ticking every 2 s through the scheduler, and
//! an order workflow of durable steps whose payment step fails once (the
//! retry resumes at that step) and that sleeps 1.5 s holding no worker; then
//! it prints a summary and the commands to inspect it all.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quern_common::process::{ShutdownHandle, ShutdownSignals};
use quern_common::throwaway_redis::{self, ThrowawayRedis};
use quern_common::{Backoff, JobInfo, JobOptions, RedisConfig, TlsFiles};
use quern_producer::Queue;
use quern_scheduler::{RunOutcome, Schedule, Scheduler, Schedules};
use quern_worker::{JobContext, JobError, Retention, Worker, stock};
use serde::Deserialize;
use serde_json::json;

use crate::duration::{format_duration, parse_duration};
use crate::error::{CliError, CliResult};
use crate::inspect::render_job;

/// The key prefix of the demo's data.
pub(crate) const DEMO_PREFIX: &str = "quern-demo";
/// The demo's queue.
const QUEUE: &str = "demo";
const FLAKY_ID: &str = "flaky-webhook";
const POISON_ID: &str = "poisoned-report";
const DELAYED_ID: &str = "delayed-reminder";
const COMMAND_ID: &str = "nightly-backup";
const WORKFLOW_ID: &str = "order-workflow";
/// Widest live display line (a narrower terminal would wrap and break the redraw).
const LIVE_WIDTH: usize = 100;
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";
const CRON_NAME: &str = "heartbeat";
/// Every 2 seconds (6 fields: seconds first).
const CRON_EXPR: &str = "*/2 * * * * *";

/// Options of `quern demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long to run the workers and the producer.
    #[arg(long, default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) duration: Duration,
    /// Leave the throwaway redis-server (if one was started) running afterwards,
    /// so the printed commands can inspect the demo's data.
    #[arg(long)]
    pub(crate) keep_redis: bool,
    /// Always start a throwaway redis-server, ignoring REDIS_URL and 127.0.0.1:6379.
    #[arg(long)]
    pub(crate) throwaway_redis: bool,
}

async fn answers(url: &str, tls: &TlsFiles) -> bool {
    let cfg = RedisConfig::new(url).tls(tls.clone()).connect_timeout(Duration::from_millis(500));
    match cfg.connect().await {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
        Err(_) => false,
    }
}

/// Pick the Redis to use: an explicit URL, the local default, or a throwaway one.
async fn choose_redis(
    explicit: Option<String>,
    tls: &TlsFiles,
    args: &DemoArgs,
) -> CliResult<(String, Option<ThrowawayRedis>)> {
    if args.throwaway_redis {
        return start_redis(args.keep_redis).await;
    }
    if let Some(url) = explicit {
        if !answers(&url, tls).await {
            return Err(CliError::Failed(format!(
                "no Redis answers at {} (from --redis-url or REDIS_URL)",
                RedisConfig::new(&url).masked_url()
            )));
        }
        return Ok((url, None));
    }
    if answers(LOCAL_REDIS, &TlsFiles::default()).await {
        return Ok((LOCAL_REDIS.to_owned(), None));
    }
    start_redis(args.keep_redis).await
}

/// Start a throwaway redis-server (without persistence; with `keep`, left
/// running afterwards) and wait until it answers.
async fn start_redis(keep: bool) -> CliResult<(String, Option<ThrowawayRedis>)> {
    if !throwaway_redis::redis_server_installed() {
        return Err(CliError::Failed(
            "no Redis answers on 127.0.0.1:6379 and redis-server is not installed.\n\
             Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis),\n\
             or point the demo at a Redis with REDIS_URL=redis://host:port"
                .into(),
        ));
    }
    let launch = throwaway_redis::Launch::default().dir_prefix("quern-demo-redis-").keep(keep);
    let server = tokio::task::spawn_blocking(move || launch.start())
        .await
        .map_err(|e| CliError::Failed(format!("starting redis-server failed: {e}")))??;
    Ok((server.url(), Some(server)))
}

/// Delete what earlier demo runs left under the demo prefix.
async fn clear_prefix(config: &RedisConfig) -> CliResult {
    crate::keyspace::delete_prefixed_everywhere(config, DEMO_PREFIX).await?;
    Ok(())
}

#[derive(Deserialize)]
struct Image {
    image: String,
}

#[derive(Deserialize)]
struct Webhook {
    fail_first: u32,
}

#[derive(Deserialize)]
struct Report {
    poison: bool,
}

async fn demo_worker(config: &RedisConfig, done: Arc<AtomicU64>) -> CliResult<Worker> {
    let builder = Worker::builder(config, QUEUE)
        .concurrency(4)
        .lease(Duration::from_secs(5))
        .reap_interval(Duration::from_secs(1))
        .idle_block(Duration::from_secs(1))
        .shutdown_grace(Duration::from_secs(2))
        .retention(Retention::keep_all());
    let resized = done.clone();
    let builder = stock::register(builder)?
        .handler("resize-image", move |_ctx: JobContext, job: Image| {
            let done = resized.clone();
            async move {
                let ms = 40 + (job.image.len() as u64 * 37) % 200;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, JobError>(json!({ "thumbnail": format!("thumb-{}", job.image) }))
            }
        })
        .handler("webhook", |ctx: JobContext, job: Webhook| async move {
            if ctx.attempt() <= job.fail_first {
                return Err(JobError::retryable("upstream answered 503 Service Unavailable"));
            }
            Ok(json!({ "delivered_on_attempt": ctx.attempt() }))
        })
        .handler("report", |_ctx: JobContext, job: Report| async move {
            if job.poison {
                panic!("poisoned input: cannot parse row 17 of the report");
            }
            Ok(())
        })
        .handler("order", order_workflow)
        .handler("reminder", |_ctx: JobContext, _job: serde_json::Value| async move { Ok(()) })
        .handler("heartbeat", |_ctx: JobContext, _job: serde_json::Value| async move { Ok(()) });
    Ok(builder.build().await?)
}

/// The demo's workflow: durable steps, so the retry after the failed
/// payment does not reserve the stock again, and a durable sleep that holds
/// no worker slot.
async fn order_workflow(ctx: JobContext, order: serde_json::Value) -> Result<serde_json::Value, JobError> {
    let reservation: String = ctx
        .step("reserve-stock", || async { Ok(format!("R-{}", order["sku"].as_str().unwrap_or("?"))) })
        .await?;
    let payment: String = ctx
        .step("charge-card", || async {
            if ctx.attempt() == 1 {
                return Err(JobError::retryable("payment gateway timed out"));
            }
            Ok("P-4711".to_owned())
        })
        .await?;
    // Wait for the courier without holding a worker: the job sleeps in `delayed`.
    ctx.sleep(Duration::from_millis(1500)).await?;
    ctx.step("send-receipt", || async { Ok(()) }).await?;
    Ok(json!({ "reservation": reservation, "payment": payment }))
}

/// One line about a workflow's steps: each with the attempt that ran it.
fn steps_line(job: Option<&JobInfo>) -> String {
    let Some(job) = job else { return "not enqueued yet".into() };
    let mut parts: Vec<String> = job
        .steps
        .iter()
        .map(|s| match s.wake_at_ms() {
            Some(_) => "slept".to_owned(),
            None => format!("{} {} (#{})", s.name, s.outcome, s.attempt),
        })
        .collect();
    match job.state {
        quern_common::JobState::Delayed if job.steps.last().is_some_and(|s| s.is_sleep()) => {
            parts.pop();
            parts.push("sleeping".into());
        }
        quern_common::JobState::Delayed => parts.push("retrying after a failed step".into()),
        state => return format!("{} -> {state}", parts.join(", ")),
    }
    parts.join(", ")
}

async fn seed(queue: &Queue) -> CliResult {
    let flaky = JobOptions::new().job_id(FLAKY_ID).attempts(5).backoff(Backoff::Exponential {
        base: Duration::from_millis(500),
        max: Duration::from_secs(8),
        jitter: 0.1,
    });
    queue
        .add_with("webhook", &json!({ "url": "https://example.invalid/hook", "fail_first": 3 }), flaky)
        .await?;
    let poison =
        JobOptions::new().job_id(POISON_ID).attempts(3).backoff(Backoff::fixed(Duration::from_millis(700)));
    queue.add_with("report", &json!({ "poison": true }), poison).await?;
    let delayed = JobOptions::new().job_id(DELAYED_ID).delay(Duration::from_secs(3));
    queue.add_with("reminder", &json!({ "to": "ops@example.invalid" }), delayed).await?;
    let backup = json!({ "argv": ["sh", "-c", "echo backing up the database; sleep 0.3; echo backup done"] });
    queue.add_with("command", &backup, JobOptions::new().job_id(COMMAND_ID)).await?;
    let workflow =
        JobOptions::new().job_id(WORKFLOW_ID).attempts(3).backoff(Backoff::fixed(Duration::from_millis(300)));
    queue.add_with("order", &json!({ "sku": "kettle-2l" }), workflow).await?;
    Ok(())
}

/// One line about a job's attempts: outcomes and the waits between them.
fn attempts_line(job: Option<&JobInfo>) -> String {
    let Some(job) = job else { return "not enqueued yet".into() };
    let mut parts = Vec::new();
    let mut previous_end: Option<u64> = None;
    for a in job.history.iter().filter(|a| a.number.is_some()) {
        if let (Some(end), Some(start)) = (previous_end, a.started_at_ms) {
            parts.push(format!("wait {}", format_duration(Duration::from_millis(start.saturating_sub(end)))));
        }
        parts.push(format!("#{} {}", a.number.unwrap_or(0), a.outcome));
        previous_end = a.finished_at_ms;
    }
    let tried = !parts.is_empty();
    let state = match job.state {
        quern_common::JobState::Failed => "in the dead-letter list",
        quern_common::JobState::Delayed if tried => "backing off before the next attempt",
        quern_common::JobState::Delayed => "delayed: not due yet",
        quern_common::JobState::Waiting => "waiting for a worker",
        quern_common::JobState::Active => "running",
        quern_common::JobState::WaitingChildren => "waiting for its children",
        quern_common::JobState::Completed => "completed",
    };
    let last_outcome = job.history.iter().rev().find(|a| a.number.is_some()).map(|a| &a.outcome);
    match (tried, last_outcome) {
        (false, _) => state.to_owned(),
        // "#4 completed" says it all.
        (true, Some(o)) if o.as_str() == state => parts.join(", "),
        (true, _) => format!("{} -> {state}", parts.join(", ")),
    }
}

struct Screen {
    live: bool,
    drawn: usize,
    last_plain: Option<Instant>,
}

impl Screen {
    /// Draw the snapshot; `last` prints it whole even when not on a terminal.
    fn show(&mut self, lines: &[String], last: bool) {
        let mut out = std::io::stdout().lock();
        if !self.live && last {
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        } else if self.live {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for line in lines {
                // Keep each line on one terminal row, or the redraw drifts.
                let _ = writeln!(out, "\x1b[2K{}", crate::table::cell(line, LIVE_WIDTH));
            }
            self.drawn = lines.len();
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            // Not a terminal: a compact line every 2 s.
            let _ = writeln!(out, "{}", lines.get(1).map(String::as_str).unwrap_or(""));
            self.last_plain = Some(Instant::now());
        }
        let _ = out.flush();
    }
}

/// The cron schedule's line: ticks enqueued, the last one and how it went.
async fn cron_line(schedules: &Schedules) -> String {
    let status = match schedules.status().await {
        Ok(all) => all.into_iter().find(|s| s.schedule.name == CRON_NAME),
        Err(e) => return format!("cron {CRON_NAME:<12} (cannot read its status: {e})"),
    };
    let Some(s) = status else { return format!("cron {CRON_NAME:<12} not scheduled") };
    let last = match (s.last_tick, &s.last_run) {
        (Some(tick), Some(run)) => format!(", last @{} -> {}", tick.format("%H:%M:%SZ"), run_text(run)),
        _ => String::new(),
    };
    format!("cron {CRON_NAME:<12} every 2 s: {} tick(s) enqueued{last}", s.runs)
}

fn run_text(run: &RunOutcome) -> &'static str {
    match run {
        RunOutcome::Pending => "waiting",
        RunOutcome::Running => "running",
        RunOutcome::Completed => "completed",
        RunOutcome::Failed { .. } => "retrying",
        RunOutcome::Dead { .. } => "dead-lettered",
        RunOutcome::Gone => "trimmed",
    }
}

async fn snapshot(
    queue: &Queue,
    schedules: &Schedules,
    started: Instant,
    total: Duration,
    done: &[Arc<AtomicU64>],
) -> Vec<String> {
    let counts = match queue.counts().await {
        Ok(c) => format!(
            "queue {QUEUE}: waiting {}  delayed {}  active {}  completed {}  failed {}",
            c.waiting, c.delayed, c.active, c.completed, c.failed
        ),
        Err(e) => format!("queue {QUEUE}: (cannot read counts: {e})"),
    };
    let job = |id: &'static str| {
        let queue = queue.clone();
        async move { queue.job(id).await.ok().flatten() }
    };
    let elapsed = started.elapsed().min(total);
    let cron = cron_line(schedules).await;
    vec![
        format!("quern demo  {} / {}", format_duration(elapsed), format_duration(total)),
        counts,
        format!(
            "workers: A resized {} images, B resized {}",
            done[0].load(Ordering::Relaxed),
            done[1].load(Ordering::Relaxed)
        ),
        format!("{FLAKY_ID:<17} {}", attempts_line(job(FLAKY_ID).await.as_ref())),
        format!("{POISON_ID:<17} {}", attempts_line(job(POISON_ID).await.as_ref())),
        format!("{DELAYED_ID:<17} {}", attempts_line(job(DELAYED_ID).await.as_ref())),
        format!("{COMMAND_ID:<17} {}", attempts_line(job(COMMAND_ID).await.as_ref())),
        format!("{WORKFLOW_ID:<17} {}", steps_line(job(WORKFLOW_ID).await.as_ref())),
        cron,
    ]
}

/// Keep the demo's deliberate panics off the screen; others still print.
fn quiet_demo_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.starts_with("poisoned input") {
            default(info);
        }
    }));
}

/// `quern demo`.
pub(crate) async fn run(explicit_url: Option<String>, tls: TlsFiles, args: DemoArgs) -> CliResult {
    if args.duration < Duration::from_secs(1) {
        return Err(CliError::Usage("--duration must be at least 1s".into()));
    }
    let mut signals = ShutdownSignals::install()?;
    let explicit = explicit_url.is_some() && !args.throwaway_redis;
    let (url, server) = choose_redis(explicit_url, &tls, &args).await?;
    // The TLS files (--redis-ca, ...) belong to the URL given, not to a local or throwaway Redis.
    let tls = if explicit { tls } else { TlsFiles::default() };
    let config = RedisConfig::new(&url).tls(tls).prefix(DEMO_PREFIX);
    let source = match &server {
        Some(_) => "a throwaway redis-server started for this demo",
        None => "an existing Redis; the demo only touches keys under the prefix quern-demo",
    };
    outln!("quern demo: Redis at {} ({source})", config.masked_url());
    outln!("two workers and a producer on queue {QUEUE:?} for {}\n", format_duration(args.duration));
    clear_prefix(&config).await?;
    quiet_demo_panics();

    let done = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let workers =
        [demo_worker(&config, done[0].clone()).await?, demo_worker(&config, done[1].clone()).await?];
    let (stop, _) = ShutdownHandle::new();
    let mut running = tokio::task::JoinSet::new();
    for worker in workers {
        let stop = stop.clone();
        let worker_run = worker.run_until(async move { stop.requested().await });
        running.spawn(async move { worker_run.await.map_err(CliError::from) });
    }
    let queue = Queue::connect(&config, QUEUE).await?;
    seed(&queue).await?;
    // The cron scheduler: a schedule ticking every 2 s, enqueued by a scheduler
    // that holds the leader lease (tick job ids are `heartbeat@<UTC instant>`).
    let schedules = Schedules::connect(&config).await?;
    schedules.upsert(&Schedule::new(CRON_NAME, CRON_EXPR, QUEUE, "heartbeat")).await?;
    let scheduler = Scheduler::builder(&config).lease(Duration::from_secs(3)).build().await?;
    {
        let stop = stop.clone();
        let scheduler_run = scheduler.run_until(async move { stop.requested().await });
        running.spawn(async move { scheduler_run.await.map_err(CliError::from) });
    }

    // The producer: a steady trickle of ordinary jobs for most of the run.
    let producer = {
        let queue = queue.clone();
        let until = args.duration.mul_f64(0.8);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < until {
                n += 1;
                let _ = queue.add("resize-image", &json!({ "image": format!("photo-{n}.jpg") })).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            n
        })
    };

    let started = Instant::now();
    let mut screen = Screen { live: std::io::stdout().is_terminal(), drawn: 0, last_plain: None };
    let interrupted = tokio::select! {
        _ = signals.recv() => true,
        _ = async {
            while started.elapsed() < args.duration {
                screen.show(&snapshot(&queue, &schedules, started, args.duration, &done).await, false);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        } => false,
    };
    producer.abort();
    let produced = producer.await.unwrap_or(0);
    stop.shutdown();
    while let Some(result) = running.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(CliError::Failed(format!("a demo task failed: {e}"))),
        }
    }
    let last = snapshot(&queue, &schedules, started, args.duration, &done).await;
    screen.show(&last, true);
    summary(&queue, &config, server.is_some(), args.keep_redis, interrupted, produced).await
}

async fn summary(
    queue: &Queue,
    config: &RedisConfig,
    throwaway: bool,
    kept: bool,
    interrupted: bool,
    produced: u64,
) -> CliResult {
    let counts = queue.counts().await?;
    outln!();
    if interrupted {
        outln!("interrupted: stopped early");
    }
    let mut totals = BTreeMap::new();
    totals.insert("completed", counts.completed);
    totals.insert("dead-lettered", counts.failed);
    totals.insert("still waiting or delayed", counts.waiting + counts.delayed);
    outln!("summary: {produced} image jobs produced; {}", {
        let parts: Vec<String> = totals.iter().map(|(k, v)| format!("{v} {k}")).collect();
        parts.join(", ")
    });
    for id in [FLAKY_ID, POISON_ID, WORKFLOW_ID] {
        if let Some(job) = queue.job(id).await? {
            outln!("\n== quern job {QUEUE} {id}\n{}", render_job(&job));
        }
    }
    let prefix = format!("--prefix {DEMO_PREFIX}");
    // The binary just run (./run demo does not put quern on PATH).
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            let rel = p.strip_prefix(&cwd).map(|r| format!("./{}", r.display()));
            Some(rel.unwrap_or_else(|_| p.display().to_string()))
        })
        .unwrap_or_else(|| "quern".into());
    let url = format!("--redis-url {}", config.masked_url());
    outln!("Inspect it yourself:");
    if throwaway && !kept {
        outln!(
            "  (the throwaway Redis is stopped now; run `quern demo --keep-redis` to keep it, or start a\n   \
             Redis on 127.0.0.1:6379 and run the demo again, then:)"
        );
    }
    for cmd in [
        "stats".to_owned(),
        format!("jobs {QUEUE} --state completed --limit 10"),
        format!("job {QUEUE} {FLAKY_ID}"),
        format!("job {QUEUE} {WORKFLOW_ID}"),
        "schedules list".to_owned(),
        format!("dlq {QUEUE} list"),
        format!("dlq {QUEUE} retry {POISON_ID}"),
        format!("events {QUEUE} --last 15"),
        "metrics --once".to_owned(),
    ] {
        outln!("  {exe} {url} {prefix} {cmd}");
    }
    if throwaway && kept {
        outln!("  (stop the kept Redis with: redis-cli -u {} shutdown nosave)", config.masked_url());
    }
    Ok(())
}
