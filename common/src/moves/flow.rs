//! `scripts/flow.lua`: jobs that wait for other jobs. Adding a flow's jobs
//! (parents before their children), applying a child's outcome recorded in
//! another queue's outbox to its parent, and reading and clearing that outbox.

use redis::Value;

use super::Move;
use crate::scripts::reply::{array, int, string, strings};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Error, Result};

/// One job of a flow as the add script takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowNodeArgs {
    /// Job id (flows always name their ids).
    pub id: String,
    /// Job name.
    pub name: String,
    /// Payload (JSON text).
    pub payload: String,
    /// Stored options ('' = defaults).
    pub options: String,
    /// Priority (0 = default).
    pub priority: u32,
    /// Parent field: `<parent queue, or '' when the same queue>\n<parent
    /// id>\n<policy>\n<this job's ref>`, or '' for a root.
    pub parent: String,
    /// The refs (`<queue>/<id>`) of its children.
    pub children: Vec<String>,
}

/// Add jobs of a flow to one queue, parents before their children.
#[derive(Debug, Clone, Copy)]
pub struct FlowAdd<'a> {
    /// The jobs.
    pub nodes: &'a [FlowNodeArgs],
}

/// What adding one job of a flow did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowAdded {
    /// Its id.
    pub id: String,
    /// False when a job of that id existed already (left alone).
    pub created: bool,
    /// Its state now (`waiting-children`, `waiting`, or whatever the
    /// existing job's state is).
    pub state: String,
}

impl Move for FlowAdd<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    type Reply = Vec<FlowAdded>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("add").arg(self.nodes.len());
        for n in self.nodes {
            call.arg(&n.id)
                .arg(&n.name)
                .arg(&n.payload)
                .arg(&n.options)
                .arg(n.priority)
                .arg(&n.parent)
                .arg(n.children.len());
            for child in &n.children {
                call.arg(child);
            }
        }
    }

    fn parse(&self, reply: Value) -> Result<Vec<FlowAdded>> {
        let items = array(reply)?;
        if items.len() != self.nodes.len() * 3 {
            return Err(Error::Protocol(format!(
                "flow add returned {} items for {} jobs",
                items.len(),
                self.nodes.len()
            )));
        }
        items
            .chunks(3)
            .map(|c| Ok(FlowAdded { id: string(&c[0])?, created: int(&c[1])? == 1, state: string(&c[2])? }))
            .collect()
    }
}

/// Apply one outbox record (see [`FlowPeek`]) to the parent's queue.
#[derive(Debug, Clone, Copy)]
pub struct FlowApply<'a> {
    /// The parent's id.
    pub parent: &'a str,
    /// The child's ref (`<queue>/<id>`).
    pub child: &'a str,
    /// The edge's failure policy.
    pub policy: &'a str,
    /// `ok` or `failed`.
    pub outcome: &'a str,
    /// The child's result (JSON) or error.
    pub text: &'a str,
}

impl Move for FlowApply<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    /// True when applied now; false when applied before or the parent is gone.
    type Reply = bool;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("apply").arg(self.parent).arg(self.child).arg(self.policy).arg(self.outcome).arg(self.text);
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(int(&reply)? == 1)
    }
}

/// The first `n` records of a queue's flow outbox: outcomes of its children
/// whose parents live in other queues.
#[derive(Debug, Clone, Copy)]
pub struct FlowPeek(pub usize);

impl Move for FlowPeek {
    const SCRIPT: ScriptName = ScriptName::Flow;
    type Reply = Vec<String>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("peek").arg(self.0.max(1));
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>> {
        strings(reply)
    }
}

/// Remove one record from a queue's flow outbox (after it was applied).
#[derive(Debug, Clone, Copy)]
pub struct FlowDrop<'a>(pub &'a str);

impl Move for FlowDrop<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    /// Whether the record was there.
    type Reply = bool;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("drop").arg(self.0);
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(int(&reply)? > 0)
    }
}

/// The children of a parent and their outcomes: (ref, stored outcome).
#[derive(Debug, Clone, Copy)]
pub struct FlowChildren<'a>(pub &'a str);

impl Move for FlowChildren<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    type Reply = Vec<(String, String)>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("children").arg(self.0);
    }

    fn parse(&self, reply: Value) -> Result<Vec<(String, String)>> {
        let items = strings(reply)?;
        Ok(items.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect())
    }
}

/// One outbox record: which parent, which child, and how the child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The parent's queue.
    pub parent_queue: String,
    /// The parent's id.
    pub parent: String,
    /// The edge's failure policy.
    pub policy: String,
    /// The child's ref (`<queue>/<id>`).
    pub child: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The child's result (JSON) or error.
    pub text: String,
}

