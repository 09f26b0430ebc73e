//! `quern enqueue`: add one job to a queue.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use quern_common::{Added, Backoff, JobOptions, RedisConfig};
use quern_producer::{JobOutcome, Queue};

use crate::duration::parse_duration;
use crate::error::{CliError, CliResult, EXIT_CANCELLED, EXIT_DEAD_LETTERED, EXIT_REMOVED, EXIT_TIMED_OUT};

/// Options of `quern enqueue`.
#[derive(Debug, clap::Args)]
pub(crate) struct EnqueueArgs {
    /// Queue to add the job to (created if new).
    pub(crate) queue: String,
    /// Job name: selects the handler (`command` and `http` for `quern worker`).
    pub(crate) name: String,
    /// Payload as JSON text, e.g. '{"argv":["echo","hi"]}'. Default: {}.
    #[arg(long, conflicts_with = "payload_file")]
    pub(crate) payload: Option<String>,
    /// Read the JSON payload from this file ('-' for standard input).
    #[arg(long, value_name = "PATH")]
    pub(crate) payload_file: Option<PathBuf>,
    /// Explicit job id. Enqueueing an id that exists already adds nothing and
    /// prints the existing id (idempotent retries).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    /// Run no earlier than this from now, e.g. 30s, 5m, 1h.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) delay: Option<Duration>,
    /// Priority: lower runs first; 0 (the default) is the highest.
    #[arg(long, value_name = "N")]
    pub(crate) priority: Option<u32>,
    /// Attempts in all, including the first (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) attempts: Option<u32>,
    /// Longest a single attempt may run, e.g. 10s (default: no limit).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Option<Duration>,
    /// Wait between attempts: `exp:BASE:MAX` (exponential with jitter, the
    /// default is exp:1s:1h), `fixed:DELAY`, or `none`.
    #[arg(long, value_parser = parse_backoff, value_name = "SPEC")]
    pub(crate) backoff: Option<Backoff>,
    /// Concurrency key: when the queue has a per-key limit (`quern keys`),
    /// at most that many jobs of this key run at once, across all workers.
    #[arg(long, value_name = "KEY")]
    pub(crate) concurrency_key: Option<String>,
    /// With --concurrency-key: add nothing when the key is busy (a job of it
    /// running, holding a singleton key between attempts, or waiting aside for
    /// it); a note goes to stderr and the exit code is 0 (with --wait too).
    #[arg(long, requires = "concurrency_key")]
    pub(crate) skip_if_key_busy: bool,
    /// Idempotency key: within its window (--idempotency-window), enqueueing
    /// the same key again adds nothing and prints the first job's id,
    /// whatever became of that job (completed, removed, dead-lettered).
    #[arg(long, value_name = "KEY", requires = "idempotency_window")]
    pub(crate) idempotency_key: Option<String>,
    /// How long the idempotency key holds after the first add, e.g. 24h.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "idempotency_key")]
    pub(crate) idempotency_window: Option<Duration>,
    /// Wait up to this long (e.g. 10m) for the job to end, then print its
    /// result (JSON) and exit 0 if it completed; otherwise print why and exit
    /// 4 (dead-lettered), 5 (cancelled), 6 (removed, or trimmed before it
    /// could be read) or 7 (not ended in time; the job is left as it is).
    /// The job's id goes to stderr. With an id or idempotency key that was
    /// used already, waits for that earlier job.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) wait: Option<Duration>,
    /// Print {"id": ..., "created": ..., "deduplicated": ...} instead of the
    /// bare id; with --wait, also "outcome" (completed, dead_lettered,
    /// cancelled, removed, timed_out) and "result" or "error".
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parse `exp:1s:1h`, `fixed:5s` or `none`.
fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let backoff = match parts[..] {
        ["none"] => Backoff::None,
        ["fixed", delay] => Backoff::fixed(parse_duration(delay)?),
        ["exp" | "exponential", base, max] => {
            Backoff::exponential(parse_duration(base)?, parse_duration(max)?)
        }
        _ => {
            return Err(format!(
                "invalid backoff {text:?}; expected exp:BASE:MAX (e.g. exp:1s:1h), fixed:DELAY or none"
            ));
        }
    };
    backoff.validate().map_err(|e| format!("invalid backoff {text:?}: {e}"))?;
    Ok(backoff)
}

fn read_payload(args: &EnqueueArgs) -> CliResult<String> {
    match (&args.payload, &args.payload_file) {
        (Some(text), _) => Ok(text.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Usage(format!("cannot read the payload from standard input: {e}")))?;
            Ok(text)
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read the payload file {}: {e}", path.display()))),
        (None, None) => Ok("{}".to_owned()),
    }
}

