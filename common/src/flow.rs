//! Flows: a parent job that waits for its child jobs (see `scripts/flow.lua`).
//! The types a flow is built with ([`FlowJob`]) and a reader sees of one,
//! and the add ([`add_flows`]) producers and handlers share.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use redis::AsyncCommands;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use crate::moves::{
    FlowAdd, FlowCascade, FlowDrop, FlowDropStop, FlowNodeArgs, FlowPeek, FlowPeekStops, OutboxRecord,
    StopRecord,
};
use crate::{Error, NewJob, QueueKeys, QueueScripts, Result, names};

/// What a child's failure (dead-lettered, cancelled or removed before it
/// finished) does to its parent. Set per edge (parent to child).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChildFailure {
    /// The parent is dead-lettered at once, its error naming the child.
    #[default]
    FailParent,
    /// The parent runs once every child has ended and sees which failed.
    Continue,
    /// The failure counts as the child's end; the parent runs and sees the
    /// child as `ignored`.
    Ignore,
    /// As if the child had not been part of the flow: the parent runs and
    /// sees the child as `removed`.
    Remove,
}

impl OnChildFailure {
    /// The policy's name as stored (`fail_parent`, `continue`, `ignore`, `remove`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnChildFailure::FailParent => "fail_parent",
            OnChildFailure::Continue => "continue",
            OnChildFailure::Ignore => "ignore",
            OnChildFailure::Remove => "remove",
        }
    }
}

impl FromStr for OnChildFailure {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail_parent" => Ok(OnChildFailure::FailParent),
            "continue" => Ok(OnChildFailure::Continue),
            "ignore" => Ok(OnChildFailure::Ignore),
            "remove" => Ok(OnChildFailure::Remove),
            other => Err(Error::InvalidOptions(format!(
                "unknown child failure policy {other:?}; expected fail_parent, continue, ignore or remove"
            ))),
        }
    }
}

impl fmt::Display for OnChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child of a flow stands, as its parent records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildStatus {
    /// Not ended yet (or its end not applied to the parent yet).
    Pending,
    /// Completed; its result is kept with the parent.
    Completed,
    /// Failed for good, was cancelled, or was removed before it finished.
    Failed,
    /// Failed, under policy `ignore`.
    Ignored,
    /// Failed, under policy `remove`.
    Removed,
}

/// One child of a parent job and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildInfo {
    /// The child's queue.
    pub queue: String,
    /// The child's id.
    pub id: String,
    /// How it stands.
    pub status: ChildStatus,
    /// Its result (JSON), when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Its error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChildInfo {
    /// Read a child from its ref (`<queue>/<id>`) and the outcome its parent
    /// stores (`?`, or `<outcome>\n<result or error>`). `None` if unreadable.
    pub fn from_stored(child_ref: &str, stored: &str) -> Option<Self> {
        let (queue, id) = child_ref.split_once('/')?;
        let (status, text) = match stored.split_once('\n') {
            None if stored == "?" => (ChildStatus::Pending, None),
            None => return None,
            Some((outcome, text)) => {
                let status = match outcome {
                    "ok" => ChildStatus::Completed,
                    "failed" => ChildStatus::Failed,
                    "ignored" => ChildStatus::Ignored,
                    "removed" => ChildStatus::Removed,
                    _ => return None,
                };
                (status, Some(text.to_owned()))
            }
        };
        let (result, error) = match status {
            ChildStatus::Completed => (text.filter(|t| !t.is_empty()), None),
            _ => (None, text),
        };
        Some(Self { queue: queue.to_owned(), id: id.to_owned(), status, result, error })
    }
}

/// A child's parent, as the child records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentInfo {
    /// The parent's queue.
    pub queue: String,
    /// The parent's id.
    pub id: String,
    /// What this child's failure does to the parent.
    pub on_failure: OnChildFailure,
}

impl ParentInfo {
    /// Read the parent field of job `queue` (see `F_PARENT` in
    /// `scripts/prelude.lua`). `None` if unreadable.
    pub fn from_stored(queue: &str, stored: &str) -> Option<Self> {
        let mut parts = stored.split('\n');
        let (pq, id, policy) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self {
            queue: if pq.is_empty() { queue.to_owned() } else { pq.to_owned() },
            id: id.to_owned(),
            on_failure: policy.parse().ok()?,
        })
    }
}

