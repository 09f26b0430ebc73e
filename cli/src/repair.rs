//! `quern promote`, `quern cancel` and `quern remove`: run delayed jobs now,
//! stop jobs for good, delete jobs.

use quern_common::RedisConfig;
use quern_producer::Queue;

use crate::error::{CliError, CliResult};

/// Options of `quern promote`.
#[derive(Debug, clap::Args)]
pub(crate) struct PromoteArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Ids of delayed jobs (waiting out a delay or a retry's backoff).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) ids: Vec<String>,
    /// Every delayed job of the queue.
    #[arg(long)]
    pub(crate) all: bool,
}

/// Options of `quern remove`.
#[derive(Debug, clap::Args)]
pub(crate) struct RemoveArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Ids of jobs that are not running (waiting, delayed, completed or
    /// dead-lettered).
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

/// Options of `quern cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct CancelArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Ids of jobs that have not finished (waiting, delayed or running).
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
    /// Recorded as the jobs' error.
    #[arg(long, default_value = "cancelled by an operator")]
    pub(crate) reason: String,
}

/// `quern cancel`: stop jobs for good (they land in the dead-letter list).
pub(crate) async fn cancel(config: &RedisConfig, args: CancelArgs) -> CliResult {
    let queue = open(config, &args.queue).await?;
    let reason = args.reason.as_str();
    each(&args.ids, |id| {
        let queue = queue.clone();
        async move { queue.cancel(&id, reason).await.map(|()| format!("cancelled {id}: in the dead-letter list")) }
    })
    .await
}

/// `quern promote`: make delayed jobs waiting now.
pub(crate) async fn promote(config: &RedisConfig, args: PromoteArgs) -> CliResult {
    let queue = open(config, &args.queue).await?;
    if args.all {
        let n = queue.promote_all().await?;
        outln!("promoted {n} delayed job(s) of queue {}", args.queue);
        return Ok(());
    }
    each(&args.ids, |id| {
        let queue = queue.clone();
        async move { queue.promote(&id).await.map(|()| format!("promoted {id}: waiting")) }
    })
    .await
}

/// `quern remove`: delete jobs that are not running.
pub(crate) async fn remove(config: &RedisConfig, args: RemoveArgs) -> CliResult {
    let queue = open(config, &args.queue).await?;
    each(&args.ids, |id| {
        let queue = queue.clone();
        async move { queue.remove(&id).await.map(|()| format!("removed {id}")) }
    })
    .await
}

async fn open(config: &RedisConfig, name: &str) -> CliResult<Queue> {
    quern_common::names::validate_queue_name(name)?;
    Ok(Queue::open_existing(config, name).await?)
}

/// Apply `action` to every id, printing each outcome; a failure does not
/// stop the rest, and the exit code is that of the first failure.
async fn each<F, Fut>(ids: &[String], action: F) -> CliResult
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = quern_common::Result<String>>,
{
    let mut first_failure: Option<u8> = None;
    for id in ids {
        match action(id.clone()).await {
            Ok(done) => outln!("{done}"),
            Err(e) if e.is_connection_error() => return Err(e.into()),
            Err(e) => {
                eprintln!("error: {e}");
                first_failure.get_or_insert(CliError::from(e).exit_code());
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(code) => Err(CliError::Reported(code)),
    }
}
