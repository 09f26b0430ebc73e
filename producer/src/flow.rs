//! Flows: add a parent job with its children (which may have children) in
//! one call. The parent waits in state `waiting-children` until every child
//! has ended, then runs and reads their results (`JobContext::children` in
//! quern-worker). See the README's "Flows" section and `scripts/flow.lua`.

use quern_common::Result;
use quern_common::flow::{FlowJob, FlowJobAdded, FlowTarget, add_flows};

use crate::queue::Queue;

impl Queue {
    /// Add one flow: the root job in this queue, its children (and theirs)
    /// in their queues. See [`Queue::add_flows`].
    pub async fn add_flow(&self, flow: FlowJob) -> Result<Vec<FlowJobAdded>> {
        self.add_flows(std::slice::from_ref(&flow)).await
    }

    /// Add flows whose roots live in this queue. Every job is checked
    /// before any is sent. Jobs are added level by level, parents before
    /// their children, one script call per queue and level (up to 1,000
    /// jobs each), so a child never ends before its parent exists. A job
    /// whose id exists already is left alone, and so are its children once
    /// it no longer waits for them: adding the same flow again adds nothing,
    /// and completes a flow whose add was cut short. Returns every job of
    /// the flows, parents first.
    pub async fn add_flows(&self, flows: &[FlowJob]) -> Result<Vec<FlowJobAdded>> {
        let target = FlowTarget {
            prefix: self.keys().prefix(),
            queue: self.name(),
            events_max_len: self.events_max_len(),
            max_payload_bytes: self.max_payload_bytes(),
        };
        add_flows(&mut self.connection(), target, flows).await
    }
}
