//! A real worker process for the fault-tolerance tests.
//!
//! Serves one queue with a `chaos` handler (see [`quern_tests::chaos::ChaosJob`]):
//! it appends `job_id token pid attempt` to the ledger file (opened with
//! `O_APPEND`, one `write` per line, so lines of concurrent processes never
//! interleave) *before* doing the work, sleeps, then fails or succeeds as the
//! job says. Prints `ready <worker-id>` on stdout once connected and `stopped`
//! after a clean shutdown (SIGTERM/SIGINT); logs go to stderr.
//!
//! Also serves `workflow` jobs ([`quern_tests::chaos::WorkflowJob`]): durable
//! steps that each append `step <job id> <step> <pid> <token>` to the ledger.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use quern_tests::chaos::{ChaosJob, WorkflowJob};
use quern_worker::{JobContext, JobError, RedisConfig, Retention, Worker};

/// The command line, parsed by hand (`--name=value`).
struct Args {
    redis_url: String,
    prefix: Option<String>,
    queue: String,
    ledger: String,
    concurrency: usize,
    lease: Duration,
    reap_interval: Duration,
    max_stalls: u32,
    grace: Duration,
    idle_block: Duration,
    redis_timeout: Duration,
    /// Replicas that must hold the worker's state moves, and how long to wait.
    replica_acks: Option<(u32, Duration)>,
}

fn parse_args() -> Result<Args, String> {
    let mut values = std::collections::HashMap::new();
    for arg in std::env::args().skip(1) {
        let Some((name, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
            return Err(format!("unexpected argument {arg:?} (expected --name=value)"));
        };
        values.insert(name.to_owned(), value.to_owned());
    }
    let mut take = |name: &str| values.remove(name).ok_or_else(|| format!("missing --{name}=..."));
    fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
        text.parse().map_err(|_| format!("--{name} must be a number, got {text:?}"))
    }
    let ms = |name: &str, text: String| number::<u64>(name, text).map(Duration::from_millis);
    let args = Args {
        redis_url: take("redis-url")?,
        queue: take("queue")?,
        ledger: take("ledger")?,
        concurrency: number("concurrency", take("concurrency")?)?,
        lease: ms("lease-ms", take("lease-ms")?)?,
        reap_interval: ms("reap-interval-ms", take("reap-interval-ms")?)?,
        max_stalls: number("max-stalls", take("max-stalls")?)?,
        grace: ms("grace-ms", take("grace-ms")?)?,
        idle_block: ms("idle-block-ms", take("idle-block-ms")?)?,
        redis_timeout: ms("redis-timeout-ms", take("redis-timeout-ms")?)?,
        prefix: take("prefix").ok(),
        replica_acks: match take("replica-acks").ok() {
            None => None,
            Some(n) => Some((
                number("replica-acks", n)?,
                ms("replica-acks-timeout-ms", take("replica-acks-timeout-ms")?)?,
            )),
        },
    };
    if let Some(unknown) = values.keys().next() {
        return Err(format!("unknown flag --{unknown}"));
    }
    Ok(args)
}

/// Append one line with a single `write` on an `O_APPEND` file.
fn record(ledger: &File, ctx: &JobContext) -> std::io::Result<()> {
    let line = format!("{} {} {} {}\n", ctx.id(), ctx.token(), std::process::id(), ctx.attempt());
    append(ledger, &line)
}

fn append(ledger: &File, line: &str) -> std::io::Result<()> {
    let written = (&*ledger).write(line.as_bytes())?;
    if written != line.len() {
        return Err(std::io::Error::other(format!("short ledger write: {written} of {} bytes", line.len())));
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    let ledger = Arc::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&args.ledger)
            .map_err(|e| format!("cannot open the ledger {}: {e}", args.ledger))?,
    );
    let mut config = RedisConfig::new(&args.redis_url)
        .connect_timeout(args.redis_timeout)
        .response_timeout(args.redis_timeout);
    if let Some(prefix) = args.prefix {
        config = config.prefix(prefix);
    }
    let workflow_ledger = ledger.clone();
    let mut builder = Worker::builder(&config, &args.queue);
    if let Some((replicas, timeout)) = args.replica_acks {
        builder = builder.replica_acks(replicas, timeout);
    }
    let worker = builder
        .concurrency(args.concurrency)
        .lease(args.lease)
        .reap_interval(args.reap_interval)
        .max_stalls(args.max_stalls)
        .shutdown_grace(args.grace)
        .idle_block(args.idle_block)
        .retention(Retention::keep_all())
        .handler("chaos", move |ctx: JobContext, job: ChaosJob| {
            let ledger = ledger.clone();
            async move {
                // A handler that cannot record its execution must not run
                // unrecorded: fail the attempt (the test would see it).
                record(&ledger, &ctx).map_err(|e| JobError::retryable(format!("ledger: {e}")))?;
                tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
                if ctx.attempt() <= job.fail_attempts {
                    return Err(JobError::retryable(format!(
                        "chaos: planned failure of attempt {}",
                        ctx.attempt()
                    )));
                }
                Ok(())
            }
        })
        .handler("workflow", {
            let ledger = workflow_ledger;
            move |ctx: JobContext, job: WorkflowJob| {
                let ledger = ledger.clone();
                async move {
                    for i in 1..=job.steps {
                        let name = format!("step-{i}");
                        let done: u32 = ctx
                            .step(&name, || {
                                let line = format!(
                                    "step {} {name} {} {}\n",
                                    ctx.id(),
                                    std::process::id(),
                                    ctx.token()
                                );
                                let ledger = ledger.clone();
                                async move {
                                    append(&ledger, &line)
                                        .map_err(|e| JobError::retryable(format!("ledger: {e}")))?;
                                    tokio::time::sleep(Duration::from_millis(job.step_ms)).await;
                                    Ok(i)
                                }
                            })
                            .await?;
                        assert_eq!(done, i, "a stored step result comes back as stored");
                        if i == job.sleep_after {
                            ctx.sleep(Duration::from_millis(job.sleep_ms)).await?;
                        }
                    }
                    Ok(job.steps)
                }
            }
        })
        .build()
        .await
        .map_err(|e| format!("cannot start the worker: {e}"))?;
    println!("ready {}", worker.id());
    let _ = std::io::stdout().flush();
    worker.run().await.map_err(|e| format!("the worker failed: {e}"))?;
    println!("stopped");
    let _ = std::io::stdout().flush();
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos_worker: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("chaos_worker: {e}");
        std::process::exit(1);
    }
}
