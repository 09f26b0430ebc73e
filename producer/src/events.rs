//! Reading a queue's events stream: what happened to its jobs, newest kept.

use std::time::Duration;

use quern_common::events::{self, Event};
use quern_common::{RedisConfig, Result};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::Queue;

impl Queue {
    /// The newest `count` events of the queue, oldest first.
    pub async fn recent_events(&self, count: usize) -> Result<Vec<Event>> {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.keys().events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection())
            .await?;
        let mut events = events::parse_entries(reply)?;
        events.reverse();
        Ok(events)
    }

    /// At most `count` events after the one with id `after` (`"0"`: from the
    /// oldest kept), oldest first.
    pub async fn events_after(&self, after: &str, count: usize) -> Result<Vec<Event>> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys().events())
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection())
            .await?;
        events::parse_entries(reply)
    }
}

/// Follows a queue's events as they happen. It blocks on a connection of
/// its own (a blocking read holds its connection), and reconnects on the
/// call after a failed one.
pub struct EventFollower {
    config: RedisConfig,
    key: String,
    conn: Option<MultiplexedConnection>,
    last: String,
    block: Duration,
}

impl std::fmt::Debug for EventFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFollower").field("key", &self.key).field("last", &self.last).finish()
    }
}

/// Events one blocking read takes at most.
const READ_BATCH: usize = 500;

impl EventFollower {
    /// Follow the events of `queue` that come after event id `after`; `None`
    /// for only those that happen from now on.
    pub async fn connect(config: &RedisConfig, queue: &Queue, after: Option<&str>) -> Result<Self> {
        let last = match after {
            Some(id) => id.to_owned(),
            // The id of the newest entry now ("$" would skip what happens
            // between two reads).
            None => queue.recent_events(1).await?.pop().map_or_else(|| "0-0".to_owned(), |e| e.id),
        };
        let block = Duration::from_secs(5);
        let key = queue.keys().events().to_owned();
        let conn = Some(config.connect_dedicated(&key, block).await?);
        Ok(Self { config: config.clone(), key, conn, last, block })
    }

    /// The next events, oldest first, waiting up to 5 s for some; empty when
    /// none came in that time.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.config.connect_dedicated(&self.key, self.block).await?,
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last)
            .query_async(&mut conn)
            .await?;
        self.conn = Some(conn);
        let events = events::parse_read(reply)?;
        if let Some(e) = events.last() {
            self.last = e.id.clone();
        }
        Ok(events)
    }
}
