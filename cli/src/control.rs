//! `quern pause` and `quern resume`.

use quern_common::RedisConfig;
use quern_producer::Queue;

use crate::error::CliResult;

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
