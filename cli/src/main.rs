//! `quern`: run workers and the scheduler, enqueue, inspect and repair queues,
//! benchmark, and see it all work in `quern demo`.
#![forbid(unsafe_code)]

/// `println!` that ends the process quietly when stdout is closed (`quern ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

/// `print!` with the same broken-pipe handling as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

mod bench;
mod control;
mod dashboard;
mod demo;
mod dlq;
mod duration;
mod enqueue;
mod error;
mod events;
mod flow;
mod inspect;
mod keys;
mod keyspace;
mod metrics;
mod repair;
mod schedules;
mod table;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quern_common::{RedisConfig, TlsFiles};

use crate::error::CliError;

/// quern: a durable, Redis-backed job queue.
///
/// Exit codes: 0 success; 1 operational failure (e.g. Redis unreachable, a
/// job record that cannot be read);
/// 2 usage or bad input (unknown flag, malformed duration, invalid JSON);
/// 3 not found (unknown queue, no such job, a job not in a state the command
/// applies to); `enqueue --wait` only: 4 dead-lettered, 5 cancelled,
/// 6 removed, 7 timed out.
#[derive(Debug, Parser)]
#[command(name = "quern", version, about, long_about)]
struct Cli {
    /// Redis to use, e.g. redis://127.0.0.1:6379/0, rediss://host:6380 (TLS),
    /// redis+unix:///path, redis+sentinel://host:26379,host:26379/<master> (Sentinel)
    /// or redis://node1:7000,node2:7000 (a Redis Cluster's seeds; one node's URL
    /// works too); an ACL user and password go in the URL:
    /// redis://user:password@host:port. Default: redis://127.0.0.1:6379.
    #[arg(long, global = true, env = "REDIS_URL")]
    redis_url: Option<String>,

    /// For a rediss:// URL: PEM file of the certificate authorities to trust
    /// (default: the system's root certificates).
    #[arg(long, global = true, env = "QUERN_REDIS_CA", value_name = "FILE")]
    redis_ca: Option<PathBuf>,

    /// For a rediss:// URL: PEM file of a client certificate to present (with --redis-key).
    #[arg(long, global = true, env = "QUERN_REDIS_CERT", value_name = "FILE")]
    redis_cert: Option<PathBuf>,

    /// For a rediss:// URL: PEM file of the client certificate's private key.
    #[arg(long, global = true, env = "QUERN_REDIS_KEY", value_name = "FILE")]
    redis_key: Option<PathBuf>,

    /// Key prefix: queues under different prefixes never see each other.
    #[arg(long, global = true, env = "QUERN_PREFIX", default_value = quern_common::keys::DEFAULT_PREFIX)]
    prefix: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stock job kinds `command` and `http` on one or more queues until SIGTERM/SIGINT.
    ///
    /// `command` payload: {"argv": [...], "env": {...}, "cwd": "...", "timeout": "10m",
    /// "kill_grace": "5s"}. Runs without a shell; exit 0 completes the job, any other
    /// exit is a failed attempt with the exit code and the output tail; on timeout the
    /// whole process group is killed.
    ///
    /// `http` payload: {"method": "POST", "url": "...", "headers": {...}, "body": ...,
    /// "timeout": "30s"}. `${VAR}` in the URL or header values is replaced by the
    /// worker's environment variable VAR (secrets never go to Redis). 2xx completes;
    /// 408, 429, 5xx and network errors are retried; other statuses fail for good.
    Worker(worker::WorkerArgs),
    /// Run the cron scheduler until SIGTERM/SIGINT (one leader at a time; run a
    /// second copy as a standby). Applies --schedules FILE at start.
    Scheduler(schedules::SchedulerArgs),
    /// Inspect and manage the schedules stored in Redis ("did the 2 AM job run?").
    Schedules(schedules::SchedulesArgs),
    /// Add a job to a queue and print its id.
    Enqueue(enqueue::EnqueueArgs),
    /// Flows: `quern flow add FILE` adds a parent job with its children from
    /// JSON; the parent runs once every child has ended.
    Flow(flow::FlowArgs),
    /// Job counts per state (waiting, delayed, active, completed, failed) per queue.
    Stats(inspect::StatsArgs),
    /// The live workers of each queue: host, pid, slots, running jobs,
    /// stopping or not, first and last seen, version.
    Workers(inspect::WorkersArgs),
    /// Show one job with its full attempt history (and any fields of its
    /// record that cannot be read; a record that is no job at all exits 1).
    Job(inspect::JobArgs),
    /// List the jobs of a queue in one state (corrupt records marked, not hidden).
    Jobs(inspect::JobsArgs),
    /// What happened to a queue's jobs (added, started, completed, retried,
    /// dead-lettered, stalled, ...), newest last; --follow keeps printing.
    Events(events::EventsArgs),
    /// The dead-letter list: list, retry or purge failed jobs.
    Dlq(dlq::DlqArgs),
    /// Make delayed jobs (a delay, or a retry's backoff) waiting now: by id, or --all.
    Promote(repair::PromoteArgs),
    /// Stop jobs for good: waiting or delayed ones never run, running ones lose
    /// their lease (their worker learns within a third of the lease; the stock
    /// `command` kind kills the program); all land in the dead-letter list.
    Cancel(repair::CancelArgs),
    /// Delete jobs that are not running (waiting, delayed, completed or dead-lettered).
    Remove(repair::RemoveArgs),
    /// Pause a queue: workers take no new jobs from it (running jobs finish).
    Pause(control::QueueArg),
    /// Resume a paused queue.
    Resume(control::QueueArg),
    /// Show, set or remove a queue's rate limit: at most N jobs start per
    /// window, across all its workers (e.g. `quern limit ops 100/1m`).
    Limit(control::LimitArgs),
    /// Show, set or remove concurrency-key limits: at most N jobs of one
    /// concurrency key run at once (`quern keys ops --limit 1`,
    /// `quern keys ops merchant-7 --limit 5`, `--off`); without --limit or
    /// --off, show the limits and the keys in use with their active, waiting
    /// and held (set-aside) counts.
    Keys(keys::KeysArgs),
    /// Delete a queue with all its jobs, events and settings (asks for --yes;
    /// refused while jobs run or workers are live, unless --force).
    DeleteQueue(control::DeleteQueueArgs),
    /// Serve Prometheus metrics of every queue and schedule under the prefix
    /// (job counts per state, paused, schedule runs, missed ticks, overdue
    /// ticks, the last run's outcome) at GET /metrics, or print them once.
    Metrics(metrics::MetricsArgs),
    /// Serve the web dashboard: queues with counts and charts, jobs, a job's
    /// attempts, schedules, and the operator's actions (needs a token; see
    /// --token).
    Dashboard(dashboard::DashboardArgs),
    /// See quern work: two workers, a producer, retries with backoff, a poisoned job
    /// in the dead-letter list, with a live display (uses REDIS_URL, else a Redis on
    /// 127.0.0.1:6379, else a throwaway redis-server; keys under the prefix quern-demo).
    Demo(demo::DemoArgs),
    /// Measure quern on the shared benchmark protocol (one JSON line per scenario on stdout).
    Bench(bench::BenchArgs),
}

