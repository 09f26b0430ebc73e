//! `quern stats`, `quern job` and `quern jobs`: look at queues and jobs.

use std::time::Duration;

use quern_common::{JobEntry, JobInfo, JobState, QueueCounts, RedisConfig, SelfHealingConnection};
use quern_producer::{KEY_SCAN_PAGE, Queue, known_queues};
use serde_json::{Map, Value, json};

use crate::duration::{format_duration, format_unix_ms};
use crate::error::{CliError, CliResult};
use crate::table::{Table, cell};

/// Options of `quern stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    /// Only this queue (default: every queue under the prefix).
    pub(crate) queue: Option<String>,
    /// Print JSON: an object keyed by queue name, then by state
    /// (waiting, delayed, active, completed, failed).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `quern job`.
#[derive(Debug, clap::Args)]
pub(crate) struct JobArgs {
    /// The queue.
    pub(crate) queue: String,
    /// The job id.
    pub(crate) id: String,
    /// Print the job as JSON (payload and result as JSON values).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `quern jobs`.
#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    /// The queue.
    pub(crate) queue: String,
    /// State to list: waiting, delayed, active, completed, failed or
    /// waiting-children (flows' parents waiting for their children).
    #[arg(long, value_parser = parse_state, default_value = "waiting")]
    pub(crate) state: JobState,
    /// Most jobs to list.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// Skip this many jobs first (for paging). With --key: the position to
    /// go on from, as the previous page printed it.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// Only the waiting jobs of this concurrency key: its held jobs, then
    /// its jobs in the waiting lists (a call reads at most 1,000 entries of
    /// those, so a page may be short; the next page's --offset follows).
    #[arg(long, value_name = "KEY")]
    pub(crate) key: Option<String>,
    /// Print a JSON array of jobs (an unreadable record as
    /// {"queue", "id", "unreadable"}); with --key, an object
    /// {"jobs": [...], "next_offset": N or null}.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parse a state name for clap.
pub(crate) fn parse_state(text: &str) -> Result<JobState, String> {
    text.parse::<JobState>().map_err(|e| e.to_string())
}

/// Counts as a JSON object keyed by state name.
pub(crate) fn counts_json(c: &QueueCounts) -> Value {
    json!({
        "waiting": c.waiting,
        "delayed": c.delayed,
        "active": c.active,
        "completed": c.completed,
        "failed": c.failed,
        "waiting-children": c.waiting_children,
    })
}

/// `quern stats`.
pub(crate) async fn stats(config: &RedisConfig, args: StatsArgs) -> CliResult {
    if let Some(name) = &args.queue {
        quern_common::names::validate_queue_name(name)?;
    }
    // One connection for every queue, however many there are.
    let conn = config.connect().await?;
    let names = queue_names(config, &conn, args.queue.as_ref()).await?;
    let all = counts_of(config, &conn, names).await?;
    if args.json {
        let object: Map<String, Value> = all.iter().map(|(n, c)| (n.clone(), counts_json(c))).collect();
        outln!("{}", Value::Object(object));
        return Ok(());
    }
    if all.is_empty() {
        outln!("no queues under prefix {:?}", config.prefix);
        return Ok(());
    }
    let mut t = Table::new(&["QUEUE", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED", "PAUSED"]);
    for (name, c) in &all {
        t.row(vec![
            name.clone(),
            c.waiting.to_string(),
            c.delayed.to_string(),
            c.active.to_string(),
            c.completed.to_string(),
            c.failed.to_string(),
            if c.paused { "yes".into() } else { "no".into() },
        ]);
    }
    out!("{}", t.render());
    Ok(())
}

/// `queue` if it is known (else an unknown-queue error), or every queue
/// under the prefix.
async fn queue_names(
    config: &RedisConfig,
    conn: &SelfHealingConnection,
    queue: Option<&String>,
) -> CliResult<Vec<String>> {
    let known = known_queues(&mut conn.clone(), &config.prefix).await?;
    match queue {
        Some(name) if known.contains(name) => Ok(vec![name.clone()]),
        Some(name) => Err(quern_common::Error::UnknownQueue(name.clone()).into()),
        None => Ok(known),
    }
}

/// Options of `quern workers`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkersArgs {
    /// Only this queue (default: every queue under the prefix).
    pub(crate) queue: Option<String>,
    /// Print JSON: an object keyed by queue name, each a list of workers
    /// (id, concurrency, running, stopping, version, first_seen_ms, last_seen_ms).
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quern workers`.
pub(crate) async fn workers(config: &RedisConfig, args: WorkersArgs) -> CliResult {
    if let Some(name) = &args.queue {
        quern_common::names::validate_queue_name(name)?;
    }
    let conn = config.connect().await?;
    let mut all = Vec::new();
    for name in queue_names(config, &conn, args.queue.as_ref()).await? {
        let workers = Queue::builder(config, &name).with_connection(conn.clone())?.workers().await?;
        all.push((name, workers));
    }
    if args.json {
        let object: Map<String, Value> = all.iter().map(|(n, w)| (n.clone(), json!(w))).collect();
        outln!("{}", Value::Object(object));
        return Ok(());
    }
    let mut t = Table::new(&[
        "QUEUE",
        "WORKER",
        "HOST",
        "PID",
        "SLOTS",
        "RUNNING",
        "STATE",
        "SINCE",
        "LAST SEEN",
        "VERSION",
    ]);
    for (queue, workers) in &all {
        for w in workers {
            t.row(vec![
                queue.clone(),
                w.id.clone(),
                w.host().to_owned(),
                w.pid().map_or_else(|| "-".into(), |p| p.to_string()),
                w.concurrency.to_string(),
                w.running.to_string(),
                if w.stopping { "stopping".into() } else { "running".into() },
                format_unix_ms(w.first_seen_ms),
                format_unix_ms(w.last_seen_ms),
                w.version.clone(),
            ]);
        }
    }
    if all.iter().all(|(_, w)| w.is_empty()) {
        outln!("no live workers");
        return Ok(());
    }
    out!("{}", t.render());
    Ok(())
}

/// The counts of each of these queues, over one connection.
pub(crate) async fn counts_of(
    config: &RedisConfig,
    conn: &SelfHealingConnection,
    names: Vec<String>,
) -> CliResult<Vec<(String, QueueCounts)>> {
    let mut all = Vec::with_capacity(names.len());
    for name in names {
        let counts = Queue::builder(config, &name).with_connection(conn.clone())?.counts().await?;
        all.push((name, counts));
    }
    Ok(all)
}

/// A listed job as JSON ([`job_json`]), or an unreadable record as
/// `{"queue", "id", "unreadable"}`.
pub(crate) fn entry_json(entry: &JobEntry) -> Value {
    match entry {
        JobEntry::Job(job) => job_json(job),
        JobEntry::Unreadable(u) => serde_json::to_value(u).unwrap_or(Value::Null),
    }
}

/// A job as JSON, with its payload and result as JSON values when they parse
/// (and a `problems` list when some of its fields could not be read).
pub(crate) fn job_json(job: &JobInfo) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for field in ["payload", "result", "progress"] {
            if let Some(Value::String(text)) = map.get(field)
                && let Ok(parsed) = serde_json::from_str::<Value>(text)
            {
                map.insert(field.to_owned(), parsed);
            }
        }
    }
    v
}

/// When the job was added; `-` when that is unknown (its record has no
/// readable creation time, which [`JobInfo::problems`] then names).
fn created(job: &JobInfo) -> String {
    opt_time(Some(job.created_at_ms).filter(|&ms| ms > 0))
}

fn opt_time(ms: Option<u64>) -> String {
    ms.map(format_unix_ms).unwrap_or_else(|| "-".into())
}

/// The human view of one job: fields, its durable steps (if any), then the
/// attempt history.
pub(crate) fn render_job(job: &JobInfo) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    line("queue", job.queue.clone());
    line("id", job.id.clone());
    line("name", job.name.clone());
    line("state", job.state.to_string());
    line("attempts", format!("{} of {}", job.attempts_made, job.max_attempts));
    line("priority", job.priority.to_string());
    line("created", created(job));
    line("started", opt_time(job.started_at_ms));
    line("finished", opt_time(job.finished_at_ms));
    if let (Some(s), Some(f)) = (job.started_at_ms, job.finished_at_ms)
        && f >= s
    {
        line("took", format_duration(Duration::from_millis(f - s)));
    }
    line("worker", job.worker.clone().unwrap_or_else(|| "-".into()));
    if job.stalls > 0 {
        line("stalls", job.stalls.to_string());
    }
    if let Some(k) = &job.concurrency_key {
        line("conc. key", k.clone());
    }
    if let Some(k) = &job.idempotency_key {
        line("idem. key", k.clone());
    }
    line("payload", job.payload.clone());
    if let Some(p) = &job.progress {
        line("progress", p.clone());
    }
    if let Some(r) = &job.result {
        line("result", r.clone());
    }
    if let Some(e) = &job.last_error {
        line("last error", e.clone());
    }
    if let Some(p) = &job.parent {
        line("parent", format!("{}/{} (on failure: {})", p.queue, p.id, p.on_failure));
    }
    if !job.problems.is_empty() {
        out.push_str("\nproblems (fields of its record that cannot be read):\n");
        for p in &job.problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    if !job.children.is_empty() {
        out.push_str("\nchildren:\n");
        let mut t = Table::new(&["  QUEUE", "ID", "STATUS", "RESULT / ERROR"]);
        for c in &job.children {
            let status = serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            let detail = c.result.as_deref().or(c.error.as_deref()).unwrap_or("-");
            t.row(vec![
                format!("  {}", c.queue),
                c.id.clone(),
                status.unwrap_or_default(),
                cell(detail, 200),
            ]);
        }
        out.push_str(&t.render());
    }
    if !job.steps.is_empty() {
        out.push_str("\nsteps:\n");
        let mut t =
            Table::new(&["  STEP", "#", "ATTEMPT", "STARTED", "TOOK", "OUTCOME", "RESULT / ERROR / WAKE"]);
        for step in &job.steps {
            let detail = match step.wake_at_ms() {
                Some(wake) => format!("until {}", format_unix_ms(wake)),
                None => cell(&step.detail(), 200),
            };
            t.row(vec![
                format!("  {}", step.name),
                step.occurrence.to_string(),
                step.attempt.to_string(),
                format_unix_ms(step.started_at_ms),
                format_duration(Duration::from_millis(step.took_ms)),
                step.outcome.to_string(),
                detail,
            ]);
        }
        out.push_str(&t.render());
    }
    out.push_str("\nhistory:\n");
    if job.history.is_empty() {
        out.push_str("  (no attempts yet)\n");
        return out;
    }
    let mut t = Table::new(&["  #", "OUTCOME", "STARTED", "TOOK", "WORKER", "ERROR"]);
    for a in &job.history {
        t.row(vec![
            format!("  {}", a.number.map(|n| n.to_string()).unwrap_or_else(|| "-".into())),
            a.outcome.to_string(),
            opt_time(a.started_at_ms),
            a.duration_ms().map(|d| format_duration(Duration::from_millis(d))).unwrap_or_else(|| "-".into()),
            a.worker.clone().unwrap_or_else(|| "-".into()),
            a.error.as_deref().map(|e| cell(e, 200)).unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `quern job`. A job with fields that cannot be read is shown with its
/// problems (exit 0); a record that cannot be read as a job is an
/// operational failure (exit 1), printed with `--json` as
/// `{"queue", "id", "unreadable"}` too.
pub(crate) async fn job(config: &RedisConfig, args: JobArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    let job = match queue.job(&args.id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return Err(CliError::Quern(quern_common::Error::JobNotFound {
                queue: args.queue.clone(),
                id: args.id.clone(),
            }));
        }
        Err(quern_common::Error::UnreadableJob { queue, id, problem }) => {
            if args.json {
                outln!("{}", json!({ "queue": queue, "id": id, "unreadable": problem }));
            }
            return Err(quern_common::Error::UnreadableJob { queue, id, problem }.into());
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&job_json(&job)).unwrap_or_default());
    } else {
        out!("{}", render_job(&job));
    }
    Ok(())
}

/// A table of jobs, one line each. A record that cannot be read as a job
/// is a line of its id and `unreadable: <what is wrong>`; each problem of a
/// job with fields that cannot be read follows its line as `problem: ...`.
pub(crate) fn jobs_table(entries: &[JobEntry]) -> String {
    let mut t = Table::new(&["ID", "NAME", "STATE", "ATTEMPTS", "CREATED", "FINISHED", "TOOK", "LAST ERROR"]);
    for entry in entries {
        let j = match entry {
            JobEntry::Job(j) => j,
            JobEntry::Unreadable(u) => {
                t.spanning_row(vec![u.id.clone(), format!("unreadable: {}", cell(&u.problem, 200))]);
                continue;
            }
        };
        let took = match (j.started_at_ms, j.finished_at_ms) {
            (Some(s), Some(f)) if f >= s => format_duration(Duration::from_millis(f - s)),
            _ => "-".into(),
        };
        t.row(vec![
            j.id.clone(),
            cell(&j.name, 30),
            j.state.to_string(),
            format!("{}/{}", j.attempts_made, j.max_attempts),
            created(j),
            opt_time(j.finished_at_ms),
            took,
            j.last_error.as_deref().map(|e| cell(e, 80)).unwrap_or_default(),
        ]);
        for p in &j.problems {
            t.spanning_row(vec![String::new(), format!("problem: {}", cell(p, 200))]);
        }
    }
    t.render()
}

/// `quern jobs --key`: a page of one concurrency key's waiting jobs.
async fn jobs_of_key(queue: &Queue, args: &JobsArgs, key: &str) -> CliResult {
    if args.state != JobState::Waiting {
        return Err(CliError::Usage(format!(
            "--key lists waiting jobs only (got --state {}); `quern keys {}` shows each key's running jobs",
            args.state, args.queue
        )));
    }
    let page = queue.waiting_jobs_of_key(key, args.offset, args.limit).await?;
    if args.json {
        let jobs = Value::Array(page.jobs.iter().map(entry_json).collect());
        outln!("{}", json!({ "jobs": jobs, "next_offset": page.next }));
        return Ok(());
    }
    if page.jobs.is_empty() && page.next.is_none() && args.offset == 0 {
        outln!("no waiting jobs of key {key} in queue {}", args.queue);
    } else if page.jobs.is_empty() {
        outln!("none on this page (a page reads at most {KEY_SCAN_PAGE} entries of the waiting lists)");
    } else {
        out!("{}", jobs_table(&page.jobs));
    }
    if let Some(next) = page.next {
        outln!("more: --offset {next}");
    }
    Ok(())
}

/// `quern jobs`.
pub(crate) async fn jobs(config: &RedisConfig, args: JobsArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    if args.limit == 0 {
        return Err(CliError::Usage("--limit must be at least 1".into()));
    }
    let queue = Queue::open_existing(config, &args.queue).await?;
    if let Some(key) = &args.key {
        return jobs_of_key(&queue, &args, key).await;
    }
    let jobs = queue.jobs(args.state, args.offset, args.limit).await?;
    if args.json {
        outln!("{}", Value::Array(jobs.iter().map(entry_json).collect()));
    } else if jobs.is_empty() {
        outln!("no {} jobs in queue {}", args.state, args.queue);
    } else {
        out!("{}", jobs_table(&jobs));
    }
    Ok(())
}
