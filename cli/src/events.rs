//! `quern events`: what happened to a queue's jobs, read from its events
//! stream (newest kept, about 10,000 entries per queue by default).

use quern_common::process::{ShutdownSignals, ready_backoff};
use quern_common::{Event, RedisConfig};
use quern_producer::{EventFollower, Queue};
use serde_json::{Map, Value};

use crate::duration::format_unix_ms;
use crate::error::CliResult;

/// Options of `quern events`.
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    /// The queue.
    queue: String,
    /// How many of the newest events to show (0: none, with --follow only
    /// what happens from now on).
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Then keep printing events as they happen, until SIGINT/SIGTERM.
    #[arg(long, short = 'f')]
    follow: bool,
    /// One JSON object per line: {"event_id", "at", "at_ms", "event", then the
    /// event's details such as "id" or "ids", "worker", "error", "delay"}.
    #[arg(long)]
    json: bool,
}

/// `quern events`.
pub(crate) async fn run(config: &RedisConfig, args: EventsArgs) -> CliResult {
    quern_common::names::validate_queue_name(&args.queue)?;
    let queue = Queue::open_existing(config, &args.queue).await?;
    let recent = if args.last > 0 { queue.recent_events(args.last).await? } else { Vec::new() };
    for e in &recent {
        print_event(e, args.json);
    }
    if !args.follow {
        return Ok(());
    }
    let after = match (args.last, recent.last()) {
        (0, _) => None,
        (_, Some(e)) => Some(e.id.as_str()),
        (_, None) => Some("0-0"),
    };
    let mut signals = ShutdownSignals::install()?;
    let mut follower = EventFollower::connect(config, &queue, after).await?;
    // After a failed read, wait before the next: from 100 ms, doubling up to
    // 5 s while reads keep failing.
    let backoff = ready_backoff();
    let mut failures = 0;
    loop {
        tokio::select! {
            read = follower.next() => match read {
                Ok(events) => {
                    failures = 0;
                    events.iter().for_each(|e| print_event(e, args.json));
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff.delay_for(failures);
                    eprintln!("reading events failed ({e}); retrying in {delay:.1?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = signals.recv() => return Ok(()),
                    }
                }
            },
            _ = signals.recv() => return Ok(()),
        }
    }
}

fn print_event(e: &Event, json: bool) {
    if json {
        let mut object = Map::new();
        object.insert("event_id".into(), e.id.clone().into());
        object.insert("at".into(), format_unix_ms(e.at_ms).into());
        object.insert("at_ms".into(), e.at_ms.into());
        object.insert("event".into(), e.kind.as_str().into());
        for (k, v) in &e.fields {
            object.insert(k.clone(), v.clone().into());
        }
        outln!("{}", Value::Object(object));
        return;
    }
    let details: Vec<String> = e
        .fields
        .iter()
        .map(|(k, v)| {
            let plain = !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"');
            if plain { format!("{k}={v}") } else { format!("{k}={v:?}") }
        })
        .collect();
    let line = format!("{}  {:<18} {}", format_unix_ms(e.at_ms), e.kind, details.join(" "));
    outln!("{}", line.trim_end());
}