/// Jobs sent per flow add call.
const FLOW_CHUNK: usize = 1000;

/// One job of a flow and its children.
#[derive(Debug, Clone)]
pub struct FlowJob {
    queue: Option<String>,
    job: NewJob,
    children: Vec<(OnChildFailure, FlowJob)>,
}

impl FlowJob {
    /// A job of a flow, in the queue of its parent (for the root: the queue
    /// `add_flow` is called on). Give it an id
    /// ([`crate::JobOptions::job_id`]) to make adding the flow again
    /// add nothing; without one it gets a random id. Delays, idempotency and
    /// concurrency keys are refused in flows.
    pub fn new(job: NewJob) -> Self {
        Self { queue: None, job, children: Vec::new() }
    }

    /// Put this job in queue `queue` (children may live in other queues).
    pub fn in_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Add a child, saying what its failure does to this job
    /// ([`OnChildFailure::FailParent`] is the default policy).
    pub fn child(mut self, on_failure: OnChildFailure, child: FlowJob) -> Self {
        self.children.push((on_failure, child));
        self
    }

    /// A chain: `links[0]` runs first, and each next link only once the one
    /// before it completed (it can read that one's result with
    /// `ctx.children()`). A link that fails for good dead-letters every link
    /// after it at once, each error naming the link before it, so the chain
    /// stops and shows where. The flow returned is the last link, whose
    /// child is the link before it, and so on. Fails on an empty chain.
    pub fn chain(links: impl IntoIterator<Item = FlowJob>) -> Result<FlowJob> {
        let mut links = links.into_iter();
        let first =
            links.next().ok_or_else(|| Error::InvalidOptions("a chain needs at least one job".into()))?;
        Ok(links.fold(first, |before, link| link.child(OnChildFailure::FailParent, before)))
    }

    /// Add many children under one policy.
    pub fn children(
        mut self,
        on_failure: OnChildFailure,
        children: impl IntoIterator<Item = FlowJob>,
    ) -> Self {
        self.children.extend(children.into_iter().map(|c| (on_failure, c)));
        self
    }
}

/// What adding one job of a flow did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowJobAdded {
    /// Its queue.
    pub queue: String,
    /// Its id.
    pub id: String,
    /// False when a job with this id existed already and was left alone.
    pub created: bool,
    /// Its state after the add (`waiting-children`, `waiting`, or that of
    /// the job that existed).
    pub state: String,
}

/// A flow's job ready to send: its queue, its arguments, its place.
struct Planned {
    queue: String,
    args: FlowNodeArgs,
    /// Index of its parent in the plan.
    parent: Option<usize>,
    depth: usize,
}

/// Where and how [`add_flows`] adds: the key prefix, the queue of the
/// flows' roots, the events stream's length, the largest payload allowed.
#[derive(Debug, Clone, Copy)]
pub struct FlowTarget<'a> {
    /// The key prefix.
    pub prefix: &'a str,
    /// The queue of jobs that name none (the roots, and children that
    /// inherit it).
    pub queue: &'a str,
    /// About how many entries events streams keep.
    pub events_max_len: u64,
    /// The largest payload allowed, in bytes.
    pub max_payload_bytes: usize,
}

