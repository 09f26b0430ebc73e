//! Flows on the worker's side: a parent's handler reads its children's
//! outcomes (see `scripts/flow.lua`). The relay that carries this queue's
//! children's outcomes to parents in other queues, which the reaper runs on
//! every pass, is `quern_common::flow::relay_outbox`.

use quern_common::flow::{FlowJob, FlowJobAdded, FlowTarget, add_flows};
use quern_common::moves::FlowChildren;
use quern_common::{ChildInfo, ChildStatus, Error, NewJob, OnChildFailure, Result};
use serde::de::DeserializeOwned;

use crate::handler::JobContext;

/// The largest payload a handler's flow adds (the producer's default).
const MAX_FLOW_PAYLOAD_BYTES: usize = 512 * 1024;

/// One child of the job running, with its result read as `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Child<T> {
    /// The child's queue.
    pub queue: String,
    /// The child's id.
    pub id: String,
    /// How it ended ([`ChildStatus::Pending`] only if read before the
    /// parent was released, which a running parent never is).
    pub status: ChildStatus,
    /// Its result, when it completed with one.
    pub result: Option<T>,
    /// Its error, when it failed (or was cancelled or removed).
    pub error: Option<String>,
}

impl JobContext {
    /// The children of this job (a flow's parent), in the order they were
    /// added, with their results read as `T`. Empty for a job without
    /// children. Results are kept with the parent, so they are there
    /// whatever the children's retention. A result that is not a `T` is
    /// [`Error::InvalidPayload`] naming the child.
    pub async fn children<T: DeserializeOwned>(&self) -> Result<Vec<Child<T>>> {
        let stored = self.client().run(&FlowChildren(self.id())).await?;
        let mut out = Vec::with_capacity(stored.len());
        for (child_ref, value) in stored {
            let Some(info) = ChildInfo::from_stored(&child_ref, &value) else {
                return Err(Error::Protocol(format!(
                    "child {child_ref} has an unreadable outcome {value:?}"
                )));
            };
            let result = match &info.result {
                Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                    Error::InvalidPayload(format!(
                        "result of child {child_ref} is not the type asked for: {e}"
                    ))
                })?),
                None => None,
            };
            out.push(Child {
                queue: info.queue,
                id: info.id,
                status: info.status,
                result,
                error: info.error,
            });
        }
        Ok(out)
    }

    /// Add flows whose roots go to this job's queue (children may name
    /// other queues), as `Queue::add_flows` does. Give the jobs ids derived
    /// from [`JobContext::id`] so that a retried attempt adds nothing twice.
    pub async fn add_flows(&self, flows: &[FlowJob]) -> Result<Vec<FlowJobAdded>> {
        let client = self.client();
        let target = FlowTarget {
            prefix: client.prefix(),
            queue: client.queue(),
            events_max_len: client.events_max_len(),
            max_payload_bytes: MAX_FLOW_PAYLOAD_BYTES,
        };
        add_flows(&mut client.conn(), target, flows).await
    }

    /// Fan out, then in: add `children` and a `callback` job that runs once
    /// they all ended (under `on_failure`, e.g. [`OnChildFailure::Continue`]
    /// so that it runs and counts which failed: see [`JobContext::children`]),
    /// all in this job's queue. Their ids derive from this job's id
    /// (`<id>/batch` for the callback, `<id>/<n>` for the n-th child,
    /// whatever ids the jobs were given), so a retried attempt, or a second
    /// call, adds nothing twice. Returns the callback's id.
    pub async fn fan_out(
        &self,
        callback: NewJob,
        children: impl IntoIterator<Item = NewJob>,
        on_failure: OnChildFailure,
    ) -> Result<String> {
        let with_id = |job: NewJob, id: String| {
            let options = job.job_options().clone().job_id(id);
            FlowJob::new(job.options(options))
        };
        let batch_id = format!("{}/batch", self.id());
        let kids: Vec<FlowJob> = children
            .into_iter()
            .enumerate()
            .map(|(n, job)| with_id(job, format!("{}/{n}", self.id())))
            .collect();
        let flow = with_id(callback, batch_id.clone()).children(on_failure, kids);
        self.add_flows(std::slice::from_ref(&flow)).await?;
        Ok(batch_id)
    }
}

/// How many of a parent's children ended in each way: for a batch callback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Completed.
    pub succeeded: usize,
    /// Failed for good, cancelled or removed (policies fail_parent, continue).
    pub failed: usize,
    /// Failed under policy ignore or remove.
    pub ignored: usize,
    /// Not ended (only read from outside a running parent).
    pub pending: usize,
}

impl ChildCounts {
    /// Count `children` by status.
    pub fn of<T>(children: &[Child<T>]) -> Self {
        let mut counts = Self::default();
        for c in children {
            match c.status {
                ChildStatus::Completed => counts.succeeded += 1,
                ChildStatus::Failed => counts.failed += 1,
                ChildStatus::Ignored | ChildStatus::Removed => counts.ignored += 1,
                ChildStatus::Pending => counts.pending += 1,
            }
        }
        counts
    }
}
