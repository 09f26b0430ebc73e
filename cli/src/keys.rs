//! `quern keys`: a queue's concurrency-key limits and busy keys.

use quern_common::RedisConfig;
use quern_producer::Queue;

use crate::error::{CliError, CliResult};
use crate::table::Table;

/// Options of `quern keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    /// The queue.
    pub(crate) queue: String,
    /// One concurrency key: --limit or --off then set or remove its own
    /// limit (which overrides the queue's).
    pub(crate) key: Option<String>,
    /// Set the limit: at most N jobs of one key run at once, across all
    /// workers (for the queue: every key without its own limit).
    #[arg(long, value_name = "N", conflicts_with_all = ["off", "singleton"])]
    pub(crate) limit: Option<u32>,
    /// Singleton mode: one job of the key at a time, and a job that will be
    /// retried keeps the key through its backoff (for the queue: every key
    /// without a limit of its own).
    #[arg(long, conflicts_with = "off")]
    pub(crate) singleton: bool,
    /// Remove the limit (the queue's: keys run unlimited; a key's: it
    /// follows the queue's limit again).
    #[arg(long)]
    pub(crate) off: bool,
    /// Print the limits and busy keys as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Show, set or remove concurrency-key limits.
pub(crate) async fn run(config: &RedisConfig, args: KeysArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    if args.singleton {
        let queue = Queue::connect(config, &args.queue).await?;
        queue.set_key_singleton(args.key.as_deref()).await?;
        match &args.key {
            Some(key) => outln!("queue {}, key {key}: singleton", args.queue),
            None => outln!("queue {}: every key a singleton", args.queue),
        }
        return Ok(());
    }
    if args.limit.is_some() || args.off {
        if args.limit == Some(0) {
            return Err(CliError::Usage("--limit must be at least 1 (use --off to remove a limit)".into()));
        }
        let queue = Queue::connect(config, &args.queue).await?;
        let limit = if args.off { None } else { args.limit };
        let shown = limit.map_or_else(|| "no limit".to_owned(), |l| format!("limit {l}"));
        match &args.key {
            Some(key) => {
                queue.set_key_limit_for(key, limit).await?;
                let shown = if args.off { "follows the queue's limit".to_owned() } else { shown };
                outln!("queue {}, key {key}: {shown}", args.queue);
            }
            None => {
                queue.set_key_limit(limit).await?;
                outln!("queue {}: per-key {shown}", args.queue);
            }
        }
        return Ok(());
    }
    let queue = Queue::open_existing(config, &args.queue).await?;
    let mut keys = queue.concurrency_keys().await?;
    if let Some(key) = &args.key {
        keys.busy.retain(|k| &k.key == key);
        keys.overrides.retain(|k| &k.key == key);
    }
    if args.json {
        outln!("{}", serde_json::to_string(&keys).map_err(|e| CliError::Failed(e.to_string()))?);
        return Ok(());
    }
    let limit = match keys.limit {
        None => "off".to_owned(),
        Some(_) if keys.singleton => "1 (singleton)".to_owned(),
        Some(l) => l.to_string(),
    };
    outln!("queue {}: per-key limit {limit}", args.queue);
    for o in &keys.overrides {
        let mode = if o.singleton { " singleton" } else { "" };
        outln!("key {}: limit {}{mode} (its own)", o.key, o.limit);
    }
    if keys.busy.is_empty() {
        outln!("no busy keys");
        return Ok(());
    }
    let mut table = Table::new(&["KEY", "ACTIVE", "WAITING", "HELD", "LIMIT", "HOLDER"]);
    for k in &keys.busy {
        let limit = k.limit.map_or_else(|| "-".to_owned(), |l| l.to_string());
        let limit = if k.at_limit() { format!("{limit} (full)") } else { limit };
        let holder = k.holder.clone().unwrap_or_else(|| "-".to_owned());
        table.row(vec![
            k.key.clone(),
            k.active.to_string(),
            k.waiting.to_string(),
            k.held.to_string(),
            limit,
            holder,
        ]);
    }
    out!("{}", table.render());
    Ok(())
}