/// Build the job options from the flags.
fn options(args: &EnqueueArgs) -> JobOptions {
    let mut o = JobOptions::new();
    if let Some(id) = &args.id {
        o = o.job_id(id);
    }
    if let Some(d) = args.delay {
        o = o.delay(d);
    }
    if let Some(p) = args.priority {
        o = o.priority(p);
    }
    if let Some(a) = args.attempts {
        o = o.attempts(a);
    }
    if let Some(t) = args.timeout {
        o = o.timeout(t);
    }
    if let Some(b) = args.backoff {
        o = o.backoff(b);
    }
    if let Some(key) = &args.concurrency_key {
        o = o.concurrency_key(key);
    }
    if args.skip_if_key_busy {
        o = o.skip_if_key_busy();
    }
    if let (Some(key), Some(window)) = (&args.idempotency_key, args.idempotency_window) {
        o = o.idempotency_key(key, window);
    }
    o
}

/// Add the job and print its id.
pub(crate) async fn run(config: &RedisConfig, args: EnqueueArgs) -> CliResult {
    let payload = read_payload(&args)?;
    // Check everything we can before touching Redis, so bad input is exit 2
    // even when Redis is down.
    serde_json::from_str::<serde::de::IgnoredAny>(&payload)
        .map_err(|e| CliError::Usage(format!("invalid JSON payload: {e}")))?;
    quern_common::names::validate_queue_name(&args.queue)?;
    quern_common::names::validate_job_name(&args.name)?;
    let opts = options(&args);
    opts.validate()?;
    let queue = Queue::connect(config, &args.queue).await?;
    let added = queue.add_json(&args.name, &payload, opts).await?;
    if added.skipped {
        if args.json {
            outln!("{}", serde_json::json!({ "id": added.id, "created": false, "skipped": true }));
        }
        let holder = if added.id.is_empty() { String::new() } else { format!(" (held by job {})", added.id) };
        eprintln!("note: concurrency key busy{holder} in queue {}; nothing was added", args.queue);
        return Ok(());
    }
    if let Some(timeout) = args.wait {
        return wait(&queue, &added, timeout, args.json).await;
    }
    if args.json {
        outln!(
            "{}",
            serde_json::json!({ "id": added.id, "created": added.created, "deduplicated": added.deduplicated })
        );
    } else {
        outln!("{}", added.id);
        if added.deduplicated {
            eprintln!(
                "note: idempotency key already used for job {} in queue {}; nothing was added",
                added.id, args.queue
            );
        } else if !added.created {
            eprintln!("note: job {} existed already in queue {}; nothing was added", added.id, args.queue);
        }
    }
    Ok(())
}

/// `--wait`: wait for the job to end, print how, exit with its code.
async fn wait(queue: &Queue, added: &Added, timeout: Duration, json: bool) -> CliResult {
    if !json {
        let note = if added.created { "added" } else { "existed already" };
        eprintln!("job {} {note} in queue {}; waiting up to {timeout:?}", added.id, queue.name());
    }
    let outcome = queue.wait_for::<serde_json::Value>(&added.id, timeout).await?;
    let (name, code, detail) = match &outcome {
        JobOutcome::Completed(_) => ("completed", 0, String::new()),
        JobOutcome::DeadLettered { error } => ("dead_lettered", EXIT_DEAD_LETTERED, error.clone()),
        JobOutcome::Cancelled { reason } => ("cancelled", EXIT_CANCELLED, reason.clone()),
        JobOutcome::Removed => ("removed", EXIT_REMOVED, String::new()),
        JobOutcome::TimedOut => ("timed_out", EXIT_TIMED_OUT, String::new()),
    };
    if json {
        let mut line = serde_json::json!({
            "id": added.id, "created": added.created, "deduplicated": added.deduplicated, "outcome": name,
        });
        match &outcome {
            JobOutcome::Completed(result) => line["result"] = result.clone(),
            JobOutcome::DeadLettered { .. } | JobOutcome::Cancelled { .. } => line["error"] = detail.into(),
            JobOutcome::Removed | JobOutcome::TimedOut => {}
        }
        outln!("{line}");
    } else {
        match &outcome {
            JobOutcome::Completed(result) => outln!("{result}"),
            JobOutcome::DeadLettered { .. } => eprintln!("job {} was dead-lettered: {detail}", added.id),
            JobOutcome::Cancelled { .. } => eprintln!("job {} was cancelled: {detail}", added.id),
            JobOutcome::Removed => eprintln!("job {} is gone (removed, or trimmed after it ended)", added.id),
            JobOutcome::TimedOut => eprintln!("job {} had not ended after {timeout:?}", added.id),
        }
    }
    if code == 0 { Ok(()) } else { Err(CliError::Reported(code)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_specs() {
        assert_eq!(parse_backoff("none").unwrap(), Backoff::None);
        assert_eq!(parse_backoff("fixed:5s").unwrap(), Backoff::fixed(Duration::from_secs(5)));
        assert_eq!(
            parse_backoff("exp:1s:1h").unwrap(),
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(3600))
        );
        assert_eq!(parse_backoff("exponential:1s:1h").unwrap(), parse_backoff("exp:1s:1h").unwrap());
        assert!(parse_backoff("exp:1s").unwrap_err().contains("expected"));
        assert!(parse_backoff("fixed:5").unwrap_err().contains("no unit"));
    }
}
