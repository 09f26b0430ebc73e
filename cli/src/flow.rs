//! `quern flow add FILE`: add a flow (a parent job and its children) from JSON.

use std::path::PathBuf;

use quern_common::{JobOptions, NewJob, OnChildFailure, RedisConfig};
use quern_producer::{FlowJob, Queue};
use serde::Deserialize;
use serde_json::json;

use crate::error::{CliError, CliResult};

/// Options of `quern flow`.
#[derive(Debug, clap::Args)]
pub(crate) struct FlowArgs {
    #[command(subcommand)]
    pub(crate) command: FlowCommand,
}

/// What `quern flow` does.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FlowCommand {
    /// Add a flow from a JSON file ('-' for standard input): {"queue": "ops",
    /// "name": "report", "id": "report-1", "payload": {...}, "children":
    /// [{"on_failure": "continue", "queue": "scans", "name": "scan", "id":
    /// "scan-1", "payload": {...}, "children": [...]}]}. "queue" defaults to
    /// the parent's, "payload" to {}, "on_failure" to fail_parent (also
    /// continue, ignore, remove). Adding the same file again adds nothing.
    Add {
        /// The flow's JSON file.
        file: PathBuf,
        /// Print a JSON array of the jobs: queue, id, created, state.
        #[arg(long)]
        json: bool,
    },
}

/// One job of a flow file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFileJob {
    queue: Option<String>,
    name: String,
    id: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    on_failure: Option<OnChildFailure>,
    #[serde(default)]
    children: Vec<FlowFileJob>,
}

impl FlowFileJob {
    fn build(self) -> CliResult<FlowJob> {
        let payload = self.payload.unwrap_or_else(|| json!({}));
        let mut options = JobOptions::new();
        if let Some(id) = self.id {
            options = options.job_id(id);
        }
        let mut job = FlowJob::new(NewJob::new(self.name, &payload)?.options(options));
        if let Some(q) = self.queue {
            job = job.in_queue(q);
        }
        for child in self.children {
            let policy = child.on_failure.unwrap_or_default();
            job = job.child(policy, child.build()?);
        }
        Ok(job)
    }
}

/// Run `quern flow`.
pub(crate) async fn run(config: &RedisConfig, args: FlowArgs) -> CliResult<()> {
    let FlowCommand::Add { file, json } = args.command;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(&file)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let root: FlowFileJob = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not a flow: {e}", file.display())))?;
    let Some(queue) = root.queue.clone() else {
        return Err(CliError::Usage(format!("{}: the root job needs a \"queue\"", file.display())));
    };
    let flow = root.build()?;
    let q = Queue::connect(config, &queue).await?;
    let added = q.add_flow(flow).await?;
    if json {
        let rows: Vec<_> = added
            .iter()
            .map(|a| json!({"queue": a.queue, "id": a.id, "created": a.created, "state": a.state}))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for a in &added {
            let what = if a.created { "added" } else { "existed" };
            println!("{}/{} {what} ({})", a.queue, a.id, a.state);
        }
    }
    Ok(())
}