impl OutboxRecord {
    /// Read a record as `child_ended` in `scripts/prelude.lua` writes it.
    pub fn parse(record: &str) -> Result<Self> {
        let mut parts = record.splitn(6, '\n');
        let mut next = || parts.next().map(str::to_owned);
        match (next(), next(), next(), next(), next(), next()) {
            (Some(parent_queue), Some(parent), Some(policy), Some(child), Some(outcome), Some(text)) => {
                Ok(Self { parent_queue, parent, policy, child, outcome, text })
            }
            _ => Err(Error::Protocol(format!("unreadable flow outbox record {record:?}"))),
        }
    }

    /// The move that applies this record in the parent's queue.
    pub fn apply(&self) -> FlowApply<'_> {
        FlowApply {
            parent: &self.parent,
            child: &self.child,
            policy: &self.policy,
            outcome: &self.outcome,
            text: &self.text,
        }
    }
}

/// Work through the cascade tasks of a queue (parents cancelled or removed
/// while they waited for children), looking at `batch` children at most.
#[derive(Debug, Clone, Copy)]
pub struct FlowCascade(pub usize);

impl Move for FlowCascade {
    const SCRIPT: ScriptName = ScriptName::Flow;
    /// The tasks left (0: every cascade is done).
    type Reply = u64;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("cascade").arg(self.0.max(1));
    }

    fn parse(&self, reply: Value) -> Result<u64> {
        Ok(int(&reply)?.max(0) as u64)
    }
}

/// The first `n` stop records of a queue: children in other queues of its
/// parents cancelled or removed, to stop there with [`FlowStop`].
#[derive(Debug, Clone, Copy)]
pub struct FlowPeekStops(pub usize);

impl Move for FlowPeekStops {
    const SCRIPT: ScriptName = ScriptName::Flow;
    type Reply = Vec<String>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("peek").arg(self.0.max(1)).arg("down");
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>> {
        strings(reply)
    }
}

/// Remove one stop record from a queue (after it was applied).
#[derive(Debug, Clone, Copy)]
pub struct FlowDropStop<'a>(pub &'a str);

impl Move for FlowDropStop<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    /// Whether the record was there.
    type Reply = bool;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("drop").arg(self.0).arg("down");
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(int(&reply)? > 0)
    }
}

/// Apply a stop record in the child's queue: cancel or remove the child
/// unless it ended or is not that parent's child.
#[derive(Debug, Clone, Copy)]
pub struct FlowStop<'a> {
    /// The child's id.
    pub child: &'a str,
    /// `cancel` or `remove`.
    pub action: &'a str,
    /// The parent's queue.
    pub parent_queue: &'a str,
    /// The parent's id.
    pub parent: &'a str,
    /// Why the parent was cancelled.
    pub reason: &'a str,
}

impl Move for FlowStop<'_> {
    const SCRIPT: ScriptName = ScriptName::Flow;
    /// True when the child was stopped now.
    type Reply = bool;

    fn args(&self, call: &mut ScriptCall) {
        call.arg("stop")
            .arg(self.child)
            .arg(self.action)
            .arg(self.parent_queue)
            .arg(self.parent)
            .arg(self.reason);
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(int(&reply)? == 1)
    }
}

/// One stop record: which child to stop in which queue, and for which parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRecord {
    /// The child's queue.
    pub child_queue: String,
    /// The child's id.
    pub child: String,
    /// `cancel` or `remove`.
    pub action: String,
    /// The parent's queue.
    pub parent_queue: String,
    /// The parent's id.
    pub parent: String,
    /// Why the parent was cancelled.
    pub reason: String,
}

impl StopRecord {
    /// Read a record as `flow.lua` ('cascade') writes it.
    pub fn parse(record: &str) -> Result<Self> {
        let mut parts = record.splitn(6, '\n');
        let mut next = || parts.next().map(str::to_owned);
        match (next(), next(), next(), next(), next(), next()) {
            (
                Some(child_queue),
                Some(child),
                Some(action),
                Some(parent_queue),
                Some(parent),
                Some(reason),
            ) => Ok(Self { child_queue, child, action, parent_queue, parent, reason }),
            _ => Err(Error::Protocol(format!("unreadable flow stop record {record:?}"))),
        }
    }

    /// The move that applies this record in the child's queue.
    pub fn stop(&self) -> FlowStop<'_> {
        FlowStop {
            child: &self.child,
            action: &self.action,
            parent_queue: &self.parent_queue,
            parent: &self.parent,
            reason: &self.reason,
        }
    }
}
