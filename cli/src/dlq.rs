//! `quern dlq`: list, retry and purge a queue's dead-letter list.

use quern_common::RedisConfig;
use quern_producer::Queue;
use serde_json::{Value, json};

use crate::error::{CliError, CliResult};
use crate::inspect::{entry_json, jobs_table};

/// Options of `quern dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {
    /// The queue.
    pub(crate) queue: String,
    #[command(subcommand)]
    pub(crate) action: DlqAction,
}

/// What to do with the dead-letter list.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqAction {
    /// List dead-lettered jobs, newest first, with their last error (corrupt
    /// records are marked, not hidden).
    List {
        /// Most jobs to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Skip this many jobs first (for paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Print a JSON array of jobs (with their full history; an
        /// unreadable record as {"queue", "id", "unreadable"}).
        #[arg(long)]
        json: bool,
    },
    /// Move a job (or every job with --all) back to waiting, with a fresh
    /// attempt budget. A job with durable steps resumes after the steps that
    /// finished (their results are kept).
    Retry {
        /// The job to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every dead-lettered job.
        #[arg(long)]
        all: bool,
        /// Run the job again from this durable step: NAME (its first
        /// occurrence) or NAME#N. That step and every step stored after it
        /// run again; the steps before it keep their results.
        #[arg(long, value_name = "STEP", requires = "id", conflicts_with = "all")]
        from_step: Option<String>,
        /// Print {"retried": N} instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Delete a dead-lettered job, or with no id the whole dead-letter list.
    Purge {
        /// The job to delete (default: all of them).
        id: Option<String>,
        /// Print {"purged": N} instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

/// `quern dlq`.
pub(crate) async fn run(config: &RedisConfig, args: DlqArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    let name = &args.queue;
    match args.action {
        DlqAction::List { limit, offset, json } => {
            if limit == 0 {
                return Err(CliError::Usage("--limit must be at least 1".into()));
            }
            let jobs = queue.dead_letters(offset, limit).await?;
            if json {
                outln!("{}", Value::Array(jobs.iter().map(entry_json).collect()));
            } else if jobs.is_empty() {
                outln!("the dead-letter list of queue {name} is empty");
            } else {
                out!("{}", jobs_table(&jobs));
            }
        }
        DlqAction::Retry { id, json, from_step, .. } => {
            let retried = match id {
                Some(id) if from_step.is_some() => {
                    queue.retry_dead_letter_from_step(&id, from_step.as_deref().unwrap_or_default()).await?;
                    1
                }
                Some(id) => {
                    queue.retry_dead_letter(&id).await?;
                    1
                }
                None => queue.retry_all_dead_letters().await?,
            };
            if json {
                outln!("{}", json!({ "retried": retried }));
            } else {
                outln!("moved {retried} job(s) of queue {name} from the dead-letter list back to waiting");
            }
        }
        DlqAction::Purge { id, json } => {
            let purged = match id {
                Some(id) => {
                    queue.purge_dead_letter(&id).await?;
                    1
                }
                None => queue.purge_dead_letters().await?,
            };
            if json {
                outln!("{}", json!({ "purged": purged }));
            } else {
                outln!("deleted {purged} job(s) from the dead-letter list of queue {name}");
            }
        }
    }
    Ok(())
}
