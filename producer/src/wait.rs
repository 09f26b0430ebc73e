//! Waiting for a job to end: [`Queue::wait_for`] and its [`JobOutcome`].

use std::time::Duration;

use quern_common::events::{self, Event};
use quern_common::{AttemptOutcome, Error, JobInfo, JobState, Result};
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::Queue;

/// How a job ended, as [`Queue::wait_for`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome<T> {
    /// It completed; its handler's result, read as `T` (a handler that
    /// returned nothing reads as JSON `null`: use `()` or `Option<_>`).
    Completed(T),
    /// It failed for good and is in the dead-letter list: its last error.
    DeadLettered {
        /// The last attempt's error message.
        error: String,
    },
    /// An operator cancelled it (it is in the dead-letter list too).
    Cancelled {
        /// The reason given.
        reason: String,
    },
    /// The job does not exist (any more): it was removed, or its queue was
    /// deleted, or it finished and its record was trimmed before the wait
    /// could read it (with `keep 0` completed jobs this is immediate), or it
    /// was never added.
    Removed,
    /// It had not ended when the wait's time was up (it may still run).
    TimedOut,
}

/// The longest one blocking read of the events stream lasts: the wait reads
/// the job again at least this often, so it ends even when the queue's events
/// are off or were trimmed past what it had read.
const RECHECK: Duration = Duration::from_secs(1);
/// Events one read takes at most.
const READ_BATCH: usize = 500;

impl Queue {
    /// Wait until job `id` ends, at most `timeout`, and say how it ended.
    ///
    /// The job is read first, so a job that ended already answers at once,
    /// and a job that does not exist answers [`JobOutcome::Removed`] at
    /// once, never a hang. Otherwise the wait blocks on the queue's events
    /// stream, on a connection of its own (on a Redis Cluster, to the node
    /// that holds the queue), and reads the job again whenever an event
    /// names it, and at least every second. There is no race with the add
    /// or with the job ending: the stream's position is taken *before* the
    /// job is read, so whatever ends the job after that read is an event
    /// the wait still sees. A dead-lettered job that an operator retries
    /// later counts as dead-lettered: the wait ends at the first end.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use quern_producer::{JobOutcome, Queue};
    ///
    /// # async fn run(queue: Queue) -> quern_producer::Result<()> {
    /// let job = queue.add("resize", &serde_json::json!({ "image": 7 })).await?;
    /// match queue.wait_for::<serde_json::Value>(&job.id, Duration::from_secs(60)).await? {
    ///     JobOutcome::Completed(result) => println!("done: {result}"),
    ///     other => eprintln!("did not complete: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for<T: DeserializeOwned>(&self, id: &str, timeout: Duration) -> Result<JobOutcome<T>> {
        let deadline = Instant::now() + timeout;
        let key = self.keys().events().to_owned();
        let mut conn = Some(self.config().connect_dedicated(&key, RECHECK).await?);
        let mut position = newest_event(conn.as_mut().expect("just connected"), &key).await?;
        loop {
            if let Some(outcome) = self.outcome_of(id).await? {
                return Ok(outcome);
            }
            let recheck_at = deadline.min(Instant::now() + RECHECK);
            // Read events until one names the job or it is time to read it again.
            loop {
                let now = Instant::now();
                if now >= recheck_at {
                    break;
                }
                let block = (recheck_at - now).as_millis().max(1) as u64;
                let link = match conn.as_mut() {
                    Some(link) => link,
                    None => conn.insert(self.config().connect_dedicated(&key, RECHECK).await?),
                };
                match read_events(link, &key, &position, block).await {
                    Ok(events) => {
                        if let Some(last) = events.last() {
                            position = last.id.clone();
                        }
                        if events.iter().any(|e| e.job_ids().contains(&id)) {
                            break;
                        }
                    }
                    // A dropped socket or a failover: read the job, then
                    // connect afresh (to the node that holds the queue now).
                    Err(e) if e.is_retryable() => {
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Ok(self.outcome_of(id).await?.unwrap_or(JobOutcome::TimedOut));
            }
        }
    }

    /// How job `id` ended, or `None` while it has not.
    async fn outcome_of<T: DeserializeOwned>(&self, id: &str) -> Result<Option<JobOutcome<T>>> {
        let Some(job) = self.job(id).await? else {
            return Ok(Some(JobOutcome::Removed));
        };
        Ok(match job.state {
            JobState::Waiting | JobState::Delayed | JobState::Active | JobState::WaitingChildren => None,
            JobState::Completed => Some(JobOutcome::Completed(self.typed_result(&job)?)),
            JobState::Failed => Some(failure(job)),
        })
    }

    fn typed_result<T: DeserializeOwned>(&self, job: &JobInfo) -> Result<T> {
        serde_json::from_str(job.result.as_deref().unwrap_or("null")).map_err(|e| Error::ResultMismatch {
            queue: self.name().to_owned(),
            id: job.id.clone(),
            reason: e.to_string(),
        })
    }
}

/// A dead-lettered job: cancelled when its last history entry says so.
fn failure<T>(job: JobInfo) -> JobOutcome<T> {
    let error = job.last_error.unwrap_or_default();
    match job.history.last() {
        Some(last) if last.outcome == AttemptOutcome::Cancelled => JobOutcome::Cancelled { reason: error },
        _ => JobOutcome::DeadLettered { error },
    }
}

/// The id of the newest entry of the stream (`0-0` when it is empty).
async fn newest_event(conn: &mut MultiplexedConnection, key: &str) -> Result<String> {
    let reply: Value =
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    Ok(events::parse_entries(reply)?.pop().map_or_else(|| "0-0".to_owned(), |e: Event| e.id))
}

/// Events after `after`, blocking up to `block_ms` for the first.
async fn read_events(
    conn: &mut MultiplexedConnection,
    key: &str,
    after: &str,
    block_ms: u64,
) -> Result<Vec<Event>> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(READ_BATCH)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(key)
        .arg(after)
        .query_async(conn)
        .await?;
    events::parse_read(reply)
}
