//! `quern worker`: run the stock job kinds (`command`, `http`) on one or more queues.

use std::time::Duration;

use quern_common::RedisConfig;
use quern_common::process::{ShutdownHandle, ShutdownSignals, ready_backoff, retry_until_ready};
use quern_worker::{Worker, stock};

use crate::duration::parse_duration;
use crate::error::{CliError, CliResult};

/// Options of `quern worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Queues to serve (one worker per queue, all in this process).
    #[arg(required = true, value_name = "QUEUE")]
    pub(crate) queues: Vec<String>,
    /// Jobs run at once, per queue.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) concurrency: usize,
    /// Lease length: a job whose worker stops renewing it for this long is
    /// given to another worker.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) lease: Duration,
    /// On SIGTERM/SIGINT, how long running jobs may take to finish before
    /// they are handed back to waiting.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) shutdown_grace: Duration,
}

/// Build a stock worker for `queue`.
pub(crate) async fn stock_worker(
    config: &RedisConfig,
    queue: &str,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
) -> quern_common::Result<Worker> {
    let builder = Worker::builder(config, queue).concurrency(concurrency).lease(lease).shutdown_grace(grace);
    stock::register(builder)?.build().await
}

/// Build a stock worker, waiting for Redis while it cannot be reached or
/// cannot serve yet (a worker started before Redis, or during an outage,
/// must not exit: it retries with delays doubling from 100 ms up to 5 s and
/// says so on stderr). `None` when SIGTERM/SIGINT arrives while waiting.
/// Other errors end it at once.
async fn stock_worker_when_redis_is_up(
    config: &RedisConfig,
    queue: &str,
    args: &WorkerArgs,
    signals: &mut ShutdownSignals,
) -> CliResult<Option<Worker>> {
    let signalled = async {
        signals.recv().await;
    };
    Ok(retry_until_ready("waiting for Redis", ready_backoff(), signalled, || {
        stock_worker(config, queue, args.concurrency, args.lease, args.shutdown_grace)
    })
    .await?)
}

/// `quern worker`.
pub(crate) async fn run(config: &RedisConfig, args: WorkerArgs) -> CliResult {
    for q in &args.queues {
        quern_common::names::validate_queue_name(q)?;
    }
    let mut signals = ShutdownSignals::install()?;
    let mut workers = Vec::new();
    for q in &args.queues {
        match stock_worker_when_redis_is_up(config, q, &args, &mut signals).await? {
            Some(worker) => workers.push(worker),
            None => {
                eprintln!("stopped before Redis could be reached");
                return Ok(());
            }
        }
    }
    let (stop, _) = ShutdownHandle::new();
    let mut running = tokio::task::JoinSet::new();
    for worker in workers {
        eprintln!(
            "quern worker {} serving queue {:?} (job kinds: {}; concurrency {})",
            worker.id(),
            worker.queue(),
            stock::KINDS.join(", "),
            args.concurrency
        );
        let stop = stop.clone();
        running.spawn(worker.run_until(async move { stop.requested().await }));
    }
    tokio::select! {
        _ = signals.recv() => eprintln!("shutting down: letting running jobs finish (up to {:?})", args.shutdown_grace),
        Some(early) = running.join_next() => {
            // A worker stopped on its own: stop the others and report why.
            stop.shutdown();
            while running.join_next().await.is_some() {}
            return match early {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(CliError::Failed(format!("a worker task failed: {e}"))),
            };
        }
    }
    stop.shutdown();
    let mut first_error = None;
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(CliError::from(e))),
            Err(e) => {
                first_error = first_error.or(Some(CliError::Failed(format!("a worker task failed: {e}"))))
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            eprintln!("stopped cleanly");
            Ok(())
        }
    }
}
