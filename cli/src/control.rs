//! `quern pause`, `quern resume`, `quern limit` and `quern delete-queue`.

use quern_common::{RateLimit, RedisConfig};
use quern_producer::Queue;

use crate::error::{CliError, CliResult};

/// Options of `quern pause` and `quern resume`.
#[derive(Debug, clap::Args)]
pub(crate) struct QueueArg {
    /// The queue.
    pub(crate) queue: String,
}

/// Pause (`true`) or resume (`false`) a queue.
pub(crate) async fn set_paused(config: &RedisConfig, args: QueueArg, paused: bool) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    if paused {
        queue.pause().await?;
        outln!("paused queue {}: workers take no new jobs from it; running jobs finish", args.queue);
    } else {
        queue.resume().await?;
        outln!("resumed queue {}", args.queue);
    }
    Ok(())
}

/// Options of `quern limit`.
#[derive(Debug, clap::Args)]
pub(crate) struct LimitArgs {
    /// The queue.
    pub(crate) queue: String,
    /// The new limit, `<jobs>/<window>`: at most that many jobs of the queue
    /// start per window, across all its workers (e.g. 100/1m, 5/1s, 1/500ms).
    /// Without it (and without --off), show the current limit.
    #[arg(value_parser = parse_rate, conflicts_with = "off")]
    pub(crate) rate: Option<RateLimit>,
    /// Remove the queue's rate limit.
    #[arg(long)]
    pub(crate) off: bool,
}

fn parse_rate(text: &str) -> Result<RateLimit, String> {
    text.parse().map_err(|e: quern_common::Error| e.to_string())
}

/// `quern limit`: show, set or remove a queue's rate limit.
pub(crate) async fn limit(config: &RedisConfig, args: LimitArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    if args.off {
        queue.set_rate_limit(None).await?;
        outln!("queue {}: no rate limit", args.queue);
    } else if let Some(rate) = args.rate {
        queue.set_rate_limit(Some(rate)).await?;
        outln!("queue {}: rate limit {rate} (a fresh window opens now)", args.queue);
    } else {
        match queue.rate_limit().await? {
            Some(rate) => outln!("queue {}: rate limit {rate}", args.queue),
            None => outln!("queue {}: no rate limit", args.queue),
        }
    }
    Ok(())
}

/// Options of `quern delete-queue`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteQueueArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Confirm: every job of the queue, in every state, is deleted for good.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Delete it even while jobs run or workers are live (their results are
    /// then refused; workers and producers still running recreate the queue).
    #[arg(long)]
    pub(crate) force: bool,
}

/// `quern delete-queue`: delete a queue with all its jobs.
pub(crate) async fn delete_queue(config: &RedisConfig, args: DeleteQueueArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    if !args.yes {
        let c = queue.counts().await?;
        let jobs = c.waiting + c.delayed + c.active + c.completed + c.failed;
        return Err(CliError::Usage(format!(
            "deleting queue {} deletes its {jobs} job(s) for good; add --yes to go ahead",
            args.queue
        )));
    }
    let deleted = queue.obliterate(args.force).await?;
    outln!("deleted queue {} and its {deleted} job(s)", args.queue);
    Ok(())
}