impl Cli {
    fn redis_config(&self) -> RedisConfig {
        let url = self.redis_url.as_deref().unwrap_or(quern_common::connection::DEFAULT_REDIS_URL);
        RedisConfig::new(url).prefix(&self.prefix).tls(self.tls_files())
    }

    fn tls_files(&self) -> TlsFiles {
        TlsFiles { ca: self.redis_ca.clone(), cert: self.redis_cert.clone(), key: self.redis_key.clone() }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let config = cli.redis_config();
    let tls = cli.tls_files();
    match cli.command {
        Command::Demo(args) => demo::run(cli.redis_url, tls, args).await,
        Command::Worker(args) => worker::run(&config, args).await,
        Command::Scheduler(args) => schedules::run_scheduler(&config, args).await,
        Command::Schedules(args) => schedules::run_schedules(&config, args).await,
        Command::Enqueue(args) => enqueue::run(&config, args).await,
        Command::Flow(args) => flow::run(&config, args).await,
        Command::Stats(args) => inspect::stats(&config, args).await,
        Command::Workers(args) => inspect::workers(&config, args).await,
        Command::Job(args) => inspect::job(&config, args).await,
        Command::Jobs(args) => inspect::jobs(&config, args).await,
        Command::Events(args) => events::run(&config, args).await,
        Command::Dlq(args) => dlq::run(&config, args).await,
        Command::Promote(args) => repair::promote(&config, args).await,
        Command::Cancel(args) => repair::cancel(&config, args).await,
        Command::Remove(args) => repair::remove(&config, args).await,
        Command::Pause(args) => control::set_paused(&config, args, true).await,
        Command::Resume(args) => control::set_paused(&config, args, false).await,
        Command::Limit(args) => control::limit(&config, args).await,
        Command::Keys(args) => keys::run(&config, args).await,
        Command::DeleteQueue(args) => control::delete_queue(&config, args).await,
        Command::Metrics(args) => metrics::run(&config, args).await,
        Command::Dashboard(args) => dashboard::run(&config, args).await,
        Command::Bench(args) => bench::run(&config, args).await,
    }
}

/// Stdout failed: a closed pipe is a normal end (exit 0), anything else exit 1.
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(i32::from(error::EXIT_FAILURE));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a live display: only errors may interrupt it.
    let default_filter = if matches!(cli.command, Command::Demo(_)) { "error" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        // On a worker thread of the runtime, not the thread of block_on: the
        // connections' tasks run there too, so replies need no thread switch.
        Ok(runtime) => runtime.block_on(async {
            match tokio::spawn(dispatch(cli)).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(CliError::Failed(format!("the command's task was cancelled: {e}"))),
            }
        }),
        Err(e) => Err(CliError::Failed(format!("cannot start the async runtime: {e}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::Reported(_)) {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
