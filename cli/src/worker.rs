//! `quern worker`: run the stock job kinds (`command`, `http`) on one or more queues.

use std::time::Duration;

use quern_common::RedisConfig;
use quern_worker::{Worker, stock};
use tokio::sync::watch;

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
) -> CliResult<Worker> {
    let builder = Worker::builder(config, queue).concurrency(concurrency).lease(lease).shutdown_grace(grace);
    Ok(stock::register(builder)?.build().await?)
}

/// Longest wait between two attempts to reach Redis at start-up.
const STARTUP_RETRY_CAP: Duration = Duration::from_secs(5);

/// Build a stock worker, waiting for Redis while it cannot be reached (a
/// worker started before Redis, or during an outage, must not exit: it
/// retries with delays doubling up to 5 s and says so on stderr). `None` when
/// SIGTERM/SIGINT arrives while waiting. Other errors end it at once.
async fn stock_worker_when_redis_is_up(
    config: &RedisConfig,
    queue: &str,
    args: &WorkerArgs,
) -> CliResult<Option<Worker>> {
    let mut delay = Duration::from_millis(100);
    loop {
        match stock_worker(config, queue, args.concurrency, args.lease, args.shutdown_grace).await {
            Ok(worker) => return Ok(Some(worker)),
            Err(CliError::Quern(e)) if e.is_connection_error() => {
                eprintln!("waiting for Redis ({e}); retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = termination() => return Ok(None),
                }
                delay = (delay * 2).min(STARTUP_RETRY_CAP);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolve on SIGTERM or SIGINT.
pub(crate) async fn termination() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `quern worker`.
pub(crate) async fn run(config: &RedisConfig, args: WorkerArgs) -> CliResult {
    for q in &args.queues {
        quern_common::names::validate_queue_name(q)?;
    }
    let mut workers = Vec::new();
    for q in &args.queues {
        match stock_worker_when_redis_is_up(config, q, &args).await? {
            Some(worker) => workers.push(worker),
            None => {
                eprintln!("stopped before Redis could be reached");
                return Ok(());
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for worker in workers {
        eprintln!(
            "quern worker {} serving queue {:?} (job kinds: {}; concurrency {})",
            worker.id(),
            worker.queue(),
            stock::KINDS.join(", "),
            args.concurrency
        );
        let mut stop = stop_rx.clone();
        running.spawn(worker.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    tokio::select! {
        _ = termination() => eprintln!("shutting down: letting running jobs finish (up to {:?})", args.shutdown_grace),
        Some(early) = running.join_next() => {
            // A worker stopped on its own: stop the others and report why.
            let _ = stop_tx.send(true);
            while running.join_next().await.is_some() {}
            return match early {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(CliError::Failed(format!("a worker task failed: {e}"))),
            };
        }
    }
    let _ = stop_tx.send(true);
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