/// Add flows. Every job is checked before any is sent. Jobs are added level
/// by level, parents before their children, one script call per queue and
/// level (up to 1,000 jobs each), so a child never ends before its parent
/// exists. A job whose id exists already is left alone, and so are its
/// children once it no longer waits for them: adding the same flow again
/// adds nothing, and completes a flow whose add was cut short. Returns every
/// job of the flows, parents first.
pub async fn add_flows<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    target: FlowTarget<'_>,
    flows: &[FlowJob],
) -> Result<Vec<FlowJobAdded>> {
    let plan = plan_flows(target, flows)?;
    let max_depth = plan.iter().map(|p| p.depth).max().unwrap_or(0);
    let registry = QueueKeys::registry(target.prefix);
    let queues: HashSet<&str> = plan.iter().map(|p| p.queue.as_str()).collect();
    for q in &queues {
        let _: i64 = conn.sadd(&registry, *q).await?;
    }
    let mut scripts: HashMap<&str, QueueScripts> = HashMap::new();
    for q in queues {
        let keys = QueueKeys::new(target.prefix, q)?;
        scripts.insert(q, QueueScripts::new(keys, target.events_max_len));
    }
    let mut results: Vec<Option<FlowJobAdded>> = vec![None; plan.len()];
    // Jobs whose children are not to be added: they exist already and
    // no longer wait for children (or their own add was skipped).
    let mut skip = vec![false; plan.len()];
    for depth in 0..=max_depth {
        let mut by_queue: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in plan.iter().enumerate().filter(|(_, p)| p.depth == depth) {
            if p.parent.is_some_and(|parent| skip[parent]) {
                skip[i] = true;
                continue;
            }
            by_queue.entry(p.queue.as_str()).or_default().push(i);
        }
        for (q, indices) in by_queue {
            for chunk in indices.chunks(FLOW_CHUNK) {
                let nodes: Vec<FlowNodeArgs> = chunk.iter().map(|&i| plan[i].args.clone()).collect();
                let added = scripts[q].run(&mut *conn, &FlowAdd { nodes: &nodes }).await?;
                for (&i, a) in chunk.iter().zip(added) {
                    skip[i] = !a.created && a.state != "waiting-children";
                    results[i] = Some(FlowJobAdded {
                        queue: q.to_owned(),
                        id: a.id,
                        created: a.created,
                        state: a.state,
                    });
                }
            }
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// Check every job and lay the flows out, parents first.
fn plan_flows(target: FlowTarget<'_>, flows: &[FlowJob]) -> Result<Vec<Planned>> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    // (job, its queue, parent index, edge policy, depth)
    let mut stack: Vec<(&FlowJob, String, Option<usize>, OnChildFailure, usize)> = flows
        .iter()
        .rev()
        .map(|f| (f, target.queue.to_owned(), None, OnChildFailure::default(), 0))
        .collect();
    while let Some((job, inherited, parent, policy, depth)) = stack.pop() {
        let queue = job.queue.clone().unwrap_or(inherited);
        names::validate_queue_name(&queue)?;
        validate_flow_job(&job.job, target.max_payload_bytes)?;
        let o = job.job.job_options();
        let id = match &o.job_id {
            Some(id) => id.clone(),
            None => format!("flow-{:016x}", rand::rng().random::<u64>()),
        };
        if !seen.insert((queue.clone(), id.clone())) {
            return Err(Error::InvalidOptions(format!("job {queue}/{id} appears twice in the flow")));
        }
        let parent_field = match parent {
            None => String::new(),
            Some(p) => {
                let pq = if plan[p].queue == queue { "" } else { plan[p].queue.as_str() };
                format!("{pq}\n{}\n{}\n{queue}/{id}", plan[p].args.id, policy.as_str())
            }
        };
        let index = plan.len();
        if let Some(p) = parent {
            plan[p].args.children.push(format!("{queue}/{id}"));
        }
        plan.push(Planned {
            args: FlowNodeArgs {
                id,
                name: job.job.name().to_owned(),
                payload: job.job.payload().to_owned(),
                options: o.encode_stored(),
                priority: o.priority,
                parent: parent_field,
                children: Vec::new(),
            },
            queue: queue.clone(),
            parent,
            depth,
        });
        for (policy, child) in job.children.iter().rev() {
            stack.push((child, queue.clone(), Some(index), *policy, depth + 1));
        }
    }
    Ok(plan)
}

/// What the producer checks of any job, and what flows refuse.
fn validate_flow_job(job: &NewJob, max_payload_bytes: usize) -> Result<()> {
    names::validate_job_name(job.name())?;
    job.job_options().validate()?;
    if job.payload_len() > max_payload_bytes {
        return Err(Error::PayloadTooLarge { size: job.payload_len(), limit: max_payload_bytes });
    }
    let o = job.job_options();
    let refused = if !o.delay.is_zero() {
        Some("a delay")
    } else if o.idempotency.is_some() {
        Some("an idempotency key")
    } else if o.concurrency_key.is_some() {
        Some("a concurrency key")
    } else {
        None
    };
    match refused {
        Some(what) => Err(Error::InvalidOptions(format!(
            "job {:?} of a flow has {what}; flows do not take one (give the job an id to make the flow idempotent)",
            job.name()
        ))),
        None => Ok(()),
    }
}

/// Records the relay reads per call.
const RELAY_BATCH: usize = 100;
/// Children a cascade call looks at, at most (cancelling a waiting child
/// scans the waiting list, like any cancel).
pub const CASCADE_BATCH: usize = 100;
/// Queues [`settle_flows`] relays at most; what is left, their workers'
/// reapers finish.
const SETTLE_QUEUES: usize = 64;

/// What one relay of a queue's flow records did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Outcome records applied to their parents' queues and dropped.
    pub moved: usize,
    /// Stop records applied in their children's queues and dropped.
    pub stops: usize,
    /// Records left in place because they cannot be read (logged).
    pub unreadable: usize,
    /// The queues stop records were applied in (their own cascades may
    /// have started).
    pub stopped_in: BTreeSet<String>,
}

/// Relay queue `q`'s flow records; no call touches two queues.
///
/// 1. Its outbox: the outcomes of its children for parents in other queues
///    ([`FlowApply`], at most once per child).
/// 2. Its cascades (parents cancelled or removed while they waited for
///    children, see `queue_cascade` in `scripts/prelude.lua`), in calls of
///    [`CASCADE_BATCH`] children: children in `q` are stopped there, and
///    those in other queues get a stop record.
/// 3. Its stop records, applied in the children's queues ([`FlowStop`]:
///    a child that ended, or is not that parent's child, is left alone).
///
/// Each record is dropped only once applied; a crash between the two
/// leaves it, and the next relay applies it again without effect. The
/// worker's reaper runs this on every pass; deleting a queue runs it
/// before the queue's keys go.
pub async fn relay_outbox<C: ConnectionLike + Send>(conn: &mut C, q: &QueueScripts) -> Result<Relayed> {
    let mut done = Relayed::default();
    let other = |name: &str| {
        Ok::<_, Error>(QueueScripts::new(QueueKeys::new(q.keys().prefix(), name)?, q.events_max_len()))
    };
    loop {
        let records = q.run(&mut *conn, &FlowPeek(RELAY_BATCH)).await?;
        let mut unreadable = 0;
        for record in &records {
            match OutboxRecord::parse(record) {
                Ok(r) => {
                    other(&r.parent_queue)?.run(&mut *conn, &r.apply()).await?;
                }
                // Kept, and logged on every relay: dropping it would hang the parent.
                Err(e) => {
                    tracing::error!(queue = %q.queue(), error = %e, "flow outbox record cannot be read; left in place");
                    unreadable += 1;
                    continue;
                }
            }
            if !q.run(&mut *conn, &FlowDrop(record)).await? {
                tracing::warn!(queue = %q.queue(), "flow outbox record was already gone (relayed by another process)");
            }
            done.moved += 1;
        }
        done.unreadable += unreadable;
        if records.len() < RELAY_BATCH || unreadable == records.len() {
            break;
        }
    }

    while q.run(&mut *conn, &FlowCascade(CASCADE_BATCH)).await? > 0 {}
    loop {
        let records = q.run(&mut *conn, &FlowPeekStops(RELAY_BATCH)).await?;
        let mut unreadable = 0;
        for record in &records {
            match StopRecord::parse(record) {
                Ok(r) => {
                    other(&r.child_queue)?.run(&mut *conn, &r.stop()).await?;
                    done.stopped_in.insert(r.child_queue);
                }
                // Kept, and logged on every relay: dropping it would leave the child running.
                Err(e) => {
                    tracing::error!(queue = %q.queue(), error = %e, "flow stop record cannot be read; left in place");
                    unreadable += 1;
                    continue;
                }
            }
            q.run(&mut *conn, &FlowDropStop(record)).await?;
            done.stops += 1;
        }
        done.unreadable += unreadable;
        if records.len() < RELAY_BATCH || unreadable == records.len() {
            break;
        }
    }
    Ok(done)
}

/// After a parent of queue `q` was cancelled or removed: relay `q`'s flow
/// records, then those of every queue a stop was applied in (a child there
/// may be a parent in turn), and so on, up to 64 queue relays; the
/// workers' reapers finish anything left (or cut short by a crash).
pub async fn settle_flows<C: ConnectionLike + Send>(conn: &mut C, q: &QueueScripts) -> Result<()> {
    let mut todo = vec![q.clone()];
    let mut relays = 0;
    while let Some(next) = todo.pop() {
        let relayed = relay_outbox(&mut *conn, &next).await?;
        relays += 1;
        if relays >= SETTLE_QUEUES {
            break;
        }
        for name in relayed.stopped_in {
            todo.push(QueueScripts::new(QueueKeys::new(q.keys().prefix(), &name)?, q.events_max_len()));
        }
    }
    Ok(())
}
